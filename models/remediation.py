"""Remediations: what crosses Temporal between a `RemediationWorkflow`, its activities,
the monitor and operators, and the plans of the playbooks.

A plan is a list of named steps (models/plans.py), computed purely from the spec and a
fresh view by the playbook's planner (models/playbooks.py), so the workflow can rebuild it
on replay and an operator can read it before approving.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from models.base import MAX_REASON, Message, ServiceAction
from models.findings import Finding
from models.monitor import Outcome
from models.plans import PLANS, Step
from models.plans import StepKind as StepKind
from models.playbooks import playbook_of
from models.safety import (
    Verdict,
    ok,
    preferred_leader_election,
    start_dead_node,
    step_down_primary,
    stop_live_node,
)
from models.spec import ClusterSpec, Policy
from models.view import ClusterView


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


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Refused by its safety gate right before it would have run."""

    @property
    def ended(self) -> bool:
        return self in (StepState.DONE, StepState.FAILED, StepState.SKIPPED)


class StepRecord(Message):
    step: Step
    state: StepState = StepState.PENDING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str = ""


class Decision(Message):
    """An operator's approve, reject or abort."""

    by: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=MAX_REASON)
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


PREFIX = "remediate/"
"""What every remediation's workflow id starts with, and no other workflow's."""


def workflow_id(cluster_id: str, what: str) -> str:
    """`remediate/<cluster_id>/<finding key or playbook>`: one remediation of one finding
    at a time, by construction."""
    return f"{PREFIX}{cluster_id}/{what}"


def check(spec: ClusterSpec, playbook: str, target: str | None) -> None:
    """What makes a request impossible whatever the cluster's state, as a ValueError."""
    if playbook_of(spec.kind, playbook).needs_target and target is None:
        raise ValueError(f"{playbook} needs a target node")
    if target is not None and target not in {n.node_id for n in spec.nodes}:
        raise ValueError(f"{target!r} is not a node of {spec.cluster_id}")


def plan(spec: ClusterSpec, playbook: str, target: str | None, view: ClusterView) -> list[Step]:
    """The steps of `playbook` on the cluster as `view` shows it; a ValueError names what
    makes it impossible. Pure, so a replay rebuilds the same plan from the recorded view."""
    check(spec, playbook, target)
    return PLANS[spec.kind][playbook](spec, target, view)


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
