"""What a probe saw at one instant: one model for every datastore kind.

Kind-specific numbers (a ZooKeeper zxid, a Kafka high watermark) live in `facts`
dictionaries; workflows only read the kind-agnostic fields.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from models.base import Kind

FactValue = str | int | float | bool


class Role(StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"
    OBSERVER = "observer"
    STANDALONE = "standalone"
    PRIMARY = "primary"
    SECONDARY = "secondary"
    ARBITER = "arbiter"
    CONTROLLER = "controller"
    BROKER = "broker"
    ROUTER = "router"
    """Routes requests and holds no data: a MongoDB mongos."""
    LOOKING = "looking"
    """Reachable but not serving: electing a leader, starting up, recovering."""
    UNKNOWN = "unknown"


class Health(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"
    UNKNOWN = "unknown"


class Observed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeStatus(Observed):
    node_id: str
    address: str
    reachable: bool
    error: str | None = None
    """Why the node could not be read: 'timeout after 2.0s', 'connection refused', ..."""
    version: str | None = None
    role: Role = Role.UNKNOWN
    uptime_s: float | None = None
    latency_ms: float | None = None
    facts: dict[str, FactValue] = Field(default_factory=dict)


class ShardStatus(Observed):
    """One copy of the data as a node holds it (a ZooKeeper member's tree, a MongoDB
    member's oplog), or for Kafka one partition as its leader serves it."""

    shard_id: str
    """`zk`; a MongoDB replica set's name; a Kafka `topic/partition`."""
    node_id: str | None
    """The node holding this copy; for a Kafka partition its actual leader, None when
    the partition is offline."""
    role: Role
    commit_offset: int | None = None
    """ZooKeeper zxid, MongoDB optime (seconds), Kafka high watermark."""
    lag: int | None = None
    """How far behind the leader/primary this copy is, in the kind's unit (zxid count,
    seconds), where the datastore lets us observe it."""
    replicas: tuple[str, ...] = ()
    """Assigned replicas in preference order (the first is the preferred leader)."""
    in_sync: tuple[str, ...] = ()
    min_in_sync: int | None = None
    """Fewest in-sync replicas the datastore accepts writes with (Kafka
    `min.insync.replicas`)."""


class ClusterView(Observed):
    cluster_id: str
    kind: Kind
    observed_at: datetime
    nodes: tuple[NodeStatus, ...]
    shards: tuple[ShardStatus, ...] = ()
    leader: str | None = None
    """node_id of the leader / primary / controller, if there is exactly one."""
    quorum: bool | None = None
    """None where the kind has no quorum of its own."""
    voting_alive: int | None = None
    voting_configured: int | None = None
    facts: dict[str, FactValue] = Field(default_factory=dict)

    def node(self, node_id: str) -> NodeStatus | None:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        return None

    def signature(self) -> tuple[object, ...]:
        """The parts of a view whose change is worth waking a workflow for.

        Counters that move all the time (zxid, latency, znode count) are left out, so an
        idle healthy cluster produces no workflow history at all.
        """
        return (
            tuple((n.node_id, n.reachable, n.role) for n in self.nodes),
            self.leader,
            self.quorum,
            tuple((s.shard_id, s.node_id, s.role, s.in_sync) for s in self.shards),
        )
