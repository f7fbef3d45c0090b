"""The `replicante` CLI against the real Temporal dev server and ZooKeeper ensemble.

Each call runs `client.cli.main` in a thread (tests.helpers.run_cli).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from config.settings import REPO_ROOT
from devstack.zookeeper import ZooKeeperEnsemble
from models import Event, Kind, MonitorStatus
from store import EventQuery, SQLiteEventStore
from testkit.events import of_type, wait_for_event
from testkit.specs import zk_spec
from tests.helpers import Run, point_cli_at, run_cli
from worker.core import core_worker
from workflows.monitor import workflow_id


@dataclass
class Cli:
    capsys: pytest.CaptureFixture[str]
    store: SQLiteEventStore
    spec_file: Path
    cluster_id: str

    async def __call__(self, *argv: str) -> Run:
        return await run_cli(self.capsys, *argv)

    async def until(self, type_: str, after: float) -> Event:
        return await wait_for_event(self.store, self.cluster_id, of_type(type_), 30.0, after)


def write_spec(path: Path, cluster_id: str, ensemble: ZooKeeperEnsemble) -> None:
    path.write_text(yaml.safe_dump(zk_spec(ensemble, cluster_id).model_dump(mode="json")))


@pytest.fixture
async def cli(
    temporal_env: WorkflowEnvironment,
    zk_healthy: ZooKeeperEnsemble,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Cli]:
    cluster_id = f"cli-{uuid.uuid4().hex[:8]}"
    queue = f"q-{cluster_id}"
    store_path = tmp_path / "events.db"
    point_cli_at(monkeypatch, temporal_env.client, queue, store_path)
    monkeypatch.setenv("REPLICANTE_HOME", str(tmp_path / "home"))
    spec_file = tmp_path / "spec.yaml"
    write_spec(spec_file, cluster_id, zk_healthy)
    store = SQLiteEventStore(store_path)
    try:
        async with core_worker(temporal_env.client, queue, SQLiteEventStore(store_path)):
            yield Cli(capsys, store, spec_file, cluster_id)
            handle = temporal_env.client.get_workflow_handle(workflow_id(cluster_id))
            try:
                description = await handle.describe()
            except RPCError as error:
                # Tests of unknown clusters never start one.
                assert error.status == RPCStatusCode.NOT_FOUND
            else:
                if description.status == WorkflowExecutionStatus.RUNNING:
                    await handle.terminate("test over")
    finally:
        store.close()


async def test_apply_ls_status_events_pause_resume_and_reapply(
    cli: Cli, zk_healthy: ZooKeeperEnsemble
) -> None:
    cid = cli.cluster_id
    started = time.time()
    run = await cli("cluster", "apply", "-f", str(cli.spec_file))
    assert (run.code, run.err) == (0, "")
    assert run.out == f"watching cluster {cid} (spec generation 1)\n"
    first = await cli.until("cluster.health_changed", started)
    assert first.payload["to"] == "healthy"

    # ls: visibility is eventually consistent, and the health attribute follows the probe.
    deadline = time.monotonic() + 15
    while True:
        run = await cli("cluster", "ls")
        assert (run.code, run.err) == (0, "")
        row = next((line.split() for line in run.out.splitlines() if line.startswith(cid)), None)
        if (row is not None and row[2] == "healthy") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert run.out.splitlines()[0].split()[:4] == ["CLUSTER", "KIND", "HEALTH", "FINDINGS"]
    assert row is not None and row[:4] == [cid, "zookeeper", "healthy", "0"], run.out
    run = await cli("cluster", "ls", "--json")
    listed = {c["cluster_id"]: c for c in json.loads(run.out)}
    assert listed[cid]["kind"] == "zookeeper"
    assert listed[cid]["health"] == "healthy"

    # status: three nodes, their roles, the leader.
    leader = zk_healthy.leader()
    assert leader is not None
    run = await cli("status", cid)
    assert (run.code, run.err) == (0, ""), run.err
    lines = run.out.splitlines()
    assert lines[0].startswith(f"cluster {cid} (zookeeper)  health: healthy  monitor: watching")
    assert lines[0].endswith("spec generation 1")
    assert lines[1].startswith(f"leader: zk{leader}  quorum: yes (3/3 voting members")
    # Node rows only: the shards table below them starts with the shard id `zk`.
    nodes = {line.split()[0]: line.split() for line in lines if re.match(r"zk\d ", line)}
    assert sorted(nodes) == ["zk1", "zk2", "zk3"]
    for n, address in enumerate(zk_healthy.addresses, start=1):
        shown_address, up, role = nodes[f"zk{n}"][1:4]
        assert (shown_address, up) == (address, "yes")
        assert role == ("leader" if n == leader else "follower")
    assert lines[-1] == "no findings: the cluster matches its spec"
    run = await cli("status", cid, "--json")
    status = MonitorStatus.model_validate_json(run.out)
    assert status.view is not None and status.view.leader == f"zk{leader}"

    # events
    run = await cli("events", cid, "--since", "10m")
    assert (run.code, run.err) == (0, "")
    assert run.out.splitlines()[0].split()[:5] == ["TIME", "(UTC)", "CLUSTER", "TYPE", "SEVERITY"]
    assert [line for line in run.out.splitlines() if "cluster.health_changed" in line]
    assert "health unknown -> healthy" in run.out
    run = await cli("events", cid, "--json")
    assert [Event.model_validate_json(line).type for line in run.out.splitlines()] == [
        "cluster.health_changed"
    ]

    # pause / resume
    mark = time.time()
    run = await cli("pause", cid, "--reason", "disk swap")
    assert (run.code, run.out, run.err) == (0, f"paused {cid}\n", "")
    paused = await cli.until("monitor.paused", mark)
    assert paused.payload == {"reason": "disk swap"}
    run = await cli("status", cid)
    assert "monitor: PAUSED" in run.out.splitlines()[0]
    mark = time.time()
    run = await cli("resume", cid)
    assert (run.code, run.out, run.err) == (0, f"resumed {cid}\n", "")
    await cli.until("monitor.resumed", mark)
    run = await cli("events", cid, "--since", "10m")
    shown = [line.split()[3] for line in run.out.splitlines()[1:]]
    assert shown == ["cluster.health_changed", "monitor.paused", "monitor.resumed"]

    # apply the same again: nothing changes (it used to bump the generation, with an event)
    run = await cli("cluster", "apply", "-f", str(cli.spec_file))
    assert (run.code, run.err) == (0, "")
    assert run.out == f"cluster {cid} unchanged (spec generation 1 is this spec)\n"
    # apply a changed spec: an update, not a second monitor
    changed = zk_spec(zk_healthy, cid, interval_s=2.0)
    cli.spec_file.write_text(yaml.safe_dump(changed.model_dump(mode="json")))
    mark = time.time()
    run = await cli("cluster", "apply", "-f", str(cli.spec_file))
    assert (run.code, run.err) == (0, "")
    assert run.out == f"updated cluster {cid} (spec generation 2)\n"
    replaced = await cli.until("cluster.spec_replaced", mark)
    assert replaced.payload == {"generation": 2}
    run = await cli("status", cid)
    assert run.out.splitlines()[0].endswith("spec generation 2")
    # another kind under the same id: one line, nothing changed (it was a traceback)
    kafka = changed.model_copy(update={"kind": Kind.KAFKA})
    cli.spec_file.write_text(yaml.safe_dump(kafka.model_dump(mode="json")))
    run = await cli("cluster", "apply", "-f", str(cli.spec_file))
    assert (run.code, run.out) == (2, "")
    assert run.err == f"replicante: error: {cid}: kind: cannot change zookeeper to kafka\n"

    ids = [s.event.event_id for s in cli.store.query(EventQuery(cluster_id=cid))]
    assert len(ids) == len(set(ids)) == 4


async def test_apply_refuses_secrets_outside_the_scope_and_starts_nothing(
    cli: Cli, zk_healthy: ZooKeeperEnsemble
) -> None:
    """The worker refuses them at use too; the CLI, with the same settings, before any
    monitor exists to try."""
    spec = zk_spec(zk_healthy, cli.cluster_id).model_dump(mode="json")
    for secrets, says in [
        ({"file": "/etc/shadow"}, "/etc/shadow is outside the secret directories"),
        ({"env": "PATH"}, "env var PATH does not start with REPLICANTE_SECRET_"),
    ]:
        spec |= {
            "auth": {"mechanism": "digest"},
            "secrets": {"username": secrets, "password": secrets},
        }
        cli.spec_file.write_text(yaml.safe_dump(spec))
        run = await cli("cluster", "apply", "-f", str(cli.spec_file))
        assert (run.code, run.out) == (2, "")
        # yaml.safe_dump sorts the keys: the password comes first
        line = f"replicante: error: {cli.cluster_id}: secrets.password: {says}"
        assert run.err.startswith(line) and run.err.count("\n") == 1, run.err
    run = await cli("status", cli.cluster_id)
    assert run.err.startswith(f"replicante: error: unknown cluster '{cli.cluster_id}'"), run.err


async def test_status_of_unknown_cluster(cli: Cli) -> None:
    run = await cli("status", "nosuch")
    assert run.code == 1
    assert run.out == ""
    assert len(run.err.splitlines()) == 1, run.err
    assert run.err.startswith("replicante: error: unknown cluster 'nosuch'")
    assert "monitor/nosuch" in run.err


async def test_a_spec_whose_nodes_share_an_agent_is_refused_at_apply(
    cli: Cli, temporal_env: WorkflowEnvironment
) -> None:
    """zk1 names zk2's agent: an agent serves one node, so it would refuse one of the two."""
    spec = yaml.safe_load(cli.spec_file.read_text())
    spec["nodes"][0]["agent"] = "zk2"
    cli.spec_file.write_text(yaml.safe_dump(spec))
    run = await cli("cluster", "apply", "-f", str(cli.spec_file))
    assert (run.code, run.out) == (2, "")
    assert run.err == (
        f"replicante: error: {cli.cluster_id}: nodes: zk1 and zk2 name one agent, zk2:"
        " an agent serves one node\n"
    )
    with pytest.raises(RPCError) as never_started:
        await temporal_env.client.get_workflow_handle(workflow_id(cli.cluster_id)).describe()
    assert never_started.value.status == RPCStatusCode.NOT_FOUND


async def test_events_and_pause_of_unknown_cluster(cli: Cli) -> None:
    for argv in (["events", "nosuch"], ["pause", "nosuch"], ["resume", "nosuch"]):
        run = await cli(*argv)
        assert run.code == 1, argv
        assert run.out == ""
        assert len(run.err.splitlines()) == 1, run.err
        assert run.err.startswith("replicante: error: unknown cluster 'nosuch'"), run.err


async def test_events_since_yesterday_is_a_usage_error(cli: Cli) -> None:
    run = await cli("events", cli.cluster_id, "--since", "yesterday")
    assert run.code == 2
    assert run.out == ""
    assert run.err == (
        "replicante: error: --since: 'yesterday' is neither a duration like 10m nor an ISO time\n"
    )


async def test_hostile_command_lines_are_usage_errors(cli: Cli) -> None:
    # Each ended otherwise: an OverflowError traceback, "no events", a 32 kB pause event.
    cid = cli.cluster_id
    for argv, says in (
        (
            ["events", cid, "--since", "99999999999d"],
            "replicante: error: --since: '99999999999d' reaches back before the year 1",
        ),
        (["events", cid, "--limit", "-1"], "argument --limit: '-1' is not a count of 1 or more"),
        (
            ["pause", cid, "--reason", "x" * 32768],
            "argument --reason: 32768 characters, more than 2000: say it shorter",
        ),
    ):
        run = await cli(*argv)
        assert (run.code, run.out) == (2, ""), argv
        assert run.err.splitlines()[-1].endswith(says), run.err


async def run_example(name: str, *args: str) -> tuple[int, str]:
    """Run examples/NAME as an operator would, with the environment the fixture set."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO_ROOT / "examples" / name),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_readme_scripts_run(cli: Cli, zk_healthy: ZooKeeperEnsemble) -> None:
    """The two scripts the README shows are these files, and they work against the stack."""
    readme = (REPO_ROOT / "README.md").read_text()
    for name in ("unhealthy_clusters.py", "plain_temporal_client.py"):
        script = (REPO_ROOT / "examples" / name).read_text().split('"""\n\n', 1)[1]
        assert script in readme, f"README's copy of examples/{name} has drifted"

    started = time.time()
    assert (await cli("cluster", "apply", "-f", str(cli.spec_file))).code == 0
    await cli.until("cluster.health_changed", started)
    follower = next(n for n in zk_healthy.members if n != zk_healthy.leader())
    zk_healthy.kill_member(follower)
    await cli.until("node.down", started)

    status, out = await run_example("unhealthy_clusters.py")
    assert status == 0, out
    mine = [line for line in out.splitlines() if line.startswith(cli.cluster_id)]
    assert mine == [f"{cli.cluster_id} degraded ['node_down']"], out
    assert f"node.down zk{follower} is down" in out

    status, out = await run_example("plain_temporal_client.py", cli.cluster_id)
    assert status == 0, out
    assert out == f"degraded True zk{zk_healthy.leader()}\n"
    await cli.until("monitor.resumed", started)


def test_a_temporal_refusal_is_one_line_with_where_to_look(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """What `cluster apply` met when the monitor's workflow task was failing (a replay that
    no longer matched its history): Temporal's words, and the worker's log to read."""
    from client import cli

    async def refused(*_: object) -> int:
        raise RPCError(
            "Unable to perform workflow execution update due to Workflow Task in failed state.",
            RPCStatusCode.FAILED_PRECONDITION,
            b"",
        )

    monkeypatch.setattr(cli, "run", refused)
    monkeypatch.setenv("REPLICANTE_HOME", str(tmp_path))
    monkeypatch.delenv("REPLICANTE_TEMPORAL_ADDRESS", raising=False)
    assert cli.main(["cluster", "ls"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "replicante: error: Temporal at 127.0.0.1:7233 refused: Unable to perform workflow"
        " execution update due to Workflow Task in failed state; the core worker's log says"
        f" why (under `scripts/dev-up`: {tmp_path}/worker/worker.log)"
    ]
