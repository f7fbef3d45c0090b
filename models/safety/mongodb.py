"""MongoDB's safety rules: a member stops only if it is no primary and majority writes go
on without it; the primary steps down only to an electable secondary close behind."""

from __future__ import annotations

from models.safety.base import Verdict, keeps_quorum, ok, refuse
from models.spec import ClusterSpec
from models.view import ClusterView, Role

DEFAULT_MAX_LAG_S = 10
"""A secondary further behind than this is no safe successor when the spec sets no
max_lag: Patroni's maximum_lag_on_failover plays the same part."""


def lag_limit(spec: ClusterSpec) -> int:
    """How far behind its primary a secondary may be and still count as caught up."""
    return DEFAULT_MAX_LAG_S if spec.expect.max_lag is None else spec.expect.max_lag


def behind(spec: ClusterSpec, view: ClusterView, node_id: str) -> str | None:
    """What keeps `node_id` from counting as caught up, in one line; None once every
    replica set it bears has it as the primary, an arbiter (which holds no data) or a
    secondary within `lag_limit`. A secondary whose lag the view does not give is not."""
    limit = lag_limit(spec)
    members = [s for s in view.shards if s.node_id == node_id]
    if not members:
        return f"{node_id} is no member of a replica set in the view"
    for member in members:
        if member.role in (Role.PRIMARY, Role.ARBITER):
            continue
        if member.role is not Role.SECONDARY:
            return f"{node_id} is no secondary of {member.shard_id} yet ({member.role.value})"
        if member.lag is None or member.lag > limit:
            lag = "an unknown time" if member.lag is None else f"{member.lag} s"
            return f"{node_id} is {lag} behind in {member.shard_id} (limit {limit} s)"
    return None


def stop_member(spec: ClusterSpec, view: ClusterView, node_id: str) -> Verdict:
    """Stopping (or restarting) a member: never the primary (step it down first), only
    while the voters keep a majority, and only if every replica set it bears keeps enough
    data-bearing members for its write majority."""
    if view.leader == node_id:
        return refuse(f"{node_id} is the primary: step it down first")
    quorum = keeps_quorum(view, node_id)
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


def step_down_primary(spec: ClusterSpec, view: ClusterView) -> Verdict:
    """Hand the primary role over, only to an electable secondary close behind."""
    if view.leader is None:
        return refuse("no primary to step down")
    limit = lag_limit(spec)
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
