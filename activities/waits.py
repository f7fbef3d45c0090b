"""Waiting in activities: the probe loop every wait step runs (probe the cluster until it is
as the step wants), and a wait on an event that a cancel always ends.

No `asyncio.wait_for` in activities: on Python 3.11 it swallows a cancel that lands in the
tick its awaitable completes (cpython#86296, fixed in 3.12). The watch waited on its wake
event that way: a worker shutting down cancelled it in that tick, the watch went on probing
until its `watch_max_s` (10 minutes), and the shutdown waited for it (the stalls seen in
the suite). `asyncio.timeout` counts cancels, and loses none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.adapter import Adapter
from models import ClusterView
from models.remediation import NodeRequest


async def probe_until(
    adapter: Adapter[object], request: NodeRequest, missing: Callable[[ClusterView], str | None]
) -> ClusterView:
    """Probe every interval until `missing(view)` is None, heartbeating what is still
    missing (so an abort cancels the wait at once); past the timeout, fail saying it."""
    spec = request.spec
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.timeout_s
    while True:
        view = await adapter.probe(spec)
        still = missing(view)
        if still is None:
            return view
        if loop.time() >= deadline:
            raise ApplicationError(f"{still} after {request.timeout_s:.0f} s", non_retryable=True)
        activity.heartbeat(still)
        await asyncio.sleep(spec.probe.interval_s)


async def woken(event: asyncio.Event, within: float) -> bool:
    """Whether `event` was set within `within` seconds; a cancel meanwhile propagates."""
    try:
        async with asyncio.timeout(within):
            await event.wait()
    except TimeoutError:
        return False
    return True
