"""Kafka's playbooks on the real Kafka cluster and Temporal dev server.

Preferred leader election: after a broker comes back Kafka leaves leadership where it
moved (until its own rebalance, minutes later); the remediation moves it back to the
preferred replicas. Rolling restart: real agents restart each broker, the active
controller last, with zero under-replicated partitions before each next stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from activities.kafka.adapter import KafkaAdapter
from devstack.kafka import KafkaCluster
from models import ClusterSpec, Policy, evaluate
from models.monitor import Outcome
from models.remediation import RemediationInput, RemediationStatus
from store import SQLiteEventStore
from testkit.kafka import new_topic
from testkit.specs import kafka_spec, own_agents
from tests.remediation_stage import member_agents
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


async def roll(
    env: WorkflowEnvironment, kafka: KafkaCluster, spec: ClusterSpec, tmp_path: Path
) -> tuple[RemediationStatus, Path]:
    """A rolling restart under `auto` with a core worker and one real agent per broker;
    its final status and the file where the agents counted their effects."""
    counter = tmp_path / "effects.log"
    store = SQLiteEventStore(tmp_path / "events.db")
    queue = f"q-{spec.cluster_id}"
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(core_worker(env.client, queue, store))
        for agent in member_agents(env.client, kafka, spec, tmp_path, counter):
            await stack.enter_async_context(agent)
        status = await env.client.execute_workflow(
            RemediationWorkflow.run,
            RemediationInput(spec=spec, playbook="rolling_restart", policy=Policy.AUTO),
            id=f"remediate/{spec.cluster_id}/rolling_restart",
            task_queue=queue,
            execution_timeout=timedelta(minutes=5),
        )
    store.close()
    return status, counter


async def test_rolling_restart_restarts_each_broker_once_in_sync_between_them(
    temporal_env: WorkflowEnvironment, kafka_healthy: KafkaCluster, tmp_path: Path
) -> None:
    kafka = kafka_healthy
    spec = own_agents(kafka_spec(kafka, f"roll-{uuid.uuid4().hex[:6]}"))
    new_topic(kafka, partitions=3, min_isr=2)
    controller = (await KafkaAdapter().probe(spec)).leader
    assert controller is not None
    status, counter = await roll(temporal_env, kafka, spec, tmp_path)
    assert status.outcome is Outcome.HEALED, status
    order = [n.node_id for n in spec.nodes if n.node_id != controller] + [controller]
    numbers = {n.node_id: i for i, n in enumerate(spec.nodes, start=1)}
    assert counter.read_text().splitlines() == [f"restart {numbers[b]}" for b in order]
    assert [r.step.name for r in status.steps] == [
        *(
            name
            for b in order
            for name in (f"restart-{b}", f"wait-{b}-serving", f"wait-in-sync-after-{b}")
        ),
        "elect-preferred-leaders",
        "wait-leaders-preferred",
    ]
    assert all(r.state == "done" for r in status.steps)
    assert not await codes(spec)


async def test_rolling_restart_refuses_while_a_stop_would_drop_a_partition_below_min_isr(
    temporal_env: WorkflowEnvironment, kafka_healthy: KafkaCluster, tmp_path: Path
) -> None:
    kafka = kafka_healthy
    spec = own_agents(kafka_spec(kafka, f"roll-{uuid.uuid4().hex[:6]}"))
    topic = new_topic(kafka, partitions=1, min_isr=3)
    status, counter = await roll(temporal_env, kafka, spec, tmp_path)
    assert status.outcome is Outcome.REFUSED, status
    assert status.verdict is not None
    assert "below min.insync.replicas, e.g. " + topic in status.verdict.reason
    assert not counter.exists()
