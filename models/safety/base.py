"""What a safety verdict is, and the rules no kind changes: starting a node that is down,
whether the rest of the cluster serves, and the voting quorum left after a stop.

Pure decisions from values, as Strimzi's `KafkaQuorumCheck.isQuorumHealthyWithoutNode`: the
probe that made the view is the only I/O, and it happened elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

from models.base import Message
from models.spec import ClusterSpec
from models.view import ClusterView, NodeStatus, Role

SERVING = frozenset(
    {Role.LEADER, Role.FOLLOWER, Role.STANDALONE, Role.PRIMARY, Role.SECONDARY}
    | {Role.CONTROLLER, Role.BROKER}
)
"""Roles of a node that takes part in serving (a waited-for node is back when it has one)."""
SERVING_OR_PASSIVE = SERVING | {Role.ARBITER, Role.OBSERVER, Role.ROUTER}
"""Roles that count as up when deciding whether another node may be stopped."""


class Verdict(Message):
    safe: bool
    reason: str
    """One line an operator reads at 3 a.m.: what was checked and what it found."""


def ok(reason: str) -> Verdict:
    return Verdict(safe=True, reason=reason)


def refuse(reason: str) -> Verdict:
    return Verdict(safe=False, reason=reason)


StopRule = Callable[[ClusterSpec, ClusterView, str], Verdict]
"""A kind's verdict on stopping `node_id`, asked once the rules here let it through: the
node is known, up, and every other node serves."""


def start_dead_node(spec: ClusterSpec, view: ClusterView, node_id: str) -> Verdict:
    """Starting a node that is down: it adds a member, it cannot remove one."""
    node = view.node(node_id)
    if node is None:
        return refuse(f"{node_id} is not a node of {spec.cluster_id}")
    if node.reachable:
        return refuse(f"{node_id} is up as {node.role}: nothing to start")
    return ok(f"{node_id} is down ({node.error}); starting it cannot take a member away")


def others_serve(spec: ClusterSpec, view: ClusterView, node_id: str) -> Verdict:
    """Before any kind's own rule on stopping `node_id`: it is a live node, and no other
    node is down or out of service already."""
    node = view.node(node_id)
    if node is None:
        return refuse(f"{node_id} is not a node of {spec.cluster_id}")
    if not node.reachable:
        return refuse(f"{node_id} is already down")
    others_down = [n.node_id for n in view.nodes if n.node_id != node_id and not _serving(n)]
    if others_down:
        return refuse(
            f"{', '.join(others_down)} not serving: stopping {node_id} as well risks the cluster"
        )
    return ok(f"every node but {node_id} serves")


def keeps_quorum(view: ClusterView, node_id: str) -> Verdict:
    """The voting members left once `node_id` stops are still a majority of those
    configured (ZooKeeper's ensemble, Kafka's KRaft controllers, MongoDB's voters)."""
    if view.voting_alive is None or view.voting_configured is None:
        return refuse("the view does not say how many voting members are alive")
    after = view.voting_alive - 1
    if after <= view.voting_configured // 2:
        return refuse(
            f"stopping {node_id} leaves {after} of {view.voting_configured} voting members:"
            " the quorum would be lost"
        )
    return ok(f"{after} of {view.voting_configured} voting members stay: quorum kept")


def _serving(node: NodeStatus) -> bool:
    return node.reachable and node.role in SERVING_OR_PASSIVE
