"""The monitor on Kafka end to end: real Temporal dev server, real 3-broker KRaft cluster,
and one worker watching that cluster and the ZooKeeper ensemble at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from devstack.kafka import KafkaCluster
from devstack.zookeeper import ZooKeeperEnsemble
from models import Event
from store import SQLiteEventStore
from testkit.kafka import new_topic
from testkit.specs import kafka_spec, zk_spec
from tests.helpers import Monitor, monitoring, start_monitor
from worker.core import core_worker
from workflows.monitor import ClusterMonitorWorkflow


@pytest.fixture(scope="module")
def topic(kafka_cluster: KafkaCluster) -> str:
    """Partitions to replicate: the cluster starts without any."""
    return new_topic(kafka_cluster, partitions=3)


@pytest.fixture
async def monitor(
    temporal_env: WorkflowEnvironment, kafka_healthy: KafkaCluster, topic: str, tmp_path: Path
) -> AsyncIterator[Monitor]:
    spec = kafka_spec(kafka_healthy, f"k-{uuid.uuid4().hex[:8]}")
    async with monitoring(temporal_env.client, spec, tmp_path) as m:
        yield m


def finding(type_: str, code: str) -> Callable[[Event], bool]:
    return lambda e: e.type == type_ and e.payload["code"] == code


async def controller_of(monitor: Monitor) -> str:
    view = await monitor.handle.query(ClusterMonitorWorkflow.view)
    assert view is not None and view.leader is not None
    return view.leader


async def test_broker_stopped_then_restarted(
    monitor: Monitor, kafka_healthy: KafkaCluster, topic: str
) -> None:
    controller = await controller_of(monitor)
    n = next(n for n in kafka_healthy.members if f"kafka{n}" != controller)
    monitor.set_mark()
    kafka_healthy.kill_member(n)
    down = await monitor.until("node.down", f"kafka{n}")
    assert down.payload["error"] in ("connection refused", "connection reset by peer")
    # Kafka takes the broker out of the ISRs once it is fenced (3 s here).
    await monitor.first(finding("finding.opened", "under_replicated"))
    # The message lists a few partitions of the session's topics; the view has them all.
    view = await monitor.handle.query(ClusterMonitorWorkflow.view)
    assert view is not None
    ours = [s for s in view.shards if s.shard_id.startswith(f"{topic}/")]
    assert len(ours) == 3 and all(f"kafka{n}" not in s.in_sync for s in ours)
    monitor.set_mark()
    kafka_healthy.start_member(n)
    up = await monitor.until("node.up", f"kafka{n}", timeout=60)
    assert up.payload["role"] in ("broker", "looking")
    await monitor.first(finding("finding.resolved", "under_replicated"), timeout=60)


async def test_controller_stopped_names_the_new_one(
    monitor: Monitor, kafka_healthy: KafkaCluster
) -> None:
    old = await controller_of(monitor)
    monitor.set_mark()
    kafka_healthy.kill_member(int(old.removeprefix("kafka")))
    await monitor.until("node.down", old)
    changed = await monitor.until("cluster.leader_changed", timeout=60)
    assert changed.payload["from"] == old
    assert changed.payload["to"] == f"kafka{kafka_healthy.active_controller()}"


async def test_one_worker_watches_zookeeper_and_kafka(
    temporal_env: WorkflowEnvironment,
    zk_healthy: ZooKeeperEnsemble,
    kafka_healthy: KafkaCluster,
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    zk, kafka = zk_spec(zk_healthy, f"zk-{run}"), kafka_spec(kafka_healthy, f"kafka-{run}")
    store = SQLiteEventStore(tmp_path / "events.db")
    queue = f"q-both-{run}"
    async with core_worker(temporal_env.client, queue, store):
        watching = [await start_monitor(temporal_env.client, store, s, queue) for s in (zk, kafka)]
        leader = zk_healthy.leader()
        member = next(n for n in zk_healthy.members if n != leader)
        broker = next(n for n in kafka_healthy.members if n != kafka_healthy.active_controller())
        for m in watching:
            m.set_mark()
        zk_healthy.kill_member(member)
        kafka_healthy.kill_member(broker)
        await watching[0].until("node.down", f"zk{member}")
        await watching[1].until("node.down", f"kafka{broker}")
        for m in watching:
            await m.handle.terminate("test over")
    store.close()
