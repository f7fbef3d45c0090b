"""`RemediationWorkflow` on the real Temporal dev server, the real ZooKeeper ensemble and a
real node agent (in this process) whose start command starts the real member: a killed
member comes back under `auto`; under `approve` it waits for an approval; a reject, a
finding that cleared and an unsafe plan end without touching anything."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.zookeeper.adapter import ZooKeeperAdapter
from models import Policy, evaluate
from models.monitor import Outcome
from models.remediation import Decision, RemediationInput, RemediationStatus, State
from tests.remediation_stage import Stage
from workflows.remediation import RemediationWorkflow


async def wait_state(
    handle: WorkflowHandle[RemediationWorkflow, RemediationStatus], state: State
) -> RemediationStatus:
    for _ in range(300):
        status = await handle.query(RemediationWorkflow.status)
        if status.state is state:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"never {state}; last {status}")


async def test_auto_restarts_a_killed_member_once(stage: Stage) -> None:
    stage.ensemble.kill_member(3)
    handle = await stage.start(3, Policy.AUTO)
    status = await handle.result()
    assert status.outcome is Outcome.HEALED, status
    assert stage.ensemble.member_running(3)
    assert stage.start_count() == 1
    assert [r.state for r in status.steps] == ["done", "done"]
    assert status.verdict is not None and status.verdict.safe
    assert stage.event_types(handle.id) == [
        "remediation.planned",
        "remediation.step_started",
        "remediation.step_finished",
        "remediation.step_started",
        "remediation.step_finished",
        "remediation.finished",
    ]


async def test_a_spec_of_another_cluster_naming_its_agents_cannot_make_them_act(
    stage: Stage,
) -> None:
    """Issue 12's attack: an unrelated cluster's spec names the stage's agents (the same
    nodes, the same agent ids). Its step goes to that cluster's queue, which none of them
    polls: not retried under RETRY_FOREVER, it ends `no_agent` once the spec's bound has
    passed, and no agent ran anything."""
    n = 3
    stage.ensemble.kill_member(n)
    other = f"rt-{uuid.uuid4().hex[:6]}"
    remediate = stage.spec.remediate.model_copy(update={"agent_wait_s": 5})
    spec = stage.spec.model_copy(update={"cluster_id": other, "remediate": remediate})
    handle = await stage.env.client.start_workflow(
        RemediationWorkflow.run,
        RemediationInput(
            spec=spec, playbook="restart_dead_member", target=f"zk{n}", policy=Policy.AUTO
        ),
        id=f"remediate/{other}/restart_dead_member/zk{n}",
        task_queue=stage.queue,
    )
    status = await asyncio.wait_for(handle.result(), 60)
    agent = spec.node(f"zk{n}").agent_id
    assert status.outcome is Outcome.NO_AGENT, status
    assert status.why == f"start-zk{n} failed: no agent polled node/{other}/{agent} within 5 s"
    start = status.steps[0]
    assert start.started_at is not None and start.finished_at is not None
    assert 5 <= (start.finished_at - start.started_at).total_seconds() < 15, start
    assert stage.start_count() == 0 and not stage.ensemble.member_running(n)


async def test_approve_waits_for_a_human_and_refuses_a_second_approval(stage: Stage) -> None:
    stage.ensemble.kill_member(2)
    handle = await stage.start(2, Policy.APPROVE)
    waiting = await wait_state(handle, State.AWAITING_APPROVAL)
    assert waiting.approval_deadline is not None
    assert stage.start_count() == 0
    assert not stage.ensemble.member_running(2)
    asked = datetime.now(UTC)
    await handle.execute_update(RemediationWorkflow.approve, Decision(by="ops", reason="go"))
    status = await handle.result()
    assert status.outcome is Outcome.HEALED
    assert status.approved is not None and status.approved.at is not None
    assert status.approved.model_copy(update={"at": None}) == Decision(by="ops", reason="go")
    # Stamped by the workflow when the approval reached it (the server's clock, this host).
    assert asked - timedelta(seconds=1) <= status.approved.at <= datetime.now(UTC)
    assert stage.start_count() == 1
    # Finished: the server itself refuses, there is no workflow left to ask.
    with pytest.raises(RPCError, match="already completed"):
        await handle.execute_update(RemediationWorkflow.approve, Decision(by="ops"))


async def test_an_approval_for_a_remediation_not_waiting_for_one_is_refused(stage: Stage) -> None:
    stage.ensemble.kill_member(3)
    # No agent serves this node: the remediation stays running at its first step.
    stage.spec = stage.spec.model_copy(
        update={
            "nodes": tuple(
                n.model_copy(update={"agent": "nobody-" + uuid.uuid4().hex[:6]})
                for n in stage.spec.nodes
            )
        }
    )
    handle = await stage.start(3, Policy.AUTO)
    await wait_state(handle, State.RUNNING)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(RemediationWorkflow.approve, Decision(by="ops"))
    assert "is not waiting for approval (it is running): nothing to approve" in str(
        refused.value.cause
    )
    await handle.signal(RemediationWorkflow.abort, Decision(by="ops", reason="test over"))
    status = await handle.result()
    assert status.outcome is Outcome.ABORTED
    assert [r.state for r in status.steps] == ["failed", "pending"]
    assert stage.start_count() == 0


async def test_reject_and_an_unneeded_remediation_touch_nothing(stage: Stage) -> None:
    stage.ensemble.kill_member(1)
    rejected = await stage.start(1, Policy.APPROVE)
    await wait_state(rejected, State.AWAITING_APPROVAL)
    await rejected.execute_update(
        RemediationWorkflow.reject, Decision(by="ops", reason="planned maintenance")
    )
    assert (await rejected.result()).outcome is Outcome.REJECTED
    # The member comes back by other means: a remediation for it is no longer needed.
    stage.ensemble.start_member(1)
    stage.ensemble.wait_ready(timeout=60)
    unneeded = await stage.start(1, Policy.AUTO)
    assert (await unneeded.result()).outcome is Outcome.UNNEEDED
    assert stage.start_count() == 0


async def test_dry_run_records_the_plan_and_the_verdict_only(stage: Stage) -> None:
    stage.ensemble.kill_member(2)
    handle = await stage.start(2, Policy.AUTO, dry_run=True)
    status = await handle.result()
    assert status.outcome is Outcome.DRY_RUN
    assert status.verdict is not None and status.verdict.safe
    assert [r.state for r in status.steps] == ["pending", "pending"]
    assert stage.start_count() == 0
    assert not stage.ensemble.member_running(2)
    view = await ZooKeeperAdapter().probe(stage.spec)
    assert "node_down/zk2" in {f.key for f in evaluate(stage.spec, view)}


async def test_rolling_restart_restarts_every_member_once_the_leader_last(stage: Stage) -> None:
    ensemble = stage.ensemble
    pids = {n: ensemble.member_pid(n) for n in ensemble.members}
    view = await ZooKeeperAdapter().probe(stage.spec)
    assert view.leader is not None
    leader = int(view.leader.removeprefix("zk"))
    handle = await stage.remediate(
        RemediationInput(spec=stage.spec, playbook="rolling_restart", policy=Policy.AUTO),
        "rolling_restart",
    )
    status = await asyncio.wait_for(handle.result(), timeout=120)
    assert status.outcome is Outcome.HEALED, status
    followers = [n for n in ensemble.members if n != leader]
    assert stage.effects() == [f"restart {n}" for n in (*followers, leader)]
    assert all(ensemble.member_pid(n) not in (None, pids[n]) for n in ensemble.members)
    assert [(r.step.name, r.state) for r in status.steps] == [
        (name, "done")
        for n in (*followers, leader)
        for name in (f"restart-zk{n}", f"wait-zk{n}-serving")
    ]
    # Each restart's verdict was taken again, on a fresh view, right before it ran: with
    # every member back, quorum holds without the next one.
    assert status.verdict is not None
    assert status.verdict.reason == "2 of 3 voting members stay: quorum kept"
    assert not evaluate(stage.spec, await ZooKeeperAdapter().probe(stage.spec))
    # What the Temporal UI shows as the workflow's current details: every step's state.
    shown = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    for record in status.steps:
        assert f"| {record.step.name} | done | {record.detail} |" in shown.current_details


async def test_rolling_restart_refuses_to_stop_a_member_while_another_is_down(
    stage: Stage,
) -> None:
    stage.ensemble.kill_member(3)
    handle = await stage.remediate(
        RemediationInput(spec=stage.spec, playbook="rolling_restart", policy=Policy.AUTO),
        "rolling_restart",
    )
    status = await asyncio.wait_for(handle.result(), timeout=60)
    assert status.outcome is Outcome.REFUSED
    assert status.verdict is not None and "zk3 not serving" in status.verdict.reason
    assert stage.effects() == []
    assert stage.event_types(handle.id) == ["remediation.planned", "remediation.finished"]
