"""Writing events to the store (and, later, to the event stream)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial

from temporalio import activity

from activities.heartbeat import heartbeating
from activities.telemetry import record_stored
from models import EventBatch
from store import EventStore

WRITES = ThreadPoolExecutor(max_workers=2, thread_name_prefix="event-writes")
"""Event writes wait on threads of their own: in the loop's default pool they queued behind
probes' blocking calls, and a spec of unresolvable hosts (lookups that hold a thread for
seconds) delayed every cluster's node.down by as much."""


class EventActivities:
    """Activities that need the store, wired by the worker (samples' class idiom)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    @activity.defn
    async def record_events(self, batch: EventBatch) -> int:
        stored = await heartbeating(partial(self.store.append, batch.events), 1.0, executor=WRITES)
        activity.logger.info("stored %d new of %d events", stored, len(batch.events))
        # Fewer than all: a retried write, whose events were counted when first stored (a
        # write that failed halfway, storing some, goes uncounted: which ones is unknown).
        if stored == len(batch.events):
            record_stored(batch.events, datetime.now(UTC))
        return stored
