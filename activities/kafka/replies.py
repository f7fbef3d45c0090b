"""What a Kafka cluster's replies say, and the ClusterView they make (`assemble`): pure,
no I/O, tested on the replies recorded in tests/replies/kafka/."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kafka.errors as kafka_errors
from kafka.protocol.broker_version_data import BrokerVersionData

from models import ClusterSpec, ClusterView, Kind, NodeSpec, NodeStatus, Role, ShardStatus
from models.view import FactValue

METADATA_TOPIC = "__cluster_metadata"
# A voter that has not fetched from the controller for this long is not following it.
# Followers fetch at least every 500 ms; they call an election after
# controller.quorum.fetch.timeout.ms (2 s by default).
VOTER_STALE_MS = 3000


class KafkaReplyError(ValueError):
    """A broker answered, with an error code instead of the data asked for."""


def _check(what: str, error_code: int, message: str | None = None) -> None:
    if error_code:
        name = kafka_errors.for_code(error_code).__name__
        raise KafkaReplyError(f"{what}: {name}" + (f" ({message})" if message else ""))


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


def broker_versions(reply: Any) -> BrokerVersionData:
    """The API versions a broker supports, from its ApiVersions reply."""
    if reply.error_code and not reply.api_keys:
        _check("ApiVersions", reply.error_code)
    return BrokerVersionData(
        api_versions={k.api_key: (k.min_version, k.max_version) for k in reply.api_keys}
    )
