"""A kind of step that plans gained while remediations ran (its registry entry names a
patch, workflows/steps.py `since_patch`) is taken by new runs only: a run from before,
replayed, plans without it as it did. On the real Temporal dev server: a history written by
a workflow that plans as the code before `wait_caught_up` did replays against one that
plans through `in_this_run`, and not against one that takes every step."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from models.plans import Step, StepKind
from workflows.steps import STEPS, in_this_run

PLAN = [
    Step(name="start-m2", kind=StepKind.SERVICE, node_id="m2"),
    Step(name="wait-m2-serving", kind=StepKind.WAIT_SERVING, node_id="m2"),
    Step(name="wait-m2-caught-up", kind=StepKind.WAIT_CAUGHT_UP, node_id="m2"),
]
PATCH = STEPS[StepKind.WAIT_CAUGHT_UP].since_patch


@activity.defn
async def take(name: str) -> str:
    return name


async def take_all(steps: list[Step]) -> list[str]:
    """One activity per step, as a remediation schedules one per step."""
    return [
        await workflow.execute_activity(take, s.name, start_to_close_timeout=timedelta(seconds=10))
        for s in steps
    ]


@workflow.defn(name="Plan")
class PlanBefore:
    """Plans as the code did before the caught-up wait existed."""

    @workflow.run
    async def run(self) -> list[str]:
        return await take_all([s for s in PLAN if s.kind is not StepKind.WAIT_CAUGHT_UP])


@workflow.defn(name="Plan")
class PlanNow:
    @workflow.run
    async def run(self) -> list[str]:
        return await take_all(in_this_run(PLAN))


@workflow.defn(name="Plan")
class PlanEverything:
    """What the workflow would do without the patch: take every step of today's plan."""

    @workflow.run
    async def run(self) -> list[str]:
        return await take_all(PLAN)


async def history_of(env: WorkflowEnvironment, plan: type) -> tuple[list[str], WorkflowHistory]:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[plan],
        activities=[take],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await env.client.start_workflow(
            "Plan", id=f"plan-{queue}", task_queue=queue, result_type=list[str]
        )
        taken = await handle.result()
        return taken, await handle.fetch_history()


def markers(history: WorkflowHistory) -> list[str]:
    """Each marker event, as text: a patch's names its id."""
    return [
        str(e.marker_recorded_event_attributes)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]


def replayer(plan: type) -> Replayer:
    return Replayer(workflows=[plan], workflow_runner=UnsandboxedWorkflowRunner())


async def test_a_new_run_takes_the_patched_step_and_says_so_in_its_history(
    temporal_env: WorkflowEnvironment,
) -> None:
    taken, history = await history_of(temporal_env, PlanNow)
    assert taken == ["start-m2", "wait-m2-serving", "wait-m2-caught-up"]
    assert PATCH is not None and any(PATCH in marker for marker in markers(history))
    replayed = await replayer(PlanNow).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None


async def test_a_run_from_before_the_step_replays_without_it(
    temporal_env: WorkflowEnvironment,
) -> None:
    taken, history = await history_of(temporal_env, PlanBefore)
    assert taken == ["start-m2", "wait-m2-serving"]
    kept = await replayer(PlanNow).replay_workflow(history, raise_on_replay_failure=False)
    assert kept.replay_failure is None
    # The control: taking the new step in the old run breaks its replay.
    broken = await replayer(PlanEverything).replay_workflow(history, raise_on_replay_failure=False)
    assert broken.replay_failure is not None
