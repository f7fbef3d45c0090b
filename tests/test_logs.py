"""Logs (worker/logs.py): `python -m worker` processes write one JSON object per line when
their stderr is no terminal and readable lines on a terminal, every line saying which
cluster, workflow, run, activity, node and step it is about; workflow code logs once,
never again on replay; no secret value reaches a line."""

from __future__ import annotations

import asyncio
import doctest
import io
import json
import logging
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from temporalio import workflow
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.events import EventActivities
from activities.monitor import WatchActivities
from config.logs import LogFormat
from config.masking import known
from config.secrets import read_secrets
from config.settings import REPO_ROOT, Settings
from devstack.zookeeper import ZooKeeperEnsemble
from models import (
    SERVICE_ACTIVITY,
    ClusterSpec,
    MonitorInput,
    ServiceAction,
    ServiceRequest,
    ServiceResult,
    agent_task_queue,
    watch_task_queue,
)
from store import SQLiteEventStore
from testkit.events import of_type, wait_for_event
from testkit.specs import zk_spec
from testkit.workers import worker_processes
from tests.helpers import process_env
from worker import logs
from workflows.monitor import ClusterMonitorWorkflow, workflow_id
from workflows.remediation import RemediationWorkflow

Line = dict[str, Any]
HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_doctests() -> None:
    result = doctest.testmod(logs)
    assert result.failed == 0 and result.attempted > 0


def json_lines(path: Path) -> list[Line]:
    """Every line of a process's output, each of which must be one JSON object."""
    lines = []
    for text in path.read_text().splitlines():
        line = json.loads(text)
        assert isinstance(line, dict), text
        lines.append(line)
    return lines


async def until_logged(
    path: Path, wanted: dict[str, Callable[[Line], bool]], timeout: float = 30
) -> dict[str, Line]:
    """The first line of the output at `path` that matches each of `wanted`, by name."""
    deadline = time.monotonic() + timeout
    while True:
        lines = json_lines(path) if path.exists() else []
        found = {name: next((x for x in lines if match(x)), None) for name, match in wanted.items()}
        if all(found.values()):
            return {name: line for name, line in found.items() if line is not None}
        missing = [name for name, line in found.items() if line is None]
        assert time.monotonic() < deadline, f"never logged: {missing}\n{path.read_text()[-3000:]}"
        await asyncio.sleep(0.2)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- JSON lines and their keys ---------------------------------------------------------------


@asynccontextmanager
async def monitored_in_a_worker(
    env: WorkflowEnvironment, spec: ClusterSpec, process: dict[str, str], home: Path
) -> AsyncIterator[tuple[WorkflowHandle[ClusterMonitorWorkflow, None], Path]]:
    """A `python -m worker` process (`process`, from process_env with a task queue) that
    monitors `spec`, once its first health event is stored: the monitor's handle and the
    worker's log file. The monitor is terminated at the end."""
    store = SQLiteEventStore(home / "events.db")
    try:
        with worker_processes(process, home) as workers:
            workers.start()
            handle = await env.client.start_workflow(
                ClusterMonitorWorkflow.run,
                MonitorInput(spec=spec),
                id=workflow_id(spec.cluster_id),
                task_queue=process["REPLICANTE_TASK_QUEUE"],
            )
            await wait_for_event(store, spec.cluster_id, of_type("cluster.health_changed"))
            yield handle, home / "worker-0.log"
            await handle.terminate("test over")
    finally:
        store.close()


async def test_a_core_worker_writes_json_lines_that_say_what_each_is_about(
    temporal_env: WorkflowEnvironment, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> None:
    cid = f"logs-{uuid.uuid4().hex[:6]}"
    queue = f"q-{cid}"
    # No REPLICANTE_LOG_FORMAT: its output is a file, so JSON it must be.
    env = process_env(
        temporal_env.client, tmp_path, REPLICANTE_TASK_QUEUE=queue, REPLICANTE_LOG_LEVEL="debug"
    )
    spec = zk_spec(zk_healthy, cid, interval_s=0.5)
    async with monitored_in_a_worker(temporal_env, spec, env, tmp_path) as (handle, out):
        about = {"cluster_id": cid, "workflow_id": handle.id, "run_id": handle.result_run_id}

        def mine(line: Line) -> bool:
            return about.items() <= line.items()

        def probe_of(node: str) -> Callable[[Line], bool]:
            return lambda x: mine(x) and x["logger"] == "replicante.probe" and x["node"] == node

        found = await until_logged(
            out,
            {
                **{f"zk{n}": probe_of(f"zk{n}") for n in zk_healthy.members},
                "workflow": lambda x: (
                    mine(x) and x["message"].startswith("cluster.health_changed: ")
                ),
                "stored": lambda x: mine(x) and x["message"].startswith("stored "),
                "core": lambda x: x["logger"] == "temporalio.core" and x.get("task_queue") == queue,
            },
        )

    lines = json_lines(out)
    assert all({"timestamp", "level", "logger", "message"} <= x.keys() for x in lines)
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", x["timestamp"]) for x in lines
    )
    started = next(x for x in lines if x["logger"] == "replicante.worker")
    assert started["message"].startswith(f"core worker on {env['REPLICANTE_TEMPORAL_ADDRESS']}")
    assert started["level"] == "info"

    probe = found["zk1"]
    assert probe["level"] == "debug"
    assert re.fullmatch(r"zk1: ok in \d+\.\d ms", probe["message"]), probe
    assert probe["activity"] == "watch_cluster" and probe["task_queue"] == watch_task_queue(queue)
    line = found["workflow"]
    assert line["logger"] == "temporalio.workflow" and line["level"] == "info"
    assert line["workflow"] == "ClusterMonitorWorkflow" and line["task_queue"] == queue
    assert "activity" not in line and "({" not in line["message"]  # the SDK's dict: keys now
    assert [x for x in lines if x["message"] == line["message"]] == [line]
    assert found["stored"]["activity"] == "record_events"
    # The Rust core's lines come through Python's logging, its fields as keys.
    assert found["core"]["core_target"].startswith("temporalio_sdk_core")


@workflow.defn(sandboxed=False)
class CallAgent:
    """A remediation's service step, alone: the agent's lines are what is looked at."""

    @workflow.run
    async def run(self, cluster_id: str, node_id: str) -> ServiceResult:
        key = f"{workflow.info().workflow_id}/{workflow.info().run_id}#start-{node_id}"
        request = ServiceRequest(
            action=ServiceAction.START,
            cluster_id=cluster_id,
            node_id=node_id,
            key=key,
            reason="test: start",
        )
        result: ServiceResult = await workflow.execute_activity(
            SERVICE_ACTIVITY,
            request,
            result_type=ServiceResult,
            task_queue=agent_task_queue(cluster_id, node_id),
            start_to_close_timeout=timedelta(seconds=30),
        )
        return result


def agent_config(tmp_path: Path, node_id: str, cluster_id: str = "logs") -> Path:
    config = tmp_path / f"{node_id}.yaml"
    wanted = {"cluster_id": cluster_id, "node_id": node_id, "actions": {"start": ["true"]}}
    config.write_text(yaml.safe_dump(wanted))
    return config


async def test_an_agents_lines_name_its_node_and_the_step(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    cid = f"logs-{uuid.uuid4().hex[:6]}"
    node = f"{cid}-zk1"
    out = tmp_path / "worker-0.log"
    env = process_env(temporal_env.client, tmp_path)
    with worker_processes(env, tmp_path) as agents:
        agents.start("--agent", node, "--config", str(agent_config(tmp_path, node, cid)))
        async with Worker(
            temporal_env.client,
            task_queue=f"q-{cid}",
            workflows=[CallAgent],
        ):
            handle = await temporal_env.client.start_workflow(
                CallAgent.run,
                args=[cid, node],
                id=f"remediate/{cid}/by-test",
                task_queue=f"q-{cid}",
            )
            assert (await handle.result()).ran
        found = await until_logged(
            out,
            {
                "requested": lambda x: x["message"].startswith("start requested"),
                "done": lambda x: x["message"].startswith("start (key"),
            },
        )
    for line in found.values():
        assert line["logger"] == "replicante.agent"
        assert line["node"] == node and line["step"] == f"start-{node}"
        assert line["cluster_id"] == cid
        assert line["workflow_id"] == handle.id and line["run_id"] == handle.result_run_id
        assert line["activity"] == SERVICE_ACTIVITY
        assert line["task_queue"] == agent_task_queue(cid, node)


# --- the format: a terminal, or not -----------------------------------------------------------


def first_line_on_a_terminal(argv: list[str], env: dict[str, str], wanted: str) -> str:
    """Run `argv` with stdout and stderr on a pseudo-terminal, until it writes a line
    holding `wanted`; that line, as the terminal got it."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while True:
            # A terminal ends lines with \r\n; a line is whole once it has its end.
            whole = seen.decode(errors="replace").splitlines(keepends=True)
            line = next((x for x in whole if wanted in x and x.endswith("\n")), None)
            if line is not None:
                return line.rstrip("\r\n")
            left = deadline - time.monotonic()
            assert left > 0 and process.poll() is None, seen.decode(errors="replace")
            if select.select([leader], [], [], min(left, 0.5))[0]:
                seen += os.read(leader, 65536)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        os.close(leader)


@pytest.mark.parametrize("setting", [None, "json"], ids=["default", "REPLICANTE_LOG_FORMAT=json"])
def test_on_a_terminal_lines_are_readable_unless_json_is_asked_for(
    temporal_env: WorkflowEnvironment, tmp_path: Path, setting: str | None
) -> None:
    node = f"logs-{uuid.uuid4().hex[:6]}"
    env = process_env(temporal_env.client, tmp_path)
    if setting is not None:
        env["REPLICANTE_LOG_FORMAT"] = setting
    argv = [
        sys.executable,
        "-m",
        "worker",
        "--agent",
        node,
        "--config",
        str(agent_config(tmp_path, node)),
    ]
    line = first_line_on_a_terminal(argv, env, f"node agent {node} on")
    if setting == "json":
        assert json.loads(line)["message"].startswith(f"node agent {node} on")
        return
    assert ANSI.search(line), f"no colours on a terminal: {line!r}"
    plain = ANSI.sub("", line)
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\dT[\d:.]+Z \[info\s*\] node agent {node} on .+ \[replicante\.agent\]\s*",
        plain,
    ), plain


async def test_console_is_plain_text_on_a_pipe_when_asked_for(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    node = f"logs-{uuid.uuid4().hex[:6]}"
    env = process_env(temporal_env.client, tmp_path, REPLICANTE_LOG_FORMAT="console")
    out = tmp_path / "worker-0.log"
    with worker_processes(env, tmp_path) as agents:
        agents.start("--agent", node, "--config", str(agent_config(tmp_path, node)))
        deadline = time.monotonic() + 30
        while not (out.exists() and f"node agent {node} on" in out.read_text()):
            assert time.monotonic() < deadline, out.read_text() if out.exists() else "no output"
            await asyncio.sleep(0.2)
    line = next(x for x in out.read_text().splitlines() if f"node agent {node} on" in x)
    assert not ANSI.search(line)
    assert re.match(rf"\d{{4}}-\d\d-\d\dT[\d:.]+Z \[info\s*\] node agent {node} on ", line), line


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICANTE_LOG_")}
    done = subprocess.run(
        [sys.executable, "-m", "worker"],
        cwd=REPO_ROOT,
        env={**env, "REPLICANTE_LOG_FORMAT": "xml", "REPLICANTE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr == "replicante: error: REPLICANTE_LOG_FORMAT=xml: not one of json, console\n"


# --- replay ----------------------------------------------------------------------------------


def workflow_records(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name == "temporalio.workflow"]


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
@pytest.mark.parametrize("log_during_replay", [False, True])
async def test_replaying_a_history_logs_nothing_from_workflow_code(
    path: Path,
    log_during_replay: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recorded histories whose workflows logged events: replayed, not a line. With the
    SDK's replay filter off, the same replay logs them: the history does exercise it."""
    monkeypatch.setattr(workflow.logger, "log_during_replay", log_during_replay)
    replayer = Replayer(
        workflows=[ClusterMonitorWorkflow, RemediationWorkflow],
        data_converter=pydantic_data_converter,
    )
    with caplog.at_level(logging.INFO):
        result = await replayer.replay_workflow(
            WorkflowHistory.from_json(path.stem, path.read_text())
        )
    assert result.replay_failure is None
    logged = workflow_records(caplog.records)
    if log_during_replay:
        assert logged, "this history logs nothing even when replay may"
    else:
        assert logged == []


@pytest.mark.parametrize("log_during_replay", [False, True])
async def test_a_live_monitor_without_a_cache_logs_each_event_once(
    temporal_env: WorkflowEnvironment,
    zk_healthy: ZooKeeperEnsemble,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    log_during_replay: bool,
) -> None:
    """No workflow cache: each workflow task replays the whole history before its new part,
    so a line logged during replay would come once per task."""
    monkeypatch.setattr(workflow.logger, "log_during_replay", log_during_replay)
    cid = f"logs-{uuid.uuid4().hex[:6]}"
    store = SQLiteEventStore(tmp_path / "events.db")
    try:
        async with (
            Worker(
                temporal_env.client,
                task_queue=f"q-{cid}",
                workflows=[ClusterMonitorWorkflow],
                activities=[EventActivities(store).record_events],
                max_cached_workflows=0,
            ),
            Worker(
                temporal_env.client,
                task_queue=watch_task_queue(f"q-{cid}"),
                activities=[WatchActivities(store).watch_cluster],
            ),
        ):
            handle = await temporal_env.client.start_workflow(
                ClusterMonitorWorkflow.run,
                MonitorInput(spec=zk_spec(zk_healthy, cid, interval_s=0.5)),
                id=workflow_id(cid),
                task_queue=f"q-{cid}",
            )
            await wait_for_event(store, cid, of_type("cluster.health_changed"))
            await handle.signal(ClusterMonitorWorkflow.pause, "maintenance")
            await wait_for_event(store, cid, of_type("monitor.paused"))
            await handle.signal(ClusterMonitorWorkflow.resume, "done")
            await wait_for_event(store, cid, of_type("monitor.resumed"))
            await handle.terminate("test over")
    finally:
        store.close()
    messages = [
        r.getMessage()
        for r in workflow_records(caplog.records)
        if getattr(r, "temporal_workflow", {}).get("workflow_id") == handle.id
    ]
    health = [m for m in messages if m.startswith("cluster.health_changed: ")]
    if log_during_replay:
        assert len(health) > 1, messages
    else:
        assert len(health) == 1, messages


# --- secrets ---------------------------------------------------------------------------------


def planted() -> str:
    return f"planted-{uuid.uuid4().hex}"


@pytest.fixture
def secret_logger(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own whose lines go through the formatter of `request.param`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(request.param))
    logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.removeHandler(handler)


@pytest.mark.parametrize("secret_logger", list(LogFormat), indirect=True)
def test_every_shape_of_a_secret_is_masked(
    secret_logger: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, stream = secret_logger
    value, uri_password, extra, bound = planted(), planted(), planted(), planted()
    monkeypatch.setenv("REPLICANTE_SECRET_TEST_LOGS", value)
    spec = ClusterSpec.model_validate(
        {
            "cluster_id": "c1",
            "kind": "mongodb",
            "nodes": [{"node_id": "m1", "address": "127.0.0.1:27017"}],
            "secrets": {"password": {"env": "REPLICANTE_SECRET_TEST_LOGS"}},
        }
    )
    assert read_secrets(spec, "password") == {"password": value}

    logger.info("connecting with %s", value)
    try:
        raise ValueError(f"refused: {value}")
    except ValueError:
        logger.exception("probe failed")
    logger.info("store at mongodb://app:%s@db1:27017/?replicaSet=rs0", uri_password)
    logger.info("token", extra={"api_token": extra})
    with structlog.contextvars.bound_contextvars(db_password=bound):
        logger.info("bound")

    out = stream.getvalue()
    for leaked in (value, uri_password, extra, bound):
        assert leaked not in out
    assert "connecting with ***" in out
    assert "ValueError: refused: ***" in out
    assert "mongodb://app:***@db1:27017/?replicaSet=rs0" in out
    assert out.count("***") == 5, out


def test_the_settings_secrets_are_known_ones() -> None:
    password, key = planted(), planted()
    logs.configure(
        Settings(store_mongodb_uri=f"mongodb://app:{password}%40x@db1/", codec_key=f"k1:{key}")
    )
    assert {f"{password}%40x", f"{password}@x", key} <= known()
    assert "k1" not in known()


async def test_a_planted_secret_never_reaches_a_workers_log(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A real MongoDB probe reads the planted password (the member's port is closed), at
    debug level; the operator then pastes the password into a pause reason, which the
    monitor logs in its event line. The username is no secret: "monitor" stays a word."""
    secret = planted()
    cid = f"logs-{uuid.uuid4().hex[:6]}"
    queue = f"q-{cid}"
    env = process_env(
        temporal_env.client,
        tmp_path,
        REPLICANTE_TASK_QUEUE=queue,
        REPLICANTE_LOG_LEVEL="debug",
        REPLICANTE_SECRET_TEST_MONGODB_USER="monitor",
        REPLICANTE_SECRET_TEST_MONGODB_PASSWORD=secret,
    )
    spec = ClusterSpec.model_validate(
        {
            "cluster_id": cid,
            "kind": "mongodb",
            "nodes": [{"node_id": "m1", "address": f"127.0.0.1:{closed_port()}"}],
            "probe": {"interval_s": 0.5, "timeout_s": 0.5},
            "secrets": {
                "username": {"env": "REPLICANTE_SECRET_TEST_MONGODB_USER"},
                "password": {"env": "REPLICANTE_SECRET_TEST_MONGODB_PASSWORD"},
            },
        }
    )
    async with monitored_in_a_worker(temporal_env, spec, env, tmp_path) as (handle, out):
        await handle.signal(ClusterMonitorWorkflow.pause, f"rotating {secret} on m1")
        found = await until_logged(
            out,
            {
                "probe": lambda x: x.get("node") == "m1" and x["logger"] == "replicante.probe",
                "paused": lambda x: x["message"].startswith("monitor.paused: "),
            },
        )
    assert secret not in out.read_text()
    assert found["paused"]["message"] == "monitor.paused: monitoring paused: rotating *** on m1"
    assert found["probe"]["cluster_id"] == cid


def test_kafka_pythons_chatter_stays_out_unless_debugging(tmp_path: Path) -> None:
    """`dev up` and the relay use kafka-python, which logs every connection at INFO."""
    script = (
        "import logging\n"
        "from worker import logs\n"
        "from config.settings import Settings\n"
        "logs.configure(Settings.from_env())\n"
        "logging.getLogger('kafka.net.manager').info('Attempting bootstrap')\n"
        "logging.getLogger('kafka.net.manager').warning('broker gone')\n"
    )

    def run(level: str) -> str:
        env = {**os.environ, "REPLICANTE_LOG_FORMAT": "json", "REPLICANTE_LOG_LEVEL": level}
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stderr

    assert "broker gone" in run("info") and "Attempting bootstrap" not in run("info")
    assert "Attempting bootstrap" in run("debug")


@pytest.mark.parametrize(
    "hostile",
    [
        "a" * 1_000_000,  # one 1 MB hostname in a spec, or a pause reason
        "a://" * 250_000,
        "mongodb://u:" + "p" * 1_000_000,  # a password that never ends in @
        "x" * 500_000 + "://" + "u" * 500_000,
    ],
    ids=["letters", "schemes", "endless-password", "endless-user"],
)
def test_masking_a_line_takes_time_linear_in_its_length(hostile: str) -> None:
    # Before: quadratic, 6.6 s for 32 kB of letters, under the GIL (the whole worker froze
    # for a spec with a 512 kB hostname). Linear, a megabyte takes milliseconds: the bound
    # is a hundred times that, for a loaded machine, and far below the quadratic's hours.
    started = time.perf_counter()
    masked = logs.mask_secrets(None, "info", {"event": hostile, "host": hostile + "@h/"})
    assert time.perf_counter() - started < 2.0
    assert masked["event"] == hostile


def test_the_linear_masker_still_finds_every_uri_password() -> None:
    masked = logs.mask_secrets(
        None,
        "info",
        {"event": "see postgres://u:p@h/x, HTTP://A:B@C and (mongodb://app:pw%40x@db1/)"},
    )
    assert (
        masked["event"] == "see postgres://u:***@h/x, HTTP://A:***@C and (mongodb://app:***@db1/)"
    )
