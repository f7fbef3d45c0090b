"""What crosses Temporal between the monitor workflow, its activities and clients."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from models.base import Kind, Message
from models.events import Event
from models.findings import Finding, evaluate
from models.spec import ClusterSpec
from models.view import ClusterView, Health


def monitor_workflow_id(cluster_id: str) -> str:
    return f"monitor/{cluster_id}"


def watch_task_queue(core_queue: str) -> str:
    """The queue of the watches of monitors on `core_queue`: a queue of their own, so a
    worker's watch slots (one per watched cluster, REPLICANTE_MAX_WATCHES) are counted apart
    from the slots its remediation steps and event writes take, and a worker whose watch
    slots are full leaves the next watch on this queue for a worker with room.

    >>> watch_task_queue("replicante-core")
    'replicante-core/watches'
    """
    return f"{core_queue}/watches"


class MonitorState(BaseModel):
    """What one run of a `ClusterMonitorWorkflow` hands the next at continue-as-new, beside
    its spec: the workflow keeps it as one object that its loop and handlers change in
    place, and puts it whole into the next run's input (samples-python's
    `message_passing/safe_message_handlers`). Not frozen, for that."""

    model_config = ConfigDict(extra="forbid")

    view: ClusterView | None = None
    paused: bool = False
    spec_generation: int = 1
    last_leader: str | None = None
    remediating: str | None = None
    """Workflow id of the remediation running for this cluster: one at a time."""
    blocked_until: dict[str, datetime] = Field(default_factory=dict)
    """Finding key -> until when a new remediation of it is held back (anti-flapping)."""


class MonitorInput(Message):
    """Start (or continue-as-new) input of a `ClusterMonitorWorkflow`: the spec in force
    and the state the previous run handed over (a fresh one at the first start).

    On the wire it is flat, the state's fields beside the spec's, as it was before the state
    was one object: monitors running now were started and continued with that form, so
    their histories replay and workers of either version read each other's runs.
    """

    spec: ClusterSpec
    state: MonitorState = Field(default_factory=MonitorState)
    changes_per_run: int = 500
    """Continue-as-new after this many changes (or earlier, when the server suggests it)."""

    @model_validator(mode="before")
    @classmethod
    def _state_from_flat(cls, data: Any) -> Any:
        if isinstance(data, dict) and "state" not in data:
            carried = MonitorState.model_fields
            state = {k: v for k, v in data.items() if k in carried}
            data = {k: v for k, v in data.items() if k not in carried} | {"state": state}
        return data

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        state = data.pop("state")
        return {"spec": data.pop("spec"), **state, **data}


class WatchRequest(Message):
    spec: ClusterSpec
    last: ClusterView | None = None
    """The view the workflow holds, as monitors started before `last_key` send it."""
    last_key: str | None = None
    """`watch_key` of the view the workflow holds; the watch returns once what it sees has
    another. A digest rather than the view: a Kafka cluster's view lists every partition,
    and history would carry it twice per change."""
    change: str | None = None
    """Set, the watch stores the view events (`view_changes`) of the change it returns
    itself, with ids made from this (`change_event_id`), as the workflow then does: the
    store keeps the first. A
    member's crash seen by 1,000 specs at once is then stored as it is seen, not after
    1,000 trips through Temporal. Unset (monitors started before), only the workflow
    writes."""
    last_leader: str | None = None
    """The workflow's `MonitorState.last_leader`, which `changes` needs as the workflow
    passes it."""


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
    kind: Kind
    paused: bool
    health: Health
    spec_generation: int
    view: ClusterView | None
    findings: list[Finding]
    last_change_at: datetime | None
    remediating: str | None = None


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
    NO_AGENT = "no_agent"
    """No agent took a step on its node's queue within `remediate.agent_wait_s`."""
    DRY_RUN = "dry_run"


class RemediationFinished(Message):
    """What a remediation the monitor started tells it when it ends."""

    workflow_id: str
    finding: str | None = None
    """None for one started by hand: nothing to block afterwards."""
    outcome: Outcome
