"""Production event store: a MongoDB collection, with the stream's outbox in it.

One document per event: `_id` is the event id (so appending is idempotent by the
unique `_id` index), `seq` the append order the outbox is read in, `body` the event's
JSON exactly as SQLite keeps it (a payload can hold what BSON cannot: integers past 64
bits, keys starting with `$`; an append that fails on those would block its monitor
forever), and beside it the fields that queries filter on. `at` is a BSON date for
people reading the collection; `at_us` is the exact time in microseconds that queries
use, because a BSON date drops the microseconds that `since` and the order depend on.

Appends and marks wait for a majority of the replica set (the audit log must survive a
primary failover) and reads see only majority-committed writes, so the relay never
publishes an event that a failover then takes back out of the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from models import Event
from store.base import EventQuery, EventStore, StoredEvent, StoreError

Doc = dict[str, Any]

SERVER_SELECTION_TIMEOUT_MS = 5000
"""Opening the store against a MongoDB that is down is an error within seconds, not a
hang (pymongo's default is 30 s). A `serverSelectionTimeoutMS` in the URI wins."""

CALL_TIMEOUT_S = 20.0
"""The budget of one store call once open, all its round trips together (pymongo's
client-side operation timeout, which also sends the server maxTimeMS). Within it pymongo
waits for a primary as long as the budget lasts, which rides out an election (about
10 s). It is below the monitor's 30 s start-to-close timeout for `record_events`: an
append stuck in a failover gives up before Temporal starts the retry, so two attempts at
one batch do not write at once and the batch's events keep their order in the outbox."""

MARK_CHUNK = 1000
"""Ids per update, far below the 16 MiB command limit."""

DUPLICATE_KEY = 11000
NOT_IMPLEMENTED = 238
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MongoEventStore(EventStore):
    def __init__(self, uri: str, database: str = "replicante", collection: str = "events") -> None:
        # The URI may carry a password: it is never logged, nor kept beyond this call.
        options: dict[str, Any] = {}
        if not _uri_has_option(uri, "serverSelectionTimeoutMS"):
            options["serverSelectionTimeoutMS"] = SERVER_SELECTION_TIMEOUT_MS
        self._client: MongoClient[Doc] = MongoClient(
            uri, tz_aware=True, appname="replicante", **options
        )
        # Named by the hosts pymongo parsed out of the URI (the seeds, before it connects).
        seeds = self._client.topology_description.server_descriptions()
        hosts = ",".join(host if port is None else f"{host}:{port}" for host, port in seeds)
        self._where = f"{hosts}/{database}.{collection}"
        db = self._client.get_database(
            database, write_concern=WriteConcern("majority"), read_concern=ReadConcern("majority")
        )
        self._events: Collection[Doc] = db.get_collection(collection)
        # One counter document per events collection: {_id: <collection>, seq: <last>}.
        self._counters: Collection[Doc] = db.get_collection("counters")
        self._counter_id = collection
        try:
            # Outside a call budget: under one, pymongo waits for a server as long as the
            # budget lasts, and opening must fail at the short selection timeout.
            self._events.create_index(
                [("cluster_id", 1), ("at_us", 1), ("seq", 1)], name="by_cluster_time"
            )
            self._events.create_index([("at_us", 1), ("seq", 1)], name="by_time")
            self._create_backlog_index()
        except PyMongoError as error:
            self._client.close()
            raise StoreError(f"cannot open the event store {self}: {error}") from error

    def _create_backlog_index(self) -> None:
        try:
            # Only the backlog is in it, however long the log grows.
            self._events.create_index(
                [("seq", 1)], name="unpublished", partialFilterExpression={"published": False}
            )
        except OperationFailure as error:
            if error.code != NOT_IMPLEMENTED:
                raise
            # FerretDB, a MongoDB wire-protocol server, has no partial indexes: there the
            # backlog's index holds every event, and serves the same queries.
            self._events.create_index([("published", 1), ("seq", 1)], name="unpublished")

    def __str__(self) -> str:
        return f"MongoDB {self._where}"

    def append(self, events: Sequence[Event]) -> int:
        with pymongo.timeout(CALL_TIMEOUT_S):
            ids = list(dict.fromkeys(e.event_id for e in events))
            stored = {d["_id"] for d in self._events.find({"_id": {"$in": ids}}, {"_id": 1})}
            fresh: dict[str, Event] = {}
            for e in events:
                if e.event_id not in stored:
                    fresh.setdefault(e.event_id, e)  # the first of a repeated id, as in SQLite
            if not fresh:
                return 0
            # Reserve one block of `seq` for the batch; an id that a concurrent append
            # stores first leaves a gap in the block, which the order does not mind.
            counter = self._counters.find_one_and_update(
                {"_id": self._counter_id},
                {"$inc": {"seq": len(fresh)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            assert counter is not None  # an upsert returning the document after it
            first = int(counter["seq"]) - len(fresh) + 1
            now = datetime.now(UTC)
            docs = [_document(e, first + i, now) for i, e in enumerate(fresh.values())]
            return self._insert_in_order(docs)

    def _insert_in_order(self, docs: list[Doc]) -> int:
        """Insert in `seq` order, skipping ids stored meanwhile; how many were inserted.

        Ordered inserts, so that the relay never sees a later event of the batch without
        the earlier ones. An ordered insert stops at its first duplicate, hence the loop.
        """
        inserted = 0
        while docs:
            try:
                self._events.insert_many(docs, ordered=True)
            except BulkWriteError as error:
                errors = error.details.get("writeErrors") or []
                if not errors or errors[0]["code"] != DUPLICATE_KEY:
                    raise
                index = int(errors[0]["index"])
                inserted += index
                docs = docs[index + 1 :]
            else:
                return inserted + len(docs)
        return inserted

    def query(self, query: EventQuery) -> list[StoredEvent]:
        if query.limit < 1:
            return []  # MongoDB reads limit 0 as "no limit"
        where: Doc = {}
        if query.cluster_id is not None:
            where["cluster_id"] = query.cluster_id
        if query.since is not None:
            where["at_us"] = {"$gte": _micros(query.since)}
        if query.types:
            where["type"] = {"$in": list(query.types)}
        with pymongo.timeout(CALL_TIMEOUT_S):
            docs = list(
                self._events.find(where, {"_id": 0, "body": 1, "stored_at": 1})
                .sort([("at_us", -1), ("seq", -1)])
                .limit(query.limit)
            )
        return [
            StoredEvent(event=Event.model_validate_json(d["body"]), stored_at=d["stored_at"])
            for d in reversed(docs)
        ]

    def unpublished(self, limit: int) -> list[Event]:
        if limit < 1:
            return []
        with pymongo.timeout(CALL_TIMEOUT_S):
            docs = list(
                self._events.find({"published": False}, {"_id": 0, "body": 1})
                .sort("seq", 1)
                .limit(limit)
            )
        return [Event.model_validate_json(d["body"]) for d in docs]

    def mark_published(self, event_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(event_ids))
        now = datetime.now(UTC)
        changed = 0
        with pymongo.timeout(CALL_TIMEOUT_S):
            for start in range(0, len(ids), MARK_CHUNK):
                result = self._events.update_many(
                    {"_id": {"$in": ids[start : start + MARK_CHUNK]}, "published": False},
                    {"$set": {"published": True, "published_at": now}},
                )
                changed += result.modified_count
        return changed

    def unpublished_count(self) -> int:
        with pymongo.timeout(CALL_TIMEOUT_S):
            return self._events.count_documents({"published": False})

    def close(self) -> None:
        self._client.close()


def _document(event: Event, seq: int, stored_at: datetime) -> Doc:
    return {
        "_id": event.event_id,
        "seq": seq,
        "cluster_id": event.cluster_id,
        "type": event.type,
        "at": event.at.astimezone(UTC),
        "at_us": _micros(event.at),
        "stored_at": stored_at,
        "published": False,
        "body": event.model_dump_json(),
    }


def _micros(at: datetime) -> int:
    """Exact microseconds since the epoch; a naive time is local, as in `timestamp()`."""
    return (at.astimezone(UTC) - EPOCH) // timedelta(microseconds=1)


def _uri_has_option(uri: str, name: str) -> bool:
    query = uri.partition("?")[2]
    return any(
        part.partition("=")[0].lower() == name.lower()
        for part in query.replace(";", "&").split("&")
    )
