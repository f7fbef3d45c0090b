"""The step registry (workflows/steps.py): every kind of step has one entry, and the entries
give the activities the options recorded histories were written with. No servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from activities.kafka.actions import elect_preferred_leaders
from activities.mongodb.actions import step_down_primary, wait_caught_up
from activities.remediation import wait_in_sync, wait_new_leader, wait_preferred, wait_serving
from models import SERVICE_ACTIVITY, ServiceAction, ServiceRequest, ServiceResult
from models.plans import Step, StepKind
from models.remediation import NodeRequest
from tests.views import spec
from workflows.steps import STEPS, RunsOn, StepCall, core_step_activities

ZK = ("zk1", "zk2", "zk3")


def call(step: Step) -> StepCall:
    return StepCall(spec=spec("zookeeper", ZK), playbook="rolling_restart", step=step, key="k")


def test_every_kind_of_step_has_an_entry() -> None:
    assert set(STEPS) == set(StepKind)


def test_a_service_step_goes_to_the_nodes_agent_by_name() -> None:
    entry = STEPS[StepKind.SERVICE]
    step = Step(name="restart-zk2", kind=StepKind.SERVICE, node_id="zk2", action="restart")
    c = call(step)
    assert entry.activity == SERVICE_ACTIVITY
    assert entry.runs_on is RunsOn.AGENT
    assert entry.task_queue(c.spec, step) == f"node/{c.spec.cluster_id}/zk2"
    assert entry.input(c) == ServiceRequest(
        action=ServiceAction.RESTART,
        cluster_id=c.spec.cluster_id,
        node_id="zk2",
        key="k",
        reason="rolling_restart: restart-zk2",
    )
    # The spec's `agent` names the agent's queue; the request still names the node.
    named = c.spec.model_copy(
        update={
            "nodes": tuple(
                n.model_copy(update={"agent": f"host-{n.node_id}"}) for n in c.spec.nodes
            )
        }
    )
    assert entry.task_queue(named, step) == f"node/{c.spec.cluster_id}/host-zk2"
    assert entry.input(StepCall(named, "rolling_restart", step, "k")).node_id == "zk2"
    assert (entry.start_to_close, entry.heartbeat_timeout(c.spec)) == (
        timedelta(minutes=10),
        timedelta(seconds=10),
    )
    assert entry.summary(step) == "restart zk2"
    # No agent taking it within the spec's bound ends the remediation as no_agent.
    assert entry.schedule_to_start_timeout(c.spec) == timedelta(seconds=60)
    waits_less = c.spec.remediate.model_copy(update={"agent_wait_s": 5})
    bounded = c.spec.model_copy(update={"remediate": waits_less})
    assert entry.schedule_to_start_timeout(bounded) == timedelta(seconds=5)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    result = ServiceResult(
        action=ServiceAction.RESTART,
        key="k",
        ok=True,
        exit_code=0,
        output_tail="",
        ran=True,
        resumed_after_crash=False,
        started_at=now,
        finished_at=now,
    )
    assert entry.detail(result) == "ran=True resumed_after_crash=False"


def test_core_steps_run_on_the_workflows_queue_and_the_core_worker_registers_them() -> None:
    assert core_step_activities() == [
        wait_serving,
        elect_preferred_leaders,
        wait_preferred,
        wait_in_sync,
        step_down_primary,
        wait_new_leader,
        wait_caught_up,
    ]
    wait = Step(name="wait-zk2-serving", kind=StepKind.WAIT_SERVING, node_id="zk2")
    entry = STEPS[StepKind.WAIT_SERVING]
    c = call(wait)
    assert entry.task_queue(c.spec, wait) is None
    assert entry.schedule_to_start_timeout(c.spec) is None
    assert entry.input(c) == NodeRequest(spec=c.spec, node_id="zk2")
    assert c.spec.probe.interval_s == 5
    assert (entry.start_to_close, entry.heartbeat_timeout(c.spec)) == (
        timedelta(minutes=6),
        timedelta(seconds=15),  # three probe rounds
    )
    assert entry.detail(None) == "verified"
    elect = STEPS[StepKind.ELECT_PREFERRED]
    assert elect.input(c) == c.spec
    assert elect.heartbeat_timeout(c.spec) is None
    assert elect.detail(3) == "election asked for 3 partition(s)"
    assert STEPS[StepKind.STEP_DOWN].detail("stepped down") == "stepped down"


def test_only_the_steps_that_came_with_a_patch_name_one() -> None:
    # Each such step is left out of the plans of runs from before it, replayed.
    assert {kind: entry.since_patch for kind, entry in STEPS.items() if entry.since_patch} == {
        StepKind.WAIT_CAUGHT_UP: "step-wait-caught-up"
    }
