"""`replicante events --follow`: from the store, from the real Kafka topic, and the command
itself as an operator runs it (a subprocess, stopped with SIGINT)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from client.follow import from_store, from_topic
from config.settings import REPO_ROOT
from config.stream import StreamSettings
from devstack.kafka import KafkaCluster
from models import Event
from store import SQLiteEventStore
from tests.helpers import publish

# Only for times far outside the follow's look-back: tests run well after import.
NOW = datetime.now(UTC)
CLI = "from client.cli import entrypoint; entrypoint()"


def event(cluster_id: str, n: int, at: datetime | None = None) -> Event:
    return Event(
        event_id=f"{cluster_id}/{n}",
        cluster_id=cluster_id,
        type="test.numbered",
        at=at or datetime.now(UTC),
        message=f"event {n}",
    )


def ids(events: list[Event]) -> list[str]:
    return [e.event_id for e in events]


def test_from_store_shows_new_events_once_including_late_writes(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    store.append([event("c1", 0, NOW - timedelta(hours=1))])
    batches = from_store(store, "c1", since=None, poll_s=0.0)
    assert next(batches) == []  # history before the start is not followed
    store.append([event("c1", 1), event("c2", 1), event("c1", 2)])
    assert ids(next(batches)) == ["c1/1", "c1/2"]
    assert next(batches) == []
    # Observed before the newest shown, written after it (a worker failover's retry).
    store.append([event("c1", 3, datetime.now(UTC) - timedelta(seconds=10))])
    assert ids(next(batches)) == ["c1/3"]
    assert next(batches) == []
    store.close()


def test_from_store_since_starts_earlier(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    store.append(
        [event("c1", 0, NOW - timedelta(hours=2)), event("c1", 1, NOW - timedelta(minutes=5))]
    )
    batches = from_store(store, None, since=NOW - timedelta(minutes=10), poll_s=0.0)
    assert ids(next(batches)) == ["c1/1"]
    store.close()


def new_stream(kafka: KafkaCluster, events: list[Event]) -> StreamSettings:
    stream = StreamSettings(bootstrap=kafka.bootstrap, topic=f"test.follow.{uuid.uuid4().hex[:8]}")
    publish(stream, events)
    return stream


def test_from_topic_keeps_one_clusters_events_in_order(kafka_healthy: KafkaCluster) -> None:
    published = [event(c, n) for n in range(5) for c in ("c1", "c2")]
    stream = new_stream(kafka_healthy, published)
    batches = from_topic(stream, "c1", since=NOW - timedelta(minutes=1))
    seen: list[Event] = []
    for _ in range(20):
        seen += next(batches)
        if len(seen) >= 5:
            break
    assert ids(seen) == [f"c1/{n}" for n in range(5)]
    batches.close()


async def test_the_follow_command_prints_events_from_the_topic_as_they_come(
    temporal_env: WorkflowEnvironment, kafka_healthy: KafkaCluster, tmp_path: Path
) -> None:
    stream = new_stream(kafka_healthy, [event("before", 0)])
    env = dict(
        os.environ,
        REPLICANTE_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        REPLICANTE_NAMESPACE=temporal_env.client.namespace,
        REPLICANTE_STORE=str(tmp_path / "events.db"),
        REPLICANTE_EVENTS_KAFKA=stream.bootstrap,
        REPLICANTE_EVENTS_TOPIC=stream.topic,
    )
    follower = subprocess.Popen(
        [sys.executable, "-c", CLI, "events", "--follow"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = await asyncio.wait_for(asyncio.to_thread(follower.stdout.readline), 30)
        assert first == f"following every cluster on topic {stream.topic} (Ctrl-C stops)\n"
        late = event("after", 1)
        publish(stream, [late])
        line = await asyncio.wait_for(asyncio.to_thread(follower.stdout.readline), 30)
        assert line.split("  ")[1:4] == ["after", "test.numbered", "INFO"], line
        assert line.rstrip().endswith("event 1")
    finally:
        follower.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(follower.wait, 10)
    assert code == 130
