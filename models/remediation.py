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
from models.safety import Verdict
from models.spec import ClusterSpec, Policy


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


class Step(Message):
    name: str
    """Unique in its plan; with the workflow id, the agent's idempotency key."""
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


class RemediationStatus(Message):
    workflow_id: str
    cluster_id: str
    playbook: str
    target: str | None
    finding: str | None
    policy: Policy
    dry_run: bool
    state: State
    outcome: Outcome | None
    verdict: Verdict | None
    steps: list[StepRecord]
    approved: Decision | None = None
    rejected: Decision | None = None
    aborted: Decision | None = None
    approval_deadline: datetime | None = None


class WaitRequest(Message):
    spec: ClusterSpec
    node_id: str
    timeout_s: float = 300.0


def workflow_id(cluster_id: str, what: str) -> str:
    """`remediate/<cluster_id>/<finding key or playbook>`: one remediation of one finding
    at a time, by construction."""
    return f"remediate/{cluster_id}/{what}"


def plan(spec: ClusterSpec, playbook: str, target: str | None) -> list[Step]:
    """The steps of `playbook`; a ValueError names what makes it impossible."""
    if playbook in ("restart_dead_member", "restart_dead_broker"):
        if target is None:
            raise ValueError(f"{playbook} needs a target node")
        if target not in {n.node_id for n in spec.nodes}:
            raise ValueError(f"{target!r} is not a node of {spec.cluster_id}")
        return [
            Step(
                name=f"start-{target}",
                kind=StepKind.SERVICE,
                node_id=target,
                action=ServiceAction.START,
            ),
            Step(name=f"wait-{target}-serving", kind=StepKind.WAIT_SERVING, node_id=target),
        ]
    if playbook == "preferred_leader_election":
        return [
            Step(
                name="elect-preferred-leaders",
                kind=StepKind.ELECT_PREFERRED,
                node_id=spec.cluster_id,
            ),
            Step(
                name="wait-leaders-preferred",
                kind=StepKind.WAIT_PREFERRED,
                node_id=spec.cluster_id,
            ),
        ]
    raise ValueError(f"playbook {playbook!r} has no steps yet")
