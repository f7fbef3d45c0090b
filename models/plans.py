"""The steps of a remediation and the planners that make them: one pure function per
playbook, from the spec, the playbook's target and a fresh view, so the workflow rebuilds
the same plan on replay and an operator can read it before approving. `PLANS` says which
planner each playbook of models/playbooks.py uses.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from models.base import Kind, Message, ServiceAction
from models.spec import ClusterSpec
from models.view import ClusterView


class StepKind(StrEnum):
    SERVICE = "service"
    """Ask the node's agent to start/stop/restart its service."""
    WAIT_SERVING = "wait_serving"
    """Probe until the node serves again (a member rejoined and synced, a broker back)."""
    ELECT_PREFERRED = "elect_preferred"
    """Kafka: ask the controller to give leadership back to in-sync preferred replicas."""
    WAIT_PREFERRED = "wait_preferred"
    """Probe until no partition that could be led by its preferred replica is led by
    another."""
    WAIT_IN_SYNC = "wait_in_sync"
    """Kafka: probe until no partition is under-replicated."""
    STEP_DOWN = "step_down"
    """MongoDB: ask the primary to step down."""
    WAIT_NEW_LEADER = "wait_new_leader"
    """Probe until a node other than the step's serves as leader / primary."""
    WAIT_CAUGHT_UP = "wait_caught_up"
    """MongoDB: probe until the node, a secondary again, is within the lag limit."""


class Step(Message):
    name: str
    """Unique in its plan; with the workflow and run ids, the agent's idempotency key."""
    kind: StepKind
    node_id: str
    """The node acted on; the cluster id for steps on the whole cluster."""
    action: ServiceAction | None = None
    stops_service: bool = False
    """The step takes a live service away: its safety verdict is checked again, on a fresh
    view, right before it runs."""


Planner = Callable[[ClusterSpec, str | None, ClusterView], list[Step]]
"""A playbook's steps on (spec, target, view); a ValueError names what makes it impossible.
A playbook that needs a target is only planned with one."""


def restart_dead(spec: ClusterSpec, target: str | None, view: ClusterView) -> list[Step]:
    """Start the target, then wait until it serves."""
    assert target is not None
    return [_service(target, ServiceAction.START), _wait(StepKind.WAIT_SERVING, target)]


def restart_dead_caught_up(spec: ClusterSpec, target: str | None, view: ClusterView) -> list[Step]:
    """MongoDB: start the target, wait until it serves, then until it has caught up with
    its primary: only then is it a member the set can fail over to."""
    assert target is not None
    return [*restart_dead(spec, target, view), _wait(StepKind.WAIT_CAUGHT_UP, target)]


def rolling_restart(spec: ClusterSpec, target: str | None, view: ClusterView) -> list[Step]:
    """Every node in the spec's order, the leader (ZooKeeper's leader) last: it is restarted
    once, after everyone else is back."""
    return _restarts(spec, view)


def rolling_restart_in_sync(spec: ClusterSpec, target: str | None, view: ClusterView) -> list[Step]:
    """Kafka's rolling restart: the active controller last, zero under-replicated
    partitions between brokers, and a preferred election at the end, which Kafka would
    otherwise do only at its next imbalance check (5 minutes)."""
    return _restarts(spec, view, then=(StepKind.WAIT_IN_SYNC,)) + elect_preferred(
        spec, target, view
    )


def elect_preferred(spec: ClusterSpec, target: str | None, view: ClusterView) -> list[Step]:
    cluster = spec.cluster_id
    return [
        Step(name="elect-preferred-leaders", kind=StepKind.ELECT_PREFERRED, node_id=cluster),
        Step(name="wait-leaders-preferred", kind=StepKind.WAIT_PREFERRED, node_id=cluster),
    ]


def step_down(spec: ClusterSpec, target: str | None, view: ClusterView) -> list[Step]:
    """Step the primary down (the target, if given, must be it), then wait for another."""
    primary = view.leader
    if primary is None:
        raise ValueError(f"{spec.cluster_id} has no primary to step down")
    if target is not None and target != primary:
        raise ValueError(f"{target!r} is not the primary of {spec.cluster_id} ({primary} is)")
    return [
        Step(name=f"step-down-{primary}", kind=StepKind.STEP_DOWN, node_id=primary),
        _wait(StepKind.WAIT_NEW_LEADER, primary),
    ]


def _restarts(spec: ClusterSpec, view: ClusterView, then: tuple[StepKind, ...] = ()) -> list[Step]:
    """Restart and wait for each node, the leader last, each followed by the `then` waits."""
    order = sorted((n.node_id for n in spec.nodes), key=lambda node_id: node_id == view.leader)
    steps: list[Step] = []
    for node_id in order:
        steps += [
            _service(node_id, ServiceAction.RESTART),
            _wait(StepKind.WAIT_SERVING, node_id),
            *(_wait(kind, node_id) for kind in then),
        ]
    return steps


def _service(node_id: str, action: ServiceAction) -> Step:
    return Step(
        name=f"{action.value}-{node_id}",
        kind=StepKind.SERVICE,
        node_id=node_id,
        action=action,
        stops_service=action is not ServiceAction.START,
    )


WAIT_NAMES = {
    StepKind.WAIT_SERVING: "wait-{}-serving",
    StepKind.WAIT_IN_SYNC: "wait-in-sync-after-{}",
    StepKind.WAIT_NEW_LEADER: "wait-primary-other-than-{}",
    StepKind.WAIT_CAUGHT_UP: "wait-{}-caught-up",
}


def _wait(kind: StepKind, node_id: str) -> Step:
    return Step(name=WAIT_NAMES[kind].format(node_id), kind=kind, node_id=node_id)


PLANS: dict[Kind, dict[str, Planner]] = {
    Kind.ZOOKEEPER: {"restart_dead_member": restart_dead, "rolling_restart": rolling_restart},
    Kind.KAFKA: {
        "restart_dead_broker": restart_dead,
        "preferred_leader_election": elect_preferred,
        "rolling_restart": rolling_restart_in_sync,
    },
    Kind.MONGODB: {"restart_dead_member": restart_dead_caught_up, "step_down_primary": step_down},
}
"""Each playbook's planner, by kind and playbook name (models/playbooks.py)."""
