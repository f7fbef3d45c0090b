"""Activities of remediations that run on the core workers (the agent runs the rest)."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.monitor import adapter_for
from models import ClusterView
from models.remediation import WaitServingRequest
from models.safety import SERVING


@activity.defn
async def wait_serving(request: WaitServingRequest) -> ClusterView:
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
