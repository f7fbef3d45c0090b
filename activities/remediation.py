"""Activities of remediations that run on the core workers (the agent runs the rest)."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.monitor import adapter_for
from models import ClusterView, evaluate
from models.remediation import WaitRequest
from models.safety import SERVING


@activity.defn
async def wait_serving(request: WaitRequest) -> ClusterView:
    """Probe until the node serves again; heartbeats, so an abort cancels it at once.

    Serving, not merely reachable: a ZooKeeper member that answers while it syncs with the
    leader, or a fenced Kafka broker, has not rejoined yet.
    """
    spec = request.spec
    adapter = adapter_for(spec.kind)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.timeout_s
    while True:
        view = await adapter.probe(spec)
        node = view.node(request.node_id)
        if node is not None and node.reachable and node.role in SERVING:
            return view
        if loop.time() >= deadline:
            state = "unknown" if node is None else (node.error or node.role.value)
            raise ApplicationError(
                f"{request.node_id} not serving after {request.timeout_s:.0f} s ({state})",
                non_retryable=True,
            )
        activity.heartbeat(node.role.value if node is not None else None)
        await asyncio.sleep(spec.probe.interval_s)


@activity.defn
async def wait_preferred(request: WaitRequest) -> ClusterView:
    """Probe until no partition that its in-sync preferred replica could lead is led by
    another (the `leader_not_preferred` finding is gone)."""
    spec = request.spec
    adapter = adapter_for(spec.kind)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.timeout_s
    while True:
        view = await adapter.probe(spec)
        left = [f for f in evaluate(spec, view) if f.code == "leader_not_preferred"]
        if not left:
            return view
        if loop.time() >= deadline:
            raise ApplicationError(
                f"still {left[0].message} after {request.timeout_s:.0f} s", non_retryable=True
            )
        activity.heartbeat(left[0].message)
        await asyncio.sleep(spec.probe.interval_s)
