"""What crosses Temporal between the monitor workflow, its activities and clients."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from pydantic import Field

from models.base import Message as Message  # re-exported: what crosses Temporal
from models.events import Event
from models.findings import Finding, evaluate
from models.spec import ClusterSpec
from models.view import ClusterView, Health


def monitor_workflow_id(cluster_id: str) -> str:
    return f"monitor/{cluster_id}"


class MonitorInput(Message):
    """Start (or continue-as-new) state of a `ClusterMonitorWorkflow`."""

    spec: ClusterSpec
    view: ClusterView | None = None
    paused: bool = False
    spec_generation: int = 1
    last_leader: str | None = None
    changes_per_run: int = 500
    """Continue-as-new after this many changes (or earlier, when the server suggests it)."""
    remediating: str | None = None
    """Workflow id of the remediation running for this cluster: one at a time."""
    blocked_until: dict[str, datetime] = Field(default_factory=dict)
    """Finding key -> until when a new remediation of it is held back (anti-flapping)."""


class WatchRequest(Message):
    spec: ClusterSpec
    last: ClusterView | None = None
    """The view the workflow holds, as monitors started before `last_key` send it."""
    last_key: str | None = None
    """`watch_key` of the view the workflow holds; the watch returns once what it sees has
    another. A digest rather than the view: a Kafka cluster's view lists every partition,
    and history would carry it twice per change."""


def watch_key(
    spec: ClusterSpec, view: ClusterView, findings: Sequence[Finding] | None = None
) -> str:
    """What the workflow cares about in a view: its signature, and which findings are open
    (a secondary that falls behind the spec's lag threshold changes no role, yet it is
    news). Deterministic, so the workflow and the watch compute the same. `findings`:
    `evaluate(spec, view)`, when the caller has it already."""
    if findings is None:
        findings = evaluate(spec, view)
    key = (view.signature(), tuple(f.key for f in findings))
    return hashlib.sha256(repr(key).encode()).hexdigest()


class EventBatch(Message):
    events: list[Event]


class MonitorStatus(Message):
    cluster_id: str
    kind: str
    paused: bool
    health: Health
    spec_generation: int
    view: ClusterView | None
    findings: list[Finding]
    last_change_at: datetime | None
    remediating: str | None = None


class RemediationFinished(Message):
    """What a remediation the monitor started tells it when it ends."""

    workflow_id: str
    finding: str | None = None
    """None for one started by hand: nothing to block afterwards."""
    outcome: str
