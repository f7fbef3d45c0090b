"""`replicante doctor` on the real stack: the session's Temporal dev server, ZooKeeper
ensemble, Kafka cluster and FerretDB, with core workers and node agents in this process.

Each test has a Temporal namespace of its own: doctor lists every monitor of its
namespace, and other tests leave theirs behind in `default`.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio import workflow
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.service import Ledger
from client import doctor
from config.settings import Settings
from config.stream import StreamSettings
from devstack.ferretdb import FerretDB
from devstack.kafka import KafkaCluster
from devstack.temporal import temporal_binary
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, MonitorInput, Policy, parse_agent_config
from store import SQLiteEventStore
from testkit.specs import zk_spec
from tests.helpers import (
    Monitor,
    Run,
    closed_port_address,
    point_cli_at,
    publish,
    run_cli,
    start_monitor,
)
from tests.test_mongodb_ferretdb import env_login, ferretdb_spec
from worker.agent import agent_worker
from worker.core import core_worker, start_event_stream
from workflows import search_attributes
from workflows.monitor import workflow_id


@dataclass
class Line:
    status: str
    name: str
    detail: str
    fix: str


def parse(out: str) -> list[Line]:
    """The report's check lines (each with the fix line below it, if any), without the
    summary."""
    lines: list[Line] = []
    for text in out.splitlines():
        if text.startswith("      fix: "):
            lines[-1].fix = text.removeprefix("      fix: ")
        elif text[:4] in ("ok  ", "WARN", "FAIL", "skip"):
            name, _, detail = text[6:].partition(": ")
            lines.append(Line(text[:4].strip(), name, detail, ""))
    return lines


def by_name(lines: list[Line]) -> dict[str, Line]:
    return {line.name: line for line in lines}


@dataclass
class Stack:
    """A namespace of its own on the session's dev server, and the CLI pointed at it."""

    client: Client
    queue: str
    store_path: Path
    capsys: pytest.CaptureFixture[str]
    tmp_path: Path
    exits: AsyncExitStack

    async def doctor(self, *argv: str) -> Run:
        return await run_cli(self.capsys, "doctor", *argv)

    async def core_worker(self, stream: StreamSettings | None = None) -> SQLiteEventStore:
        store = SQLiteEventStore(self.store_path)
        self.exits.callback(store.close)
        await self.exits.enter_async_context(core_worker(self.client, self.queue, store, stream))
        return store

    async def agents(self, cluster_id: str, *node_ids: str) -> None:
        """In-process node agents of `cluster_id`, polling `node/<cluster_id>/<node_id>`; no
        actions: doctor only looks."""
        for node_id in node_ids:
            ledger = Ledger(self.tmp_path / f"{cluster_id}-{node_id}.ledger.db")
            self.exits.callback(ledger.close)
            config = parse_agent_config({"cluster_id": cluster_id, "node_id": node_id})
            await self.exits.enter_async_context(agent_worker(self.client, config, ledger))

    async def monitor(self, store: SQLiteEventStore, spec: ClusterSpec) -> Monitor:
        return await start_monitor(self.client, store, spec, self.queue)


async def own_namespace(env: WorkflowEnvironment, *, with_search_attributes: bool = True) -> Client:
    """A new namespace, with our search attributes as an operator sets them up unless told
    not to."""
    name = f"doctor-{uuid.uuid4().hex[:8]}"
    service = env.client.workflow_service
    await service.register_namespace(
        RegisterNamespaceRequest(
            namespace=name, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    if with_search_attributes:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=name,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type)
                    for key in search_attributes.ALL
                },
            )
        )
    return await Client.connect(
        env.client.service_client.config.target_host,
        namespace=name,
        data_converter=pydantic_data_converter,
    )


@pytest.fixture
async def stack(
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Stack]:
    client = await own_namespace(temporal_env)
    queue = "q-doctor"
    store_path = tmp_path / "events.db"
    point_cli_at(monkeypatch, client, queue, store_path)
    monkeypatch.setenv("REPLICANTE_HOME", str(tmp_path / "home"))
    for unset in ("REPLICANTE_EVENTS_KAFKA", "REPLICANTE_STORE_MONGODB_URI"):
        monkeypatch.delenv(unset, raising=False)
    async with AsyncExitStack() as exits:
        yield Stack(client, queue, store_path, capsys, tmp_path, exits)


def with_approve(spec: ClusterSpec) -> ClusterSpec:
    """Remediation under `approve`, not `auto`: a member a test kills stays down."""
    return spec.model_copy(update={"remediation": {"restart_dead_member": Policy.APPROVE}})


async def test_a_healthy_stack_is_every_line_ok_and_exits_0(
    stack: Stack,
    zk_healthy: ZooKeeperEnsemble,
    kafka_healthy: KafkaCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = StreamSettings(bootstrap=kafka_healthy.bootstrap, topic=f"doctor.{uuid.uuid4().hex}")
    publish(stream, [])  # the topic, as the relay creates it
    monkeypatch.setenv("REPLICANTE_EVENTS_KAFKA", stream.bootstrap)
    monkeypatch.setenv("REPLICANTE_EVENTS_TOPIC", stream.topic)
    store = await stack.core_worker(stream)
    await start_event_stream(stack.client, stack.queue)
    await stack.agents("healthy", "zk1", "zk2", "zk3")
    await stack.monitor(store, with_approve(zk_spec(zk_healthy, "healthy")))

    run = await stack.doctor()

    assert run.code == 0, run.out
    lines = parse(run.out)
    assert [line for line in lines if line.status != "ok"] == []
    nodes = [f"{what} healthy/zk{n}" for what in ("node", "agent") for n in (1, 2, 3)]
    assert sorted(by_name(lines)) == sorted(
        [
            "temporal",
            "namespace",
            "search attributes",
            "core worker",
            "store",
            "event stream",
            "event relay",
            "cluster healthy",
            *nodes,
        ]
    )
    assert f"topic {stream.topic} on 3 broker(s)" in by_name(lines)["event stream"].detail
    assert by_name(lines)["agent healthy/zk2"].detail.startswith(
        "task queue node/healthy/zk2 polled by"
    )
    assert run.out.splitlines()[-1] == f"0 problem(s), 0 warning(s), {len(lines)} ok"

    as_json = json.loads((await stack.doctor("--json")).out)
    assert as_json["ok"] is True
    assert {c["status"] for c in as_json["checks"]} == {"ok"}


async def test_a_killed_member_fails_naming_the_node_its_error_and_the_fix(
    stack: Stack, zk_healthy: ZooKeeperEnsemble
) -> None:
    store = await stack.core_worker()
    monitor = await stack.monitor(store, zk_spec(zk_healthy, "killed"))
    zk_healthy.kill_member(2)
    await monitor.until("node.down", "zk2")

    run = await stack.doctor()

    assert run.code == 1, run.out
    lines = by_name(parse(run.out))
    node = lines["node killed/zk2"]
    assert node.status == "FAIL"
    assert node.detail == f"{zk_healthy.addresses[1]} unreachable: connection refused"
    assert "`replicante remediate killed restart_dead_member --node zk2`" in node.fix
    # One line per open finding: a killed leader also leaves no_leader open a moment.
    findings = [line for line in parse(run.out) if line.name == "finding killed"]
    assert {line.status for line in findings} == {"WARN"}
    assert any("node_down/zk2" in line.detail for line in findings), run.out
    assert [line.name for line in parse(run.out) if line.status == "FAIL"] == ["node killed/zk2"]


async def test_a_remediation_awaiting_approval_warns_with_approve_and_is_the_nodes_fix(
    stack: Stack, zk_healthy: ZooKeeperEnsemble
) -> None:
    store = await stack.core_worker()
    await stack.agents("approval", "zk1", "zk2", "zk3")
    monitor = await stack.monitor(store, with_approve(zk_spec(zk_healthy, "approval")))
    zk_healthy.kill_member(3)
    await monitor.until("remediation.awaiting_approval")

    run = await stack.doctor()

    assert run.code == 1, run.out
    lines = by_name(parse(run.out))
    remediation_id = "remediate/approval/node_down/zk3"
    waiting = lines["remediation approval"]
    assert waiting.status == "WARN"
    assert waiting.detail.startswith(
        f"{remediation_id} (restart_dead_member on zk3) awaits approval until "
    )
    assert f"`replicante approve {remediation_id} --reason TEXT`" in waiting.fix
    assert lines["node approval/zk3"].status == "FAIL"
    assert lines["node approval/zk3"].fix == (
        f"a remediation runs on approval: `replicante actions show {remediation_id}`"
    )


async def test_a_hung_member_fails_within_its_probe_timeout(
    stack: Stack, zk_healthy: ZooKeeperEnsemble
) -> None:
    """SIGSTOP: the member's port accepts and never answers; the spec's 1 s probe timeout
    bounds what doctor waits for it."""
    store = await stack.core_worker()
    await stack.monitor(store, zk_spec(zk_healthy, "hung"))
    zk_healthy.pause_member(1)
    try:
        started = time.monotonic()
        run = await stack.doctor()
        took = time.monotonic() - started
    finally:
        zk_healthy.resume_member(1)

    assert run.code == 1, run.out
    node = by_name(parse(run.out))["node hung/zk1"]
    assert node.status == "FAIL"
    assert node.detail == f"{zk_healthy.addresses[0]} unreachable: timeout after 1.0s"
    # Doctor's own start and the other checks take a few seconds on a loaded machine.
    assert took < 10, took


async def test_no_core_worker_polling_fails_with_replicante_worker(stack: Stack) -> None:
    run = await stack.doctor()

    assert run.code == 1, run.out
    worker = by_name(parse(run.out))["core worker"]
    assert worker.status == "FAIL"
    assert worker.detail.startswith(f"nothing polls task queue {stack.queue}")
    assert "`replicante worker`" in worker.fix


async def test_no_worker_with_a_free_watch_slot_fails_with_max_watches(stack: Stack) -> None:
    """The core queue polled, the watch queue not: what a fleet whose workers all hold
    REPLICANTE_MAX_WATCHES watches shows, a minute and a half after the last one filled."""
    store = SQLiteEventStore(stack.store_path)
    stack.exits.callback(store.close)
    await stack.exits.enter_async_context(core_worker(stack.client, stack.queue, store).core)
    deadline = time.monotonic() + 30
    while True:
        worker = by_name(parse((run := await stack.doctor()).out))["core worker"]
        if "for workflow" not in worker.detail or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)

    assert run.code == 1, run.out
    assert worker.status == "FAIL"
    assert worker.detail.startswith(f"nothing polls the watch queue {stack.queue}/watches")
    assert "REPLICANTE_MAX_WATCHES" in worker.fix


async def test_dev_up_waits_for_what_is_still_starting_and_gives_up_with_what_is_left(
    stack: Stack,
) -> None:
    settings = Settings.from_env()
    started = time.monotonic()
    (left,) = await doctor.problems_after(settings, 1.5)
    assert (left.name, left.status) == ("core worker", doctor.Status.FAIL)
    assert time.monotonic() - started >= 1.5

    async def start_late() -> None:
        await asyncio.sleep(1.0)
        await stack.core_worker()

    starting = asyncio.create_task(start_late())
    started = time.monotonic()
    assert await doctor.problems_after(settings, 60.0) == []
    # A second or two after the worker's first poll, not at the deadline.
    assert time.monotonic() - started < 15
    await starting


async def test_a_monitor_no_worker_runs_fails_instead_of_hanging(
    stack: Stack, zk_healthy: ZooKeeperEnsemble
) -> None:
    """Every core worker gone: the monitor cannot answer a query, which would otherwise wait
    for one."""
    spec = zk_spec(zk_healthy, "orphan")
    await stack.client.start_workflow(
        "ClusterMonitorWorkflow",
        MonitorInput(spec=spec),
        id=workflow_id(spec.cluster_id),
        task_queue=stack.queue,
        search_attributes=search_attributes.initial(spec),
    )
    started = time.monotonic()

    run = await stack.doctor()

    assert time.monotonic() - started < doctor.RPC_TIMEOUT_S + 10
    assert run.code == 1, run.out
    lines = by_name(parse(run.out))
    assert lines["cluster orphan"].status == "FAIL"
    assert lines["cluster orphan"].detail == (
        f"monitor/orphan answers no query within {doctor.RPC_TIMEOUT_S:g} s"
    )
    assert lines["nodes orphan"].status == "skip"


async def test_a_remediation_policy_with_no_agent_fails_naming_the_queue(
    stack: Stack, zk_healthy: ZooKeeperEnsemble
) -> None:
    """zk3's agent is `host-c` (the spec's `agent`) and nothing polls
    `node/agentless/host-c`: an agent host-c of another cluster does not count. A cluster
    without a policy needs no agent at all."""
    store = await stack.core_worker()
    await stack.agents("agentless", "zk1", "zk2")
    await stack.agents("elsewhere", "host-c")
    spec = with_approve(zk_spec(zk_healthy, "agentless"))
    nodes = (*spec.nodes[:2], spec.nodes[2].model_copy(update={"agent": "host-c"}))
    await stack.monitor(store, spec.model_copy(update={"nodes": nodes}))
    await stack.monitor(store, zk_spec(zk_healthy, "no-policy"))

    run = await stack.doctor()

    assert run.code == 1, run.out
    lines = parse(run.out)
    agents = {line.name: line for line in lines if line.name.startswith("agent ")}
    assert sorted(agents) == ["agent agentless/zk1", "agent agentless/zk2", "agent agentless/zk3"]
    assert agents["agent agentless/zk1"].status == "ok"
    missing = agents["agent agentless/zk3"]
    assert missing.status == "FAIL"
    assert missing.detail.startswith("nothing polls task queue node/agentless/host-c:")
    assert missing.fix == (
        "on zk3's host: `replicante agent --node host-c`, its config naming cluster_id"
        " agentless and node_id zk3"
    )
    assert [line.name for line in lines if line.status == "FAIL"] == ["agent agentless/zk3"]


async def test_a_paused_monitor_is_a_warning_and_exits_0(
    stack: Stack, zk_healthy: ZooKeeperEnsemble
) -> None:
    store = await stack.core_worker()
    await stack.monitor(store, zk_spec(zk_healthy, "paused"))
    assert (await run_cli(stack.capsys, "pause", "paused", "--reason", "maintenance")).code == 0

    run = await stack.doctor()

    assert run.code == 0, run.out
    cluster = by_name(parse(run.out))["cluster paused"]
    assert cluster.status == "WARN"
    assert cluster.fix == "when the maintenance is over: `replicante resume paused`"


# Outside the sandbox: this module imports what the sandbox refuses (pathlib's resolve).
@workflow.defn(name="ClusterMonitorWorkflow", sandboxed=False)
class BrokenMonitor:
    """A monitor whose code fails every workflow task, as one that meets a
    nondeterminism error after a bad deploy does."""

    @workflow.run
    async def run(self, _: MonitorInput) -> None:
        raise RuntimeError("planted: this code does not replay the history")


async def test_a_monitor_stuck_on_a_failing_workflow_task_fails_with_the_failure(
    stack: Stack, zk_healthy: ZooKeeperEnsemble
) -> None:
    spec = zk_spec(zk_healthy, "stuck")
    handle = await stack.client.start_workflow(
        "ClusterMonitorWorkflow",
        MonitorInput(spec=spec),
        id=workflow_id(spec.cluster_id),
        task_queue=stack.queue,
        search_attributes=search_attributes.initial(spec),
    )
    async with Worker(stack.client, task_queue=stack.queue, workflows=[BrokenMonitor]):
        deadline = time.monotonic() + 30
        while (await handle.describe()).raw_description.pending_workflow_task.attempt < 2:
            assert time.monotonic() < deadline, "the workflow task never failed"
            await asyncio.sleep(0.2)

        run = await stack.doctor()

    assert run.code == 1, run.out
    cluster = by_name(parse(run.out))["cluster stuck"]
    assert cluster.status == "FAIL"
    assert cluster.detail.startswith("monitor/stuck: its workflow task fails (attempt ")
    assert cluster.detail.endswith("): planted: this code does not replay the history")
    assert "`temporal workflow reset --workflow-id monitor/stuck --type LastWorkflowTask" in (
        cluster.fix
    )


async def test_a_missing_topic_and_no_relay_fail_with_their_fixes(
    stack: Stack, kafka_healthy: KafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"doctor.missing.{uuid.uuid4().hex}"
    monkeypatch.setenv("REPLICANTE_EVENTS_KAFKA", kafka_healthy.bootstrap)
    monkeypatch.setenv("REPLICANTE_EVENTS_TOPIC", topic)

    run = await stack.doctor()

    lines = by_name(parse(run.out))
    assert lines["event stream"].status == "FAIL"
    assert (
        lines["event stream"].detail == f"topic {topic} does not exist on {kafka_healthy.bootstrap}"
    )
    assert "set REPLICANTE_EVENTS_TOPIC" in lines["event stream"].fix
    assert lines["event relay"].status == "FAIL"
    assert "events/stream was never started" in lines["event relay"].detail
    assert "`replicante worker`" in lines["event relay"].fix


def run_fix(fix: str) -> None:
    """Run each `temporal ...` command of a fix, as the operator would paste it."""
    for command in re.findall(r"`(temporal [^`]+)`", fix):
        argv = [str(temporal_binary()), *command.split()[1:]]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


async def test_a_missing_namespace_fails_with_a_create_command_that_works(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"doctor-missing-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("REPLICANTE_NAMESPACE", name)

    run = await stack.doctor()

    assert run.code == 1, run.out
    lines = parse(run.out)
    namespace = by_name(lines)["namespace"]
    assert namespace.status == "FAIL"
    assert namespace.detail.startswith(f"{name} does not exist on ")
    skipped = {line.name: line.detail for line in lines if line.status == "skip"}
    assert skipped == dict.fromkeys(
        ["search attributes", "core worker", "clusters"], "needs the namespace"
    )
    run_fix(namespace.fix)
    assert by_name(parse((await stack.doctor()).out))["namespace"].status == "ok"


async def test_missing_search_attributes_fail_with_create_commands_that_work(
    temporal_env: WorkflowEnvironment, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = await own_namespace(temporal_env, with_search_attributes=False)
    monkeypatch.setenv("REPLICANTE_NAMESPACE", bare.namespace)

    run = await stack.doctor()

    assert run.code == 1, run.out
    attributes = by_name(parse(run.out))["search attributes"]
    assert attributes.status == "FAIL"
    for key in search_attributes.ALL:
        assert key.name in attributes.detail
    run_fix(attributes.fix)
    assert by_name(parse((await stack.doctor()).out))["search attributes"].status == "ok"


async def test_unreachable_temporal_is_one_fail_with_the_fix_and_no_traceback(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = closed_port_address()
    monkeypatch.setenv("REPLICANTE_TEMPORAL_ADDRESS", address)

    run = await stack.doctor()

    assert run.code == 1
    assert "Traceback" not in run.out + run.err
    lines = parse(run.out)
    failed = [line for line in lines if line.status == "FAIL"]
    assert len(failed) == 1
    assert failed[0].name == "temporal"
    assert failed[0].detail == f"{address} unreachable: Connection refused"
    assert "`scripts/dev-up`" in failed[0].fix
    skipped = {line.name for line in lines if line.status == "skip"}
    assert skipped == {"namespace", "search attributes", "core worker", "clusters"}


async def test_the_store_mongodb_password_never_appears(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = closed_port_address()
    password = "pl4nted-s3cret"
    monkeypatch.setenv(
        "REPLICANTE_STORE_MONGODB_URI",
        f"mongodb://replicante:{password}@{address}/?serverSelectionTimeoutMS=300",
    )

    text, as_json = await stack.doctor(), await stack.doctor("--json")

    store = by_name(parse(text.out))["store"]
    assert store.status == "FAIL"
    assert store.detail.startswith(f"cannot open the event store MongoDB {address}/replicante")
    for run in (text, as_json):
        assert password not in run.out + run.err


async def test_ferretdb_as_the_store_and_as_a_watched_node_and_a_wrong_password_on_it(
    stack: Stack, ferretdb_running: FerretDB, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """FerretDB (a MongoDB wire-protocol server, not MongoDB) holds the event store and is
    the one node of two watched clusters: one logs in, the other's password is wrong. The
    wrong one fails on its node line, where `ok` would say the monitor sees it: it reads
    nothing past the hello."""
    ferretdb = ferretdb_running
    monkeypatch.setenv("REPLICANTE_STORE_MONGODB_URI", ferretdb.uri())
    store = await stack.core_worker()
    secrets = env_login(monkeypatch, ferretdb.username, ferretdb.password)
    (tmp_path / "wrong").write_text("wr0ng-password-value")
    wrong = secrets | {"password": {"file": str(tmp_path / "wrong")}}
    await stack.monitor(store, ferretdb_spec(ferretdb, secrets, cluster_id="ferret"))
    await stack.monitor(store, ferretdb_spec(ferretdb, wrong, cluster_id="ferret-wrong"))

    run = await stack.doctor()

    assert run.code == 1, run.out
    lines = by_name(parse(run.out))
    assert lines["store"].status == "ok", run.out
    assert lines["store"].detail.startswith(f"MongoDB {ferretdb.address}/replicante.events: ")
    assert (lines["node ferret/f1"].status, lines["node ferret/f1"].detail) == (
        "ok",
        f"{ferretdb.address} answers as primary 7.0.42",
    )
    refused = lines["node ferret-wrong/f1"]
    assert (refused.status, refused.detail) == (
        "FAIL",
        f"{ferretdb.address} answers as primary, not to us: authentication failed",
    )
    assert "username and password secrets" in refused.fix
    assert "auth_failed/f1" in lines["finding ferret-wrong"].detail
    assert [line.name for line in parse(run.out) if line.status == "FAIL"] == [
        "node ferret-wrong/f1"
    ]
    assert ferretdb.password not in run.out + run.err


def test_doctests_pass() -> None:
    result = doctest.testmod(doctor)
    assert result.attempted > 0 and result.failed == 0
