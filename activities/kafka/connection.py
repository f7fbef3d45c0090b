"""Talking to brokers: one pipelined `Link` per broker on the event loop (ApiVersions, then
the SASL login), the `ClusterClient` that keeps a cluster's links across probes, the
requests the probe sends, the spec's login (`login_of`) and how a failure reads in
`NodeStatus.error` (`describe_error`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Any

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

from activities.kafka.replies import (
    METADATA_TOPIC,
    KafkaReplyError,
    Partition,
    address,
    broker_versions,
)
from activities.lookups import open_connection
from config.kafka import PLAINTEXT, KafkaLogin
from config.secrets import read_secrets, readable
from models import ClusterSpec

CLIENT_ID = "replicante"
TOPIC_RESOURCE = 2  # DescribeConfigs resource type
LATEST = -1  # ListOffsets timestamp: the next offset to be written
# A Metadata reply for 10,000 partitions is ~1 MB; anything far bigger is not Kafka talking.
MAX_FRAME = 64 << 20
# A cluster nobody probed for this long is forgotten and its connections closed.
CLIENT_IDLE_S = 900.0
# What asking a broker may raise: it is down, slow, closed the link, or answered garbage or
# an error. TimeoutError is an OSError.
FAILURES = (OSError, kafka_errors.KafkaError, KafkaReplyError)


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
FRAME_SIZE = struct.Struct(">i")
HELD_BACK = 1 << 20
"""How much of a frame must have come before the parser sets all of it aside."""


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
            reader, writer = await open_connection(
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
            while chunks := await self._frame(reader, first=not replies):
                async for chunk in chunks:
                    replies = self._receive(chunk, writer, replies)
            error = LinkClosed("closed by the broker")
        except (OSError, kafka_errors.KafkaError) as e:
            error = e
        except Exception as e:
            # Whatever decoding a reply that is not Kafka's raises.
            error = kafka_errors.KafkaProtocolError(f"{type(e).__name__}: {e}")
        if self._writer is writer:
            self._fail(error)

    def _receive(self, data: bytes, writer: asyncio.StreamWriter, replies: int) -> int:
        """Hand `data` to the parser and each whole reply to its waiter; the count of
        replies this connection has had, with those."""
        assert self._parser is not None
        for _, reply in self._parser.receive_bytes(data):
            if replies and self._unserved is writer:
                self._unserved = None  # it served a request beyond ApiVersions
            replies += 1
            waiter = self._pending.popleft()
            if not waiter.done():
                waiter.set_result(reply)
        return replies

    async def _frame(
        self, reader: asyncio.StreamReader, first: bool
    ) -> AsyncIterator[bytes] | None:
        """The next reply frame, as the chunks to hand the parser; None when the broker
        closed between frames.

        kafka-python's parser sets aside the size a frame announces as soon as it reads it:
        a member announcing 63 MB and sending a byte a second held 63 MB per link. So the
        parser sees a frame only once its first MB (or all of a smaller one) is here; after
        that the rest streams in as it comes, set aside once."""
        try:
            size = await reader.readexactly(4)
        except asyncio.IncompleteReadError as closed:
            if closed.partial:
                raise LinkClosed("closed by the broker inside a reply") from None
            return None
        if first and not self.login.tls and size[:2] in TLS_RECORDS:
            # 0x1503.. or 0x1603.. as a frame length is ~350 MB: never Kafka's.
            raise TlsExpected("answers TLS, not plaintext: it may need spec `tls`")
        (length,) = FRAME_SIZE.unpack(size)
        if not 0 <= length <= MAX_FRAME:
            raise kafka_errors.KafkaProtocolError(f"a reply of {length} bytes announced")
        try:
            early = await reader.readexactly(min(length, HELD_BACK))
        except asyncio.IncompleteReadError:
            raise LinkClosed("closed by the broker inside a reply") from None

        async def chunks() -> AsyncIterator[bytes]:
            yield size + early
            left = length - len(early)
            while left:
                chunk = await reader.read(min(left, 1 << 16))
                if not chunk:
                    raise LinkClosed("closed by the broker inside a reply")
                left -= len(chunk)
                yield chunk

        return chunks()

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
