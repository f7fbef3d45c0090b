"""The event stream on the real Kafka cluster and the real Temporal dev server: every
stored event reaches the topic, keyed by cluster, in each cluster's order, once, even
when Kafka goes away in the middle."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from temporalio.testing import WorkflowEnvironment

from config.stream import StreamSettings, cluster_key
from devstack.kafka import KafkaCluster
from models import EVENT_SCHEMA_VERSION, Event
from store import SQLiteEventStore
from tests.helpers import publish
from worker.core import core_worker, start_event_stream


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    s = SQLiteEventStore(tmp_path / "events.db")
    yield s
    s.close()


def stream_for(kafka: KafkaCluster) -> StreamSettings:
    # A short ack timeout, so the outage is noticed quickly.
    return StreamSettings(
        bootstrap=kafka.bootstrap, topic=f"test.events.{uuid.uuid4().hex[:8]}", timeout_s=3.0
    )


def make_events(cluster_id: str, first: int, count: int) -> list[Event]:
    return [
        Event(
            event_id=f"{cluster_id}/{n}",
            cluster_id=cluster_id,
            type="test.numbered",
            at=datetime.now(UTC),
            message=f"event {n} of {cluster_id}",
            payload={"n": n},
        )
        for n in range(first, first + count)
    ]


def interleave(*lists: list[Event]) -> list[Event]:
    return [e for group in zip(*lists, strict=True) for e in group]


def on_topic(stream: StreamSettings) -> list[tuple[bytes, Event]]:
    """Everything the topic holds, partition by partition (each in its own order)."""
    consumer = KafkaConsumer(
        bootstrap_servers=stream.bootstrap.split(","), group_id=None, enable_auto_commit=False
    )
    try:
        tps = [
            TopicPartition(stream.topic, p)
            for p in sorted(consumer.partitions_for_topic(stream.topic) or ())
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        found: list[tuple[bytes, Event]] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for _tp, records in sorted(consumer.poll(timeout_ms=1000).items()):
                found += [(r.key, Event.model_validate_json(r.value)) for r in records]
        return found
    finally:
        consumer.close()


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


def assert_each_once_in_order(stream: StreamSettings, expected: list[Event]) -> None:
    published = on_topic(stream)
    ids = [e.event_id for _, e in published]
    assert sorted(ids) == sorted(e.event_id for e in expected)
    assert len(ids) == len(set(ids)), "an event reached the topic twice"
    for key, event in published:
        assert key == cluster_key(event.cluster_id)
        assert event.schema_version == EVENT_SCHEMA_VERSION
    for cluster in {e.cluster_id for e in expected}:
        order = [e.event_id for _, e in published if e.cluster_id == cluster]
        assert order == [e.event_id for e in expected if e.cluster_id == cluster]


async def test_events_reach_the_topic_in_order_and_once_across_a_kafka_outage(
    temporal_env: WorkflowEnvironment, kafka_healthy: KafkaCluster, store: SQLiteEventStore
) -> None:
    kafka = kafka_healthy
    stream = stream_for(kafka)
    queue = f"q-stream-{uuid.uuid4().hex[:8]}"
    before = interleave(make_events("c1", 0, 5), make_events("c2", 0, 5))
    during = interleave(make_events("c1", 5, 5), make_events("c2", 5, 5))
    async with core_worker(temporal_env.client, queue, store, stream):
        await start_event_stream(temporal_env.client, queue, workflow_id=f"events/{queue}")
        store.append(before[:4])
        store.append(before[4:])
        await until(lambda: store.unpublished_count() == 0, 30, "the first events published")

        # Every broker dies: events keep being stored and wait there.
        for n in kafka.members:
            await asyncio.to_thread(kafka.kill_member, n)
        store.append(during[:6])
        await asyncio.sleep(2)
        store.append(during[6:])
        await asyncio.sleep(4)
        assert store.unpublished_count() == len(during)

        await asyncio.to_thread(kafka.start)
        await asyncio.to_thread(kafka.wait_ready, 90)
        await until(lambda: store.unpublished_count() == 0, 60, "the waiting events published")
        await temporal_env.client.get_workflow_handle(f"events/{queue}").terminate("test over")
    assert_each_once_in_order(stream, before + during)


async def test_an_acked_but_unmarked_batch_is_not_published_again(
    temporal_env: WorkflowEnvironment, kafka_healthy: KafkaCluster, store: SQLiteEventStore
) -> None:
    """What a relay that died between the broker's ack and marking the store leaves."""
    stream = stream_for(kafka_healthy)
    acked = make_events("c1", 0, 4)
    store.append(acked)
    publish(stream, acked)
    later = make_events("c1", 4, 3)
    store.append(later)
    assert store.unpublished_count() == 7

    queue = f"q-stream-{uuid.uuid4().hex[:8]}"
    async with core_worker(temporal_env.client, queue, store, stream):
        await start_event_stream(temporal_env.client, queue, workflow_id=f"events/{queue}")
        await until(lambda: store.unpublished_count() == 0, 30, "the store caught up")
        await temporal_env.client.get_workflow_handle(f"events/{queue}").terminate("test over")
    assert_each_once_in_order(stream, acked + later)
