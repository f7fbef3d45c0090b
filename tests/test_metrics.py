"""Metrics: a core worker and a node agent, `python -m worker` processes with
REPLICANTE_METRICS_ADDRESS, serve Prometheus over HTTP: the Temporal SDK's metrics and
ours, scraped while a monitor on the real ensemble sees a member killed, waits for approval
to start it again, and heals it through the agent."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from config.settings import REPO_ROOT
from devstack.zookeeper import ZooKeeperEnsemble
from models import MonitorInput, Policy
from models.monitor import Outcome
from models.remediation import Decision
from store import SQLiteEventStore
from testkit.events import of_type, wait_for_event
from testkit.specs import own_agents, zk_spec
from testkit.workers import Workers, worker_processes
from tests.helpers import process_env
from tests.remediation_stage import follower_agent
from tests.test_imports import CLI
from workflows.monitor import ClusterMonitorWorkflow, workflow_id
from workflows.remediation import RemediationWorkflow

Sample = tuple[str, dict[str, str], float]

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def parse(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if (found := SAMPLE.match(line)) is not None:
            labels = dict(LABEL.findall(found["labels"] or ""))
            samples.append((found["name"], labels, float(found["value"])))
    return samples


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The sum of the samples of `name` with these labels (among others); None if none."""
    found = [v for n, ls, v in samples if n == name and labels.items() <= ls.items()]
    return sum(found) if found else None


async def scrape(address: str, workers: Workers, timeout: float = 20.0) -> list[Sample]:
    """GET /metrics, waiting for a starting process to serve it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with await asyncio.to_thread(
                urllib.request.urlopen, f"http://{address}/metrics", timeout=5
            ) as reply:
                assert reply.headers.get_content_type() == "text/plain"
                return parse(reply.read().decode())
        except OSError:
            dead = [pid for pid, proc in workers.procs.items() if proc.poll() is not None]
            assert not dead and time.monotonic() < deadline, workers.tail()
            await asyncio.sleep(0.2)


async def test_a_worker_and_an_agent_serve_their_metrics_to_prometheus(
    temporal_env: WorkflowEnvironment, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> None:
    client = temporal_env.client
    cid = f"metrics-{uuid.uuid4().hex[:6]}"
    spec = own_agents(zk_spec(zk_healthy, cid, interval_s=0.5)).model_copy(
        update={"remediation": {"restart_dead_member": Policy.APPROVE}}
    )
    n, agent = follower_agent(zk_healthy, spec, tmp_path)
    env = process_env(client, tmp_path, REPLICANTE_TASK_QUEUE=f"q-{cid}")
    core_at, agent_at = free_address(), free_address()
    (tmp_path / "core").mkdir()
    (tmp_path / "agent").mkdir()
    store = SQLiteEventStore(tmp_path / "events.db")
    try:
        with (
            worker_processes(
                {**env, "REPLICANTE_METRICS_ADDRESS": core_at}, tmp_path / "core"
            ) as core,
            worker_processes(
                {**env, "REPLICANTE_METRICS_ADDRESS": agent_at}, tmp_path / "agent"
            ) as agents,
        ):
            core.start()
            agents.start("--agent", agent)
            await scrape(core_at, core)
            await scrape(agent_at, agents)
            monitor = await client.start_workflow(
                ClusterMonitorWorkflow.run,
                MonitorInput(spec=spec),
                id=workflow_id(cid),
                task_queue=f"q-{cid}",
            )
            await wait_for_event(store, cid, of_type("cluster.health_changed"), timeout=30)
            zk_healthy.kill_member(n)
            await wait_for_event(store, cid, of_type("remediation.awaiting_approval"), timeout=30)

            down = await scrape(core_at, core)
            ours = {"cluster": cid}
            assert value(down, "replicante_findings", **ours, severity="warning") == 1
            assert value(down, "replicante_findings", **ours, severity="critical") == 0
            set_at = value(down, "replicante_findings_set_timestamp_seconds", **ours)
            assert set_at is not None and abs(set_at - time.time()) < 10, set_at
            assert value(down, "replicante_events_total", **ours, type="node.down") == 1
            lag = value(down, "replicante_detection_lag_seconds_sum", **ours, type="node.down")
            assert lag is not None and 0 < lag < 5
            for node in ("zk1", "zk2", "zk3"):
                probes = "replicante_probe_duration_seconds_count"
                assert (value(down, probes, **ours, kind="zookeeper", node=node) or 0) > 1
            # One of the SDK's own, beside ours on the same endpoint.
            tasks = "temporal_workflow_task_execution_latency_count"
            assert (value(down, tasks, workflow_type="ClusterMonitorWorkflow") or 0) >= 1
            # A CLI call in the worker's environment serves nothing: the address is taken.
            cli = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", CLI, "status", cid],
                cwd=REPO_ROOT,
                env={**env, "REPLICANTE_METRICS_ADDRESS": core_at},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr

            remediation = client.get_workflow_handle_for(
                RemediationWorkflow.run, f"remediate/{cid}/node_down/zk{n}"
            )
            await remediation.execute_update(
                RemediationWorkflow.approve, Decision(by="test", reason="metrics")
            )
            assert (await remediation.result()).outcome is Outcome.HEALED
            healed = {"playbook": "restart_dead_member", "outcome": "healed"}
            deadline = time.monotonic() + 30
            while True:
                up = await scrape(core_at, core)
                if value(up, "replicante_findings", **ours, severity="warning") == 0:
                    break
                assert time.monotonic() < deadline, "the finding never cleared in the gauge"
                await asyncio.sleep(0.2)
            assert value(up, "replicante_remediations_total", **ours, **healed) == 1
            assert value(up, "replicante_events_total", **ours, type="node.up") == 1
            # The agent ran the start: its endpoint has the SDK's metrics of that activity.
            ran = await scrape(agent_at, agents)
            executed = "temporal_activity_execution_latency_count"
            assert value(ran, executed, activity_type="service_action") == 1
            await monitor.terminate("test over")
    finally:
        store.close()
        zk_healthy.start_member(n)
