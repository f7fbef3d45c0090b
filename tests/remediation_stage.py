"""A stage for remediation tests: the real ZooKeeper ensemble of the session, a core
worker, and one real node agent (in this process) per member whose start command starts
that member and counts the starts. The `stage` fixture is in tests/conftest.py."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.service import Ledger
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, Finding, Policy, Severity
from models.agent import parse_agent_config
from models.remediation import RemediationInput, RemediationStatus
from store import EventQuery, SQLiteEventStore
from tests.helpers import zk_spec
from worker.agent import agent_worker
from worker.core import core_worker
from workflows.remediation import RemediationWorkflow

START_MEMBER = """\
import sys
from pathlib import Path
from devstack.zookeeper import ZooKeeperEnsemble
home, name, ips, n = Path(sys.argv[1]), sys.argv[2], tuple(sys.argv[3].split(",")), int(sys.argv[4])
ZooKeeperEnsemble(home, name, ips).start_member(n)
with open(sys.argv[5], "a") as counter:
    counter.write("start\\n")
"""


@dataclass
class Stage:
    env: WorkflowEnvironment
    ensemble: ZooKeeperEnsemble
    spec: ClusterSpec
    store: SQLiteEventStore
    queue: str
    starts: Path
    """One line per start command the agent ran: the effect count."""

    async def start(
        self, n: int, policy: Policy, dry_run: bool = False
    ) -> WorkflowHandle[RemediationWorkflow, RemediationStatus]:
        view_finding = Finding(
            code="node_down",
            severity=Severity.WARNING,
            subject=f"zk{n}",
            message=f"zk{n} is down",
        )
        return await self.env.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(
                spec=self.spec,
                playbook="restart_dead_member",
                target=f"zk{n}",
                finding=view_finding,
                policy=policy,
                dry_run=dry_run,
            ),
            id=f"remediate/{self.spec.cluster_id}/node_down/zk{n}/{uuid.uuid4().hex[:6]}",
            task_queue=self.queue,
        )

    def start_count(self) -> int:
        return len(self.starts.read_text().splitlines()) if self.starts.exists() else 0

    def event_types(self, workflow_id: str) -> list[str]:
        return [
            s.event.type
            for s in self.store.query(EventQuery(cluster_id=self.spec.cluster_id))
            if s.event.payload.get("remediation") == workflow_id
        ]


@asynccontextmanager
async def open_stage(
    temporal_env: WorkflowEnvironment, ensemble: ZooKeeperEnsemble, tmp_path: Path
) -> AsyncIterator[Stage]:
    cluster_id = f"heal-{uuid.uuid4().hex[:6]}"
    queue = f"q-{cluster_id}"
    # Every member's agent listens on node/<node id>; the node ids are unique per test.
    spec = zk_spec(ensemble, cluster_id, interval_s=0.5)
    spec = spec.model_copy(
        update={
            "nodes": tuple(
                n.model_copy(update={"agent": f"{cluster_id}-{n.node_id}"}) for n in spec.nodes
            )
        }
    )
    script = tmp_path / "start_member.py"
    script.write_text(START_MEMBER)
    starts = tmp_path / "starts.log"
    home = ensemble.dir.parent.parent
    store = SQLiteEventStore(tmp_path / "events.db")
    agents = []
    for n, node in enumerate(spec.nodes, start=1):
        assert node.agent is not None
        argv = [sys.executable, str(script), str(home), ensemble.name, ",".join(ensemble.ips)]
        config = parse_agent_config(
            {"node_id": node.agent, "actions": {"start": [*argv, str(n), str(starts)]}}
        )
        agents.append(agent_worker(temporal_env.client, config, Ledger(tmp_path / f"{n}.db")))
    async with core_worker(temporal_env.client, queue, store):
        for agent in agents:
            await agent.__aenter__()
        try:
            yield Stage(temporal_env, ensemble, spec, store, queue, starts)
        finally:
            for agent in agents:
                await agent.__aexit__(None, None, None)
    store.close()
