"""Safety verdicts: may this action run now, given a fresh view? Pure functions of
(spec, view), so a remediation records exactly what it decided from and why.

The rule of thumb is Patroni's and Orchestrator's: starting a process that is down never
makes things worse; stopping or demoting a live one must leave the cluster able to take
writes without losing acknowledged data. A verdict that cannot be reached (the view lacks
what the rule needs) is a refusal: unsure means no.
"""

from __future__ import annotations

from models.findings.kafka import movable_to_preferred
from models.monitor import Message
from models.spec import ClusterSpec, Kind
from models.view import ClusterView, Role

SERVING = frozenset(
    {Role.LEADER, Role.FOLLOWER, Role.STANDALONE, Role.PRIMARY, Role.SECONDARY}
    | {Role.CONTROLLER, Role.BROKER}
)
# A MongoDB secondary further behind than this is no safe successor when the spec sets no
# max_lag: Patroni's maximum_lag_on_failover plays the same part.
DEFAULT_MONGODB_MAX_LAG_S = 10


class Verdict(Message):
    safe: bool
    reason: str
    """One line an operator reads at 3 a.m.: what was checked and what it found."""


def ok(reason: str) -> Verdict:
    return Verdict(safe=True, reason=reason)


def refuse(reason: str) -> Verdict:
    return Verdict(safe=False, reason=reason)


def start_dead_node(spec: ClusterSpec, view: ClusterView, node_id: str) -> Verdict:
    """Starting a node that is down: it adds a member, it cannot remove one."""
    node = view.node(node_id)
    if node is None:
        return refuse(f"{node_id} is not a node of {spec.cluster_id}")
    if node.reachable:
        return refuse(f"{node_id} is up as {node.role}: nothing to start")
    return ok(f"{node_id} is down ({node.error}); starting it cannot take a member away")


def stop_live_node(spec: ClusterSpec, view: ClusterView, node_id: str) -> Verdict:
    """Stopping (or restarting) a node that serves: only if the rest carry on without it."""
    node = view.node(node_id)
    if node is None:
        return refuse(f"{node_id} is not a node of {spec.cluster_id}")
    if not node.reachable:
        return refuse(f"{node_id} is already down")
    others_down = [
        n.node_id for n in view.nodes if n.node_id != node_id and not _serving(n.role, n.reachable)
    ]
    if others_down:
        return refuse(
            f"{', '.join(others_down)} not serving: stopping {node_id} as well risks the cluster"
        )
    if spec.kind is Kind.KAFKA:
        return _kafka_stop(view, node_id)
    if spec.kind is Kind.MONGODB:
        return _mongodb_stop(view, node_id)
    return _quorum_stop(view, node_id)


def step_down_primary(spec: ClusterSpec, view: ClusterView) -> Verdict:
    """MongoDB: hand the primary role over, only to an electable secondary close behind."""
    if view.leader is None:
        return refuse("no primary to step down")
    max_lag = spec.expect.max_lag
    limit = DEFAULT_MONGODB_MAX_LAG_S if max_lag is None else max_lag
    lag = {s.node_id: s.lag for s in view.shards if s.role is Role.SECONDARY}
    candidates = []
    for node in view.nodes:
        if not node.reachable or node.role is not Role.SECONDARY:
            continue
        if node.facts.get("priority", 1) == 0 or node.facts.get("votes", 1) == 0:
            continue
        if node.facts.get("hidden") is True:
            continue
        behind = lag.get(node.node_id)
        if behind is not None and behind <= limit:
            candidates.append(f"{node.node_id} ({behind} s behind)")
    if not candidates:
        return refuse(
            f"no electable secondary within {limit} s of {view.leader}: stepping down"
            " would leave the set without a primary or lose writes"
        )
    return ok(f"electable secondaries within {limit} s: {', '.join(candidates)}")


def preferred_leader_election(spec: ClusterSpec, view: ClusterView) -> Verdict:
    """Kafka: move leadership back to preferred replicas, only where they are in sync."""
    offline = [s.shard_id for s in view.shards if s.node_id is None]
    if offline:
        return refuse(f"{len(offline)} partition(s) offline: fix those first")
    moved = [
        s
        for s in view.shards
        if s.node_id is not None and s.replicas and s.node_id != s.replicas[0]
    ]
    if not moved:
        return refuse("every partition is led by its preferred replica: nothing to elect")
    eligible = movable_to_preferred(moved)
    if not eligible:
        return refuse("no preferred replica is in sync: an election would fail")
    return ok(f"{len(eligible)} partition(s) can move back to an in-sync preferred replica")


def _serving(role: Role, reachable: bool) -> bool:
    return reachable and (role in SERVING or role in (Role.ARBITER, Role.OBSERVER, Role.ROUTER))


def _quorum_stop(view: ClusterView, node_id: str) -> Verdict:
    if view.voting_alive is None or view.voting_configured is None:
        return refuse("the view does not say how many voting members are alive")
    after = view.voting_alive - 1
    if after <= view.voting_configured // 2:
        return refuse(
            f"stopping {node_id} leaves {after} of {view.voting_configured} voting members:"
            " the quorum would be lost"
        )
    return ok(f"{after} of {view.voting_configured} voting members stay: quorum kept")


def _kafka_stop(view: ClusterView, node_id: str) -> Verdict:
    quorum = _quorum_stop(view, node_id)
    if not quorum.safe:
        return quorum
    under = [s.shard_id for s in view.shards if len(s.in_sync) < len(s.replicas)]
    if under:
        return refuse(f"{len(under)} partition(s) under-replicated: wait for them first")
    would_drop = [
        s.shard_id
        for s in view.shards
        if node_id in s.in_sync and s.min_in_sync is not None and len(s.in_sync) - 1 < s.min_in_sync
    ]
    if would_drop:
        return refuse(
            f"stopping {node_id} drops {len(would_drop)} partition(s) below"
            f" min.insync.replicas, e.g. {would_drop[0]}"
        )
    return ok(f"every partition keeps min.insync.replicas without {node_id}; {quorum.reason}")


def _mongodb_stop(view: ClusterView, node_id: str) -> Verdict:
    if view.leader == node_id:
        return refuse(f"{node_id} is the primary: step it down first")
    quorum = _quorum_stop(view, node_id)
    if not quorum.safe:
        return quorum
    for set_name in sorted({s.shard_id for s in view.shards if s.node_id == node_id}):
        needed = view.facts.get(f"{set_name}.write_majority_count")
        if not isinstance(needed, int):
            return refuse(f"the view does not give {set_name}'s write majority")
        bearing = [
            s.node_id
            for s in view.shards
            if s.shard_id == set_name
            and s.node_id != node_id
            and s.role in (Role.PRIMARY, Role.SECONDARY)
        ]
        if len(bearing) < needed:
            return refuse(
                f"without {node_id}, {set_name} has {len(bearing)} data-bearing members"
                f" for a write majority of {needed}: majority writes would stop"
            )
    return ok(f"majority writes keep going without {node_id}; {quorum.reason}")
