"""Probe and watch activities: the only place the monitor touches the network.

`watch_cluster` follows temporalio/samples-python `polling/frequent`: one long
activity that loops, heartbeats each round and returns only when the view changed in
a way the workflow cares about (`ClusterView.signature`) or after `watch_max_s`.
History then grows with changes, not with time.

A watch that saw the change happen (its own earlier round held the workflow's view) also
stores the change's view events (`view_changes`: nodes, leader, quorum) before it returns,
under the ids the workflow gives the same events (`WatchRequest.change`): the news reaches
the store as fast as the watch saw it, whatever queue the workflow's task waits in. The
workflow's own write stays the one that cannot be lost (it retries until stored); the store
keeps the first of the two. A watch the workflow no longer waits for (cancelled by a pause
or a new spec, or given up for a retry elsewhere) learns so only at its next heartbeat,
seconds later: so before it writes, it asks the server whether it is still the one running.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractContextManager, nullcontext

from temporalio import activity
from temporalio.api.enums.v1 import PendingActivityState

from activities.events import GroupedWrites
from activities.kinds import adapter_for
from activities.links import NO_LINKS, LinkStates
from activities.telemetry import gauge_findings
from activities.waits import woken
from models import (
    ClusterSpec,
    ClusterView,
    WatchRequest,
    change_event_id,
    evaluate,
    view_changes,
    watch_key,
)
from store import EventStore

log = logging.getLogger("replicante.watch")


@activity.defn
async def probe_cluster(spec: ClusterSpec) -> ClusterView:
    return await adapter_for(spec.kind).probe(spec)


class WatchActivities:
    """The watch, with the store it tells changes to (samples' class idiom)."""

    def __init__(self, store: EventStore) -> None:
        self.writes = GroupedWrites(store)

    @activity.defn(name="watch_cluster")
    async def watch_cluster(self, request: WatchRequest) -> ClusterView:
        spec = request.spec
        adapter = adapter_for(spec.kind)
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def on_link_change() -> None:
            loop.call_soon_threadsafe(wake.set)

        links: AbstractContextManager[LinkStates] = (
            adapter.hold_links(spec, on_link_change)
            if spec.probe.hold_connections
            else nullcontext(NO_LINKS)
        )
        deadline = loop.time() + spec.probe.watch_max_s
        last = request.last_key
        if last is None and request.last is not None:
            last = watch_key(spec, request.last)
        held: ClusterView | None = None
        """A view of this watch with the workflow's key: what the change, if this watch
        sees one, is a change from."""
        # Opening and closing links may block on client threads: keep that off the loop.
        probe = adapter.prober(spec, await asyncio.to_thread(links.__enter__))
        try:
            while True:
                wake.clear()
                view = await probe()
                findings = evaluate(spec, view)
                gauge_findings(spec, findings)
                if watch_key(spec, view, findings) != last:
                    if held is not None and request.change is not None:
                        await self._tell(request, request.change, held, view)
                    return view
                if loop.time() >= deadline:
                    return view
                held = view
                activity.heartbeat()
                wait = min(spec.probe.interval_s, max(deadline - loop.time(), 0.0))
                await woken(wake, wait)
        finally:
            # Closing a dead member's link takes ~75 ms: not worth delaying the news for.
            # Every link is closed by the adapter within its own bound.
            loop.run_in_executor(None, links.__exit__, None, None, None)

    async def _tell(
        self,
        request: WatchRequest,
        change: str,
        before: ClusterView,
        after: ClusterView,
    ) -> None:
        """Store the change's view events, as the workflow will make them; a store that fails
        or is slow only leaves them to the workflow's write."""
        drafts = view_changes(before, after, request.last_leader)
        cluster_id, at = request.spec.cluster_id, after.observed_at
        events = [d.event(cluster_id, change_event_id(change, d), at) for d in drafts]
        if not events:
            return
        try:
            async with asyncio.timeout(request.spec.probe.timeout_s):
                if not await self._still_wanted():
                    log.debug("%s: the workflow waits for this watch no more", cluster_id)
                    return
                await self.writes.append(events)
        except Exception as error:
            log.warning(
                "%s: events not stored by the watch, the workflow stores them: %s",
                cluster_id,
                error,
            )

    @staticmethod
    async def _still_wanted() -> bool:
        """Whether the server still counts this attempt as its workflow's running watch: not
        cancelled, not timed out and retried. A read of the workflow's state, no write."""
        info = activity.info()
        if info.workflow_id is None:
            return False
        described = await (
            activity.client()
            .get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
            .describe()
        )
        for pending in described.raw_description.pending_activities:
            if pending.activity_id == info.activity_id:
                return (
                    pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                    and pending.attempt == info.attempt
                )
        return False
