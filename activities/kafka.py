"""Kafka: the brokers' own protocol, with kafka-python's message classes and its sans-I/O
parser, over connections this module holds itself.

Why not `KafkaAdminClient`: it bootstraps eagerly (blocking up to its timeout), backs off
reconnects exponentially up to 30 s, refreshes metadata in a thread of its own and has no
notion of "ask this broker, within this deadline". The probe must check every broker
directly within `timeout_s`, and a link that broke must reconnect at the very next probe.

Where each fact comes from (checked against Kafka 4.3.1, KRaft; replies recorded in
tests/replies/kafka/):

- A broker is up when it answers DescribeCluster on its own address; its version is what
  kafka-python infers from its ApiVersions reply ("4.3": Kafka does not report its own).
- The active controller is the leader of the metadata log, `__cluster_metadata`, from
  DescribeQuorum (any broker forwards it to the controller). Not the `controller_id` of
  Metadata or DescribeCluster: in KRaft both name a random alive broker (30 requests to one
  broker named brokers 1, 2 and 3 while 3 was the controller).
- Registered brokers, fenced or not: DescribeCluster v2 with `include_fenced_brokers`.
  Metadata lists the unfenced ones only. A SIGKILLed broker is fenced after
  `broker.session.timeout.ms`; only then does Kafka take it out of the ISRs and list its
  replicas as offline.
- Partitions: Metadata (all topics, internal ones such as `__consumer_offsets` included):
  the actual leader, replicas in assignment order, ISR, offline replicas.
- `min.insync.replicas` per topic: DescribeConfigs (the effective value, defaults
  included), refreshed every MIN_ISR_TTL_S and at once for a topic not seen before.
- High watermark per partition: ListOffsets (latest, read-uncommitted) to its leader.
- Follower lag: ListOffsets with replica id -2 (Kafka's "debugging" replica id) makes a
  broker answer with its own replica's log end offset, follower or leader, so
  leader LEO - follower LEO is each follower's lag in messages. Kafka exposes follower lag
  nowhere else in its client protocol (only in JMX metrics). It costs one request per
  broker per probe, about a third of a probe's CPU, so it is read only for a spec that
  sets `expect.max_lag`; otherwise `lag` is None.

Brokers are matched to spec nodes by advertised host:port equal to `NodeSpec.address`;
a broker that matches no node is named `broker-<id>` (a controller, `controller-<id>`).

Security comes from the spec: `tls` makes the connections TLS (SSL), `auth` logs them in
with SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 and the secrets `username` and `password`
(SASL_PLAINTEXT, or SASL_SSL with `tls`): SaslHandshake and SaslAuthenticate right after
ApiVersions, kafka-python's SASL mechanisms computing the exchange. A broker that refuses
the login, or whose certificate is not trusted, answered: it is reported reachable with
the reason as its error (finding `auth_failed`), never as a broker down. So is a broker
our spec has no login for: a SASL listener answers ApiVersions, then closes the connection
on the next request ("it may need a login"); a TLS listener reached in plaintext answers
with a TLS alert ("it may need spec `tls`"). A broker that closes or refuses the connection
before answering ApiVersions is down.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

import kafka.errors as kafka_errors
from kafka.net.sasl import get_sasl_mechanism
from kafka.protocol.admin import (
    DescribeClusterRequest,
    DescribeConfigsRequest,
    DescribeQuorumRequest,
)
from kafka.protocol.broker_version_data import BrokerVersionData
from kafka.protocol.consumer import ListOffsetsRequest
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest
from kafka.protocol.parser import KafkaProtocol
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

from activities.adapter import Adapter
from activities.telemetry import probe_node, traced_probe
from config.kafka import PLAINTEXT, KafkaLogin
from config.secrets import SecretUnavailable, read_secrets, readable
from models import ClusterSpec, ClusterView, Kind, NodeSpec, NodeStatus, Role, ShardStatus
from models.view import FactValue

log = logging.getLogger(__name__)

CLIENT_ID = "replicante"
METADATA_TOPIC = "__cluster_metadata"
TOPIC_RESOURCE = 2  # DescribeConfigs resource type
LATEST = -1  # ListOffsets timestamp: the next offset to be written
CONSUMER_REPLICA = -1  # ListOffsets replica id: answered by the leader, up to the HW
DEBUGGING_REPLICA = -2  # answered by any replica, up to its own log end offset
# A Metadata reply for 10,000 partitions is ~1 MB; anything far bigger is not Kafka talking.
MAX_FRAME = 64 << 20
MIN_ISR_TTL_S = 30.0
# A voter that has not fetched from the controller for this long is not following it.
# Followers fetch at least every 500 ms; they call an election after
# controller.quorum.fetch.timeout.ms (2 s by default).
VOTER_STALE_MS = 3000
# A cluster nobody probed for this long is forgotten and its connections closed.
CLIENT_IDLE_S = 900.0
# Held links: reconnect to a down broker this often; close everything within this on exit.
LINK_RETRY_S = 0.5
LINK_STOP_WAIT_S = 0.5


class KafkaReplyError(ValueError):
    """A broker answered, with an error code instead of the data asked for."""


# What asking a broker may raise: it is down, slow, closed the link, or answered garbage or
# an error. TimeoutError is an OSError.
FAILURES = (OSError, kafka_errors.KafkaError, KafkaReplyError)


def _check(what: str, error_code: int, message: str | None = None) -> None:
    if error_code:
        name = kafka_errors.for_code(error_code).__name__
        raise KafkaReplyError(f"{what}: {name}" + (f" ({message})" if message else ""))


# --- what the replies say (pure) -------------------------------------------------------------


def address(host: str, port: int) -> str:
    """host:port as NodeSpec.address writes it, IPv6 hosts in brackets; hosts compare
    case-insensitively.

    >>> address("Kafka1.Example", 9092), address("::1", 9092)
    ('kafka1.example:9092', '[::1]:9092')
    """
    host = host.lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Broker:
    broker_id: int
    address: str
    fenced: bool = False


@dataclass(frozen=True)
class Partition:
    topic: str
    index: int
    leader: int | None
    """None when the partition has no leader (offline)."""
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline: tuple[int, ...] = ()
    internal: bool = False

    @property
    def shard_id(self) -> str:
        return f"{self.topic}/{self.index}"


@dataclass(frozen=True)
class Quorum:
    """The KRaft controller quorum as its leader, the active controller, describes it."""

    leader: int | None
    epoch: int
    voters: tuple[int, ...]
    following: tuple[int, ...]
    """Voters that fetched from the leader within VOTER_STALE_MS (the leader included)."""
    high_watermark: int


@dataclass(frozen=True)
class DescribedCluster:
    cluster_id: str
    brokers: tuple[Broker, ...]


def parse_describe_cluster(reply: Any) -> DescribedCluster:
    _check("DescribeCluster", reply.error_code, reply.error_message)
    return DescribedCluster(
        cluster_id=reply.cluster_id,
        brokers=tuple(
            Broker(b.broker_id, address(b.host, b.port), bool(b.is_fenced)) for b in reply.brokers
        ),
    )


def parse_metadata(reply: Any) -> tuple[Partition, ...]:
    """Every partition of every topic the reply describes, sorted by topic and index.

    A topic with an error (being deleted, not authorized) is left out; a partition whose
    leader is gone has `leader` None.
    """
    _check("Metadata", getattr(reply, "error_code", 0) or 0)
    partitions = [
        Partition(
            topic=topic.name,
            index=p.partition_index,
            leader=p.leader_id if p.leader_id >= 0 else None,
            replicas=tuple(p.replica_nodes),
            isr=tuple(p.isr_nodes),
            offline=tuple(p.offline_replicas or ()),
            internal=bool(topic.is_internal),
        )
        for topic in reply.topics
        if not topic.error_code
        for p in topic.partitions
        # LEADER_NOT_AVAILABLE still describes the partition; other errors do not.
        if p.error_code in (0, kafka_errors.LeaderNotAvailableError.errno)
    ]
    return tuple(sorted(partitions, key=lambda p: (p.topic, p.index)))


def parse_quorum(reply: Any) -> Quorum:
    """The metadata log's partition of a DescribeQuorum reply.

    Freshness is judged on the leader's clock: its own entry carries its current time.
    """
    _check("DescribeQuorum", reply.error_code, getattr(reply, "error_message", None))
    for topic in reply.topics:
        for p in topic.partitions:
            if topic.topic_name != METADATA_TOPIC or p.partition_index != 0:
                continue
            _check("DescribeQuorum", p.error_code, getattr(p, "error_message", None))
            leader = p.leader_id if p.leader_id >= 0 else None
            voters = p.current_voters
            now = max(
                (v.last_fetch_timestamp for v in voters if v.replica_id == leader), default=-1
            )
            return Quorum(
                leader=leader,
                epoch=p.leader_epoch,
                voters=tuple(v.replica_id for v in voters),
                following=tuple(
                    v.replica_id
                    for v in voters
                    if leader is not None
                    and (
                        v.replica_id == leader
                        or (
                            v.last_fetch_timestamp >= 0
                            and now - v.last_fetch_timestamp <= VOTER_STALE_MS
                        )
                    )
                ),
                high_watermark=p.high_watermark,
            )
    raise KafkaReplyError(f"DescribeQuorum: no {METADATA_TOPIC} partition in the reply")


def parse_min_isr(reply: Any) -> dict[str, int]:
    """`min.insync.replicas` of each topic the reply describes without an error."""
    found: dict[str, int] = {}
    for result in reply.results:
        if result.error_code:
            continue
        for config in result.configs:
            if config.name == "min.insync.replicas" and (config.value or "").isdigit():
                found[result.resource_name] = int(config.value)
    return found


def parse_offsets(reply: Any) -> dict[tuple[str, int], int]:
    """Offsets of the partitions answered without an error (a broker that no longer
    leads a partition answers NOT_LEADER_OR_FOLLOWER for it)."""
    return {
        (topic.name, p.partition_index): p.offset
        for topic in reply.topics
        for p in topic.partitions
        if not p.error_code and p.offset >= 0
    }


def follower_lag(partition: Partition, log_end: Mapping[tuple[int, str, int], int]) -> int | None:
    """Messages the slowest follower that could be read lacks, compared with the leader's
    log end offset; None without the leader's offset or any follower's.

    >>> p = Partition("t", 0, leader=2, replicas=(1, 2, 3), isr=(1, 2, 3))
    >>> follower_lag(p, {(2, "t", 0): 120, (1, "t", 0): 120, (3, "t", 0): 95})
    25
    >>> follower_lag(p, {(2, "t", 0): 120}) is None
    True
    """
    if partition.leader is None:
        return None
    key = (partition.topic, partition.index)
    leader_end = log_end.get((partition.leader, *key))
    followers = [
        log_end[(r, *key)]
        for r in partition.replicas
        if r != partition.leader and (r, *key) in log_end
    ]
    if leader_end is None or not followers:
        return None
    # The offsets come from different brokers at slightly different moments: a follower
    # read just after the leader may be ahead of it.
    return max(max(leader_end - f for f in followers), 0)


@dataclass(frozen=True)
class NodeReading:
    """One spec node, checked directly on its own address."""

    node: NodeSpec
    error: str | None = None
    latency_ms: float | None = None
    version: str | None = None
    described: DescribedCluster | None = None
    """Its DescribeCluster reply; None when unreachable or when the reply was an error."""
    reply_error: str | None = None
    login_error: str | None = None
    """Answered, but would not take our login (or TLS would not trust it)."""


@dataclass(frozen=True)
class ClusterReading:
    """What one broker said of the whole cluster, and what the leaders said of their
    partitions."""

    source: str
    """node_id of the broker asked."""
    described: DescribedCluster
    partitions: tuple[Partition, ...]
    quorum: Quorum | None
    quorum_error: str | None = None
    min_isr: Mapping[str, int] = field(default_factory=dict)
    high_watermarks: Mapping[tuple[str, int], int] = field(default_factory=dict)
    log_end: Mapping[tuple[int, str, int], int] = field(default_factory=dict)
    """Log end offset of each replica read: (broker id, topic, partition)."""


class BrokerNames:
    """Kafka broker ids to spec node ids, through the advertised address."""

    def __init__(self, spec: ClusterSpec, addresses: Mapping[int, str]) -> None:
        by_address = {address(node.host, node.port): node.node_id for node in spec.nodes}
        self.ids = {
            broker_id: by_address[addr]
            for broker_id, addr in addresses.items()
            if addr in by_address
        }
        self.broker_ids = {node_id: broker_id for broker_id, node_id in self.ids.items()}

    def broker(self, broker_id: int) -> str:
        return self.ids.get(broker_id, f"broker-{broker_id}")

    def controller(self, broker_id: int) -> str:
        return self.ids.get(broker_id, f"controller-{broker_id}")


def assemble(
    spec: ClusterSpec,
    observed_at: datetime,
    readings: Iterable[NodeReading],
    cluster: ClusterReading | None,
    addresses: Mapping[int, str],
    last_voters: tuple[int, ...] = (),
) -> ClusterView:
    """The view from what the probe read; pure, so it is tested on made-up readings.

    `addresses` maps every broker id ever seen to its advertised address (a broker that
    died may have left the replies). `last_voters` are the controller quorum's voters as
    last described, for when no controller answers.
    """
    readings = list(readings)
    names = BrokerNames(spec, addresses)
    quorum = cluster.quorum if cluster is not None else None
    controller = quorum.leader if quorum is not None else None
    # The asked broker's account of who is registered beats each node's own.
    registered: dict[int, Broker] = {}
    leading: collections.Counter[int] = collections.Counter()
    hosting: collections.Counter[int] = collections.Counter()
    if cluster is not None:
        registered = {b.broker_id: b for b in cluster.described.brokers}
        leading.update(p.leader for p in cluster.partitions if p.leader is not None)
        hosting.update(r for p in cluster.partitions for r in p.replicas)

    nodes = []
    for r in readings:
        if r.error is not None or r.login_error is not None:
            nodes.append(
                NodeStatus(
                    node_id=r.node.node_id,
                    address=r.node.address,
                    reachable=r.error is None,
                    version=r.version,
                    error=r.error or r.login_error,
                )
            )
            continue
        facts: dict[str, FactValue] = {}
        broker_id = names.broker_ids.get(r.node.node_id)
        brokers = registered or (
            {b.broker_id: b for b in r.described.brokers} if r.described else {}
        )
        if r.described is not None:
            facts["cluster_id"] = r.described.cluster_id
        if r.reply_error is not None:
            facts["reply_error"] = r.reply_error
        if broker_id is not None:
            facts["broker_id"] = broker_id
        if not brokers:
            role = Role.UNKNOWN
        elif broker_id is None or broker_id not in brokers or brokers[broker_id].fenced:
            # Answers, but the cluster does not count it: starting, fenced, or not the
            # broker the spec thinks is at this address.
            role = Role.LOOKING
        elif broker_id == controller:
            role = Role.CONTROLLER
        else:
            role = Role.BROKER
        if cluster is not None and broker_id is not None:
            facts["leader_partitions"] = leading[broker_id]
            facts["replicas"] = hosting[broker_id]
        nodes.append(
            NodeStatus(
                node_id=r.node.node_id,
                address=r.node.address,
                reachable=True,
                version=r.version,
                role=role,
                latency_ms=r.latency_ms,
                facts=facts,
            )
        )

    shards: tuple[ShardStatus, ...] = ()
    view_facts: dict[str, FactValue] = {}
    if cluster is not None:
        shards = tuple(
            ShardStatus(
                shard_id=p.shard_id,
                node_id=names.broker(p.leader) if p.leader is not None else None,
                role=Role.LEADER if p.leader is not None else Role.UNKNOWN,
                commit_offset=cluster.high_watermarks.get((p.topic, p.index)),
                lag=follower_lag(p, cluster.log_end),
                replicas=tuple(names.broker(r) for r in p.replicas),
                # Kafka lists the ISR in no particular order: keep the assignment's, so a
                # reordered but equal ISR is no change.
                in_sync=tuple(names.broker(r) for r in p.replicas if r in p.isr),
                min_in_sync=cluster.min_isr.get(p.topic),
            )
            for p in cluster.partitions
        )
        view_facts |= {
            "kafka_cluster_id": cluster.described.cluster_id,
            "metadata_from": cluster.source,
            "topics": len({p.topic for p in cluster.partitions}),
            "partitions": len(cluster.partitions),
        }
        unmapped = sorted(b for b in registered if b not in names.ids)
        if unmapped:
            view_facts["unmapped_brokers"] = ",".join(map(str, unmapped))
        if cluster.quorum_error is not None:
            view_facts["quorum_error"] = cluster.quorum_error

    voting_alive: int | None
    voting_configured: int | None
    if quorum is not None and quorum.leader is not None:
        view_facts |= {"controller_epoch": quorum.epoch, "metadata_offset": quorum.high_watermark}
        voting_configured, voting_alive = len(quorum.voters), len(quorum.following)
    else:
        # No controller answered: count the last known voters among the nodes that answer
        # (KRaft combined mode, where each voter is also a broker); with voters the spec
        # does not list (dedicated controllers) there is nothing to count.
        voters = quorum.voters if quorum is not None and quorum.voters else last_voters
        reachable = {n.node_id for n in nodes if n.reachable}
        if voters and all(v in names.ids for v in voters):
            voting_configured = len(voters)
            voting_alive = sum(1 for v in voters if names.ids[v] in reachable)
        else:
            voting_configured = voting_alive = None
    return ClusterView(
        cluster_id=spec.cluster_id,
        kind=Kind.KAFKA,
        observed_at=observed_at,
        nodes=tuple(nodes),
        shards=shards,
        leader=names.controller(controller) if controller is not None else None,
        quorum=(
            voting_alive > voting_configured // 2
            if voting_alive is not None and voting_configured is not None
            else None
        ),
        voting_alive=voting_alive,
        voting_configured=voting_configured,
        facts=view_facts,
    )


# --- connections -----------------------------------------------------------------------------


def describe_error(error: BaseException, timeout: float) -> str:
    """One line for NodeStatus.error.

    >>> describe_error(ConnectionRefusedError(111, "Connection refused"), 2.0)
    'connection refused'
    >>> describe_error(TimeoutError(), 2.0)
    'timeout after 2.0s'
    """
    if isinstance(error, TimeoutError):
        return f"timeout after {timeout}s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError):
        return error.strerror.lower() if error.strerror else str(error) or type(error).__name__
    if isinstance(error, kafka_errors.KafkaProtocolError):
        return f"unparseable reply ({error})"
    return str(error) or type(error).__name__


# The first bytes of a TLS record: an alert or a handshake, TLS 1.x.
TLS_RECORDS = (b"\x15\x03", b"\x16\x03")


class LinkClosed(ConnectionError):
    pass


class LoginRefused(Exception):
    """The broker answered, and refused the login; the message is the broker's reason."""


class TlsExpected(ConnectionError):
    """A broker reached in plaintext answered with a TLS record (an alert): alive, but its
    listener wants TLS (spec `tls`)."""


class LoginNeeded(LinkClosed):
    """A broker reached without a login answered ApiVersions (it is alive), then closed the
    connection on the first request that needs one, as a SASL listener does."""


def login_of(spec: ClusterSpec, sasl: bool = True) -> KafkaLogin:
    """The spec's TLS and (unless not `sasl`) login, its secrets read now; raises
    SecretUnavailable."""
    login = PLAINTEXT
    if spec.tls is not None:
        ca, cert = spec.tls.ca_file, spec.tls.client_cert
        cert_file = spec.secrets[cert].file if cert is not None else None
        login = KafkaLogin(
            tls=True,
            ca_file=readable(ca, "tls.ca_file") if ca is not None else None,
            cert_file=readable(cert_file, f"secret {cert!r}") if cert_file else None,
        )
    if spec.auth is None or not sasl:
        return login
    secrets = read_secrets(spec, "username", "password")
    return replace(
        login,
        mechanism=spec.auth.mechanism.value,
        username=secrets["username"],
        password=secrets["password"],
    )


def api_versions_request() -> Any:
    return ApiVersionsRequest(
        version=3, client_software_name=CLIENT_ID, client_software_version="1"
    )


def broker_versions(reply: Any) -> BrokerVersionData:
    """The API versions a broker supports, from its ApiVersions reply."""
    if reply.error_code and not reply.api_keys:
        _check("ApiVersions", reply.error_code)
    return BrokerVersionData(
        api_versions={k.api_key: (k.min_version, k.max_version) for k in reply.api_keys}
    )


class Prepared:
    """A request sent unchanged probe after probe (ListOffsets for the same partitions),
    its body encoded once per API version: kafka-python takes ~5 ms to encode a ListOffsets
    for 1,800 partitions, and only the header (the correlation id) changes.

    It offers what KafkaProtocol.send_request uses of a request.
    """

    def __init__(self, request: Any) -> None:
        self.request = request
        self._bodies: dict[int, bytes] = {}

    @property
    def header(self) -> Any:
        return self.request.header

    def with_header(self, correlation_id: int, client_id: str) -> None:
        self.request.with_header(correlation_id=correlation_id, client_id=client_id)

    def expect_response(self) -> bool:
        return True

    def encode(self, framed: bool = True, header: bool = True) -> bytes:
        assert framed and header, "sent only as KafkaProtocol sends requests"
        request, version = self.request, self.request.API_VERSION
        body = self._bodies.get(version)
        if body is None:
            body = self._bodies[version] = bytes(request.encode())
        head = bytes(request.encode_header(flexible=request.flexible_version_q(version)))
        return struct.pack(">i", len(head) + len(body)) + head + body


class Link:
    """One connection to one broker on the running event loop, requests pipelined.

    Connects (and exchanges ApiVersions) on first use and again after any failure: a
    request that times out closes the link, so a late reply can never be taken for the
    answer to a later request.
    """

    def __init__(self, host: str, port: int, login: KafkaLogin = PLAINTEXT) -> None:
        self.host, self.port, self.login = host, port, login
        self.versions: BrokerVersionData | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser: KafkaProtocol | None = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None
        self._unserved: asyncio.StreamWriter | None = None
        """The connection, made without a login, while it has answered ApiVersions only."""

    @property
    def connected(self) -> bool:
        return self._writer is not None

    @property
    def version(self) -> str | None:
        if self.versions is None:
            return None
        return ".".join(map(str, self.versions.broker_version))

    async def request(self, request: Any, max_version: int | None = None) -> Any:
        """Send and await the reply; a link reused from before that turns out closed (the
        broker drops idle connections) is reconnected once."""
        fresh = await self._ensure_connected()
        try:
            return await self._send(request, max_version)
        except (LinkClosed, ConnectionResetError, BrokenPipeError):
            if fresh:
                raise
        await self._ensure_connected()
        return await self._send(request, max_version)

    async def connect(self) -> None:
        await self._ensure_connected()

    async def _ensure_connected(self) -> bool:
        """Connect if needed; True if this call made the connection."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None:
                return False
            context = self.login.ssl_context()
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=context, server_hostname=self.host if context else None
            )
            self._writer = writer
            self._parser = KafkaProtocol(client_id=CLIENT_ID, receive_message_max_bytes=MAX_FRAME)
            self._reader_task = asyncio.create_task(self._read(reader, writer))
            try:
                self.versions = broker_versions(await self._send(api_versions_request(), None))
                if self.login.mechanism is not None:
                    await self._log_in(self.login.mechanism)
                else:
                    self._unserved = writer
            except BaseException:
                self.close()
                raise
            return True

    async def _log_in(self, name: str) -> None:
        """SaslHandshake v1, then SaslAuthenticate until the mechanism is done: PLAIN takes
        one round, SCRAM two (client-first/server-first, client-final/server-final)."""
        handshake = await self._send(SaslHandshakeRequest(mechanism=name), 1)
        if handshake.error_code:
            offered = ", ".join(handshake.mechanisms) or "none"
            raise LoginRefused(f"the broker offers SASL {offered}, not {name}")
        mechanism = get_sasl_mechanism(name)(
            host=self.host,
            sasl_mechanism=name,
            sasl_plain_username=self.login.username,
            sasl_plain_password=self.login.password,
            security_protocol=self.login.security_protocol,
        )
        while not mechanism.is_done():
            reply = await self._send(
                SaslAuthenticateRequest(auth_bytes=mechanism.auth_bytes()), None
            )
            if reply.error_code:
                why = reply.error_message or kafka_errors.for_code(reply.error_code).__name__
                raise LoginRefused(why)
            try:
                mechanism.receive(reply.auth_bytes)
            except ValueError as error:  # SCRAM: the server did not prove it knows us
                raise LoginRefused(f"SASL {name}: {error}") from None
        if not mechanism.is_authenticated():
            raise LoginRefused(f"SASL {name} did not complete")

    async def _send(self, request: Any, max_version: int | None) -> Any:
        writer, parser = self._writer, self._parser
        if writer is None or parser is None:
            raise LinkClosed("not connected")
        message = request.request if isinstance(request, Prepared) else request
        if self.versions is not None:
            message.API_VERSION = self.versions.api_version(
                message, max_version=max_version if max_version is not None else float("inf")
            )
        parser.send_request(request)
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(reply)
        writer.write(parser.send_bytes())
        try:
            return await reply
        except asyncio.CancelledError:
            # Timed out (or the caller gave up): the reply may still come, out of turn.
            self.close()
            raise
        except (LinkClosed, ConnectionResetError, BrokenPipeError) as error:
            if self._unserved is not writer or isinstance(error, LoginNeeded):
                raise
            # It answered ApiVersions, then dropped us on a request it would not serve.
            what = type(message).__name__.removesuffix("Request")
            raise LoginNeeded(
                f"answers ApiVersions but closed the connection on {what}:"
                " it may need a login (spec `auth`)"
            ) from error

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        error: BaseException
        replies = 0
        try:
            while data := await reader.read(1 << 16):
                assert self._parser is not None
                if not replies and not self.login.tls and data[:2] in TLS_RECORDS:
                    # 0x1503.. or 0x1603.. as a frame length is ~350 MB: never Kafka's.
                    raise TlsExpected("answers TLS, not plaintext: it may need spec `tls`")
                for _, reply in self._parser.receive_bytes(data):
                    if replies and self._unserved is writer:
                        self._unserved = None  # it served a request beyond ApiVersions
                    replies += 1
                    waiter = self._pending.popleft()
                    if not waiter.done():
                        waiter.set_result(reply)
            error = LinkClosed("closed by the broker")
        except (OSError, kafka_errors.KafkaError) as e:
            error = e
        except Exception as e:
            # Whatever decoding a reply that is not Kafka's raises.
            error = kafka_errors.KafkaProtocolError(f"{type(e).__name__}: {e}")
        if self._writer is writer:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        writer, self._writer, self._parser = self._writer, None, None
        pending, self._pending = self._pending, collections.deque()
        for waiter in pending:
            if not waiter.done():
                waiter.set_exception(error)
                # Nobody may be waiting any more (a timed-out request).
                waiter.add_done_callback(lambda f: f.exception())
        if writer is not None:
            writer.close()

    def close(self) -> None:
        self._fail(LinkClosed("closed"))
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()


class ClusterClient:
    """The links to one cluster's brokers, kept across probes, and what is cached."""

    def __init__(self, login: KafkaLogin = PLAINTEXT) -> None:
        self.loop = asyncio.get_running_loop()
        self.login = login
        self.links: dict[str, Link] = {}
        self.addresses: dict[int, str] = {}
        self.min_isr: dict[str, int] = {}
        self.min_isr_at = 0.0
        self.voters: tuple[int, ...] = ()
        self.used_at = time.monotonic()
        self._offset_requests: dict[tuple[int, int], tuple[list[str], Prepared]] = {}

    def offsets_request(
        self, broker_id: int, partitions: list[Partition], replica_id: int
    ) -> Prepared:
        """The broker's ListOffsets for these partitions, made anew only when they change."""
        key, asked = (broker_id, replica_id), [p.shard_id for p in partitions]
        cached = self._offset_requests.get(key)
        if cached is None or cached[0] != asked:
            cached = (asked, Prepared(offsets_request(partitions, replica_id)))
            self._offset_requests[key] = cached
        return cached[1]

    def link(self, host: str, port: int, purpose: str = "") -> Link:
        """The link to host:port; a `purpose` gets a connection of its own, for requests
        that may wait long (a broker answers the requests of one connection in turn)."""
        key = f"{address(host, port)}#{purpose}"
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = Link(host, port, self.login)
        return link

    def retain(self, nodes: set[str]) -> None:
        """Close the links to addresses that are neither `nodes` nor a known broker's (a
        spec that was replaced)."""
        keep = nodes | set(self.addresses.values())
        for key in [k for k in self.links if k.partition("#")[0] not in keep]:
            self.links.pop(key).close()

    def broker_link(self, broker_id: int) -> Link | None:
        addr = self.addresses.get(broker_id)
        if addr is None:
            return None
        host, _, port = addr.rpartition(":")
        return self.link(host.strip("[]"), int(port))

    def close(self) -> None:
        for link in self.links.values():
            # A link of a loop that is gone cannot be closed through that loop.
            with contextlib.suppress(RuntimeError):
                link.close()
        self.links.clear()


_clients: dict[str, ClusterClient] = {}


def client_for(cluster_id: str, login: KafkaLogin = PLAINTEXT) -> ClusterClient:
    """The cluster's client on the running loop; clients idle for long are dropped, and so
    is one logged in otherwise (a secret that changed)."""
    loop = asyncio.get_running_loop()
    now = time.monotonic()
    for key, idle in list(_clients.items()):
        if (
            idle.loop is not loop
            or now - idle.used_at > CLIENT_IDLE_S
            or (key == cluster_id and idle.login != login)
        ):
            del _clients[key]
            idle.close()
    client = _clients.get(cluster_id)
    if client is None:
        client = _clients[cluster_id] = ClusterClient(login)
    client.used_at = now
    return client


async def _bounded(call: Callable[[], Awaitable[Any]], deadline: float) -> Any:
    """`call()` within the deadline. A factory, not an awaitable: gather may cancel this
    before it starts, and a request coroutine made up front would then never be awaited."""
    async with asyncio.timeout_at(deadline):
        return await call()


# --- the probe -------------------------------------------------------------------------------


async def _check_node(client: ClusterClient, node: NodeSpec, timeout: float) -> NodeReading:
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


async def _answers(client: ClusterClient, node: NodeSpec, timeout: float, why: str) -> NodeReading:
    link = client.link(node.host, node.port)
    try:
        async with asyncio.timeout(timeout):
            await link.connect()  # ApiVersions, no login
    except TlsExpected as e:
        return NodeReading(node, login_error=str(e))
    except FAILURES as e:
        return NodeReading(node, error=describe_error(e, timeout))
    return NodeReading(node, version=link.version, login_error=why)


def offsets_request(partitions: Iterable[Partition], replica_id: int) -> Any:
    by_topic: dict[str, list[int]] = collections.defaultdict(list)
    for p in partitions:
        by_topic[p.topic].append(p.index)
    topic = ListOffsetsRequest.ListOffsetsTopic
    part = topic.ListOffsetsPartition
    return ListOffsetsRequest(
        replica_id=replica_id,
        isolation_level=0,
        topics=[
            topic(name=t, partitions=[part(partition_index=i, timestamp=LATEST) for i in ps])
            for t, ps in by_topic.items()
        ],
    )


def min_isr_request(topics: Iterable[str]) -> Any:
    resource = DescribeConfigsRequest.DescribeConfigsResource
    return DescribeConfigsRequest(
        resources=[
            resource(
                resource_type=TOPIC_RESOURCE,
                resource_name=t,
                configuration_keys=["min.insync.replicas"],
            )
            for t in sorted(topics)
        ]
    )


def describe_cluster_request() -> Any:
    return DescribeClusterRequest(
        include_cluster_authorized_operations=False, include_fenced_brokers=True
    )


def metadata_request() -> Any:
    return MetadataRequest(topics=None, allow_auto_topic_creation=False)


def quorum_request() -> Any:
    topic = DescribeQuorumRequest.TopicData
    return DescribeQuorumRequest(
        topics=[
            topic(topic_name=METADATA_TOPIC, partitions=[topic.PartitionData(partition_index=0)])
        ]
    )


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


# --- held links ------------------------------------------------------------------------------


@dataclass(eq=False)
class HeldLink:
    node: NodeSpec
    sock: socket.socket | None = None
    parser: KafkaProtocol | None = None
    state: str = "down"
    """down, connecting, tls (its handshake under way), handshake (ApiVersions sent) or
    up."""
    reported_up: bool = False
    """What on_change last told: a drop the link recovers from at once is not news."""
    rechecking: bool = False
    deadline: float = 0.0
    retry_at: float = 0.0
    up_at: float = 0.0


class LinkHolder:
    """One TCP connection per broker, each opened with an ApiVersions exchange (so it is
    a Kafka broker that answers, not just a port), all watched by one selector thread.
    With `tls`, each is a TLS connection, its handshake driven by the selector as well
    (a SASL listener answers ApiVersions before any login: no link logs in).

    A link that drops (EOF or RST: a SIGKILLed broker's sockets are closed by the kernel
    at once) is reconnected on the spot. If that fails, the broker is gone: on_change.
    If it succeeds, the broker only closed an idle connection (connections.max.idle.ms,
    10 minutes by default): nothing to tell. Down brokers are retried every LINK_RETRY_S,
    and on_change tells when one answers again (and when each link first comes up).
    """

    def __init__(
        self,
        nodes: Iterable[NodeSpec],
        on_change: Callable[[], None],
        connect_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.links = [HeldLink(node) for node in nodes]
        self._on_change = on_change
        self._timeout = connect_timeout
        self._tls = tls
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-links", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(LINK_STOP_WAIT_S)

    def _run(self) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                for link in self.links:
                    if link.sock is None and now >= link.retry_at:
                        self._connect(link, now)
                    elif link.sock is not None and link.state != "up" and now >= link.deadline:
                        self._failed(link, now)
                timers = [
                    link.retry_at if link.sock is None else link.deadline
                    for link in self.links
                    if link.sock is None or link.state != "up"
                ]
                wait = min([now + LINK_RETRY_S, *timers]) - now
                for key, mask in self._selector.select(max(wait, 0.0)):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        self._event(key.data, mask, time.monotonic())
        finally:
            for link in self.links:
                self._close(link)
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _connect(self, link: HeldLink, now: float) -> None:
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                link.node.host, link.node.port, type=socket.SOCK_STREAM
            )[0]
            sock = socket.socket(family, kind, proto)
        except OSError:
            self._failed(link, now)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.sock, link.state, link.deadline = sock, "connecting", now + self._timeout
        err = sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS):
            self._failed(link, now)
            return
        self._selector.register(sock, selectors.EVENT_WRITE, link)

    def _event(self, link: HeldLink, mask: int, now: float) -> None:
        sock = link.sock
        assert sock is not None
        if link.state == "connecting":
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._failed(link, now)
                return
            if self._tls is None:
                self._ask_versions(link, now)
                return
            # The TLS socket takes the plain one's descriptor: the selector learns it anew.
            self._selector.unregister(sock)
            try:
                link.sock = self._tls.wrap_socket(
                    sock, server_hostname=link.node.host, do_handshake_on_connect=False
                )
            except OSError:
                self._failed(link, now)
                return
            self._selector.register(link.sock, selectors.EVENT_WRITE, link)
            link.state = "tls"
            self._tls_handshake(link, now)
            return
        if link.state == "tls":
            self._tls_handshake(link, now)
            return
        try:
            data = _recv_all(sock)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            data = b""
        if not data:
            if link.state == "up":
                self._dropped(link, now)
            else:
                self._failed(link, now)
        elif link.state == "handshake":
            assert link.parser is not None
            try:
                replies = link.parser.receive_bytes(data)
            except Exception:
                self._failed(link, now)  # answers, but not Kafka
                return
            if replies:
                self._established(link, now)

    def _tls_handshake(self, link: HeldLink, now: float) -> None:
        sock = link.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._selector.modify(sock, selectors.EVENT_READ, link)
        except ssl.SSLWantWriteError:
            self._selector.modify(sock, selectors.EVENT_WRITE, link)
        except OSError:
            # Refused (a certificate we do not trust, a plaintext listener) or reset.
            self._failed(link, now)
        else:
            self._ask_versions(link, now)

    def _ask_versions(self, link: HeldLink, now: float) -> None:
        sock = link.sock
        assert sock is not None
        link.parser = KafkaProtocol(client_id=CLIENT_ID, receive_message_max_bytes=1 << 20)
        link.parser.send_request(api_versions_request())
        try:
            # ~50 bytes into an empty send buffer: sent whole.
            sock.send(link.parser.send_bytes())
        except OSError:
            self._failed(link, now)
            return
        link.state = "handshake"
        self._selector.modify(sock, selectors.EVENT_READ, link)

    def _established(self, link: HeldLink, now: float) -> None:
        link.state, link.rechecking, link.up_at = "up", False, now
        if not link.reported_up:
            link.reported_up = True
            self._tell()

    def _dropped(self, link: HeldLink, now: float) -> None:
        self._close(link)
        if now - link.up_at < 2 * LINK_RETRY_S:
            # Dropped again right after reconnecting: not an idle close.
            self._failed(link, now)
            return
        link.rechecking = True
        self._connect(link, now)

    def _failed(self, link: HeldLink, now: float) -> None:
        self._close(link)
        link.rechecking = False
        link.retry_at = now + LINK_RETRY_S
        if link.reported_up:
            link.reported_up = False
            self._tell()

    def _close(self, link: HeldLink) -> None:
        sock, link.sock, link.parser, link.state = link.sock, None, None, "down"
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()

    def _tell(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.exception("on_change failed")


def _recv_all(sock: socket.socket) -> bytes:
    """What the socket holds now; with TLS, records already decrypted too, which the
    selector cannot see. Raises as recv does when there is nothing yet."""
    data = sock.recv(1 << 16)
    while data and isinstance(sock, ssl.SSLSocket) and sock.pending():
        data += sock.recv(1 << 16)
    return data


async def _first_to_describe(
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


def _error(reading: NodeReading) -> str | None:
    return reading.error


class KafkaAdapter(Adapter):
    kind: ClassVar[Kind] = Kind.KAFKA

    @traced_probe
    async def probe(self, spec: ClusterSpec) -> ClusterView:
        observed_at = datetime.now(UTC)
        timeout = spec.probe.timeout_s
        try:
            login = login_of(spec)
        except SecretUnavailable as error:
            return await self._answers_only(spec, observed_at, f"authentication failed: {error}")
        client = client_for(spec.cluster_id, login)
        deadline = asyncio.get_running_loop().time() + timeout
        checks = [
            asyncio.create_task(
                probe_node(spec, n.node_id, partial(_check_node, client, n, timeout), _error)
            )
            for n in spec.nodes
        ]
        try:
            cluster = await _first_to_describe(client, spec, checks, deadline)
            readings = [await check for check in checks]
        finally:
            for check in checks:
                check.cancel()  # when the probe itself is cancelled
        for r in readings:
            if r.described is not None:
                client.addresses |= {b.broker_id: b.address for b in r.described.brokers}
        client.retain({address(n.host, n.port) for n in spec.nodes})
        return assemble(
            spec, observed_at, readings, cluster, client.addresses, last_voters=client.voters
        )

    async def _answers_only(
        self, spec: ClusterSpec, observed_at: datetime, unread: str
    ) -> ClusterView:
        """Without the secrets to log in, whether each broker answers ApiVersions (which
        Kafka takes before any login) is still worth knowing: a missing password must not
        read as brokers down."""
        timeout = spec.probe.timeout_s
        try:
            login = login_of(spec, sasl=False)
        except SecretUnavailable:
            # Not even TLS: nothing can be asked.
            readings = [NodeReading(n, error=unread) for n in spec.nodes]
        else:
            client = client_for(spec.cluster_id, login)
            readings = await asyncio.gather(
                *(
                    probe_node(
                        spec, n.node_id, partial(_answers, client, n, timeout, unread), _error
                    )
                    for n in spec.nodes
                )
            )
        return assemble(spec, observed_at, readings, None, {})

    @contextlib.contextmanager
    def hold_links(self, spec: ClusterSpec, on_change: Callable[[], None]) -> Iterator[None]:
        try:
            tls = login_of(spec, sasl=False).ssl_context()
        except (SecretUnavailable, OSError, ssl.SSLError) as error:
            # The probe says so each round; crashes are then seen by the probe alone.
            log.info("no held links for %s: %s", spec.cluster_id, error)
            yield
            return
        holder = LinkHolder(spec.nodes, on_change, connect_timeout=spec.probe.timeout_s, tls=tls)
        holder.start()
        try:
            yield
        finally:
            holder.stop()
