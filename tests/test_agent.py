"""The node agent on the real Temporal dev server: real commands, a real ZooKeeper member,
and agent processes SIGKILLed mid-command.

Effects are counted in files the configured commands append to, so "exactly once" is a
line count, not an inference.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.service import KEPT_REFUSALS, Ledger
from config.settings import REPO_ROOT
from devstack import processes
from devstack.zookeeper import ZooKeeperEnsemble
from models import (
    SERVICE_ACTIVITY,
    ServiceAction,
    ServiceRequest,
    ServiceResult,
    agent_task_queue,
    parse_agent_config,
)
from testkit.workers import Workers, pollers, worker_processes
from worker.agent import agent_worker

WORKFLOW_QUEUE = "agent-test-steps"
CLUSTER = "agent-test"
"""The cluster every agent here serves."""


@workflow.defn
class ServiceStepWorkflow:
    """One step as a remediation would run it: the action on an agent's queue, retried."""

    @workflow.run
    async def run(self, queue: str, request: ServiceRequest) -> ServiceResult:
        result: ServiceResult = await workflow.execute_activity(
            SERVICE_ACTIVITY,
            request,
            result_type=ServiceResult,
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=2),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200)),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        return result


@pytest.fixture
async def steps(temporal_env: WorkflowEnvironment) -> AsyncIterator[Client]:
    async with Worker(
        temporal_env.client,
        task_queue=WORKFLOW_QUEUE,
        workflows=[ServiceStepWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield temporal_env.client


async def start_step(
    client: Client,
    node_id: str,
    action: ServiceAction,
    key: str,
    asking: tuple[str, str] | None = None,
) -> WorkflowHandle[ServiceStepWorkflow, ServiceResult]:
    """The action on the queue of `node_id`'s agent, for its cluster and node unless
    `asking` names another (cluster id, node id)."""
    cluster_id, for_node = asking or (CLUSTER, node_id)
    request = ServiceRequest(
        action=action, cluster_id=cluster_id, node_id=for_node, key=key, reason="test"
    )
    return await client.start_workflow(
        ServiceStepWorkflow.run,
        args=[agent_task_queue(CLUSTER, node_id), request],
        id=f"step-{uuid.uuid4().hex[:8]}",
        task_queue=WORKFLOW_QUEUE,
        execution_timeout=timedelta(seconds=60),
    )


async def step(client: Client, node_id: str, action: ServiceAction, key: str) -> ServiceResult:
    return await (await start_step(client, node_id, action, key)).result()


async def step_asking(
    client: Client, node_id: str, key: str, asking: tuple[str, str]
) -> ServiceResult:
    """A start on `node_id`'s agent's queue for the (cluster id, node id) `asking`."""
    return await (await start_step(client, node_id, ServiceAction.START, key, asking)).result()


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def counting_config(node_id: str, counter: Path, sleep_s: float = 0) -> dict[str, object]:
    """start appends a line to `counter` (then sleeps); status: running once a line is
    there; stop is left out on purpose."""
    append = (
        f"import os, time; open({str(counter)!r}, 'a').write(f'{{os.getpid()}}\\n');"
        f" time.sleep({sleep_s})"
    )
    running = f"import os, sys; p = {str(counter)!r}; sys.exit(0 if os.path.exists(p) else 3)"
    return {
        "cluster_id": CLUSTER,
        "node_id": node_id,
        "actions": {"start": python(append), "status": python(running)},
        "timeout_s": 30,
    }


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@asynccontextmanager
async def agent_in_process(
    client: Client, config: dict[str, object], ledger: Path
) -> AsyncIterator[Ledger]:
    held = Ledger(ledger)
    try:
        async with agent_worker(client, parse_agent_config(config), held):
            yield held
    finally:
        held.close()


def node() -> str:
    return f"n-{uuid.uuid4().hex[:8]}"


async def test_the_same_key_runs_its_command_once(steps: Client, tmp_path: Path) -> None:
    node_id, counter = node(), tmp_path / "starts"
    async with agent_in_process(steps, counting_config(node_id, counter), tmp_path / "l.db"):
        first = await step(steps, node_id, ServiceAction.START, "wf/a#start")
        again = await step(steps, node_id, ServiceAction.START, "wf/a#start")
        other = await step(steps, node_id, ServiceAction.START, "wf/b#start")
        status = await step(steps, node_id, ServiceAction.STATUS, "wf/a#status")
    assert (first.ok, first.ran, first.exit_code, first.resumed_after_crash) == (
        True,
        True,
        0,
        False,
    )
    assert again.ran is False and again.ok and again.started_at == first.started_at
    assert other.ran is True
    assert len(lines(counter)) == 2
    assert status.ok and status.exit_code == 0


async def test_an_action_missing_from_the_config_fails_without_retries(
    steps: Client, tmp_path: Path
) -> None:
    node_id = node()
    config = counting_config(node_id, tmp_path / "starts")
    async with agent_in_process(steps, config, tmp_path / "l.db"):
        with pytest.raises(WorkflowFailureError) as failed:
            await step(steps, node_id, ServiceAction.STOP, "wf/a#stop")
    cause = failed.value.cause
    assert isinstance(cause, ActivityError) and cause.retry_state is not None
    assert isinstance(cause.cause, ApplicationError)
    assert cause.cause.non_retryable
    assert cause.cause.type == "ServiceActionNotConfigured"
    assert "no 'stop' action" in cause.cause.message


def refusals(ledger: Path) -> list[tuple[str, str, str]]:
    """(key, action, why) of each refusal the agent recorded, oldest first."""
    db = sqlite3.connect(ledger)
    try:
        return db.execute("SELECT key, action, why FROM refused ORDER BY id").fetchall()
    finally:
        db.close()


async def test_a_request_for_another_cluster_or_node_is_refused_recorded_and_runs_nothing(
    steps: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone who may schedule an activity can put a request on an agent's queue: one for
    another cluster (the same node id), or another node of its own cluster, fails at once,
    not retried, naming both; the agent logs and records it and runs no command."""
    node_id, counter, ledger = node(), tmp_path / "starts", tmp_path / "l.db"
    async with agent_in_process(steps, counting_config(node_id, counter), ledger):
        with caplog.at_level(logging.WARNING, logger="replicante.agent"):
            failures = []
            for key, asking in (
                ("wf/x#start", ("rt-b13", node_id)),
                ("wf/y#start", (CLUSTER, "zk9")),
            ):
                with pytest.raises(WorkflowFailureError) as failed:
                    await step_asking(steps, node_id, key, asking)
                failures.append(failed.value.cause)
        served = await step(steps, node_id, ServiceAction.START, "wf/z#start")
    serves = f"agent {node_id} serves cluster {CLUSTER} node {node_id}"
    whys = [
        f"{serves}, not cluster rt-b13 node {node_id}",
        f"{serves}, not cluster {CLUSTER} node zk9",
    ]
    for cause, why in zip(failures, whys, strict=True):
        assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
        assert (cause.cause.message, cause.cause.type) == (why, "ServiceRequestRefused")
        assert cause.cause.non_retryable
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.name == "replicante.agent" and r.levelno == logging.WARNING
    ]
    assert warned == [
        f"start (key wf/x#start) refused: {whys[0]}",
        f"start (key wf/y#start) refused: {whys[1]}",
    ]
    assert refusals(ledger) == [("wf/x#start", "start", whys[0]), ("wf/y#start", "start", whys[1])]
    # Only the request for its own cluster and node ran the command.
    assert served.ran and len(lines(counter)) == 1


def test_the_ledger_keeps_the_latest_refusals_only(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    try:
        for i in range(KEPT_REFUSALS + 5):
            request = ServiceRequest(action="stop", cluster_id="c2", node_id="n", key=f"k{i}")
            ledger.refuse(request, "not ours")
    finally:
        ledger.close()
    kept = refusals(tmp_path / "l.db")
    assert len(kept) == KEPT_REFUSALS
    assert (kept[0][0], kept[-1][0]) == ("k5", f"k{KEPT_REFUSALS + 4}")


async def test_a_cancelled_action_kills_its_process_group(steps: Client, tmp_path: Path) -> None:
    node_id, counter = node(), tmp_path / "starts"
    async with agent_in_process(
        steps, counting_config(node_id, counter, sleep_s=30), tmp_path / "l.db"
    ) as ledger:
        handle = await start_step(steps, node_id, ServiceAction.START, "wf/c#start")
        pid = await wait_for_line(counter)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        entry = ledger.get("wf/c#start")
    assert entry is not None and entry.state == "cancelled"
    assert processes.wait_dead(pid, 5)


async def wait_for_line(counter: Path, timeout: float = 20, prefix: str = "") -> int:
    """The pid the command wrote (after `prefix`), once it started."""
    deadline = time.monotonic() + timeout
    while not lines(counter):
        assert time.monotonic() < deadline, "the command never started"
        await asyncio.sleep(0.05)
    return int(lines(counter)[0].removeprefix(prefix))


@pytest.fixture
def agents(temporal_env: WorkflowEnvironment, tmp_path: Path) -> Iterator[Workers]:
    """`python -m worker --agent` processes against the test server, home in tmp."""
    client = temporal_env.client
    env = dict(os.environ)
    env.update(
        REPLICANTE_TEMPORAL_ADDRESS=client.service_client.config.target_host,
        REPLICANTE_NAMESPACE=client.namespace,
        REPLICANTE_HOME=str(tmp_path / "home"),
    )
    with worker_processes(env, tmp_path) as workers:
        yield workers


def write_config(agents: Workers, config: dict[str, object]) -> Path:
    path = Path(agents.env["REPLICANTE_HOME"]) / "agents" / f"{config['node_id']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


async def start_agent(client: Client, agents: Workers, node_id: str) -> int:
    """An agent process for node_id (config at the default place), once it polls."""
    pid = agents.start("--agent", node_id)
    deadline = time.monotonic() + 30
    queue = agent_task_queue(CLUSTER, node_id)
    while agents.identity(pid) not in (await pollers(client, queue))[1]:
        assert agents.procs[pid].poll() is None, f"agent exited\n{agents.tail()}"
        assert time.monotonic() < deadline, f"agent never polled\n{agents.tail()}"
        await asyncio.sleep(0.2)
    return pid


async def test_sigkilled_agent_mid_action_resumes_with_its_effect_once(
    steps: Client, agents: Workers, tmp_path: Path
) -> None:
    node_id, counter = node(), tmp_path / "starts"
    write_config(agents, counting_config(node_id, counter, sleep_s=30))
    victim = await start_agent(steps, agents, node_id)
    handle = await start_step(steps, node_id, ServiceAction.START, "wf/k#start")
    orphan = await wait_for_line(counter)
    agents.kill(victim)
    # The command outlives the SIGKILLed agent (its own process group) ...
    assert processes.is_alive(orphan)
    await start_agent(steps, agents, node_id)
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.resumed_after_crash and result.ok and not result.ran, result
    assert result.action is ServiceAction.START
    assert len(lines(counter)) == 1
    # ... until the new agent kills what is left of it before it decides.
    assert processes.wait_dead(orphan, 5)


def restarting_config(
    node_id: str, home: Path, instance: bool, settle_s: float = 0
) -> dict[str, object]:
    """restart: logs `drain <pid>`, sleeps for what `home/drain` holds (a slow graceful
    stop), then makes a new instance (`home/instance` + 1), logs `restarted` and waits
    `settle_s` (for it to be ready); the service always runs; `instance` (when asked for)
    prints the current one."""
    log, drain, current = (str(home / name) for name in ("log", "drain", "instance"))
    restart = (
        "import os, time\n"
        f"open({log!r}, 'a').write(f'drain {{os.getpid()}}\\n')\n"
        f"time.sleep(float(open({drain!r}).read()))\n"
        f"n = int(open({current!r}).read()) + 1\n"
        f"open({current!r}, 'w').write(str(n))\n"
        f"open({log!r}, 'a').write('restarted\\n')\n"
        f"time.sleep({settle_s})\n"
    )
    config: dict[str, object] = {
        "cluster_id": CLUSTER,
        "node_id": node_id,
        "actions": {"restart": python(restart), "status": python("pass")},
        "timeout_s": 60,
    }
    if instance:
        config["instance"] = python(f"print(open({current!r}).read())")
    return config


@pytest.mark.parametrize("instance", [True, False], ids=["with instance", "without instance"])
async def test_a_restart_killed_with_its_agent_before_it_stopped_anything(
    steps: Client, agents: Workers, tmp_path: Path, instance: bool
) -> None:
    """The agent's whole cgroup killed while its restart drains: with `instance`, the
    same instance still running tells the restart never happened, and it runs once more;
    without, a running service is all the agent sees, and it takes the restart as done."""
    node_id, home = node(), tmp_path / "service"
    home.mkdir()
    (home / "instance").write_text("1")
    (home / "drain").write_text("30")
    write_config(agents, restarting_config(node_id, home, instance))
    victim = await start_agent(steps, agents, node_id)
    handle = await start_step(steps, node_id, ServiceAction.RESTART, "wf/k#restart")
    command = await wait_for_line(home / "log", prefix="drain ")
    agents.kill(victim)
    os.killpg(command, signal.SIGKILL)
    (home / "drain").write_text("0")
    await start_agent(steps, agents, node_id)
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.ok and result.resumed_after_crash, result
    restarted = lines(home / "log").count("restarted")
    if instance:
        assert (result.ran, restarted, (home / "instance").read_text()) == (True, 1, "2")
    else:
        assert (result.ran, restarted, (home / "instance").read_text()) == (False, 0, "1")


async def test_a_restart_killed_with_its_agent_after_it_took_effect_is_done(
    steps: Client, agents: Workers, tmp_path: Path
) -> None:
    """A new instance runs: the restart happened, and it is not run again."""
    node_id, home = node(), tmp_path / "service"
    home.mkdir()
    (home / "instance").write_text("1")
    (home / "drain").write_text("0")
    # After the new instance, a slow wait (for it to be ready) to be killed in.
    write_config(agents, restarting_config(node_id, home, instance=True, settle_s=30))
    victim = await start_agent(steps, agents, node_id)
    handle = await start_step(steps, node_id, ServiceAction.RESTART, "wf/k#restart")
    command = await wait_for_line(home / "log", prefix="drain ")
    while "restarted" not in lines(home / "log"):
        await asyncio.sleep(0.05)
    agents.kill(victim)
    os.killpg(command, signal.SIGKILL)
    await start_agent(steps, agents, node_id)
    result = await asyncio.wait_for(handle.result(), 30)
    assert (result.ok, result.ran, result.resumed_after_crash) == (True, False, True), result
    assert lines(home / "log").count("restarted") == 1


def devstack_config(node_id: str, zk: ZooKeeperEnsemble, n: int) -> dict[str, object]:
    member = [str(n), "--name", zk.name, "--ips", ",".join(zk.ips)]
    command = [sys.executable, "-m", "devstack", "zookeeper"]
    return {
        "cluster_id": CLUSTER,
        "node_id": node_id,
        "actions": {action: [*command, action, *member] for action in ("start", "stop", "status")},
        "timeout_s": 90,
        "cwd": str(REPO_ROOT),
    }


async def test_agent_stops_and_starts_a_real_member(
    steps: Client, agents: Workers, zk_healthy: ZooKeeperEnsemble
) -> None:
    zk = zk_healthy
    n = next(m for m in zk.members if zk.mode(m) == "follower")
    node_id = f"zk{n}-{uuid.uuid4().hex[:6]}"
    # The member's commands find the ensemble's state and jars as the test process does.
    agents.env.update(
        REPLICANTE_HOME=str(zk.dir.parent.parent), REPLICANTE_JARS=str(zk.jars.parent)
    )
    write_config(agents, devstack_config(node_id, zk, n))
    try:
        await start_agent(steps, agents, node_id)
        assert (await step(steps, node_id, ServiceAction.STATUS, "t#status-1")).ok

        stopped = await step(steps, node_id, ServiceAction.STOP, "t#stop")
        assert stopped.ran and not zk.member_running(n)
        assert zk.leader() is not None  # the other two keep the quorum
        status = await step(steps, node_id, ServiceAction.STATUS, "t#status-2")
        assert not status.ok and "stopped" in status.output_tail

        started = await step(steps, node_id, ServiceAction.START, "t#start")
        assert started.ran and zk.mode(n) in ("follower", "leader")
        assert (await step(steps, node_id, ServiceAction.STATUS, "t#status-3")).ok
    finally:
        zk.start_member(n)


def test_a_bad_config_is_one_line_naming_the_field_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "zk2.yaml"
    config.write_text(
        "cluster_id: c1\nnode_id: zk2\nactions:\n  start: [systemctl, start, zk]\ntimeout_s: -1\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "worker", "--agent", "zk2", "--config", str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"replicante: error: {config}: timeout_s: Input should be greater than 0"
    ]


def test_a_ledger_from_before_instance_opens_with_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "zk2.ledger.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE runs (key TEXT PRIMARY KEY, action TEXT NOT NULL, state TEXT NOT NULL,"
        " pgid INTEGER, result TEXT, started_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
    )
    at = "2026-11-01T00:00:00+00:00"
    old.execute(
        "INSERT INTO runs VALUES ('k#restart', 'restart', 'running', 42, NULL, ?, ?)", (at, at)
    )
    old.commit()
    old.close()
    ledger = Ledger(path)
    try:
        entry = ledger.get("k#restart")
        assert entry is not None
        assert (entry.action, entry.state, entry.pgid, entry.instance) == (
            ServiceAction.RESTART,
            "running",
            42,
            None,
        )
        ledger.begin("k2#restart", ServiceAction.RESTART, "pid 7")
        again = ledger.get("k2#restart")
        assert again is not None and again.instance == "pid 7"
    finally:
        ledger.close()
