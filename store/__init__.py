"""Where events are kept: the audit log. SQLite is the embedded default."""

from store.base import EventQuery, EventStore, StoredEvent, StoreError
from store.open import open_store
from store.sqlite import SQLiteEventStore

__all__ = [
    "EventQuery",
    "EventStore",
    "SQLiteEventStore",
    "StoreError",
    "StoredEvent",
    "open_store",
]
