"""MongoDB's safety rules: a member stops only if it is no primary and majority writes go
on without it; the primary steps down only to an electable secondary close behind."""

from __future__ import annotations

from models.safety.base import Verdict, ok, refuse
from models.spec import ClusterSpec
from models.view import ClusterView, NodeStatus, Role

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


def _fact(view: ClusterView, set_name: str, name: str) -> int | None:
    value = view.facts.get(f"{set_name}.{name}")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _votes_in(view: ClusterView, node_id: str) -> bool:
    """Whether the node counts among its set's live voters: unless the view says it has no
    vote (votes 0) or the server does not count it yet (newly added), it is taken to."""
    node = view.node(node_id)
    facts = node.facts if node is not None else {}
    return facts.get("votes", 1) != 0 and facts.get("newly_added") is not True


def balancer_idle(view: ClusterView) -> Verdict:
    """A sharded cluster's balancer must not be in a round: a chunk migration commits with
    w:majority on both shards and through the config servers, so a member stopped under it
    stalls or aborts the migration. A cluster whose balancer the probe could not read is
    not known to be idle."""
    if view.facts.get("topology") != "sharded":
        return ok("not sharded: no balancer")
    in_round = view.facts.get("balancer_in_round")
    if in_round is True:
        return refuse(
            "the balancer is in a round, migrating chunks (balancerStatus inBalancerRound):"
            " wait for it to end, or stop the balancer (sh.stopBalancer()) first"
        )
    if in_round is not False:
        error = view.facts.get("balancer_error")
        return refuse(
            "the view does not say whether the balancer is migrating chunks"
            + (f" (balancerStatus: {error})" if error else "")
        )
    return ok(f"the balancer is idle (mode {view.facts.get('balancer_mode', 'unknown')})")


def stop_member(spec: ClusterSpec, view: ClusterView, node_id: str) -> Verdict:
    """Stopping (or restarting) a member: never the primary (step it down first), never while
    a sharded cluster's balancer migrates chunks, and only if every replica set the member
    bears keeps, without it, a majority of its voters (`majorityVoteCount`, as the server
    counts them: newly added members have no vote yet) and enough members able to
    acknowledge w:majority (`writeMajorityCount`): voting, data-bearing and not delayed. A
    votes-0 secondary, an arbiter or a delayed secondary never keeps majority writes going."""
    if view.leader == node_id:
        return refuse(f"{node_id} is the primary: step it down first")
    balancer = balancer_idle(view)
    if not balancer.safe:
        return balancer
    sets = sorted({s.shard_id for s in view.shards if s.node_id == node_id})
    if not sets:
        return refuse(f"{node_id} is no member of a replica set in the view")
    kept = []
    for set_name in sets:
        members = [s for s in view.shards if s.shard_id == set_name]
        if any(s.role is Role.PRIMARY and s.node_id == node_id for s in members):
            return refuse(f"{node_id} is the primary of {set_name}: step it down first")
        alive = _fact(view, set_name, "voting_alive")
        majority = _fact(view, set_name, "majority_vote_count")
        needed = _fact(view, set_name, "write_majority_count")
        if alive is None or majority is None or needed is None:
            return refuse(f"the view does not give {set_name}'s voters and majorities")
        after = alive - 1 if _votes_in(view, node_id) else alive
        if after < majority:
            return refuse(
                f"without {node_id}, {set_name} has {after} live voting members for a"
                f" majority of {majority}: it could not keep or elect a primary"
            )
        acknowledging = [n for n in members[0].in_sync if n != node_id]
        if len(acknowledging) < needed:
            return refuse(
                f"without {node_id}, {set_name} has {len(acknowledging)} members that can"
                f" acknowledge w:majority writes ({', '.join(acknowledging) or 'none'}) for a"
                f" write majority of {needed}: majority writes would stop"
            )
        kept.append(
            f"{set_name} keeps {after} live voters (majority {majority}) and"
            f" {', '.join(acknowledging)} to acknowledge w:majority (needs {needed})"
        )
    return ok(f"majority writes keep going without {node_id}: {'; '.join(kept)}")


def unelectable(node: NodeStatus) -> str | None:
    """Why the set would never elect this secondary, in a word; None if it could. As
    TopologyCoordinator decides: priority 0 (hidden and delayed members must have it, a
    newly added member has it in effect), no vote, or a member the primary's heartbeats do
    not reach."""
    facts = node.facts
    for reason, unfit in (
        ("priority 0", facts.get("priority", 1) == 0),
        ("no vote", facts.get("votes", 1) == 0),
        ("hidden", facts.get("hidden") is True),
        ("delayed", bool(facts.get("secondary_delay_s", 0))),
        ("newly added", facts.get("newly_added") is True),
        ("unhealthy to the set", facts.get("health", 1) != 1),
    ):
        if unfit:
            return reason
    return None


def step_down_primary(spec: ClusterSpec, view: ClusterView) -> Verdict:
    """Hand the primary role over, only to an electable secondary close behind: the server
    steps down only once such a one has caught up (secondaryCatchUpPeriodSecs), and a
    secondary it cannot elect would leave the set without a primary."""
    if view.leader is None:
        return refuse("no primary to step down")
    limit = lag_limit(spec)
    lag = {s.node_id: s.lag for s in view.shards if s.role is Role.SECONDARY}
    candidates, passed = [], []
    for node in view.nodes:
        if not node.reachable or node.role is not Role.SECONDARY:
            continue
        if (why := unelectable(node)) is not None:
            passed.append(f"{node.node_id} ({why})")
            continue
        behind = lag.get(node.node_id)
        if behind is not None and behind <= limit:
            candidates.append(f"{node.node_id} ({behind} s behind)")
    if not candidates:
        return refuse(
            f"no electable secondary within {limit} s of {view.leader}: stepping down"
            " would leave the set without a primary or lose writes"
            + (f"; never electable: {', '.join(passed)}" if passed else "")
        )
    return ok(f"electable secondaries within {limit} s: {', '.join(candidates)}")
