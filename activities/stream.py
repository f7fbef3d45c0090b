"""The event stream: the relay that copies the store's outbox to a Kafka topic.

Monitors only ever write to the store, which is local and always there; this relay
publishes what the store holds unpublished, in append order (each cluster's order), and
marks an event published only once the broker has acknowledged it (acks=all). While Kafka
is down the events wait in the store; the relay retries and catches up when it returns.

None twice: the only way to publish an event again is to die (or lose Kafka) between the
broker's ack and `mark_published`. So before publishing after a start or a failure, the
relay reads back the tail of each partition and marks what is already there. One relay
runs at a time: `EventStreamWorkflow` owns the one `relay_events` activity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from temporalio import activity

from config.stream import StreamSettings, cluster_key
from models import Event, RelayReport, RelayRequest
from store import EventStore

log = logging.getLogger(__name__)

# kafka-python logs every failed connection attempt at WARNING/ERROR, several a second per
# broker while Kafka is down; the relay says it once per outage instead.
logging.getLogger("kafka").setLevel(logging.CRITICAL)


class PublishError(Exception):
    pass


class KafkaPublisher:
    """One producer (idempotent, acks=all) and the read-back of the topic's tail."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        timeout_ms = int(settings.timeout_s * 1000)
        self._common = {
            "bootstrap_servers": settings.bootstrap.split(","),
            "request_timeout_ms": timeout_ms,
            "client_id": "replicante-events",
            **settings.login.client_options(),
        }
        try:
            self._producer = KafkaProducer(
                **self._common,
                acks="all",
                enable_idempotence=True,
                max_block_ms=timeout_ms,
                delivery_timeout_ms=timeout_ms,
                linger_ms=0,
            )
        except KafkaError as error:
            raise PublishError(f"cannot reach Kafka at {settings.bootstrap}: {error}") from error

    def ensure_topic(self, partitions: int = 6) -> None:
        """Create the topic where brokers do not auto-create (RF 3 where three brokers are)."""
        admin = KafkaAdminClient(**self._common)
        try:
            if self.settings.topic in admin.list_topics():
                return
            brokers = len(admin.describe_cluster()["brokers"])
            admin.create_topics(
                [NewTopic(self.settings.topic, partitions, min(3, brokers))],
                timeout_ms=int(self.settings.timeout_s * 1000),
            )
            log.info("created topic %s", self.settings.topic)
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()

    def publish(self, events: Sequence[Event]) -> None:
        """Hand every event to Kafka and wait for all acks; raise if any is not acked."""
        try:
            futures = [
                self._producer.send(
                    self.settings.topic,
                    key=cluster_key(e.cluster_id),
                    value=e.model_dump_json().encode(),
                )
                for e in events
            ]
            self._producer.flush(timeout=self.settings.timeout_s)
            for future in futures:
                future.get(timeout=0)
        except KafkaError as error:
            raise PublishError(f"Kafka did not acknowledge the events: {error}") from error

    def already_there(self, event_ids: set[str]) -> set[str]:
        """Which of these events the topic's tail already holds (read back, not assumed)."""
        consumer = KafkaConsumer(
            **self._common, group_id=None, enable_auto_commit=False, consumer_timeout_ms=1000
        )
        try:
            found: set[str] = set()
            parts = consumer.partitions_for_topic(self.settings.topic) or set()
            tps = [TopicPartition(self.settings.topic, p) for p in parts]
            if not tps:
                return found
            ends = consumer.end_offsets(tps)
            starts = consumer.beginning_offsets(tps)
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, max(starts[tp], ends[tp] - self.settings.batch))
            while any(consumer.position(tp) < ends[tp] for tp in tps):
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        event_id = _event_id(record.value)
                        if event_id in event_ids:
                            found.add(event_id)
            return found
        except KafkaError as error:
            raise PublishError(f"cannot read back topic {self.settings.topic}: {error}") from error
        finally:
            consumer.close()

    def close(self) -> None:
        self._producer.close(timeout=1)


def _event_id(value: bytes | None) -> str | None:
    try:
        return Event.model_validate_json(value or b"").event_id
    except ValueError:
        return None


class StreamActivities:
    """The relay, wired by the worker with its store and stream settings."""

    def __init__(self, store: EventStore, settings: StreamSettings) -> None:
        self.store = store
        self.settings = settings

    @activity.defn
    async def relay_events(self, request: RelayRequest) -> RelayReport:
        """Publish until `request.run_for_s` has passed; Kafka outages are waited out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.run_for_s
        published = outages = 0
        publisher: KafkaPublisher | None = None
        backoff = 0.5
        try:
            while loop.time() < deadline:
                activity.heartbeat(published)
                batch = await asyncio.to_thread(self.store.unpublished, self.settings.batch)
                if not batch:
                    await asyncio.sleep(self.settings.poll_s)
                    continue
                try:
                    if publisher is None:
                        publisher = await self._connect()
                        # Whatever a previous relay had acked but not marked is there.
                        there = await asyncio.to_thread(
                            publisher.already_there, {e.event_id for e in batch}
                        )
                        if there:
                            await asyncio.to_thread(self.store.mark_published, sorted(there))
                            batch = [e for e in batch if e.event_id not in there]
                    await asyncio.to_thread(publisher.publish, batch)
                except PublishError as error:
                    if publisher is not None:
                        await asyncio.to_thread(publisher.close)
                        publisher = None
                    if backoff == 0.5:  # the first failure since the last success
                        outages += 1
                        waiting = await asyncio.to_thread(self.store.unpublished_count)
                        log.warning("event stream down (%s); %d events wait", error, waiting)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                await asyncio.to_thread(self.store.mark_published, [e.event_id for e in batch])
                published += len(batch)
                if backoff > 0.5:
                    log.info("event stream back; published %d waiting events", len(batch))
                backoff = 0.5
        finally:
            if publisher is not None:
                await asyncio.to_thread(publisher.close)
        return RelayReport(published=published, outages=outages)

    async def _connect(self) -> KafkaPublisher:
        publisher = await asyncio.to_thread(KafkaPublisher, self.settings)
        try:
            await asyncio.to_thread(publisher.ensure_topic)
        except KafkaError as error:
            await asyncio.to_thread(publisher.close)
            raise PublishError(f"cannot create topic {self.settings.topic}: {error}") from error
        return publisher
