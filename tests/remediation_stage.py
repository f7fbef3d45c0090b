"""A stage for remediation tests: the real ZooKeeper ensemble of the session, a core
worker, and one real node agent (in this process) per member whose start and restart
commands act on that member and count what they did. The `stage` fixture is in tests/conftest.py."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.service import Ledger
from devstack.jvm import JvmCluster
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, Finding, Policy, Severity
from models.agent import parse_agent_config
from models.remediation import RemediationInput, RemediationStatus
from store import EventQuery, SQLiteEventStore
from testkit.specs import own_agents, zk_spec
from worker.agent import AgentFiles, agent_worker
from worker.core import core_worker
from workflows.remediation import RemediationWorkflow

MEMBER_ACTION = """\
import importlib, sys
from pathlib import Path
module, _, name = sys.argv[1].rpartition(".")
kind = getattr(importlib.import_module(module), name)
home, name, ips, n = Path(sys.argv[2]), sys.argv[3], tuple(sys.argv[4].split(",")), int(sys.argv[5])
action, cluster = sys.argv[7], kind(home, name, ips)
if action == "restart":
    cluster.stop_member(n)
cluster.start_member(n)
with open(sys.argv[6], "a") as counter:
    counter.write(f"{action} {n}\\n")
"""


@dataclass
class Stage:
    env: WorkflowEnvironment
    ensemble: ZooKeeperEnsemble
    spec: ClusterSpec
    store: SQLiteEventStore
    queue: str
    starts: Path
    """One line per start or restart command an agent ran (`start 2`, `restart 1`): the
    effect count."""

    async def start(
        self, n: int, policy: Policy, dry_run: bool = False
    ) -> WorkflowHandle[RemediationWorkflow, RemediationStatus]:
        view_finding = Finding(
            code="node_down",
            severity=Severity.WARNING,
            subject=f"zk{n}",
            message=f"zk{n} is down",
        )
        return await self.remediate(
            RemediationInput(
                spec=self.spec,
                playbook="restart_dead_member",
                target=f"zk{n}",
                finding=view_finding,
                policy=policy,
                dry_run=dry_run,
            ),
            f"node_down/zk{n}",
        )

    async def remediate(
        self, input: RemediationInput, what: str
    ) -> WorkflowHandle[RemediationWorkflow, RemediationStatus]:
        return await self.env.client.start_workflow(
            RemediationWorkflow.run,
            input,
            id=f"remediate/{self.spec.cluster_id}/{what}/{uuid.uuid4().hex[:6]}",
            task_queue=self.queue,
        )

    def effects(self) -> list[str]:
        return self.starts.read_text().splitlines() if self.starts.exists() else []

    def start_count(self) -> int:
        return sum(1 for line in self.effects() if line.startswith("start "))

    def event_types(self, workflow_id: str) -> list[str]:
        return [
            s.event.type
            for s in self.store.query(EventQuery(cluster_id=self.spec.cluster_id))
            if s.event.payload.get("remediation") == workflow_id
        ]


def member_agent_config(
    cluster: JvmCluster, spec: ClusterSpec, n: int, tmp_path: Path, counter: Path
) -> dict[str, object]:
    """The config of the agent of `spec`'s node n, whose start and restart commands act on
    member n of `cluster` and append what they did to `counter` (their script goes to
    `tmp_path`)."""
    script = tmp_path / "member_action.py"
    script.write_text(MEMBER_ACTION)
    kind = f"{type(cluster).__module__}.{type(cluster).__name__}"
    home = cluster.dir.parent.parent
    argv = [sys.executable, str(script), kind, str(home), cluster.name, ",".join(cluster.ips)]
    argv += [str(n), str(counter)]
    node = spec.nodes[n - 1]
    return {
        "cluster_id": spec.cluster_id,
        "node_id": node.node_id,
        "agent": node.agent,
        "actions": {"start": [*argv, "start"], "restart": [*argv, "restart"]},
    }


def follower_agent(zk: ZooKeeperEnsemble, spec: ClusterSpec, tmp_path: Path) -> tuple[int, str]:
    """A follower of `zk` and its agent's node id, whose config is written where
    `replicante agent` in home `tmp_path/home` finds it (its effects count in
    `tmp_path/starts.log`)."""
    n = next(m for m in zk.members if m != zk.leader())
    agent = spec.nodes[n - 1].agent_id
    config = AgentFiles.of(tmp_path / "home", agent).config
    config.parent.mkdir(parents=True)
    starts = tmp_path / "starts.log"
    config.write_text(yaml.safe_dump(member_agent_config(zk, spec, n, tmp_path, starts)))
    return n, agent


def member_agents(
    client: Client, cluster: JvmCluster, spec: ClusterSpec, tmp_path: Path, counter: Path
) -> list[Worker]:
    """One agent (not started) per node of `spec`, whose start and restart commands act on
    the matching member of `cluster` and append what they did to `counter`."""
    agents = []
    for n in range(1, len(spec.nodes) + 1):
        config = member_agent_config(cluster, spec, n, tmp_path, counter)
        agents.append(
            agent_worker(client, parse_agent_config(config), Ledger(tmp_path / f"{n}.db"))
        )
    return agents


@asynccontextmanager
async def open_stage(
    temporal_env: WorkflowEnvironment, ensemble: ZooKeeperEnsemble, tmp_path: Path
) -> AsyncIterator[Stage]:
    cluster_id = f"heal-{uuid.uuid4().hex[:6]}"
    queue = f"q-{cluster_id}"
    spec = own_agents(zk_spec(ensemble, cluster_id, interval_s=0.5))
    starts = tmp_path / "starts.log"
    store = SQLiteEventStore(tmp_path / "events.db")
    agents = member_agents(temporal_env.client, ensemble, spec, tmp_path, starts)
    async with core_worker(temporal_env.client, queue, store):
        for agent in agents:
            await agent.__aenter__()
        try:
            yield Stage(temporal_env, ensemble, spec, store, queue, starts)
        finally:
            for agent in agents:
                await agent.__aexit__(None, None, None)
    store.close()
