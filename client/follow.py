"""`replicante events --follow`: new events as they happen.

From the Kafka topic when a stream is configured (what downstream consumers see, in the
order they see it), from the store otherwise. Each yields batches, possibly empty, so the
caller can stop between them.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from datetime import UTC, datetime, timedelta

from kafka import KafkaConsumer, TopicPartition

from config.stream import StreamSettings, cluster_key
from models import Event
from store import EventQuery, EventStore

LOOK_BACK = timedelta(seconds=60)


def from_topic(
    stream: StreamSettings, cluster_id: str | None, since: datetime | None
) -> Generator[list[Event]]:
    """Every partition from `since` (or from now), keeping the cluster's events only."""
    consumer = KafkaConsumer(
        bootstrap_servers=stream.bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        client_id="replicante-follow",
        **stream.login.client_options(),
    )
    try:
        tps = [
            TopicPartition(stream.topic, p)
            for p in sorted(consumer.partitions_for_topic(stream.topic) or ())
        ]
        consumer.assign(tps)
        if since is None:
            consumer.seek_to_end()
        else:
            ms = int(since.timestamp() * 1000)
            found = consumer.offsets_for_times(dict.fromkeys(tps, ms))
            ends = consumer.end_offsets(tps)
            for tp in tps:
                at = found.get(tp)
                consumer.seek(tp, at.offset if at is not None else ends[tp])
        # Resolve the start now (seek_to_end is lazy): what is published once the first
        # batch is out is never skipped.
        for tp in tps:
            consumer.position(tp)
        key = None if cluster_id is None else cluster_key(cluster_id)
        while True:
            polled = consumer.poll(timeout_ms=500)
            yield [
                Event.model_validate_json(r.value)
                for records in polled.values()
                for r in records
                if key is None or r.key == key
            ]
    finally:
        consumer.close()


def from_store(
    store: EventStore, cluster_id: str | None, since: datetime | None, poll_s: float = 0.5
) -> Generator[list[Event]]:
    """Polls the store, each time looking back a little before the newest event shown:
    an event's time is when it was observed, and a write delayed by a worker failover can
    land after a newer one. Events already shown are not shown again."""
    start = since or datetime.now(UTC)
    shown: dict[str, datetime] = {}
    while True:
        stored = store.query(EventQuery(cluster_id=cluster_id, since=start, limit=10_000))
        fresh = [s.event for s in stored if s.event.event_id not in shown]
        shown.update((e.event_id, e.at) for e in fresh)
        if shown:
            start = max(shown.values()) - LOOK_BACK
            shown = {i: at for i, at in shown.items() if at >= start}
        yield fresh
        time.sleep(poll_s)
