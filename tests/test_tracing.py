"""Traces: a remediation the monitor starts for a finding is one connected trace, from the
finding to its last step, across the core worker and a node agent (collected in memory, on
the real ensemble with real agents in this process); and a `python -m worker` process and
a CLI call send their spans by OTLP/HTTP, as the standard environment configures them, one
trace across the two."""

from __future__ import annotations

import asyncio
import doctest
import gzip
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from config import traces
from config.settings import REPO_ROOT
from devstack.zookeeper import ZooKeeperEnsemble
from models import MonitorInput, Policy
from store import SQLiteEventStore
from testkit.events import of_type, wait_for_event
from testkit.specs import zk_spec
from testkit.workers import worker_processes
from tests.helpers import process_env, start_monitor
from tests.remediation_stage import open_stage
from tests.test_imports import CLI
from worker import telemetry
from worker.telemetry import Role
from workflows.monitor import ClusterMonitorWorkflow, workflow_id
from workflows.remediation import RemediationWorkflow


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span of this process, from now on: OpenTelemetry takes one global tracer
    provider per process, so the tests after these keep recording into a stopped exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "a tracer provider was set before"
    yield exporter
    provider.shutdown()


def ids(span: ReadableSpan) -> tuple[int, int]:
    """Trace and span id."""
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def attributes(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def children(spans: list[ReadableSpan], parent: ReadableSpan, name: str) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.name == name and s.parent is not None and s.parent.span_id == ids(parent)[1]
    ]


def tree(spans: list[ReadableSpan], root: ReadableSpan) -> str:
    """The spans under `root`, one per line, indented under their parent, in time order."""
    below: dict[int, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        if span.parent is not None:
            below.setdefault(span.parent.span_id, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        ours = [f"{k.removeprefix('replicante.')}={v}" for k, v in attributes(span).items()]
        shown = " ".join(o for o in ours if "temporal" not in o)
        if span.status.status_code is StatusCode.ERROR:
            shown += f" ERROR {span.status.description}"
        lines.append(f"{'  ' * depth}{span.name} {shown}".rstrip())
        for child in below.get(ids(span)[1], []):
            walk(child, depth + 1)

    walk(root, 0)
    return "\n".join(lines)


async def test_a_remediation_is_one_trace_from_its_finding_to_its_last_step(
    temporal_env: WorkflowEnvironment,
    zk_healthy: ZooKeeperEnsemble,
    tmp_path: Path,
    spans: InMemorySpanExporter,
) -> None:
    # The interceptors every worker gets from connect(): the same on core worker and agents.
    config = temporal_env.client.config()
    config["interceptors"] = telemetry.interceptors(Role.WORKER)
    traced = Client(**config)
    n = next(m for m in zk_healthy.members if m != zk_healthy.leader())
    async with open_stage(WorkflowEnvironment.from_client(traced), zk_healthy, tmp_path) as stage:
        spec = stage.spec.model_copy(update={"remediation": {"restart_dead_member": Policy.AUTO}})
        cid = spec.cluster_id
        monitor = await start_monitor(traced, stage.store, spec, stage.queue)
        stage.ensemble.kill_member(n)
        wid = f"remediate/{cid}/node_down/zk{n}"
        await wait_for_event(stage.store, cid, of_type("remediation.requested"), timeout=30)
        status = await traced.get_workflow_handle_for(RemediationWorkflow.run, wid).result()
        assert status.outcome is not None and status.outcome.value == "healed"
        await monitor.handle.terminate("test over")

    collected = list(spans.get_finished_spans())
    roots = [
        s for s in collected if attributes(s).get("replicante.remediation") == wid and not s.parent
    ]
    assert [r.name for r in roots] == ["Finding:node_down"], [s.name for s in collected]
    root = roots[0]
    ours = [s for s in collected if ids(s)[0] == ids(root)[0]]
    shown = tree(ours, root)
    # Connected: every span but the root hangs from another span of the same trace.
    known = {ids(s)[1] for s in ours}
    assert all(s.parent is not None and s.parent.span_id in known for s in ours if s is not root)
    assert attributes(root) == {
        "replicante.cluster": cid,
        "replicante.kind": "zookeeper",
        "replicante.playbook": "restart_dead_member",
        "replicante.policy": "auto",
        "replicante.remediation": wid,
        "replicante.node": f"zk{n}",
        "replicante.finding": f"node_down/zk{n}",
        "replicante.severity": "warning",
    }
    # Linked to the monitor's own trace, which began with the client's start.
    started = [s for s in collected if s.name == "StartWorkflow:ClusterMonitorWorkflow"]
    assert [link.context.trace_id for link in root.links] == [ids(s)[0] for s in started]
    by_name = {s.name: s for s in ours}
    for name in [
        "StartChildWorkflow:RemediationWorkflow",
        "RunWorkflow:RemediationWorkflow",
        "RunActivity:probe_cluster",  # the safety gate's fresh probe
        f"RemediationStep:start-zk{n}",
        "RunActivity:service_action",  # on zk{n}'s agent
        f"RemediationStep:wait-zk{n}-serving",
        "RunActivity:wait_serving",
        "CompleteWorkflow:RemediationWorkflow",
    ]:
        assert name in by_name, f"no {name} in\n{shown}"
    assert "RunActivity:watch_cluster" not in by_name, shown
    # The last step came after the agent's.
    last, agents = by_name["RunActivity:wait_serving"], by_name["RunActivity:service_action"]
    assert (last.start_time or 0) >= (agents.end_time or 0), shown
    # A span per node of each probe: the gate's saw zk{n} down, and why.
    [probe] = children(ours, by_name["RunActivity:probe_cluster"], "Probe")
    nodes = {attributes(s)["replicante.node"]: s for s in children(ours, probe, "ProbeNode")}
    assert set(nodes) == {"zk1", "zk2", "zk3"}, shown
    down = nodes.pop(f"zk{n}")
    assert attributes(down) == {
        "replicante.cluster": cid,
        "replicante.kind": "zookeeper",
        "replicante.node": f"zk{n}",
    }
    assert down.status.status_code is StatusCode.ERROR, shown
    assert "refused" in (down.status.description or ""), shown
    assert all(s.status.status_code is StatusCode.UNSET for s in nodes.values()), shown


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver on a free port: what each POST to /v1/traces carried."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.requests.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[tuple[str, str, dict[str, str]]]:
        """(service name, span name, string attributes) of every span received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: a.value.string_value for a in span.attributes}
                        attributes["trace_id"] = span.trace_id.hex()
                        found.append((resource["service.name"], span.name, attributes))
        return found


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_a_worker_and_a_cli_call_send_their_spans_by_otlp_http(
    temporal_env: WorkflowEnvironment,
    zk_healthy: ZooKeeperEnsemble,
    tmp_path: Path,
    collector: Collector,
) -> None:
    client = temporal_env.client
    cid = f"otlp-{uuid.uuid4().hex[:6]}"
    env = process_env(
        client,
        tmp_path,
        REPLICANTE_TASK_QUEUE=f"q-{cid}",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms: the worker's batches, soon
    )
    with worker_processes(env, tmp_path) as workers:
        workers.start()
        handle = await client.start_workflow(
            ClusterMonitorWorkflow.run,
            MonitorInput(spec=zk_spec(zk_healthy, cid, interval_s=0.2)),
            id=workflow_id(cid),
            task_queue=f"q-{cid}",
        )
        store = SQLiteEventStore(tmp_path / "events.db")
        try:
            await wait_for_event(store, cid, of_type("cluster.health_changed"), timeout=30)
        finally:
            store.close()
        cli = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-c",
                CLI,
                "status",
                cid,
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        deadline = time.monotonic() + 20
        while True:
            spans = collector.spans()
            names = {(service, name) for service, name, _ in spans}
            wanted = {
                ("replicante-cli", "QueryWorkflow:status"),
                ("replicante-worker", "HandleQuery:status"),
                ("replicante-worker", "ProbeNode"),
            }
            if wanted <= names:
                break
            assert time.monotonic() < deadline, f"{sorted(names)}\n{workers.tail()}"
            await asyncio.sleep(0.2)
        await handle.terminate("test over")
    nodes = sorted(
        a["replicante.node"]
        for _, name, a in spans
        if name == "ProbeNode" and a["replicante.cluster"] == cid
    )
    assert {"zk1", "zk2", "zk3"} <= set(nodes)
    # The query's context went from the CLI process to the worker's handler: one trace.
    query = next(a for service, name, a in spans if name == "QueryWorkflow:status")
    handled = next(a for service, name, a in spans if name == "HandleQuery:status")
    assert query["trace_id"] == handled["trace_id"]


def test_the_environment_picks_the_exporter() -> None:
    result = doctest.testmod(traces)
    assert result.attempted > 0 and result.failed == 0
