"""Kafka's preferred leader election playbook on the real Kafka cluster and Temporal dev
server: after a broker comes back Kafka leaves leadership where it moved (until its own
rebalance, minutes later); the remediation moves it back to the preferred replicas."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from activities.kafka import KafkaAdapter
from devstack.kafka import KafkaCluster
from models import ClusterSpec, Policy, evaluate
from models.remediation import Outcome, RemediationInput
from store import SQLiteEventStore
from tests.helpers import kafka_spec, new_topic
from worker.core import core_worker
from workflows.remediation import RemediationWorkflow


async def codes(spec: ClusterSpec) -> set[str]:
    return {f.code for f in evaluate(spec, await KafkaAdapter().probe(spec))}


async def test_preferred_leader_election_moves_leadership_back(
    temporal_env: WorkflowEnvironment, kafka_healthy: KafkaCluster, tmp_path: Path
) -> None:
    kafka = kafka_healthy
    cluster_id = f"elect-{uuid.uuid4().hex[:6]}"
    spec = kafka_spec(kafka, cluster_id)
    new_topic(kafka, partitions=3)
    # Kill and restart one broker: the partitions it led move to others and stay there.
    kafka.kill_member(2)
    # Once the controller fences it, its partitions get other leaders.
    deadline = time.monotonic() + 30
    while "under_replicated" not in await codes(spec):
        assert time.monotonic() < deadline, "broker 2 was never fenced"
        await asyncio.sleep(0.5)
    kafka.start_member(2)
    kafka.wait_ready(timeout=60)
    kafka.wait_in_sync(timeout=60)
    assert "leader_not_preferred" in await codes(spec)

    store = SQLiteEventStore(tmp_path / "events.db")
    queue = f"q-{cluster_id}"
    async with core_worker(temporal_env.client, queue, store):
        status = await temporal_env.client.execute_workflow(
            RemediationWorkflow.run,
            RemediationInput(spec=spec, playbook="preferred_leader_election", policy=Policy.AUTO),
            id=f"remediate/{cluster_id}/preferred_leader_election",
            task_queue=queue,
        )
    store.close()
    assert status.outcome is Outcome.HEALED, status
    assert status.verdict is not None and status.verdict.safe
    assert status.steps[0].detail.startswith("election asked for ")
    assert "leader_not_preferred" not in await codes(spec)
    after = await KafkaAdapter().probe(spec)
    assert all(s.node_id == s.replicas[0] for s in after.shards if s.replicas[0] in s.in_sync)
