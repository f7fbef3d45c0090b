"""Embedded event store: one SQLite file, append-only, with the stream's outbox in it."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from models import Event
from store.base import EventQuery, EventStore, StoredEvent, StoreError

SCHEMA_VERSION = 1
"""`PRAGMA user_version`. 0 is the first schema (no outbox), or a new empty file."""

# `seq` is the append order the outbox is read in. It is an explicit INTEGER PRIMARY
# KEY (an alias of the rowid) because VACUUM may renumber the implicit rowid of a table
# without one. No AUTOINCREMENT: rows are never deleted, so max(seq) + 1 always grows.
# `published_at` is NULL until the stream relay has handed the event to the topic.
CREATE_EVENTS = """
CREATE TABLE {table} (
    seq          INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    cluster_id   TEXT NOT NULL,
    type         TEXT NOT NULL,
    at           REAL NOT NULL,
    stored_at    REAL NOT NULL,
    body         TEXT NOT NULL,
    published_at REAL
)
"""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS events_by_cluster_time ON events (cluster_id, at)",
    "CREATE INDEX IF NOT EXISTS events_by_time ON events (at)",
    # Small however long the log grows: only the backlog is in it.
    "CREATE INDEX IF NOT EXISTS events_unpublished ON events (seq) WHERE published_at IS NULL",
)


class SQLiteEventStore(EventStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by activity threads; sqlite3 objects are not
        # thread-safe on their own, hence the lock.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def __str__(self) -> str:
        return f"SQLite {self.path}"

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION in one transaction, so that a worker and a
        CLI opening the same old file at once migrate it once, and a failure leaves it
        as it was."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has event store schema {version}, newer than this "
                    f"replicante's {SCHEMA_VERSION}: upgrade replicante"
                )
            if version == 0:
                exists = self._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
                ).fetchone()
                if exists:
                    self._rebuild_v0()
                else:
                    self._db.execute(CREATE_EVENTS.format(table="events"))
            for index in INDEXES:
                self._db.execute(index)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _rebuild_v0(self) -> None:
        """Copy a first-schema table into the current one.

        SQLite cannot add an INTEGER PRIMARY KEY to a table, hence the copy. Rows keep
        their append order (the old rowid, max + 1 like `seq`). They come over as
        unpublished, the same as any event stored while no relay runs: the topic is
        meant to carry the whole log, and the moment of this upgrade says nothing about
        what an operator wants in it. A relay that should start from "now" marks the
        backlog published once, whatever its age.
        """
        self._db.execute(CREATE_EVENTS.format(table="events_v1"))
        self._db.execute(
            "INSERT INTO events_v1 (event_id, cluster_id, type, at, stored_at, body)"
            " SELECT event_id, cluster_id, type, at, stored_at, body FROM events"
            " ORDER BY rowid"
        )
        # Dropping the table drops its indexes, so INDEXES recreates them on the new one.
        self._db.execute("DROP TABLE events")
        self._db.execute("ALTER TABLE events_v1 RENAME TO events")

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> int:
        """Run one statement per row in one transaction; how many rows changed."""
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def append(self, events: Sequence[Event]) -> int:
        now = datetime.now(UTC).timestamp()
        return self._write(
            "INSERT OR IGNORE INTO events (event_id, cluster_id, type, at, stored_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (e.event_id, e.cluster_id, e.type, e.at.timestamp(), now, e.model_dump_json())
                for e in events
            ],
        )

    def query(self, query: EventQuery) -> list[StoredEvent]:
        if query.limit < 1:
            return []  # SQLite reads a negative LIMIT as "no limit"
        where: list[str] = []
        args: list[object] = []
        if query.cluster_id is not None:
            where.append("cluster_id = ?")
            args.append(query.cluster_id)
        if query.since is not None:
            where.append("at >= ?")
            args.append(query.since.timestamp())
        if query.types:
            where.append(f"type IN ({', '.join('?' for _ in query.types)})")
            args.extend(query.types)
        sql = "SELECT body, stored_at FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, seq DESC LIMIT ?"
        args.append(query.limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            StoredEvent(
                event=Event.model_validate_json(body),
                stored_at=datetime.fromtimestamp(stored_at, UTC),
            )
            for body, stored_at in reversed(rows)
        ]

    def unpublished(self, limit: int) -> list[Event]:
        if limit < 1:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM events WHERE published_at IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [Event.model_validate_json(body) for (body,) in rows]

    def mark_published(self, event_ids: Sequence[str]) -> int:
        now = datetime.now(UTC).timestamp()
        return self._write(
            "UPDATE events SET published_at = ? WHERE event_id = ? AND published_at IS NULL",
            [(now, event_id) for event_id in event_ids],
        )

    def unpublished_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute(
                "SELECT count(*) FROM events WHERE published_at IS NULL"
            ).fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
