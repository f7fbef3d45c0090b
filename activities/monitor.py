"""Probe and watch activities: the only place the monitor touches the network.

`watch_cluster` follows temporalio/samples-python `polling/frequent`: one long
activity that loops, heartbeats each round and returns only when the view changed in
a way the workflow cares about (`ClusterView.signature`) or after `watch_max_s`.
History then grows with changes, not with time.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager, nullcontext

from temporalio import activity

from activities.kinds import adapter_for
from activities.telemetry import gauge_findings
from activities.waits import woken
from models import ClusterSpec, ClusterView, WatchRequest, evaluate, watch_key


@activity.defn
async def probe_cluster(spec: ClusterSpec) -> ClusterView:
    return await adapter_for(spec.kind).probe(spec)


@activity.defn
async def watch_cluster(request: WatchRequest) -> ClusterView:
    spec = request.spec
    adapter = adapter_for(spec.kind)
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def on_link_change() -> None:
        loop.call_soon_threadsafe(wake.set)

    links: AbstractContextManager[None] = (
        adapter.hold_links(spec, on_link_change) if spec.probe.hold_connections else nullcontext()
    )
    deadline = loop.time() + spec.probe.watch_max_s
    last = request.last_key
    if last is None and request.last is not None:
        last = watch_key(spec, request.last)
    # Opening and closing links may block on client threads: keep that off the loop.
    await asyncio.to_thread(links.__enter__)
    try:
        while True:
            wake.clear()
            view = await adapter.probe(spec)
            findings = evaluate(spec, view)
            gauge_findings(spec, findings)
            if watch_key(spec, view, findings) != last or loop.time() >= deadline:
                return view
            activity.heartbeat()
            wait = min(spec.probe.interval_s, max(deadline - loop.time(), 0.0))
            await woken(wake, wait)
    finally:
        # Closing a dead member's link takes ~75 ms: not worth delaying the news for.
        # Every link is closed by the adapter within its own bound.
        loop.run_in_executor(None, links.__exit__, None, None, None)
