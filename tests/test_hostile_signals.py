"""Malformed signals and updates, as any Temporal client may send them (wrong arity, wrong
types, garbage), to a monitor and a remediation on the real dev server and the real
ZooKeeper ensemble: each is dropped or rejected, and the workflow goes on answering queries
and doing its job. Before workflows/guards.py, one `pause` with two arguments failed every
workflow task of the monitor from then on (issue 12, item 2)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from devstack.zookeeper import ZooKeeperEnsemble
from models import Policy
from models.monitor import Outcome
from models.remediation import Decision, State
from testkit.specs import zk_spec
from tests.helpers import monitoring
from tests.remediation_stage import Stage
from workflows.monitor import ClusterMonitorWorkflow
from workflows.remediation import RemediationWorkflow

GARBAGE: list[list[Any]] = [
    ["a", "b"],  # one argument too many
    ["a", "b", "c", "d"],
    [{"by": 1, "reason": None, "extra": [1, 2]}],  # the wrong type
    [12345],
    [None],
    [["x"] * 100],
    ["x" * 32768],  # a reason no event should carry: it slowed every other call tenfold
]


async def send_all(handle: WorkflowHandle[Any, Any], signals: list[str]) -> None:
    for name in signals:
        for args in GARBAGE:
            await handle.signal(name, args=args)


async def test_a_monitor_drops_malformed_signals_and_keeps_watching(
    temporal_env: WorkflowEnvironment, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> None:
    spec = zk_spec(zk_healthy, f"hostile-{uuid.uuid4().hex[:6]}", interval_s=0.5)
    async with monitoring(temporal_env.client, spec, tmp_path) as monitor:
        handle = monitor.handle
        await send_all(handle, ["pause", "resume", "remediation_finished"])
        await handle.signal("remediation_finished", args=[])  # one argument too few
        for update in ("replace_spec", "remediate"):
            for args in [[], *GARBAGE]:
                with pytest.raises(WorkflowUpdateFailedError):
                    await handle.execute_update(update, args=args)
        status = await handle.query(ClusterMonitorWorkflow.status)
        assert not status.paused and status.spec_generation == 1
        # And it does its job: a member's death is still news.
        monitor.set_mark()
        zk_healthy.kill_member(2)
        down = await monitor.until("node.down", "zk2")
        assert down.node_id == "zk2"
        # A well-formed pause after all that still pauses.
        await handle.signal(ClusterMonitorWorkflow.pause, "maintenance")
        assert (await handle.query(ClusterMonitorWorkflow.status)).paused


async def test_a_remediation_drops_malformed_signals_and_still_heals(stage: Stage) -> None:
    stage.ensemble.kill_member(3)
    handle = await stage.start(3, Policy.APPROVE)
    for _ in range(300):
        status = await handle.query(RemediationWorkflow.status)
        if status.state is State.AWAITING_APPROVAL:
            break
    assert status.state is State.AWAITING_APPROVAL, status
    # Not `finding_cleared`: the SDK hands a handler without parameters none of what came,
    # so that signal with garbage is the signal itself, which ends the wait as unneeded.
    await send_all(handle, ["pause", "resume", "abort"])
    await handle.signal("abort", args=[])  # one argument too few
    for update in ("approve", "reject"):
        for args in [[], *GARBAGE]:
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update(update, args=args)
    status = await handle.query(RemediationWorkflow.status)
    assert status.state is State.AWAITING_APPROVAL and status.aborted is None, status
    await handle.execute_update(
        RemediationWorkflow.approve, Decision(by="ops", reason="after the garbage")
    )
    final = await handle.result()
    assert final.outcome is Outcome.HEALED, final
    assert stage.start_count() == 1
