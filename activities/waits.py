"""The probe loop every wait step runs: probe the cluster until it is as the step wants."""

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
