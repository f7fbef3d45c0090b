"""Writing events to the store (and, later, to the event stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial

from temporalio import activity

from activities.heartbeat import heartbeating
from activities.telemetry import record_stored
from models import Event, EventBatch
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


class GroupedWrites:
    """Appends that arrive while one is being written go into the next, as one write (a
    group commit): a crash seen by a thousand watches at once is a few transactions, not a
    thousand queued on two threads."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._waiting: list[tuple[Sequence[Event], asyncio.Future[bool]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def append(self, events: Sequence[Event]) -> None:
        """Store `events` (ids already stored are kept as they are); raises what the store
        raised. Counted as `record_events` counts, when all of the group was new."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((events, done))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        if await done:
            record_stored(events, datetime.now(UTC))

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            group, self._waiting = self._waiting, []
            events = [event for events, _ in group for event in events]
            try:
                stored = await loop.run_in_executor(WRITES, self.store.append, events)
            except Exception as error:
                for _, done in group:
                    if not done.done():  # its watch was cancelled meanwhile
                        done.set_exception(error)
            else:
                for _, done in group:
                    if not done.done():
                        done.set_result(stored == len(events))
