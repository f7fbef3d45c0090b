"""The monitor starts remediations by itself, as the spec's policies say: on the real
Temporal dev server, the real ZooKeeper ensemble and real node agents (the `stage` of
tests/test_remediation.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from models import MonitorInput, Policy, RemediationFinished
from models.monitor import Outcome
from models.remediation import Decision, RemediationRequest
from store import EventQuery
from testkit.events import of_type, wait_for_event
from tests.remediation_stage import Stage
from workflows.monitor import ClusterMonitorWorkflow, workflow_id
from workflows.remediation import RemediationWorkflow


async def watch(stage: Stage, policy: Policy) -> WorkflowHandle[ClusterMonitorWorkflow, None]:
    stage.spec = stage.spec.model_copy(update={"remediation": {"restart_dead_member": policy}})
    handle = await stage.env.client.start_workflow(
        ClusterMonitorWorkflow.run,
        MonitorInput(spec=stage.spec),
        id=workflow_id(stage.spec.cluster_id),
        task_queue=stage.queue,
    )
    await wait_for_event(stage.store, stage.spec.cluster_id, of_type("cluster.health_changed"))
    return handle


async def awaiting_approval(
    stage: Stage, n: int
) -> tuple[WorkflowHandle[ClusterMonitorWorkflow, None], float]:
    """A monitor under `approve` whose remediation of member n, killed just now, waits for
    approval; with the time of the kill."""
    monitor = await watch(stage, Policy.APPROVE)
    mark = time.time()
    stage.ensemble.kill_member(n)
    await wait_for_event(
        stage.store,
        stage.spec.cluster_id,
        of_type("remediation.awaiting_approval"),
        timeout=30,
        after=mark,
    )
    return monitor, mark


def outcomes(stage: Stage) -> list[tuple[str, str]]:
    return [
        (s.event.payload["remediation"], s.event.payload["outcome"])
        for s in stage.store.query(
            EventQuery(cluster_id=stage.spec.cluster_id, types=("remediation.finished",))
        )
    ]


async def test_two_members_killed_come_back_one_remediation_at_a_time(stage: Stage) -> None:
    monitor = await watch(stage, Policy.AUTO)
    mark = time.time()
    stage.ensemble.kill_member(1)
    stage.ensemble.kill_member(2)
    cid = stage.spec.cluster_id
    for _ in range(2):
        await wait_for_event(
            stage.store,
            cid,
            lambda e: e.type == "remediation.finished" and len(outcomes(stage)) == 2,
            timeout=90,
            after=mark,
        )
    assert sorted(outcomes(stage)) == [
        (f"remediate/{cid}/node_down/zk1", "healed"),
        (f"remediate/{cid}/node_down/zk2", "healed"),
    ]
    assert stage.ensemble.member_running(1) and stage.ensemble.member_running(2)
    assert stage.start_count() == 2
    events = [s.event for s in stage.store.query(EventQuery(cluster_id=cid))]
    kinds = [
        (e.type, e.payload.get("remediation")) for e in events if e.type.startswith("remediation.")
    ]
    # One at a time: the second is requested only after the first finished.
    requested = [i for i, (t, _) in enumerate(kinds) if t == "remediation.requested"]
    finished = [i for i, (t, _) in enumerate(kinds) if t == "remediation.finished"]
    assert len(requested) == 2 and requested[1] > finished[0], kinds
    # Each plan was checked by the safety gate on a fresh probe, and the verdict recorded,
    # although the quorum was lost: starting a member cannot lose more.
    planned = [e for e in events if e.type == "remediation.planned"]
    assert len(planned) == 2 and all(e.payload["safe"] for e in planned)
    assert all("starting it cannot take a member away" in e.payload["verdict"] for e in planned)
    # The remediation records its end, then tells the monitor: that comes a moment later.
    for _ in range(100):
        if (await monitor.query(ClusterMonitorWorkflow.status)).remediating is None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the monitor still holds a remediation as running")
    await monitor.terminate("test over")


async def test_a_node_without_an_agent_ends_no_agent_and_the_next_remediation_starts(
    stage: Stage,
) -> None:
    """One follower's agent never runs: its remediation ends `no_agent` within the spec's
    bound instead of holding the cluster for good, and the monitor goes on to heal the
    other follower, killed meanwhile."""
    absent, other = (n for n in stage.ensemble.members if stage.ensemble.mode(n) == "follower")
    cid = stage.spec.cluster_id
    nodes = tuple(
        node.model_copy(update={"agent": f"{cid}-nobody"})
        if node.node_id == f"zk{absent}"
        else node
        for node in stage.spec.nodes
    )
    remediate = stage.spec.remediate.model_copy(update={"agent_wait_s": 5})
    stage.spec = stage.spec.model_copy(update={"nodes": nodes, "remediate": remediate})
    monitor = await watch(stage, Policy.AUTO)
    mark = time.time()
    stage.ensemble.kill_member(absent)
    requested = await wait_for_event(
        stage.store, cid, of_type("remediation.requested"), timeout=30, after=mark
    )
    stage.ensemble.kill_member(other)
    await wait_for_event(
        stage.store,
        cid,
        lambda e: e.type == "remediation.finished" and len(outcomes(stage)) == 2,
        timeout=90,
        after=mark,
    )
    assert outcomes(stage) == [
        (f"remediate/{cid}/node_down/zk{absent}", "no_agent"),
        (f"remediate/{cid}/node_down/zk{other}", "healed"),
    ]
    ended = stage.store.query(EventQuery(cluster_id=cid, types=("remediation.finished",)))
    no_agent = ended[0].event
    queue = f"node/{cid}/{cid}-nobody"
    assert no_agent.payload["why"] == f"start-zk{absent} failed: no agent polled {queue} within 5 s"
    assert (no_agent.at - requested.at).total_seconds() < 20
    assert stage.start_count() == 1 and stage.ensemble.member_running(other)
    # Like any other end: the cluster is free again, and zk{absent}'s finding, still open,
    # is held back for blocking_s (else the monitor would start it again at once).
    for _ in range(100):
        if (await monitor.query(ClusterMonitorWorkflow.status)).remediating is None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the monitor still holds a remediation as running")
    requests = stage.store.query(EventQuery(cluster_id=cid, types=("remediation.requested",)))
    assert len(requests) == 2
    await monitor.terminate("test over")
    stage.ensemble.start_member(absent)


async def test_under_approve_the_monitors_remediation_waits_for_a_human(stage: Stage) -> None:
    monitor, mark = await awaiting_approval(stage, 3)
    cid = stage.spec.cluster_id
    wid = f"remediate/{cid}/node_down/zk3"
    assert (await monitor.query(ClusterMonitorWorkflow.status)).remediating == wid
    assert not stage.ensemble.member_running(3)
    remediation = stage.env.client.get_workflow_handle_for(RemediationWorkflow.run, wid)
    await remediation.execute_update(
        RemediationWorkflow.approve, Decision(by="ops", reason="zk3 crashed, go")
    )
    assert (await remediation.result()).outcome.value == "healed"  # type: ignore[union-attr]
    assert stage.start_count() == 1
    await wait_for_event(stage.store, cid, of_type("node.up", "zk3"), timeout=30, after=mark)
    await monitor.terminate("test over")


async def test_a_finding_that_clears_before_approval_ends_the_remediation_unneeded(
    stage: Stage,
) -> None:
    monitor, mark = await awaiting_approval(stage, 2)
    cid = stage.spec.cluster_id
    # Someone starts zk2 by hand before anybody approved.
    stage.ensemble.start_member(2)
    finished = await wait_for_event(
        stage.store, cid, of_type("remediation.finished"), timeout=60, after=mark
    )
    assert finished.payload["outcome"] == "unneeded"
    assert finished.payload["why"] == "the finding cleared before approval"
    assert stage.start_count() == 0
    await monitor.terminate("test over")


async def test_a_remediation_by_hand_waits_for_the_monitors_own_and_holds_it_back(
    stage: Stage,
) -> None:
    monitor, _ = await awaiting_approval(stage, 3)
    cid = stage.spec.cluster_id
    own = f"remediate/{cid}/node_down/zk3"
    by_hand = RemediationRequest(playbook="rolling_restart", policy=Policy.AUTO, requested_by="ops")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await monitor.execute_update(ClusterMonitorWorkflow.remediate, by_hand)
    assert str(refused.value.cause).endswith(
        f"{own} is running on {cid}: one remediation per cluster at a time"
    )
    remediation = stage.env.client.get_workflow_handle_for(RemediationWorkflow.run, own)
    await remediation.execute_update(RemediationWorkflow.reject, Decision(by="ops", reason="mine"))
    await remediation.result()
    # Its end reaches the monitor a moment after the workflow's.
    for _ in range(100):
        if (await monitor.query(ClusterMonitorWorkflow.status)).remediating is None:
            break
        await asyncio.sleep(0.1)
    # By hand now, through the monitor: it holds the monitor's next own remediation back
    # until it ends, and the monitor hears of its end.
    start_zk3 = by_hand.model_copy(update={"playbook": "restart_dead_member", "target": "zk3"})
    wid = await monitor.execute_update(ClusterMonitorWorkflow.remediate, start_zk3)
    assert wid == f"remediate/{cid}/restart_dead_member/zk3"
    assert (await monitor.query(ClusterMonitorWorkflow.status)).remediating == wid
    status = await stage.env.client.get_workflow_handle_for(RemediationWorkflow.run, wid).result()
    assert status.outcome is Outcome.HEALED and status.requested_by == "ops"
    assert stage.start_count() == 1
    for _ in range(100):
        if (await monitor.query(ClusterMonitorWorkflow.status)).remediating is None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the monitor never heard the remediation by hand end")
    with pytest.raises(WorkflowUpdateFailedError) as bad:
        await monitor.execute_update(
            ClusterMonitorWorkflow.remediate, by_hand.model_copy(update={"target": "zk9"})
        )
    assert str(bad.value.cause).endswith(f"'zk9' is not a node of {cid}")
    await monitor.terminate("test over")


async def test_without_a_blocking_period_a_finding_is_remediated_again_not_held_forever(
    stage: Stage,
) -> None:
    """Blocking 0: a remediation tells the monitor it finished while it is still closing,
    its finding not yet seen cleared, so the monitor's start of the same id is refused as
    running. The monitor must not then hold the cluster for an end it was already told.
    The remediation waiting for approval stands in for one still closing, and the test
    sends the signal it would."""
    stage.spec = stage.spec.model_copy(
        update={"remediate": stage.spec.remediate.model_copy(update={"blocking_s": 0})}
    )
    monitor, _ = await awaiting_approval(stage, 1)
    cid = stage.spec.cluster_id
    wid = f"remediate/{cid}/node_down/zk1"
    assert (await monitor.query(ClusterMonitorWorkflow.status)).remediating == wid
    await monitor.signal(
        ClusterMonitorWorkflow.remediation_finished,
        RemediationFinished(workflow_id=wid, finding="node_down/zk1", outcome="healed"),
    )
    for _ in range(100):
        if (await monitor.query(ClusterMonitorWorkflow.status)).remediating is None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the monitor holds the cluster for a remediation that finished")
    remediation = stage.env.client.get_workflow_handle_for(RemediationWorkflow.run, wid)
    await remediation.execute_update(RemediationWorkflow.reject, Decision(by="ops", reason="t"))
    await monitor.terminate("test over")
