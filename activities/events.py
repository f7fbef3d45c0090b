"""Writing events to the store (and, later, to the event stream)."""

from __future__ import annotations

import asyncio

from temporalio import activity

from models import EventBatch
from store import EventStore


class EventActivities:
    """Activities that need the store, wired by the worker (samples' class idiom)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    @activity.defn
    async def record_events(self, batch: EventBatch) -> int:
        stored = await asyncio.to_thread(self.store.append, batch.events)
        activity.logger.info("stored %d new of %d events", stored, len(batch.events))
        return stored
