"""Remediations: what crosses Temporal between a `RemediationWorkflow`, its activities,
the monitor and operators, and the plans of the playbooks.

A plan is a list of named steps, computed purely from the spec and a fresh view, so the
workflow can rebuild it on replay and an operator can read it before approving.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from models.agent import ServiceAction
from models.findings import Finding
from models.monitor import Message
from models.playbooks import check_playbooks
from models.safety import (
    Verdict,
    ok,
    preferred_leader_election,
    start_dead_node,
    step_down_primary,
    stop_live_node,
)
from models.spec import ClusterSpec, Kind, Policy
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


class RemediationInput(Message):
    spec: ClusterSpec
    playbook: str
    target: str | None = None
    """The node the playbook acts on, where it acts on one (the finding's subject)."""
    finding: Finding | None = None
    """What started it; None when an operator did (`replicante remediate`)."""
    policy: Policy = Policy.APPROVE
    dry_run: bool = False
    approval_timeout_s: float = Field(default=3600.0, gt=0)
    requested_by: str = "monitor"
    notify_monitor: bool = False
    """Signal `remediation_finished` to the cluster's monitor at the end: it started this
    one and holds the cluster's other remediations until then."""


class RemediationRequest(Message):
    """`replicante remediate`: what an operator asks the cluster's monitor to start. The
    monitor starts it, so a remediation by hand and the monitor's own never overlap."""

    playbook: str
    target: str | None = None
    policy: Policy = Policy.APPROVE
    dry_run: bool = False
    requested_by: str = Field(min_length=1, max_length=200)


class State(StrEnum):
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"


class Outcome(StrEnum):
    HEALED = "healed"
    REFUSED = "refused"
    """The safety gate said acting would risk data or availability."""
    REJECTED = "rejected"
    EXPIRED = "expired"
    """Nobody approved before the deadline."""
    ABORTED = "aborted"
    UNNEEDED = "unneeded"
    """The finding cleared by itself before anything was done."""
    FAILED = "failed"
    DRY_RUN = "dry_run"


class StepRecord(Message):
    step: Step
    state: str = "pending"
    """pending, running, done, failed, skipped."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str = ""


class Decision(Message):
    """An operator's approve, reject or abort."""

    by: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)
    at: datetime | None = None
    """When it reached the remediation: set by the workflow, whatever the sender says."""


class RemediationStatus(Message):
    workflow_id: str
    cluster_id: str
    playbook: str
    target: str | None
    finding: str | None
    policy: Policy
    dry_run: bool
    requested_by: str = "monitor"
    requested_at: datetime | None = None
    state: State
    outcome: Outcome | None
    verdict: Verdict | None
    steps: list[StepRecord]
    approved: Decision | None = None
    rejected: Decision | None = None
    aborted: Decision | None = None
    approval_deadline: datetime | None = None
    paused: bool = False
    """Held by `pause`: no step starts until `resume` (also while awaiting approval)."""
    why: str = ""
    """Why it ended as it did, once finished."""


class NodeRequest(Message):
    """A core-worker step on one node (or the whole cluster): a wait, a step-down."""

    spec: ClusterSpec
    node_id: str
    timeout_s: float = 300.0


def workflow_id(cluster_id: str, what: str) -> str:
    """`remediate/<cluster_id>/<finding key or playbook>`: one remediation of one finding
    at a time, by construction."""
    return f"remediate/{cluster_id}/{what}"


NEEDS_TARGET = frozenset({"restart_dead_member", "restart_dead_broker"})


def check(spec: ClusterSpec, playbook: str, target: str | None) -> None:
    """What makes a request impossible whatever the cluster's state, as a ValueError."""
    check_playbooks(spec.kind.value, [playbook])
    if playbook in NEEDS_TARGET and target is None:
        raise ValueError(f"{playbook} needs a target node")
    if target is not None and target not in {n.node_id for n in spec.nodes}:
        raise ValueError(f"{target!r} is not a node of {spec.cluster_id}")


def plan(spec: ClusterSpec, playbook: str, target: str | None, view: ClusterView) -> list[Step]:
    """The steps of `playbook` on the cluster as `view` shows it; a ValueError names what
    makes it impossible. Pure, so a replay rebuilds the same plan from the recorded view."""
    check(spec, playbook, target)
    if playbook in NEEDS_TARGET:
        assert target is not None
        return [_service(target, ServiceAction.START), _wait(StepKind.WAIT_SERVING, target)]
    if playbook == "preferred_leader_election":
        return _elect_preferred(spec)
    if playbook == "rolling_restart":
        return _rolling_restart(spec, view)
    if playbook == "step_down_primary":
        primary = view.leader
        if primary is None:
            raise ValueError(f"{spec.cluster_id} has no primary to step down")
        if target is not None and target != primary:
            raise ValueError(f"{target!r} is not the primary of {spec.cluster_id} ({primary} is)")
        return [
            Step(name=f"step-down-{primary}", kind=StepKind.STEP_DOWN, node_id=primary),
            _wait(StepKind.WAIT_NEW_LEADER, primary),
        ]
    raise ValueError(f"playbook {playbook!r} has no steps")


def _rolling_restart(spec: ClusterSpec, view: ClusterView) -> list[Step]:
    """Every node in the spec's order, the leader (ZooKeeper's leader, Kafka's active
    controller) last: it is restarted once, after everyone else is back. Kafka waits for
    zero under-replicated partitions between brokers and ends with a preferred election,
    which it would otherwise do only at its next imbalance check (5 minutes)."""
    order = sorted((n.node_id for n in spec.nodes), key=lambda node_id: node_id == view.leader)
    steps: list[Step] = []
    for node_id in order:
        steps += [
            _service(node_id, ServiceAction.RESTART),
            _wait(StepKind.WAIT_SERVING, node_id),
        ]
        if spec.kind is Kind.KAFKA:
            steps.append(_wait(StepKind.WAIT_IN_SYNC, node_id))
    if spec.kind is Kind.KAFKA:
        steps += _elect_preferred(spec)
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
}


def _wait(kind: StepKind, node_id: str) -> Step:
    return Step(name=WAIT_NAMES[kind].format(node_id), kind=kind, node_id=node_id)


def _elect_preferred(spec: ClusterSpec) -> list[Step]:
    cluster = spec.cluster_id
    return [
        Step(name="elect-preferred-leaders", kind=StepKind.ELECT_PREFERRED, node_id=cluster),
        Step(name="wait-leaders-preferred", kind=StepKind.WAIT_PREFERRED, node_id=cluster),
    ]


def gate(spec: ClusterSpec, view: ClusterView, step: Step) -> Verdict:
    """The safety verdict on running `step` now: asked of a plan's first step, and again
    of every step that takes a live service away, right before it runs."""
    if step.kind is StepKind.SERVICE and step.action is ServiceAction.START:
        return start_dead_node(spec, view, step.node_id)
    if step.kind is StepKind.SERVICE:
        return stop_live_node(spec, view, step.node_id)
    if step.kind is StepKind.STEP_DOWN:
        return step_down_primary(spec, view)
    if step.kind is StepKind.ELECT_PREFERRED:
        return preferred_leader_election(spec, view)
    return ok("only watches the cluster")
