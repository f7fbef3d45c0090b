"""Which store the settings name: MongoDB when a URI is set, else the SQLite file."""

from __future__ import annotations

from config.settings import Settings
from store.base import EventStore
from store.sqlite import SQLiteEventStore


def open_store(settings: Settings) -> EventStore:
    """The worker and the CLI open the store here, so that both read the same one."""
    if settings.store_mongodb_uri:
        # Imported here: pymongo takes a while to import, and the embedded default
        # (every CLI call on a laptop) does not need it.
        from store.mongodb import MongoEventStore

        return MongoEventStore(settings.store_mongodb_uri)
    return SQLiteEventStore(settings.store_path)
