"""The remediation commands (`remediate`, `actions ls|show`, `approve`, `reject`, `abort`,
`pause`, `resume`) against the real Temporal dev server, the real ZooKeeper ensemble and
real node agents in this process (the `stage` fixture), with the cluster's monitor
running: `remediate` takes the spec in force from it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from client.api import operator
from models import Policy
from models.monitor import Outcome
from models.remediation import RemediationInput, RemediationStatus, State
from store import EventQuery
from tests.helpers import Monitor, Run, point_cli_at, run_cli, start_monitor
from tests.remediation_stage import Stage
from workflows.remediation import RemediationWorkflow


@dataclass
class Cli:
    capsys: pytest.CaptureFixture[str]
    stage: Stage
    monitor: Monitor

    @property
    def cluster_id(self) -> str:
        return self.stage.spec.cluster_id

    async def __call__(self, *argv: str) -> Run:
        return await run_cli(self.capsys, *argv)

    async def ok(self, *argv: str) -> str:
        run = await self(*argv)
        assert (run.code, run.err) == (0, ""), run
        return run.out

    async def result(self, remediation_id: str) -> RemediationStatus:
        return await asyncio.wait_for(self._handle(remediation_id).result(), timeout=60)

    async def status(self, remediation_id: str) -> RemediationStatus:
        return await self._handle(remediation_id).query(RemediationWorkflow.status)

    def _handle(
        self, remediation_id: str
    ) -> WorkflowHandle[RemediationWorkflow, RemediationStatus]:
        return self.stage.env.client.get_workflow_handle_for(
            RemediationWorkflow.run, remediation_id
        )

    async def ls_row(self, remediation_id: str, state: str) -> list[str]:
        """The row of `actions ls CLUSTER` once it shows `state` (visibility lags a little)."""
        deadline = time.monotonic() + 15
        while True:
            out = await self.ok("actions", "ls", self.cluster_id)
            rows = [line.split() for line in out.splitlines()]
            row = next((r for r in rows if r[0] == remediation_id), None)
            if row is not None and row[1] == state:
                assert rows[0] == ["ID", "STATE", "OUTCOME", "PLAYBOOK", "TARGET", "STARTED"]
                return row
            assert time.monotonic() < deadline, f"never {state}: {out}"
            await asyncio.sleep(0.2)


def shown_at(shown: str, prefix: str, suffix: str) -> datetime:
    """The time in the one line of `actions show` that reads `PREFIX at TIME UTC SUFFIX`."""
    pattern = rf"{re.escape(prefix)} at (\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d) UTC{re.escape(suffix)}"
    found = [m for line in shown.splitlines() if (m := re.fullmatch(pattern, line))]
    assert len(found) == 1, shown
    return datetime.fromisoformat(found[0][1]).replace(tzinfo=UTC)


def around(when: datetime, start: datetime) -> bool:
    """Between `start` and now, give or take the second `actions show` rounds down to."""
    return start - timedelta(seconds=1) <= when <= datetime.now(UTC)


def refused(run: Run, code: int, *words: str) -> None:
    """Refused in one line on stderr naming what was wrong, nothing on stdout."""
    assert run.code == code, run
    assert run.out == ""
    assert len(run.err.splitlines()) == 1, run.err
    assert run.err.startswith("replicante: error: "), run.err
    for word in words:
        assert word in run.err, run.err


@pytest.fixture
async def cli(
    stage: Stage,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Cli]:
    client = stage.env.client
    point_cli_at(monkeypatch, client, stage.queue, stage.store.path)
    monitor = await start_monitor(client, stage.store, stage.spec, stage.queue)
    try:
        yield Cli(capsys, stage, monitor)
    finally:
        # What a failed test left waiting for approval would wait an hour.
        query = f"WorkflowId STARTS_WITH 'remediate/{stage.spec.cluster_id}/'"
        async for execution in client.list_workflows(query):
            if execution.status == WorkflowExecutionStatus.RUNNING:
                await client.get_workflow_handle(execution.id).terminate("test over")
        await monitor.handle.terminate("test over")


async def test_dry_run_records_the_plan_and_stops(cli: Cli) -> None:
    start = datetime.now(UTC)
    cli.stage.ensemble.kill_member(2)
    out = await cli.ok(
        "remediate", cli.cluster_id, "restart_dead_member", "--node", "zk2", "--dry-run"
    )
    rid = f"remediate/{cli.cluster_id}/restart_dead_member/zk2"
    assert out == f"{rid}\n"
    status = await cli.result(rid)
    assert status.outcome is Outcome.DRY_RUN
    assert status.finding is None and status.dry_run
    # The monitor's `remediation.requested` is stored by the monitor, in its own time.
    types = [t for t in cli.stage.event_types(rid) if t != "remediation.requested"]
    assert types == ["remediation.planned", "remediation.finished"]
    assert cli.stage.start_count() == 0
    assert not cli.stage.ensemble.member_running(2)

    row = await cli.ls_row(rid, "finished")
    assert row[2:5] == ["dry_run", "restart_dead_member", "zk2"]
    shown = (await cli.ok("actions", "show", rid)).splitlines()
    assert shown[0] == f"{rid}  state: finished  outcome: dry_run"
    assert "policy approve  DRY RUN  finding - (started by hand)" in shown[1]
    assert around(shown_at(shown[2], f"requested by {operator()}", ""), start)
    assert shown[3] == "why: dry run: plan and verdict recorded"
    assert shown[4].startswith("safety: safe: ")
    steps = [line.split()[:2] for line in shown if line.startswith(("start-", "wait-"))]
    assert steps == [["start-zk2", "pending"], ["wait-zk2-serving", "pending"]]
    as_json = RemediationStatus.model_validate_json(await cli.ok("actions", "show", rid, "--json"))
    assert as_json == status


async def test_approve_heals_and_a_second_decision_is_refused(cli: Cli) -> None:
    start = datetime.now(UTC)
    cli.stage.ensemble.kill_member(2)
    rid = await cli.ok("remediate", cli.cluster_id, "restart_dead_member", "--node", "zk2")
    rid = rid.strip()
    row = await cli.ls_row(rid, "awaiting_approval")
    assert row[2:5] == ["-", "restart_dead_member", "zk2"]
    shown = await cli.ok("actions", "show", rid)
    assert shown.startswith(f"{rid}  state: awaiting_approval  outcome: -\n")
    assert "approval deadline: " in shown and "(waiting)" in shown
    assert cli.stage.start_count() == 0

    # One remediation per cluster: the running one is named, no second starts.
    again = await cli("remediate", cli.cluster_id, "restart_dead_member", "--node", "zk2")
    refused(again, 1, rid, "one remediation per cluster at a time", "nothing started")
    missing_reason = await cli("approve", rid)
    assert missing_reason.code == 2 and "--reason" in missing_reason.err

    out = await cli.ok("approve", rid, "--reason", "disk replaced", "--by", "alice")
    assert out == f"{rid}: approved by alice\n"
    status = await cli.result(rid)
    assert status.outcome is Outcome.HEALED, status
    assert cli.stage.ensemble.member_running(2)
    assert cli.stage.start_count() == 1
    shown = await cli.ok("actions", "show", rid)
    assert around(shown_at(shown, "approved by alice", ": disk replaced"), start)
    assert [
        line.split()[1] for line in shown.splitlines() if line.startswith(("start-", "wait-"))
    ] == ["done", "done"]
    assert "approval deadline" not in shown

    # Finished: every decision, pause and resume is refused in one line naming it, and
    # changes nothing.
    for argv in (
        ["approve", rid, "--reason", "again"],
        ["reject", rid, "--reason", "late"],
        ["abort", rid],
        ["pause", rid],
        ["resume", rid, "--reason", "late"],
    ):
        refused(await cli(*argv), 2, rid, "has finished")
    assert await cli.result(rid) == status
    assert cli.stage.start_count() == 1


async def test_reject_and_abort(cli: Cli, tmp_path: Path) -> None:
    start = datetime.now(UTC)
    cli.stage.ensemble.kill_member(1)
    rejected = (
        await cli.ok("remediate", cli.cluster_id, "restart_dead_member", "--node", "zk1")
    ).strip()
    await cli.ls_row(rejected, "awaiting_approval")
    out = await cli.ok("reject", rejected, "--reason", "planned maintenance", "--by", "bob")
    assert out == f"{rejected}: rejected by bob\n"
    assert (await cli.result(rejected)).outcome is Outcome.REJECTED
    shown = await cli.ok("actions", "show", rejected)
    assert around(shown_at(shown, "rejected by bob", ": planned maintenance"), start)
    assert cli.stage.start_count() == 0

    # The spec in force now names agents nobody runs: an `--auto` remediation stays at its
    # first step, running, until aborted.
    spec = cli.stage.spec.model_copy(
        update={
            "nodes": tuple(
                n.model_copy(update={"agent": f"nobody-{n.node_id}"}) for n in cli.stage.spec.nodes
            )
        }
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    await cli.ok("cluster", "apply", "-f", str(spec_file))
    running = (
        await cli.ok("remediate", cli.cluster_id, "restart_dead_member", "--node", "zk1", "--auto")
    ).strip()
    assert running == rejected  # the same playbook and node: the same id, started again
    await cli.ls_row(running, "running")
    refused(
        await cli("approve", running, "--reason", "go"),
        2,
        f"{running} is not waiting for approval (it is running): nothing to approve",
    )
    out = await cli.ok("abort", running, "--reason", "wrong node", "--by", "carol")
    assert out == f"abort asked of {running} by carol\n"
    status = await cli.result(running)
    assert status.outcome is Outcome.ABORTED
    assert status.aborted is not None and status.aborted.by == "carol"
    assert [r.state for r in status.steps] == ["failed", "pending"]
    shown = await cli.ok("actions", "show", running)
    assert around(shown_at(shown, "aborted by carol", ": wrong node"), start)
    assert cli.stage.start_count() == 0


async def test_unknown_ids_playbooks_nodes_and_clusters(cli: Cli) -> None:
    cid = cli.cluster_id
    nosuch = f"remediate/{cid}/nosuch"
    for argv in (
        ["actions", "show", nosuch],
        ["approve", nosuch, "--reason", "r"],
        ["reject", nosuch, "--reason", "r"],
        ["abort", nosuch],
        ["pause", nosuch],
        ["resume", nosuch],
    ):
        refused(await cli(*argv), 1, f"unknown remediation {nosuch!r}")
    # A workflow that is no remediation is unknown as one.
    refused(await cli("actions", "show", f"monitor/{cid}"), 1, "unknown remediation")
    # Nor does one get a remediation's signals and updates: `abort monitor/X` used to answer
    # "abort asked" and leave the signal in the monitor's history.
    for target in (f"monitor/{cid}", "events/stream"):
        for argv in (
            ["abort", target],
            ["approve", target, "--reason", "r"],
            ["reject", target, "--reason", "r"],
        ):
            refused(
                await cli(*argv),
                1,
                f"unknown remediation {target!r}: remediation ids start with remediate/",
            )

    for argv, words in (
        (["no_such_playbook", "--node", "zk1"], ["'no_such_playbook' is not a zookeeper playbook"]),
        (["restart_broker", "--node", "zk1"], ["'restart_broker'"]),
        (["restart_dead_member", "--node", "zk9"], ["node 'zk9' is not a node of", cid]),
        (["restart_dead_member"], ["restart_dead_member needs a target node"]),
        (["step_down_primary"], ["'step_down_primary' is not a zookeeper playbook"]),
    ):
        refused(await cli("remediate", cid, *argv), 2, *words, "nothing started")
    refused(
        await cli("remediate", "nosuch", "restart_dead_member", "--node", "zk1"),
        1,
        "unknown cluster 'nosuch'",
    )
    refused(await cli("actions", "ls", "nosuch"), 1, "unknown cluster 'nosuch'")
    refused(await cli("approve", nosuch, "--reason", "r", "--by", ""), 2, "--by")

    assert (await cli.ok("actions", "ls", cid)) == "no remediations\n"
    assert cli.stage.start_count() == 0


async def test_paused_while_awaiting_approval_it_starts_no_step_until_resumed(cli: Cli) -> None:
    cli.stage.ensemble.kill_member(3)
    rid = (
        await cli.ok("remediate", cli.cluster_id, "restart_dead_member", "--node", "zk3")
    ).strip()
    await cli.ls_row(rid, "awaiting_approval")
    out = await cli.ok("pause", rid, "--reason", "change freeze")
    assert out == f"paused {rid}: no step starts until it is resumed (one running finishes)\n"
    await cli.ok("approve", rid, "--reason", "go", "--by", "alice")

    # Approved, it probes again and reaches its first step; shown `paused`, it is waiting
    # there for a resume, which nothing else can end. The wait below is what a step would
    # need to start if the pause did not hold it (the agent starts one in milliseconds).
    row = await cli.ls_row(rid, "paused")
    assert row[2:5] == ["-", "restart_dead_member", "zk3"]
    await asyncio.sleep(2)
    status = await cli.status(rid)
    assert status.state is State.PAUSED
    assert [r.state for r in status.steps] == ["pending", "pending"]
    assert cli.stage.start_count() == 0
    assert not cli.stage.ensemble.member_running(3)
    shown = await cli.ok("actions", "show", rid)
    assert shown.startswith(f"{rid}  state: paused  outcome: -\n")

    assert (await cli.ok("resume", rid, "--reason", "freeze over")) == f"resumed {rid}\n"
    status = await cli.result(rid)
    assert status.outcome is Outcome.HEALED, status
    assert cli.stage.start_count() == 1
    assert cli.stage.ensemble.member_running(3)
    # The hold and its end are in the audit log, with the operator's reasons.
    held = [
        (s.event.type, s.event.message)
        for s in cli.stage.store.query(EventQuery(cluster_id=cli.cluster_id))
        if s.event.payload.get("remediation") == rid
        and s.event.type in ("remediation.paused", "remediation.resumed")
    ]
    assert held == [
        ("remediation.paused", "paused: change freeze"),
        ("remediation.resumed", "resumed: freeze over"),
    ]


async def test_nobody_approving_before_the_deadline_expires_it_and_starts_nothing(
    cli: Cli,
) -> None:
    cli.stage.ensemble.kill_member(2)
    rid = f"remediate/{cli.cluster_id}/restart_dead_member/zk2"
    await cli.stage.env.client.start_workflow(
        RemediationWorkflow.run,
        RemediationInput(
            spec=cli.stage.spec,
            playbook="restart_dead_member",
            target="zk2",
            policy=Policy.APPROVE,
            approval_timeout_s=2,
            requested_by="night-shift",
        ),
        id=rid,
        task_queue=cli.stage.queue,
    )
    status = await cli.result(rid)
    assert status.outcome is Outcome.EXPIRED, status
    assert status.approved is None and status.rejected is None and status.aborted is None
    assert [r.state for r in status.steps] == ["pending", "pending"]
    assert cli.stage.event_types(rid) == [
        "remediation.planned",
        "remediation.awaiting_approval",
        "remediation.finished",
    ]
    assert cli.stage.start_count() == 0
    assert not cli.stage.ensemble.member_running(2)

    row = await cli.ls_row(rid, "finished")
    assert row[2:5] == ["expired", "restart_dead_member", "zk2"]
    shown = (await cli.ok("actions", "show", rid)).splitlines()
    assert shown[0] == f"{rid}  state: finished  outcome: expired"
    assert shown[2].startswith("requested by night-shift at ")
    assert status.approval_deadline is not None
    assert (
        f"approval deadline: {status.approval_deadline:%Y-%m-%d %H:%M:%S} UTC,"
        " passed: nobody approved before it, so nothing was done"
    ) in shown
    refused(await cli("approve", rid, "--reason", "too late"), 2, rid, "has finished")
    assert cli.stage.start_count() == 0
