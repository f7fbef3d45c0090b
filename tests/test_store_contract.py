"""The event store contract, run against each backend: SQLite always, the MongoDB store on
FerretDB always (the session's `ferretdb`: a MongoDB wire-protocol server, not MongoDB),
and on MongoDB when REPLICANTE_TEST_MONGODB_URI names a real server (one database per
session, dropped at the end). One collection per test, so tests never see each other's
events.

FerretDB is one server, not a replica set: it accepts the store's majority write and read
concerns and ignores them, so what it proves is the store's commands, not their durability
across a failover. It has no partial indexes; the store then makes a full one.

Also: the SQLite migration from the first schema, and how the store is chosen and
opened from the settings (a MongoDB that is down fails fast and keeps its password).
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pymongo import MongoClient

from config.settings import Settings
from devstack.ferretdb import FerretDB
from models import Event, Severity
from store import EventQuery, EventStore, SQLiteEventStore, StoreError, open_store
from store.mongodb import MongoEventStore, _document

MONGODB_URI = os.environ.get("REPLICANTE_TEST_MONGODB_URI")
NEEDS_MONGODB = (
    "needs a real MongoDB: set REPLICANTE_TEST_MONGODB_URI "
    "(docker-compose.yml has a 3-member replica set)"
)
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

# The first schema, verbatim: what a developer's .replicante/events.db still has.
FIRST_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id   TEXT PRIMARY KEY,
    cluster_id TEXT NOT NULL,
    type       TEXT NOT NULL,
    at         REAL NOT NULL,
    stored_at  REAL NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_cluster_time ON events (cluster_id, at);
CREATE INDEX IF NOT EXISTS events_by_time ON events (at);
"""

Opener = Callable[[], EventStore]
"""Opens the test's store, again each call: a restarted worker, or the CLI beside it."""


def event(cluster_id: str, n: int, type_: str = "node.down", **fields: object) -> Event:
    return Event.model_validate(
        {
            "event_id": f"{cluster_id}/{n}",
            "cluster_id": cluster_id,
            "type": type_,
            "at": T0 + timedelta(seconds=n),
            "message": f"{cluster_id} #{n}",
            "payload": {"n": n},
            **fields,
        }
    )


def ids(events: list[Event]) -> list[str]:
    return [e.event_id for e in events]


def stored_ids(store: EventStore, query: EventQuery | None = None) -> list[str]:
    return [s.event.event_id for s in store.query(query or EventQuery())]


@pytest.fixture(scope="session")
def mongodb_database() -> Iterator[str]:
    assert MONGODB_URI is not None
    name = f"replicante_test_{uuid.uuid4().hex[:12]}"
    yield name
    client: MongoClient[dict[str, object]] = MongoClient(MONGODB_URI, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


MONGODB_BACKENDS = [
    "ferretdb",
    pytest.param("mongodb", marks=pytest.mark.skipif(not MONGODB_URI, reason=NEEDS_MONGODB)),
]


def mongodb_target(request: pytest.FixtureRequest, backend: str) -> tuple[str, str]:
    """The URI and database of a MongoDB store on `backend`."""
    if backend == "ferretdb":
        server: FerretDB = request.getfixturevalue("ferretdb_running")
        # The session's own server, gone with its tmp dir: nothing to drop.
        return server.uri(), "replicante_test"
    assert MONGODB_URI is not None
    return MONGODB_URI, request.getfixturevalue("mongodb_database")


@pytest.fixture(params=["sqlite", *MONGODB_BACKENDS])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[EventStore] = []

    def open_() -> EventStore:
        store: EventStore
        if request.param == "sqlite":
            store = SQLiteEventStore(tmp_path / "events.db")
        else:
            store = MongoEventStore(uri, database, collection)
        opened.append(store)
        return store

    if request.param != "sqlite":
        uri, database = mongodb_target(request, request.param)
        collection = f"events_{uuid.uuid4().hex[:12]}"
    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: Opener) -> EventStore:
    return opener()


def test_append_is_idempotent(store: EventStore) -> None:
    a1, a2, a3, a4 = (event("a", n) for n in (1, 2, 3, 4))
    assert store.append([a1, a2]) == 2
    assert store.append([a1]) == 0  # the same event again
    assert store.append([a1, a2, a3]) == 1  # a retried batch that got further this time
    assert store.append([a4, a4]) == 1  # one event twice in a batch
    assert store.append([]) == 0
    assert stored_ids(store) == ["a/1", "a/2", "a/3", "a/4"]
    # Nor is the outbox duplicated.
    assert ids(store.unpublished(100)) == ["a/1", "a/2", "a/3", "a/4"]
    assert store.unpublished_count() == 4


def test_events_come_back_as_they_went_in(store: EventStore) -> None:
    sent = event(
        "a",
        1,
        at=datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        severity=Severity.CRITICAL,
        node_id="zk2",
        # JSON that BSON cannot hold as a document: a 70-bit integer, a `$` key.
        payload={"big": 2**70, "$where": "x", "a.b": [1, {"c": None}], "f": 0.1},
    )
    store.append([sent])
    (got,) = store.query(EventQuery())
    assert got.event == sent
    assert got.event.payload["big"] == 2**70
    assert store.unpublished(1) == [sent]


def test_query_filters_and_limit(store: EventStore) -> None:
    # Appended out of time order: queries order by event time, then by append (b/2 and
    # a/2 happened at the same second).
    store.append([event("a", 3), event("b", 2, "node.up")])
    store.append([event("a", 1, "node.up"), event("b", 4), event("a", 5, "cluster.quorum_lost")])
    store.append([event("a", 2)])

    assert stored_ids(store) == ["a/1", "b/2", "a/2", "a/3", "b/4", "a/5"]
    assert stored_ids(store, EventQuery(cluster_id="a")) == ["a/1", "a/2", "a/3", "a/5"]
    assert stored_ids(store, EventQuery(cluster_id="nope")) == []
    # `since` is inclusive, to the microsecond.
    at_3 = T0 + timedelta(seconds=3)
    assert stored_ids(store, EventQuery(since=at_3)) == ["a/3", "b/4", "a/5"]
    assert stored_ids(store, EventQuery(since=at_3 + timedelta(microseconds=1))) == [
        "b/4",
        "a/5",
    ]
    assert stored_ids(store, EventQuery(types=("node.up",))) == ["a/1", "b/2"]
    assert stored_ids(store, EventQuery(types=("node.up", "cluster.quorum_lost"))) == [
        "a/1",
        "b/2",
        "a/5",
    ]
    # The newest `limit`, returned oldest first.
    assert stored_ids(store, EventQuery(limit=2)) == ["b/4", "a/5"]
    assert stored_ids(store, EventQuery(cluster_id="a", limit=3)) == ["a/2", "a/3", "a/5"]
    assert stored_ids(store, EventQuery(cluster_id="a", since=at_3, types=("node.down",))) == [
        "a/3"
    ]
    assert stored_ids(store, EventQuery(limit=0)) == []


def test_events_at_the_same_time_keep_append_order(store: EventStore) -> None:
    store.append([event("a", 2, at=T0), event("a", 1, at=T0)])
    store.append([event("a", 3, at=T0)])
    assert stored_ids(store) == ["a/2", "a/1", "a/3"]
    assert stored_ids(store, EventQuery(limit=2)) == ["a/1", "a/3"]


def test_stored_at_is_when_first_stored(store: EventStore) -> None:
    before = datetime.now(UTC)
    store.append([event("a", 1)])
    after = datetime.now(UTC)
    (got,) = store.query(EventQuery())
    # MongoDB keeps milliseconds (a BSON date), so the lower bound is `before`'s ms.
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= got.stored_at
    assert got.stored_at <= after
    assert got.stored_at.utcoffset() == timedelta(0)
    time.sleep(0.01)
    store.append([event("a", 1), event("a", 2)])
    first, second = store.query(EventQuery())
    assert first.stored_at == got.stored_at  # a retry does not move it
    assert second.stored_at > got.stored_at


def test_outbox_is_in_append_order_across_interleaved_clusters(store: EventStore) -> None:
    # Cluster b's events are older than a's: the outbox ignores event time.
    a = [event("a", n) for n in range(10, 15)]
    b = [event("b", n) for n in range(1, 5)]
    batches = [[a[0], a[1]], [b[0]], [a[2], b[1]], [b[2], a[3]], [a[4]], [b[3]]]
    for batch in batches:
        store.append(batch)
    appended = [e for batch in batches for e in batch]
    assert ids(store.unpublished(100)) == ids(appended)
    assert ids(store.unpublished(3)) == ids(appended[:3])
    assert store.unpublished(0) == []
    assert store.unpublished_count() == 9


def test_mark_published(store: EventStore) -> None:
    batch = [event("a", 1), event("b", 1), event("a", 2), event("b", 2)]
    store.append(batch)
    assert store.mark_published(["a/1", "b/1"]) == 2
    assert store.mark_published(["a/1", "b/1"]) == 0  # again: nothing changes
    assert store.mark_published(["b/1", "a/2", "a/2", "no/such-event"]) == 1
    assert store.mark_published([]) == 0
    assert ids(store.unpublished(100)) == ["b/2"]
    assert store.unpublished_count() == 1
    # Published events stay in the log, and appending one again does not put it back
    # into the outbox.
    assert store.append([event("a", 1), event("a", 3)]) == 1
    assert ids(store.unpublished(100)) == ["b/2", "a/3"]
    assert stored_ids(store) == ["a/1", "b/1", "a/2", "b/2", "a/3"]
    assert store.mark_published(["b/2", "a/3"]) == 2
    assert store.unpublished(100) == []
    assert store.unpublished_count() == 0


@pytest.mark.parametrize("backend", MONGODB_BACKENDS)
def test_mongodb_append_skips_ids_stored_between_its_check_and_its_insert(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """Another append (a retry on another worker) can store an id after this one looked."""
    collection = f"events_{uuid.uuid4().hex[:12]}"
    store = MongoEventStore(*mongodb_target(request, backend), collection)
    try:
        store.append([event("a", 2)])
        now = datetime.now(UTC)
        docs = [_document(event("a", n), seq=100 + n, stored_at=now) for n in (1, 2, 3)]
        assert store._insert_in_order(docs) == 2
        assert stored_ids(store) == ["a/1", "a/2", "a/3"]
        assert ids(store.unpublished(10)) == ["a/2", "a/1", "a/3"]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("backend", "key", "partial"),
    [
        # FerretDB answers a partialFilterExpression with NotImplemented (238).
        ("ferretdb", [("published", 1), ("seq", 1)], None),
        pytest.param(
            "mongodb",
            [("seq", 1)],
            {"published": False},
            marks=pytest.mark.skipif(not MONGODB_URI, reason=NEEDS_MONGODB),
        ),
    ],
)
def test_the_backlog_index_is_partial_where_the_server_has_partial_indexes(
    request: pytest.FixtureRequest,
    backend: str,
    key: list[tuple[str, int]],
    partial: dict[str, object] | None,
) -> None:
    uri, database = mongodb_target(request, backend)
    collection = f"events_{uuid.uuid4().hex[:12]}"
    MongoEventStore(uri, database, collection).close()
    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    with client:
        index = client[database][collection].index_information()["unpublished"]
    assert (index["key"], index.get("partialFilterExpression")) == (key, partial)


def test_two_stores_on_one_log_share_the_outbox(opener: Opener) -> None:
    """The worker and the CLI (or two core workers) open the same log."""
    worker, other = opener(), opener()
    worker.append([event("a", 1)])
    other.append([event("b", 1)])
    worker.append([event("a", 2)])
    assert other.append([event("a", 2)]) == 0
    assert ids(other.unpublished(10)) == ["a/1", "b/1", "a/2"]
    assert other.mark_published(["a/1"]) == 1
    assert ids(worker.unpublished(10)) == ["b/1", "a/2"]
    assert worker.mark_published(["a/1"]) == 0


def test_reopening_keeps_everything(opener: Opener) -> None:
    first = opener()
    first.append([event("a", 1), event("b", 1)])
    first.append([event("a", 2)])
    first.mark_published(["a/1"])
    before = first.query(EventQuery())
    first.close()

    again = opener()
    assert again.query(EventQuery()) == before
    assert ids(again.unpublished(10)) == ["b/1", "a/2"]
    assert again.unpublished_count() == 2
    # Appending goes on after what was there, and stays idempotent.
    assert again.append([event("a", 1), event("a", 0)]) == 1
    assert ids(again.unpublished(10)) == ["b/1", "a/2", "a/0"]


def test_sqlite_migrates_a_first_schema_file(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    old = sqlite3.connect(path)
    old.executescript(FIRST_SCHEMA)
    # Rows as the first append wrote them, appended out of time order.
    appended = [event("a", 3), event("b", 1), event("a", 1)]
    stored_at = T0.timestamp() + 100
    old.executemany(
        "INSERT INTO events (event_id, cluster_id, type, at, stored_at, body)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (e.event_id, e.cluster_id, e.type, e.at.timestamp(), stored_at, e.model_dump_json())
            for e in appended
        ],
    )
    old.commit()
    old.close()

    store = SQLiteEventStore(path)
    try:
        got = store.query(EventQuery())
        # b/1 and a/1 happened at the same second: append order breaks the tie.
        assert [s.event for s in got] == [appended[1], appended[2], appended[0]]
        assert {s.stored_at.timestamp() for s in got} == {stored_at}
        # Old rows are unpublished, in the order they were appended.
        assert store.unpublished(10) == appended
        assert store.unpublished_count() == 3
        assert store.append([event("a", 1), event("a", 2)]) == 1
        assert ids(store.unpublished(10)) == ["a/3", "b/1", "a/1", "a/2"]
        assert store.mark_published(["a/3", "b/1"]) == 2
    finally:
        store.close()

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        columns = [row[1] for row in db.execute("PRAGMA table_info(events)")]
        assert columns == [
            "seq",
            "event_id",
            "cluster_id",
            "type",
            "at",
            "stored_at",
            "body",
            "published_at",
        ]
        indexes = {
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
                " AND sql IS NOT NULL"
            )
        }
        assert indexes == {"events_by_cluster_time", "events_by_time", "events_unpublished"}
        assert (
            db.execute("SELECT name FROM sqlite_master WHERE name = 'events_v1'").fetchall() == []
        )
    finally:
        db.close()

    reopened = SQLiteEventStore(path)  # already migrated: nothing to do, nothing lost
    try:
        assert ids(reopened.unpublished(10)) == ["a/1", "a/2"]
        assert stored_ids(reopened) == ["b/1", "a/1", "a/2", "a/3"]
    finally:
        reopened.close()


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SQLiteEventStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 2")
    db.close()
    with pytest.raises(StoreError, match="schema 2, newer than this replicante's 1"):
        SQLiteEventStore(path)


def test_settings_choose_the_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REPLICANTE_HOME", str(tmp_path))
    monkeypatch.delenv("REPLICANTE_STORE", raising=False)
    monkeypatch.delenv("REPLICANTE_STORE_MONGODB_URI", raising=False)
    settings = Settings.from_env()
    assert settings.store_mongodb_uri is None
    store = open_store(settings)
    try:
        assert isinstance(store, SQLiteEventStore)
        assert store.path == tmp_path / "events.db"
        assert str(store) == f"SQLite {tmp_path / 'events.db'}"
    finally:
        store.close()

    monkeypatch.setenv("REPLICANTE_STORE_MONGODB_URI", "")
    assert Settings.from_env().store_mongodb_uri is None

    uri = "mongodb://replicante:s3cret@db1:27017,db2:27017/?replicaSet=rs0"
    monkeypatch.setenv("REPLICANTE_STORE_MONGODB_URI", uri)
    settings = Settings.from_env()
    assert settings.store_mongodb_uri == uri
    assert "s3cret" not in repr(settings)


def test_a_down_mongodb_fails_fast_without_its_password() -> None:
    # Nothing listens on port 1: the connection is refused at once, and the store gives
    # up at the server selection timeout, the URI's when it names one.
    uri = "mongodb://replicante:s3cret@127.0.0.1:1/?serverSelectionTimeoutMS=300"
    started = time.monotonic()
    with pytest.raises(StoreError) as raised:
        open_store(Settings(store_mongodb_uri=uri))
    assert time.monotonic() - started < 3
    message = str(raised.value)
    assert message.startswith("cannot open the event store MongoDB 127.0.0.1:1/replicante.events:")
    assert "s3cret" not in message
    assert "replicante:" not in message.split("events:", 1)[1]


def test_a_down_mongodb_fails_within_the_default_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError):
        MongoEventStore("mongodb://127.0.0.1:1/", "replicante", "events")
    assert 4 < time.monotonic() - started < 10  # 5 s, not pymongo's 30 s
