"""Remediations survive the death of the processes they run on: on the real Temporal dev
server and the real ZooKeeper ensemble, with the core worker and the node agents as
processes of their own (tests/durability.py), SIGKILLed at step boundaries and mid-step.

"Exactly once, none skipped" is read off the members themselves: each member's JVM that
ran before the remediation was stopped once and a new one started once (the agents'
commands log every stop and start with the JVM's pid, and the member's pid after must be
the one started), in plan order with never two members down; the stored events are one
`planned`, each step's `step_started` and `step_finished` once in plan order, and one
`finished` (a write retried or replayed after a kill stores nothing twice); no workflow
task failed (a replay after a kill never diverged).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from devstack.temporal import TemporalDevServer
from devstack.zookeeper import ZooKeeperEnsemble
from models.monitor import Outcome
from testkit.durability import CORE_KILLS, Moment, Position, Run, Stage, Victim, open_stage
from tests.test_devstack import free_port
from worker.connection import connect


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def killable(
    temporal_env: WorkflowEnvironment,
    zk_ensemble: ZooKeeperEnsemble,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stage]:
    """One core worker and three agents for the module's tests on the session server; each
    test heals the ensemble first (zk_healthy)."""
    home = tmp_path_factory.mktemp("durability")
    async with open_stage(temporal_env.client, zk_ensemble, home) as opened:
        yield opened


def judged(run: Run) -> Run:
    assert not run.flaws(), "\n".join([*run.flaws(), run.where_the_kills_landed()])
    assert run.duplicate_effects() == 0 and not run.lost()
    return run


async def test_core_worker_sigkilled_at_every_step_boundary_and_mid_step_restarts_each_member_once(
    killable: Stage, zk_healthy: ZooKeeperEnsemble
) -> None:
    run = judged(await killable.rolling_restart(CORE_KILLS))
    assert len(run.hits) == 12
    # Each kill took a worker that was at work: the original and every replacement but
    # the last ran workflow tasks of this remediation.
    identities = {
        e.workflow_task_completed_event_attributes.identity
        for e in run.history.events
        if e.HasField("workflow_task_completed_event_attributes")
    }
    assert {int(i.split("@")[0]) for i in identities} >= {p for h in run.hits for p in h.killed}


async def test_agents_sigkilled_mid_command_and_at_boundaries_restart_each_member_once(
    killable: Stage, zk_healthy: ZooKeeperEnsemble
) -> None:
    run = judged(await killable.rolling_restart_killing_agents())
    # The revived agent found the first restart still draining, and let it finish.
    assert "still runs: letting it finish" in killable.logs()
    # The killed agents' commands ran on and did it; the revived agent, which let the
    # draining one finish, saw it done.
    assert run.detail(0) == "ran=False resumed_after_crash=True"
    assert run.detail(2) == "ran=False resumed_after_crash=True"
    # Killed with its agent while draining, the restart was run again (the same member
    # JVM ran: the agent's `instance` told); killed with its agent in its middle, the
    # command never started the member: it ran once more.
    assert "before it stopped anything (instance" in killable.logs()
    assert run.detail(4) == "ran=True resumed_after_crash=True"


async def test_a_finding_remediated_again_later_starts_its_member_again(
    killable: Stage, zk_healthy: ZooKeeperEnsemble
) -> None:
    n = next(m for m in zk_healthy.members if m != zk_healthy.leader())
    # The id the monitor gives every remediation of this finding, after the last one ended
    # (and its blocking period passed): the agent must not take the second for the first.
    workflow_id = f"remediate/{killable.spec.cluster_id}/node_down/zk{n}"
    before = len(killable.effects())
    for _ in range(2):
        zk_healthy.kill_member(n)
        handle = await killable.start_remediation("restart_dead_member", f"zk{n}", workflow_id)
        status = await asyncio.wait_for(handle.result(), 60)
        assert status.outcome is Outcome.HEALED, status
        assert status.steps[0].detail == "ran=True resumed_after_crash=False"
    starts = [e for e in killable.effects()[before:] if e.kind == "start"]
    assert [e.member for e in starts] == [n, n]
    assert zk_healthy.member_pid(n) == starts[-1].member_pid


async def test_temporal_server_stopped_and_started_on_its_database_mid_remediation_changes_nothing(
    zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> None:
    server = TemporalDevServer(tmp_path / "server", port=free_port(), ui_port=None)
    await asyncio.to_thread(server.start)
    try:
        client = await connect(Settings(temporal_address=server.address))
        async with open_stage(client, zk_healthy, tmp_path / "stage", server=server) as stage:
            # Down while the agent restarts a member (its result cannot be reported), and
            # while the core worker waits for a member to serve again.
            server_down = [
                Position(Victim.TEMPORAL, Moment.MID, 0),
                Position(Victim.TEMPORAL, Moment.MID, 3),
            ]
            run = judged(await stage.rolling_restart(server_down))
            # They rode the downtime out: none exited, none was started again.
            assert [proc.poll() for proc in stage.workers.procs.values()] == [None] * 4
        # Three servers in turn, one database file: the workflow outlived two of them.
        pids = [pid for hit in run.hits for pid in hit.killed]
        assert len({*pids, server.pid()}) == 3
    finally:
        await asyncio.to_thread(server.stop)


async def test_with_two_of_three_members_down_nothing_acts_before_its_verdict_is_stored(
    killable: Stage, zk_healthy: ZooKeeperEnsemble
) -> None:
    for n in (2, 3):
        zk_healthy.kill_member(n)
    before = len(killable.effects())
    # A rolling restart would stop zk1, the last member standing: refused on its verdict.
    rolling = await killable.start_remediation("rolling_restart")
    refused = await asyncio.wait_for(rolling.result(), 60)
    assert refused.outcome is Outcome.REFUSED, refused
    events = [s.event for s in killable.events(rolling.id)]
    assert [e.type for e in events] == ["remediation.planned", "remediation.finished"]
    assert events[0].payload["safe"] is False
    assert events[0].payload["verdict"] == (
        "zk2, zk3 not serving: stopping zk1 as well risks the cluster"
    )
    assert killable.effects()[before:] == []

    # Starting a dead member, which brings the quorum back, acts: once its verdict is stored.
    healing = await killable.start_remediation("restart_dead_member", "zk2")
    healed = await asyncio.wait_for(healing.result(), 60)
    assert healed.outcome is Outcome.HEALED, healed
    stored = killable.events(healing.id)
    planned, started = stored[0], stored[1]
    assert (planned.event.type, started.event.type) == (
        "remediation.planned",
        "remediation.step_started",
    )
    assert planned.event.payload["safe"] is True
    assert planned.event.payload["verdict"] == (
        "zk2 is down (connection refused); starting it cannot take a member away"
    )
    (start,) = killable.effects()[before:]
    assert (start.kind, start.member) == ("start", 2)
    assert planned.stored_at < started.stored_at
    assert planned.stored_at.timestamp() < start.at
