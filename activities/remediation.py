"""Activities of remediations that run on the core workers (the agent runs the rest)."""

from __future__ import annotations

from temporalio import activity

from activities.kinds import adapter_for
from activities.waits import probe_until
from models import ClusterView, evaluate
from models.remediation import NodeRequest
from models.safety import SERVING


@activity.defn
async def wait_serving(request: NodeRequest) -> ClusterView:
    """Probe until the node serves again.

    Serving, not merely reachable: a ZooKeeper member that answers while it syncs with the
    leader, or a fenced Kafka broker, has not rejoined yet.
    """

    def missing(view: ClusterView) -> str | None:
        node = view.node(request.node_id)
        if node is not None and node.reachable and node.role in SERVING:
            return None
        state = "unknown" if node is None else (node.error or node.role.value)
        return f"{request.node_id} not serving ({state})"

    return await probe_until(adapter_for(request.spec.kind), request, missing)


@activity.defn
async def wait_preferred(request: NodeRequest) -> ClusterView:
    """Probe until no partition that its in-sync preferred replica could lead is led by
    another (the `leader_not_preferred` finding is gone)."""

    def missing(view: ClusterView) -> str | None:
        left = [f for f in evaluate(request.spec, view) if f.code == "leader_not_preferred"]
        return f"still {left[0].message}" if left else None

    return await probe_until(adapter_for(request.spec.kind), request, missing)


@activity.defn
async def wait_in_sync(request: NodeRequest) -> ClusterView:
    """Kafka: probe until no partition is under-replicated, so the next broker's stop
    takes no partition's last spare replica."""

    def missing(view: ClusterView) -> str | None:
        under = [s.shard_id for s in view.shards if len(s.in_sync) < len(s.replicas)]
        return f"{len(under)} partition(s) under-replicated, e.g. {under[0]}" if under else None

    return await probe_until(adapter_for(request.spec.kind), request, missing)


@activity.defn
async def wait_new_leader(request: NodeRequest) -> ClusterView:
    """Probe until a node other than the old leader leads and serves (a stepped-down
    MongoDB primary's successor is elected)."""

    def missing(view: ClusterView) -> str | None:
        leader = view.node(view.leader) if view.leader is not None else None
        if leader is not None and leader.node_id != request.node_id and leader.role in SERVING:
            return None
        return f"no leader other than {request.node_id} yet (leader: {view.leader})"

    return await probe_until(adapter_for(request.spec.kind), request, missing)
