"""The Kafka adapter on replies recorded from Kafka 4.3.1 (tests/replies/kafka/).

The probe tests replay those replies from local sockets, one server per recorded broker,
so the whole path from socket to ClusterView runs without a Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kafka.protocol.admin import (
    DescribeClusterResponse,
    DescribeConfigsResponse,
    DescribeQuorumResponse,
)
from kafka.protocol.consumer import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata import ApiVersionsResponse, MetadataResponse

from activities.kafka import connection, replies
from activities.kafka.adapter import KafkaAdapter
from activities.kafka.connection import client_for
from activities.kafka.links import LINK_RETRY_S, LINK_STOP_WAIT_S, LinkHolder
from activities.kafka.probe import DEBUGGING_REPLICA
from activities.kafka.replies import (
    Broker,
    ClusterReading,
    DescribedCluster,
    NodeReading,
    Partition,
    Quorum,
    assemble,
    parse_describe_cluster,
    parse_metadata,
    parse_min_isr,
    parse_offsets,
    parse_quorum,
)
from models import ClusterSpec, ClusterView, Role, evaluate
from testkit.specs import spec_of
from tests.helpers import Changes, closed_port_address

REPLIES = Path(__file__).parent / "replies" / "kafka"
RESPONSES = {
    "api_versions": (ApiVersionsResponse, 3),
    "describe_cluster": (DescribeClusterResponse, 2),
    "metadata": (MetadataResponse, 13),
    "describe_quorum": (DescribeQuorumResponse, 2),
    "describe_configs": (DescribeConfigsResponse, 4),
    "list_offsets_hw": (ListOffsetsResponse, 11),
    "list_offsets_leo": (ListOffsetsResponse, 11),
}
RECORDED_AT = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)


def reply(state: str, what: str) -> Any:
    response, version = RESPONSES[what]
    data = (REPLIES / f"{state}.{what}.v{version}.bin").read_bytes()
    return response.decode(data, version=version, header=True)


def spec_for(addresses: list[str], timeout_s: float = 1.0) -> ClusterSpec:
    """Follower lag is read only for a spec with a max_lag: this one has."""
    return spec_of(
        "kafka",
        "kafka",
        addresses,
        "replayed",
        interval_s=1.0,
        probe={"timeout_s": timeout_s},
        expect={"replication_factor": 3, "max_lag": 1000},
    )


RECORDED_SPEC = spec_for([f"127.0.0.{239 + n}:9092" for n in (1, 2, 3)])


@pytest.mark.parametrize("module", [replies, connection], ids=lambda m: m.__name__)
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


# --- parsers ---------------------------------------------------------------------------------


def test_describe_cluster_lists_fenced_brokers() -> None:
    healthy = parse_describe_cluster(reply("healthy", "describe_cluster"))
    assert healthy.cluster_id == "0Maieb-SRneAoM_xVByp9w"
    assert healthy.brokers == (
        Broker(1, "127.0.0.240:9092"),
        Broker(2, "127.0.0.241:9092"),
        Broker(3, "127.0.0.242:9092"),
    )
    down = parse_describe_cluster(reply("broker3-down", "describe_cluster"))
    assert [(b.broker_id, b.fenced) for b in down.brokers] == [(1, False), (2, False), (3, True)]


def test_metadata_has_internal_topics_and_real_leaders() -> None:
    partitions = {p.shard_id: p for p in parse_metadata(reply("healthy", "metadata"))}
    assert sorted({p.topic for p in partitions.values()}) == ["__consumer_offsets", "solo", "t1"]
    assert partitions["__consumer_offsets/0"].internal
    # Led by 1 although 2 is first in the assignment: the first replica is only preferred.
    t1 = partitions["t1/0"]
    assert (t1.leader, t1.replicas, t1.isr, t1.offline) == (1, (2, 3, 1), (1, 2, 3), ())


def test_metadata_after_a_broker_died() -> None:
    partitions = {p.shard_id: p for p in parse_metadata(reply("broker3-down", "metadata"))}
    assert partitions["solo/0"] == Partition("solo", 0, None, (3,), (), (3,))
    assert all(3 in p.offline and 3 not in p.isr for p in partitions.values())
    assert partitions["t1/2"].leader == 2  # its preferred leader, 1, is alive: not moved back


def test_quorum_counts_voters_that_follow_the_controller() -> None:
    healthy = parse_quorum(reply("healthy", "describe_quorum"))
    assert (healthy.leader, healthy.voters, healthy.following) == (1, (1, 2, 3), (1, 2, 3))
    down = parse_quorum(reply("broker3-down", "describe_quorum"))
    assert (down.leader, down.following) == (1, (1, 2))
    # Voter 2 was killed 1 s before: its last fetch, 2.5 s old, is still within the window.
    assert parse_quorum(reply("quorum-lost", "describe_quorum")).following == (1, 2)


def test_min_isr_is_the_effective_value_defaults_included() -> None:
    assert parse_min_isr(reply("healthy", "describe_configs")) == {
        "__consumer_offsets": 2,
        "solo": 2,
        "t1": 3,
    }


def test_offsets_only_for_what_the_broker_answers() -> None:
    high = parse_offsets(reply("healthy", "list_offsets_hw"))
    ends = parse_offsets(reply("healthy", "list_offsets_leo"))
    assert high[("t1", 0)] == 10
    # Broker 1 leads every partition but solo/0, which it does not even host.
    assert ("solo", 0) not in high and ("solo", 0) not in ends
    assert ends[("t1", 0)] == 10
    down = parse_offsets(reply("broker3-down", "list_offsets_hw"))
    # t1/0 is led by broker 2 there: broker 1 answers NOT_LEADER_OR_FOLLOWER for it.
    assert ("t1", 0) not in down and ("t1", 1) in down


# --- views from recorded replies -------------------------------------------------------------


def recorded(state: str, down: tuple[int, ...] = ()) -> ClusterView:
    described = parse_describe_cluster(reply(state, "describe_cluster"))
    high = parse_offsets(reply(state, "list_offsets_hw"))
    ends = parse_offsets(reply(state, "list_offsets_leo"))
    cluster = ClusterReading(
        source="kafka1",
        described=described,
        partitions=parse_metadata(reply(state, "metadata")),
        quorum=parse_quorum(reply(state, "describe_quorum")),
        min_isr=parse_min_isr(reply(state, "describe_configs")),
        high_watermarks=high,
        log_end={(1, *key): offset for key, offset in ends.items()},
    )
    readings = [
        NodeReading(node, error="connection refused")
        if n in down
        else NodeReading(node, latency_ms=1.0, version="4.3", described=described)
        for n, node in enumerate(RECORDED_SPEC.nodes, start=1)
    ]
    addresses = {b.broker_id: b.address for b in described.brokers}
    return assemble(RECORDED_SPEC, RECORDED_AT, readings, cluster, addresses)


def test_healthy_view() -> None:
    view = recorded("healthy")
    assert [(n.node_id, n.role) for n in view.nodes] == [
        ("kafka1", Role.CONTROLLER),
        ("kafka2", Role.BROKER),
        ("kafka3", Role.BROKER),
    ]
    assert (view.leader, view.quorum, view.voting_alive, view.voting_configured) == (
        "kafka1",
        True,
        3,
        3,
    )
    shards = {s.shard_id: s for s in view.shards}
    assert len(shards) == 9
    t1 = shards["t1/0"]
    assert (t1.node_id, t1.replicas, t1.in_sync, t1.min_in_sync, t1.commit_offset) == (
        "kafka1",
        ("kafka2", "kafka3", "kafka1"),
        ("kafka2", "kafka3", "kafka1"),  # in assignment order, not Kafka's
        3,
        10,
    )
    assert view.nodes[0].facts["broker_id"] == 1
    assert view.facts["kafka_cluster_id"] == "0Maieb-SRneAoM_xVByp9w"
    findings = {f.code: f for f in evaluate(RECORDED_SPEC, view)}
    # solo has 1 replica under a default min.insync.replicas of 2: acks=all writes fail.
    assert sorted(findings) == ["below_min_isr", "leader_not_preferred", "replication_factor_low"]
    assert "t1/0" in findings["leader_not_preferred"].message
    assert "solo/0" in findings["below_min_isr"].message


def test_view_with_a_dead_broker() -> None:
    view = recorded("broker3-down", down=(3,))
    assert [(n.node_id, n.reachable, n.error) for n in view.nodes][2] == (
        "kafka3",
        False,
        "connection refused",
    )
    shards = {s.shard_id: s for s in view.shards}
    assert shards["solo/0"].node_id is None and shards["solo/0"].role is Role.UNKNOWN
    assert shards["t1/2"].node_id == "kafka2"
    assert shards["t1/2"].in_sync == ("kafka1", "kafka2")
    assert (view.voting_alive, view.voting_configured, view.quorum) == (2, 3, True)
    codes = sorted(f.code for f in evaluate(RECORDED_SPEC, view))
    assert codes == [
        "below_min_isr",
        "leader_not_preferred",
        "node_down",
        "offline_partitions",
        "replication_factor_low",
        "under_replicated",
    ]


# --- views from made-up readings -------------------------------------------------------------

BROKERS = tuple(Broker(n, f"127.0.0.{239 + n}:9092") for n in (1, 2, 3))
ADDRESSES = {b.broker_id: b.address for b in BROKERS}


QUORUM = Quorum(leader=2, epoch=1, voters=(1, 2, 3), following=(1, 2, 3), high_watermark=9)


def made_up(
    brokers: tuple[Broker, ...] = BROKERS,
    quorum: Quorum | None = QUORUM,
    partitions: tuple[Partition, ...] = (),
    reachable: tuple[int, ...] = (1, 2, 3),
    last_voters: tuple[int, ...] = (),
) -> ClusterView:
    described = DescribedCluster("c", brokers)
    cluster = ClusterReading("kafka1", described, partitions, quorum)
    readings = [
        NodeReading(node, latency_ms=1.0, described=described)
        if n in reachable
        else NodeReading(node, error="timeout after 1.0s")
        for n, node in enumerate(RECORDED_SPEC.nodes, start=1)
    ]
    addresses = ADDRESSES | {b.broker_id: b.address for b in brokers}
    return assemble(RECORDED_SPEC, RECORDED_AT, readings, cluster, addresses, last_voters)


def test_a_fenced_or_unregistered_broker_is_looking() -> None:
    fenced = (BROKERS[0], BROKERS[1], Broker(3, BROKERS[2].address, fenced=True))
    assert [n.role for n in made_up(fenced).nodes] == [Role.BROKER, Role.CONTROLLER, Role.LOOKING]
    # Broker 3 advertises an address the spec does not list: kafka3 is no broker of it.
    elsewhere = (BROKERS[0], BROKERS[1], Broker(3, "kafka3.internal:9092"))
    view = made_up(elsewhere, partitions=(Partition("t", 0, 3, (3, 1), (3, 1)),))
    assert [n.role for n in view.nodes] == [Role.BROKER, Role.CONTROLLER, Role.LOOKING]
    assert (view.shards[0].node_id, view.shards[0].replicas) == ("broker-3", ("broker-3", "kafka1"))
    assert view.facts["unmapped_brokers"] == "3"


def test_a_controller_outside_the_spec_is_named_by_its_id() -> None:
    dedicated = Quorum(
        leader=3000, epoch=1, voters=(3000, 3001, 3002), following=(3000, 3001), high_watermark=1
    )
    view = made_up(quorum=dedicated)
    assert (view.leader, view.voting_alive, view.voting_configured, view.quorum) == (
        "controller-3000",
        2,
        3,
        True,
    )
    assert Role.CONTROLLER not in [n.role for n in view.nodes]


def test_without_a_controller_the_last_voters_are_counted_among_the_nodes() -> None:
    lost = made_up(quorum=None, reachable=(1,), last_voters=(1, 2, 3))
    assert (lost.leader, lost.voting_alive, lost.voting_configured, lost.quorum) == (
        None,
        1,
        3,
        False,
    )
    assert "quorum_lost" in [f.code for f in evaluate(RECORDED_SPEC, lost)]
    # Voters the spec does not list (dedicated controllers) cannot be counted.
    unknown = made_up(quorum=None, reachable=(1,), last_voters=(3000, 3001, 3002))
    assert (unknown.quorum, unknown.voting_alive) == (None, None)
    assert made_up(quorum=None, reachable=(1,)).quorum is None  # never saw any voter


# --- the probe, on replayed replies ----------------------------------------------------------


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


class ReplayedBroker:
    """Answers each request with the recorded reply for its API, rewriting the brokers'
    addresses to those of the replaying servers; `mode` makes it misbehave instead."""

    def __init__(self, state: str, mode: str = "replay") -> None:
        self.state, self.mode = state, mode
        self.addresses: dict[int, tuple[str, int]] = {}
        self.serving: set[asyncio.Task[Any]] = set()

    def answer(self, api_key: int, api_version: int, correlation_id: int, body: bytes) -> bytes:
        what = {
            18: "api_versions",
            60: "describe_cluster",
            3: "metadata",
            55: "describe_quorum",
            32: "describe_configs",
        }.get(api_key)
        if api_key == 2:
            request = ListOffsetsRequest.decode(body, version=api_version)
            what = (
                "list_offsets_leo" if request.replica_id == DEBUGGING_REPLICA else "list_offsets_hw"
            )
        assert what is not None, f"unexpected API {api_key}"
        state = "healthy" if what == "api_versions" else self.state
        recorded_reply = reply(state, what)
        for broker in getattr(recorded_reply, "brokers", ()):
            broker_id = getattr(broker, "broker_id", None) or broker.node_id
            if broker_id in self.addresses:
                broker.host, broker.port = self.addresses[broker_id]
        recorded_reply._header.correlation_id = correlation_id
        return frame(recorded_reply.encode(header=True))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.serving.add(task)
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = await reader.readexactly(size)
                if self.mode == "garbage":
                    writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
                elif self.mode == "close":
                    break
                elif self.mode == "hang":
                    await reader.read()
                    break
                else:
                    api_key, version, correlation_id, client_id = struct.unpack(
                        ">hhih", request[:10]
                    )
                    if self.mode == "sasl" and api_key != 18:
                        break  # as a SASL listener does before SaslHandshake
                    # All the probe sends is flexible: the header ends with (no) tagged fields.
                    body = request[10 + client_id + 1 :]
                    writer.write(self.answer(api_key, version, correlation_id, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def replayed(
    state: str, *modes: str | None, timeout_s: float = 1.0
) -> AsyncIterator[ClusterSpec]:
    """Node kafkaN replays broker N of the recorded cluster in modes[N-1]; None is a
    closed port (a dead broker)."""
    async with AsyncExitStack() as stack:
        brokers = [ReplayedBroker(state, mode or "replay") for mode in modes]
        addresses: list[str] = []
        for n, (broker, mode) in enumerate(zip(brokers, modes, strict=True), start=1):
            if mode is None:
                addresses.append(closed_port_address())
                continue
            server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
            await stack.enter_async_context(server)
            port = server.sockets[0].getsockname()[1]
            addresses.append(f"127.0.0.1:{port}")
            for other in brokers:
                other.addresses[n] = ("127.0.0.1", port)
        spec = spec_for(addresses, timeout_s)
        try:
            yield spec
        finally:
            # The adapter keeps its links across probes: close them, and let the servers
            # see them closed, before the servers go.
            client_for(spec.cluster_id).close()
            serving = [task for broker in brokers for task in broker.serving]
            if serving:
                await asyncio.wait(serving, timeout=1.0)


async def test_probe_replays_a_healthy_cluster() -> None:
    async with replayed("healthy", "replay", "replay", "replay") as spec:
        view = await KafkaAdapter().probe(spec)
    assert [(n.node_id, n.reachable, n.role, n.version) for n in view.nodes] == [
        ("kafka1", True, Role.CONTROLLER, "4.3"),
        ("kafka2", True, Role.BROKER, "4.3"),
        ("kafka3", True, Role.BROKER, "4.3"),
    ]
    shards = {s.shard_id: s for s in view.shards}
    assert (shards["t1/0"].node_id, shards["t1/0"].commit_offset, shards["t1/0"].min_in_sync) == (
        "kafka1",
        10,
        3,
    )
    # Every replaying broker answers with broker 1's log end offsets: no lag.
    assert shards["t1/0"].lag == 0


async def test_probe_reports_dead_hung_and_garbage_brokers() -> None:
    async with replayed(
        "broker3-down", "replay", "hang", None, "garbage", "close", timeout_s=0.3
    ) as spec:
        started = time.monotonic()
        view = await KafkaAdapter().probe(spec)
        took = time.monotonic() - started
    assert took < 0.3 + 0.2
    errors = [(n.node_id, n.reachable, n.error) for n in view.nodes]
    assert errors[0] == ("kafka1", True, None)
    assert errors[1:3] == [
        ("kafka2", False, "timeout after 0.3s"),
        ("kafka3", False, "connection refused"),
    ]
    assert errors[3][2] is not None and errors[3][2].startswith("unparseable reply")
    assert errors[4] == ("kafka5", False, "closed by the broker")
    assert view.leader == "kafka1"
    assert len(view.shards) == 9


async def test_a_broker_that_answers_api_versions_only_is_alive_and_wants_a_login() -> None:
    """A SASL listener reached without `auth` answers ApiVersions, then closes on
    DescribeCluster: reachable with an error (`auth_failed`), not down (`node_down`)."""
    async with replayed("healthy", "replay", "sasl", "close") as spec:
        view = await KafkaAdapter().probe(spec)
    assert [(n.node_id, n.reachable, n.error) for n in view.nodes[1:]] == [
        (
            "kafka2",
            True,
            "answers ApiVersions but closed the connection on DescribeCluster:"
            " it may need a login (spec `auth`)",
        ),
        ("kafka3", False, "closed by the broker"),
    ]
    codes = {(f.code, f.subject) for f in evaluate(spec, view)}
    assert {("auth_failed", "kafka2"), ("node_down", "kafka3")} <= codes, codes
    assert ("node_down", "kafka2") not in codes


# --- held links, on stand-in brokers ---------------------------------------------------------


class StandIn:
    """A TCP server on a thread that answers ApiVersions like a broker, and can close its
    connections (as an idle broker does) or die (closing its port too)."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            size = struct.unpack(">i", conn.recv(4))[0]
            request = conn.recv(size)
            correlation_id = struct.unpack(">i", request[4:8])[0]
            api_versions = reply("healthy", "api_versions")
            api_versions._header.correlation_id = correlation_id
            conn.sendall(frame(api_versions.encode(header=True)))
        except OSError:
            pass

    def drop_connections(self) -> None:
        for conn in self.connections:
            conn.close()
        self.connections.clear()

    def die(self) -> None:
        # shutdown() stops a listener at once; close() alone waits for the accept() under way.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.drop_connections()


@contextmanager
def holding(*addresses: str) -> Iterator[tuple[LinkHolder, Changes]]:
    changes = Changes()
    holder = LinkHolder(spec_for(list(addresses)).nodes, changes, connect_timeout=1.0)
    holder.start()
    try:
        yield holder, changes
    finally:
        leaving = time.monotonic()
        holder.stop()
        assert time.monotonic() - leaving < LINK_STOP_WAIT_S + 0.1


def test_links_tell_when_a_broker_dies_not_when_it_drops_an_idle_link() -> None:
    a, b = StandIn(), StandIn()
    with holding(a.address, b.address) as (holder, changes):
        assert changes.wait_for(2, timeout=5)  # both came up
        # A link dropped right after it came up is taken for a broker in trouble.
        time.sleep(2 * LINK_RETRY_S + 0.1)
        a.drop_connections()  # an idle close
        time.sleep(0.3)
        assert len(changes.times) == 2
        assert [link.state for link in holder.links] == ["up", "up"]
        b.die()
        died = time.monotonic()
        assert changes.wait_for(3, timeout=2)
        assert changes.times[2] - died < 0.1
        assert holder.links[0].state == "up"


def test_links_tell_when_a_broker_comes_back_but_not_for_a_port_that_says_nothing() -> None:
    address = closed_port_address()
    port = int(address.rpartition(":")[2])
    with holding(address) as (_, changes):
        time.sleep(0.2)
        assert changes.times == []
        # Accepts (the kernel does), but never says a word of Kafka: not a broker.
        with socket.create_server(("127.0.0.1", port)):
            time.sleep(1.2)
            assert changes.times == []
        back = StandIn(port)
        came = time.monotonic()
        assert changes.wait_for(1, timeout=2)
        assert changes.times[0] - came < LINK_RETRY_S + 0.2
        back.die()
