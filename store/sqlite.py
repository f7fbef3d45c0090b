"""Embedded event store: one SQLite file, append-only."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from models import Event
from store.base import EventQuery, EventStore, StoredEvent

SCHEMA = """
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


class SQLiteEventStore(EventStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by activity threads; sqlite3 objects are not
        # thread-safe on their own, hence the lock.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def append(self, events: Sequence[Event]) -> int:
        now = datetime.now(UTC).timestamp()
        rows = [
            (e.event_id, e.cluster_id, e.type, e.at.timestamp(), now, e.model_dump_json())
            for e in events
        ]
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO events (event_id, cluster_id, type, at, stored_at, body)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def query(self, query: EventQuery) -> list[StoredEvent]:
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
        sql += " ORDER BY at DESC, rowid DESC LIMIT ?"
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

    def close(self) -> None:
        with self._lock:
            self._db.close()
