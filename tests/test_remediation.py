"""`RemediationWorkflow` on the real Temporal dev server, the real ZooKeeper ensemble and a
real node agent (in this process) whose start command starts the real member: a killed
member comes back under `auto`; under `approve` it waits for an approval; a reject, a
finding that cleared and an unsafe plan end without touching anything."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.service import Ledger
from activities.zookeeper import ZooKeeperAdapter
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, Finding, Policy, Severity, evaluate
from models.agent import parse_agent_config
from models.remediation import (
    Decision,
    Outcome,
    RemediationInput,
    RemediationStatus,
    State,
    plan,
)
from store import EventQuery, SQLiteEventStore
from tests.helpers import zk_spec
from worker.agent import agent_worker
from worker.core import core_worker
from workflows.remediation import RemediationWorkflow

START_MEMBER = """\
import sys
from pathlib import Path
from devstack.zookeeper import ZooKeeperEnsemble
home, name, ips, n = Path(sys.argv[1]), sys.argv[2], tuple(sys.argv[3].split(",")), int(sys.argv[4])
ZooKeeperEnsemble(home, name, ips).start_member(n)
with open(sys.argv[5], "a") as counter:
    counter.write("start\\n")
"""


@dataclass
class Stage:
    env: WorkflowEnvironment
    ensemble: ZooKeeperEnsemble
    spec: ClusterSpec
    store: SQLiteEventStore
    queue: str
    starts: Path
    """One line per start command the agent ran: the effect count."""

    async def start(
        self, n: int, policy: Policy, dry_run: bool = False
    ) -> WorkflowHandle[RemediationWorkflow, RemediationStatus]:
        view_finding = Finding(
            code="node_down",
            severity=Severity.WARNING,
            subject=f"zk{n}",
            message=f"zk{n} is down",
        )
        return await self.env.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(
                spec=self.spec,
                playbook="restart_dead_member",
                target=f"zk{n}",
                finding=view_finding,
                policy=policy,
                dry_run=dry_run,
            ),
            id=f"remediate/{self.spec.cluster_id}/node_down/zk{n}/{uuid.uuid4().hex[:6]}",
            task_queue=self.queue,
        )

    def start_count(self) -> int:
        return len(self.starts.read_text().splitlines()) if self.starts.exists() else 0

    def event_types(self, workflow_id: str) -> list[str]:
        return [
            s.event.type
            for s in self.store.query(EventQuery(cluster_id=self.spec.cluster_id))
            if s.event.payload.get("remediation") == workflow_id
        ]


@pytest.fixture
async def stage(
    temporal_env: WorkflowEnvironment, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> AsyncIterator[Stage]:
    ensemble = zk_healthy
    cluster_id = f"heal-{uuid.uuid4().hex[:6]}"
    queue = f"q-{cluster_id}"
    # Every member's agent listens on node/<node id>; the node ids are unique per test.
    spec = zk_spec(ensemble, cluster_id, interval_s=0.5)
    spec = spec.model_copy(
        update={
            "nodes": tuple(
                n.model_copy(update={"agent": f"{cluster_id}-{n.node_id}"}) for n in spec.nodes
            )
        }
    )
    script = tmp_path / "start_member.py"
    script.write_text(START_MEMBER)
    starts = tmp_path / "starts.log"
    home = ensemble.dir.parent.parent
    store = SQLiteEventStore(tmp_path / "events.db")
    agents = []
    for n, node in enumerate(spec.nodes, start=1):
        assert node.agent is not None
        argv = [sys.executable, str(script), str(home), ensemble.name, ",".join(ensemble.ips)]
        config = parse_agent_config(
            {"node_id": node.agent, "actions": {"start": [*argv, str(n), str(starts)]}}
        )
        agents.append(agent_worker(temporal_env.client, config, Ledger(tmp_path / f"{n}.db")))
    async with core_worker(temporal_env.client, queue, store):
        for agent in agents:
            await agent.__aenter__()
        try:
            yield Stage(temporal_env, ensemble, spec, store, queue, starts)
        finally:
            for agent in agents:
                await agent.__aexit__(None, None, None)
    store.close()


async def wait_state(
    handle: WorkflowHandle[RemediationWorkflow, RemediationStatus], state: State
) -> RemediationStatus:
    for _ in range(300):
        status = await handle.query(RemediationWorkflow.status)
        if status.state is state:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"never {state}; last {status}")


def test_plan_of_a_dead_member_is_start_then_wait() -> None:
    spec = ClusterSpec.model_validate(
        {"cluster_id": "c", "kind": "zookeeper", "nodes": [{"node_id": "a", "address": "h:1"}]}
    )
    assert [(s.name, s.kind.value) for s in plan(spec, "restart_dead_member", "a")] == [
        ("start-a", "service"),
        ("wait-a-serving", "wait_serving"),
    ]
    with pytest.raises(ValueError, match="'b' is not a node of c"):
        plan(spec, "restart_dead_member", "b")


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


async def test_approve_waits_for_a_human_and_refuses_a_second_approval(stage: Stage) -> None:
    stage.ensemble.kill_member(2)
    handle = await stage.start(2, Policy.APPROVE)
    waiting = await wait_state(handle, State.AWAITING_APPROVAL)
    assert waiting.approval_deadline is not None
    assert stage.start_count() == 0
    assert not stage.ensemble.member_running(2)
    await handle.execute_update(RemediationWorkflow.approve, Decision(by="ops", reason="go"))
    status = await handle.result()
    assert status.outcome is Outcome.HEALED
    assert status.approved == Decision(by="ops", reason="go")
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
