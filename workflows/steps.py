"""The step registry: for each `StepKind`, the activity that runs it and how.

One entry per kind of step, as replicore's `OActionRegistry` maps each action kind to its
handler and timeout: the activity (a reference, or the agent's activity by name), where it
runs (the node's agent task queue, or the core worker's, the workflow's own), how its input
is built, its timeouts, its result type and how the result reads as the step's detail line.
`RemediationWorkflow` runs every step from here, and the core worker registers the core
steps' activities from here, so a new step is one entry (and its activity's module).

The options are those the workflow always gave these activities: recorded histories
replay against the same activity types, inputs and timeouts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.kafka.actions import elect_preferred_leaders
    from activities.mongodb.actions import step_down_primary, wait_caught_up
    from activities.remediation import wait_in_sync, wait_new_leader, wait_preferred, wait_serving
    from models import ClusterSpec, ClusterView
    from models.agent import SERVICE_ACTIVITY, ServiceRequest, ServiceResult, agent_task_queue
    from models.plans import Step, StepKind
    from models.remediation import NodeRequest


class RunsOn(StrEnum):
    AGENT = "agent"
    """The node's agent, on `agent_task_queue(...)`: host-local commands."""
    CORE = "core"
    """A core worker, on the workflow's own task queue: probes and cluster calls."""


@dataclass(frozen=True)
class StepCall:
    """What a step's input is built from."""

    spec: ClusterSpec
    playbook: str
    step: Step
    key: str
    """The idempotency key, `<workflow id>/<run id>#<step name>`."""


Timeout = timedelta | Callable[[ClusterSpec], timedelta]


@dataclass(frozen=True)
class StepActivity:
    activity: Callable[..., Awaitable[Any]] | str
    """The activity: a reference for the core's (the core worker registers it), a name for
    the agent's (the core does not import the agent)."""
    runs_on: RunsOn
    input: Callable[[StepCall], Any]
    start_to_close: timedelta
    heartbeat: Timeout | None
    """None for a short call that does not heartbeat."""
    result_type: type
    detail: Callable[[Any], str]
    """The step's detail line, from its result."""
    summary: Callable[[Step], str]
    """The activity's one-line summary in the Temporal UI."""
    since_patch: str | None = None
    """For a kind of step that plans gained while remediations ran: the patch id under
    which a run takes it (`workflow.patched`). A run from before, replayed, plans without
    it, as it did, so it keeps its history (`in_this_run`)."""

    def task_queue(self, spec: ClusterSpec, step: Step) -> str | None:
        """The node's agent's task queue; None (the workflow's own) for a core step.

        No patch guards the cluster in the name: a replay matches a scheduled activity to
        its history by id and type only, not by queue (tests/histories hold runs that
        scheduled on `node/<node_id>`, and replay)."""
        if self.runs_on is RunsOn.CORE:
            return None
        return agent_task_queue(spec.cluster_id, spec.node(step.node_id).agent_id)

    def schedule_to_start_timeout(self, spec: ClusterSpec) -> timedelta | None:
        """How long an agent step waits for an agent to take it. Temporal retries no
        schedule-to-start timeout (a retry would only queue it again), whatever the retry
        policy: the step fails, and the remediation ends `no_agent`. None for a core step:
        its queue is the one the workflow itself runs on."""
        if self.runs_on is RunsOn.CORE:
            return None
        return timedelta(seconds=spec.remediate.agent_wait_s)

    def heartbeat_timeout(self, spec: ClusterSpec) -> timedelta | None:
        return self.heartbeat(spec) if callable(self.heartbeat) else self.heartbeat


def _service_request(call: StepCall) -> ServiceRequest:
    assert call.step.action is not None
    return ServiceRequest(
        action=call.step.action,
        cluster_id=call.spec.cluster_id,
        node_id=call.step.node_id,
        key=call.key,
        reason=f"{call.playbook}: {call.step.name}",
    )


def _service_summary(step: Step) -> str:
    assert step.action is not None
    return f"{step.action.value} {step.node_id}"


def _service_detail(result: ServiceResult) -> str:
    return f"ran={result.ran} resumed_after_crash={result.resumed_after_crash}"


def _node_request(call: StepCall) -> NodeRequest:
    return NodeRequest(spec=call.spec, node_id=call.step.node_id)


def _probe_heartbeat(spec: ClusterSpec) -> timedelta:
    """A wait heartbeats once a probe round: three rounds missed and its worker is dead."""
    return timedelta(seconds=max(10.0, 3 * spec.probe.interval_s))


def _verified(view: ClusterView) -> str:
    return "verified"


def _on_node(
    activity: Callable[[NodeRequest], Awaitable[Any]],
    result_type: type = ClusterView,
    detail: Callable[[Any], str] = _verified,
    since_patch: str | None = None,
) -> StepActivity:
    """A core step on one node (or the cluster), on a `NodeRequest`: by default a probe
    loop until the node is as the step wants, which returns the view that showed it."""
    return StepActivity(
        activity=activity,
        runs_on=RunsOn.CORE,
        input=_node_request,
        start_to_close=timedelta(minutes=6),
        heartbeat=_probe_heartbeat,
        result_type=result_type,
        detail=detail,
        summary=lambda step: step.name,
        since_patch=since_patch,
    )


STEPS: dict[StepKind, StepActivity] = {
    StepKind.SERVICE: StepActivity(
        activity=SERVICE_ACTIVITY,
        runs_on=RunsOn.AGENT,
        input=_service_request,
        start_to_close=timedelta(minutes=10),
        heartbeat=timedelta(seconds=10),
        result_type=ServiceResult,
        detail=_service_detail,
        summary=_service_summary,
    ),
    StepKind.WAIT_SERVING: _on_node(wait_serving),
    StepKind.ELECT_PREFERRED: StepActivity(
        activity=elect_preferred_leaders,
        runs_on=RunsOn.CORE,
        input=lambda call: call.spec,
        start_to_close=timedelta(minutes=2),
        heartbeat=None,
        result_type=int,
        detail=lambda asked: f"election asked for {asked} partition(s)",
        summary=lambda step: "preferred leader election",
    ),
    StepKind.WAIT_PREFERRED: _on_node(wait_preferred),
    StepKind.WAIT_IN_SYNC: _on_node(wait_in_sync),
    StepKind.STEP_DOWN: _on_node(step_down_primary, result_type=str, detail=lambda what: what),
    StepKind.WAIT_NEW_LEADER: _on_node(wait_new_leader),
    StepKind.WAIT_CAUGHT_UP: _on_node(wait_caught_up, since_patch="step-wait-caught-up"),
}


def in_this_run(steps: list[Step]) -> list[Step]:
    """The steps of a plan that this run takes: all of them, but for those of a kind that
    came with a patch, which only a run that has the patch takes. Workflow code only."""
    return [
        step
        for step in steps
        if (patch := STEPS[step.kind].since_patch) is None or workflow.patched(patch)
    ]


def core_step_activities() -> list[Callable[..., Awaitable[Any]]]:
    """The activities of the steps a core worker runs, each once, for it to register."""
    found: list[Callable[..., Awaitable[Any]]] = []
    for entry in STEPS.values():
        if entry.runs_on is not RunsOn.CORE:
            continue
        if isinstance(entry.activity, str):
            raise TypeError(f"core step activity {entry.activity!r} must be a reference")
        if entry.activity not in found:
            found.append(entry.activity)
    return found
