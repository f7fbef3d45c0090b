"""Reading a cluster: every broker checked on its own address, then the first to answer
describes the cluster (Metadata, DescribeQuorum, `min.insync.replicas`, offsets)."""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kafka.errors as kafka_errors

from activities.kafka.connection import (
    FAILURES,
    ClusterClient,
    Link,
    LoginNeeded,
    LoginRefused,
    TlsExpected,
    describe_cluster_request,
    describe_error,
    metadata_request,
    min_isr_request,
    quorum_request,
)
from activities.kafka.replies import (
    ClusterReading,
    KafkaReplyError,
    NodeReading,
    Partition,
    Quorum,
    parse_describe_cluster,
    parse_metadata,
    parse_min_isr,
    parse_offsets,
    parse_quorum,
)
from models import ClusterSpec, NodeSpec

log = logging.getLogger(__name__)

CONSUMER_REPLICA = -1  # ListOffsets replica id: answered by the leader, up to the HW
DEBUGGING_REPLICA = -2  # answered by any replica, up to its own log end offset
MIN_ISR_TTL_S = 30.0


async def _bounded(call: Callable[[], Awaitable[Any]], deadline: float) -> Any:
    """`call()` within the deadline. A factory, not an awaitable: gather may cancel this
    before it starts, and a request coroutine made up front would then never be awaited."""
    async with asyncio.timeout_at(deadline):
        return await call()


async def check_node(client: ClusterClient, node: NodeSpec, timeout: float) -> NodeReading:
    link = client.link(node.host, node.port)
    try:
        async with asyncio.timeout(timeout):
            started = time.perf_counter()
            reply = await link.request(describe_cluster_request())
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
    except LoginRefused as e:
        return NodeReading(node, version=link.version, login_error=f"authentication failed: {e}")
    except (LoginNeeded, TlsExpected) as e:
        # Alive, but our spec has no login (or no TLS) for it: not a broker down.
        return NodeReading(node, version=link.version, login_error=str(e))
    except ssl.SSLCertVerificationError as e:
        # It answered TLS with a certificate we do not trust: our CA, not a broker down.
        return NodeReading(node, login_error=f"TLS: certificate verify failed: {e.verify_message}")
    except FAILURES as e:
        if not isinstance(e, kafka_errors.IncompatibleBrokerVersion):
            return NodeReading(node, error=describe_error(e, timeout))
        # Talks Kafka, but not a version with DescribeCluster: it answered all the same.
        return NodeReading(node, version=link.version, reply_error=str(e))
    try:
        described = parse_describe_cluster(reply)
    except KafkaReplyError as e:
        return NodeReading(node, latency_ms=latency_ms, version=link.version, reply_error=str(e))
    return NodeReading(node, latency_ms=latency_ms, version=link.version, described=described)


async def check_answers(
    client: ClusterClient, node: NodeSpec, timeout: float, why: str
) -> NodeReading:
    link = client.link(node.host, node.port)
    try:
        async with asyncio.timeout(timeout):
            await link.connect()  # ApiVersions, no login
    except TlsExpected as e:
        return NodeReading(node, login_error=str(e))
    except FAILURES as e:
        return NodeReading(node, error=describe_error(e, timeout))
    return NodeReading(node, version=link.version, login_error=why)


async def _gather_offsets(
    client: ClusterClient,
    work: Mapping[int, list[Partition]],
    replica_id: int,
    deadline: float,
) -> dict[int, dict[tuple[str, int], int]]:
    """Offsets from each broker of `work` at once; a broker that fails gives nothing."""

    async def one(broker_id: int, partitions: list[Partition]) -> dict[tuple[str, int], int]:
        link = client.broker_link(broker_id)
        if link is None:
            return {}
        try:
            request = client.offsets_request(broker_id, partitions, replica_id)
            reply = await _bounded(lambda: link.request(request), deadline)
        except FAILURES:
            return {}
        return parse_offsets(reply)

    ids = list(work)
    results = await asyncio.gather(*(one(b, work[b]) for b in ids))
    return dict(zip(ids, results, strict=True))


async def _min_isr(
    client: ClusterClient, link: Link, topics: set[str], deadline: float
) -> dict[str, int]:
    """The cached values, refreshed when stale or when a topic is new to the cache."""
    stale = time.monotonic() - client.min_isr_at > MIN_ISR_TTL_S
    wanted = topics if stale else topics - client.min_isr.keys()
    if wanted:
        try:
            reply = await _bounded(lambda: link.request(min_isr_request(wanted)), deadline)
        except FAILURES:
            pass  # keep what is cached; try again at the next probe
        else:
            if stale:
                client.min_isr = {}
                client.min_isr_at = time.monotonic()
            client.min_isr.update(parse_min_isr(reply))
    return {t: client.min_isr[t] for t in topics if t in client.min_isr}


async def _read_cluster(
    client: ClusterClient,
    source: NodeReading,
    deadline: float,
    timeout: float,
    lag: bool,
) -> ClusterReading:
    assert source.described is not None
    client.addresses |= {b.broker_id: b.address for b in source.described.brokers}
    link = client.link(source.node.host, source.node.port)
    replies: tuple[Any, Any] = await asyncio.gather(
        _bounded(lambda: link.request(metadata_request()), deadline),
        # Forwarded to the active controller: with none, the broker holds it unanswered.
        _bounded(
            lambda: client.link(source.node.host, source.node.port, "quorum").request(
                quorum_request()
            ),
            deadline,
        ),
        return_exceptions=True,
    )
    metadata_reply, quorum_reply = replies
    if isinstance(metadata_reply, BaseException):
        raise metadata_reply
    partitions = parse_metadata(metadata_reply)
    quorum: Quorum | None = None
    quorum_error: str | None = None
    try:
        if isinstance(quorum_reply, BaseException):
            raise quorum_reply
        quorum = parse_quorum(quorum_reply)
    except FAILURES as e:
        quorum_error = describe_error(e, timeout)
    if quorum is not None and quorum.voters:
        client.voters = quorum.voters

    leaders: dict[int, list[Partition]] = collections.defaultdict(list)
    hosted: dict[int, list[Partition]] = collections.defaultdict(list)
    for p in partitions:
        if p.leader is not None:
            leaders[p.leader].append(p)
        for r in p.replicas if lag else ():
            if r not in p.offline:
                hosted[r].append(p)
    min_isr, high, ends = await asyncio.gather(
        _min_isr(client, link, {p.topic for p in partitions}, deadline),
        _gather_offsets(client, leaders, CONSUMER_REPLICA, deadline),
        _gather_offsets(client, hosted, DEBUGGING_REPLICA, deadline),
    )
    return ClusterReading(
        source=source.node.node_id,
        described=source.described,
        partitions=partitions,
        quorum=quorum,
        quorum_error=quorum_error,
        min_isr=min_isr,
        # A leader answers for the partitions it still leads only.
        high_watermarks={
            key: offset for broker_id, offsets in high.items() for key, offset in offsets.items()
        },
        log_end={
            (broker_id, *key): offset
            for broker_id, offsets in ends.items()
            for key, offset in offsets.items()
        },
    )


async def first_to_describe(
    client: ClusterClient,
    spec: ClusterSpec,
    checks: list[asyncio.Task[NodeReading]],
    deadline: float,
) -> ClusterReading | None:
    """The cluster as the first broker to answer describes it; if that fails, the next."""
    timeout, lag = spec.probe.timeout_s, spec.expect.max_lag is not None
    for next_done in asyncio.as_completed(checks):
        reading = await next_done
        if reading.described is None:
            continue
        try:
            return await _read_cluster(client, reading, deadline, timeout, lag)
        except FAILURES as e:
            log.info(
                "%s: %s could not describe the cluster: %s",
                spec.cluster_id,
                reading.node.node_id,
                describe_error(e, timeout),
            )
    return None
