"""Safety verdicts on views of every kind, one class per kind as the rules are one module
per kind (models/safety/). No servers: the views are what probes return."""

from __future__ import annotations

from models import Kind, Role, ShardStatus
from models.safety import (
    STOP_RULES,
    preferred_leader_election,
    start_dead_node,
    step_down_primary,
    stop_live_node,
)
from tests.views import spec, view

ZK = ("zk1", "zk2", "zk3")
L, F = Role.LEADER, Role.FOLLOWER


class TestZooKeeper:
    """models/safety/zookeeper.py, and the rules every kind shares (models/safety/base.py)."""

    def test_start_a_dead_member_is_safe_even_without_quorum(self) -> None:
        v = view(Kind.ZOOKEEPER, {"zk1": Role.LOOKING, "zk2": None, "zk3": None})
        verdict = start_dead_node(spec("zookeeper", ZK), v, "zk2")
        assert verdict.safe
        assert (
            verdict.reason
            == "zk2 is down (connection refused); starting it cannot take a member away"
        )
        assert not start_dead_node(spec("zookeeper", ZK), v, "zk1").safe
        assert not start_dead_node(spec("zookeeper", ZK), v, "zk9").safe

    def test_stop_a_live_member_only_while_quorum_holds(self) -> None:
        whole = view(Kind.ZOOKEEPER, {"zk1": L, "zk2": F, "zk3": F})
        assert stop_live_node(spec("zookeeper", ZK), whole, "zk2").safe
        one_down = view(Kind.ZOOKEEPER, {"zk1": L, "zk2": F, "zk3": None})
        verdict = stop_live_node(spec("zookeeper", ZK), one_down, "zk2")
        assert not verdict.safe
        assert verdict.reason == "zk3 not serving: stopping zk2 as well risks the cluster"
        five = ("a", "b", "c", "d", "e")
        two_down = view(Kind.ZOOKEEPER, {"a": L, "b": F, "c": F, "d": F, "e": F})
        assert stop_live_node(spec("zookeeper", five), two_down, "b").reason == (
            "4 of 5 voting members stay: quorum kept"
        )


KAFKA = ("kafka1", "kafka2", "kafka3")
BROKERS: dict[str, Role | None] = {
    "kafka1": Role.CONTROLLER,
    "kafka2": Role.BROKER,
    "kafka3": Role.BROKER,
}


def partition(
    n: int, leader: str | None, in_sync: tuple[str, ...], min_isr: int = 2
) -> ShardStatus:
    return ShardStatus(
        shard_id=f"t/{n}",
        node_id=leader,
        role=Role.LEADER if leader else Role.UNKNOWN,
        replicas=KAFKA,
        in_sync=in_sync,
        min_in_sync=min_isr,
    )


class TestKafka:
    """models/safety/kafka.py: min ISR, under-replication, preferred election."""

    def test_stop_a_broker_only_if_no_partition_drops_below_min_isr(self) -> None:
        healthy = view(Kind.KAFKA, BROKERS, (partition(0, "kafka1", KAFKA),))
        assert stop_live_node(spec("kafka", KAFKA), healthy, "kafka2").safe
        strict = view(Kind.KAFKA, BROKERS, (partition(0, "kafka1", KAFKA, min_isr=3),))
        verdict = stop_live_node(spec("kafka", KAFKA), strict, "kafka2")
        assert not verdict.safe
        assert (
            verdict.reason
            == "stopping kafka2 drops 1 partition(s) below min.insync.replicas, e.g. t/0"
        )
        shrunk = view(Kind.KAFKA, BROKERS, (partition(0, "kafka1", ("kafka1", "kafka2")),))
        assert stop_live_node(spec("kafka", KAFKA), shrunk, "kafka3").reason == (
            "1 partition(s) under-replicated: wait for them first"
        )

    def test_preferred_leader_election(self) -> None:
        moved = view(Kind.KAFKA, BROKERS, (partition(0, "kafka2", KAFKA),))
        assert preferred_leader_election(spec("kafka", KAFKA), moved).safe
        balanced = view(Kind.KAFKA, BROKERS, (partition(0, "kafka1", KAFKA),))
        assert not preferred_leader_election(spec("kafka", KAFKA), balanced).safe
        stuck = view(Kind.KAFKA, BROKERS, (partition(0, "kafka2", ("kafka2", "kafka3")),))
        assert preferred_leader_election(spec("kafka", KAFKA), stuck).reason == (
            "no preferred replica is in sync: an election would fail"
        )
        offline = view(Kind.KAFKA, BROKERS, (partition(0, None, ()),))
        assert not preferred_leader_election(spec("kafka", KAFKA), offline).safe


MONGO = ("m1", "m2", "m3")
P, S = Role.PRIMARY, Role.SECONDARY


def member(node: str, role: Role, lag: int | None) -> ShardStatus:
    return ShardStatus(shard_id="rs0", node_id=node, role=role, lag=lag)


class TestMongoDB:
    """models/safety/mongodb.py: write majority, step-down."""

    def test_step_down_needs_an_electable_secondary_close_behind(self) -> None:
        roles: dict[str, Role | None] = {"m1": P, "m2": S, "m3": S}
        close = view(
            Kind.MONGODB, roles, (member("m1", P, 0), member("m2", S, 3), member("m3", S, 40))
        )
        verdict = step_down_primary(spec("mongodb", MONGO), close)
        assert verdict.safe
        assert verdict.reason == "electable secondaries within 10 s: m2 (3 s behind)"
        far = view(
            Kind.MONGODB, roles, (member("m1", P, 0), member("m2", S, 30), member("m3", S, 40))
        )
        assert not step_down_primary(spec("mongodb", MONGO), far).safe
        assert step_down_primary(spec("mongodb", MONGO, max_lag=35), far).safe
        # A priority-0 secondary can never be elected, however close it is.
        passive = view(
            Kind.MONGODB,
            roles,
            (member("m1", P, 0), member("m2", S, 1), member("m3", S, 40)),
            facts={"m2": {"priority": 0}},
        )
        assert not step_down_primary(spec("mongodb", MONGO), passive).safe

    def test_stop_a_secondary_only_while_majority_writes_go_on(self) -> None:
        roles: dict[str, Role | None] = {"m1": P, "m2": S, "m3": S}
        shards = tuple(
            s.model_copy(update={"in_sync": MONGO})
            for s in (member("m1", P, 0), member("m2", S, 1), member("m3", S, 1))
        )
        counts = {"rs0.voting_alive": 3, "rs0.majority_vote_count": 2}
        v = view(
            Kind.MONGODB, roles, shards, cluster_facts=counts | {"rs0.write_majority_count": 2}
        )
        assert stop_live_node(spec("mongodb", MONGO), v, "m3").safe
        assert stop_live_node(spec("mongodb", MONGO), v, "m1").reason == (
            "m1 is the primary: step it down first"
        )
        strict = v.model_copy(update={"facts": counts | {"rs0.write_majority_count": 3}})
        assert stop_live_node(spec("mongodb", MONGO), strict, "m3").reason == (
            "without m3, rs0 has 2 members that can acknowledge w:majority writes (m1, m2)"
            " for a write majority of 3: majority writes would stop"
        )
        unknown = v.model_copy(update={"facts": {}})
        assert not stop_live_node(spec("mongodb", MONGO), unknown, "m3").safe

    def test_a_secondary_that_cannot_acknowledge_keeps_no_majority_write_going(self) -> None:
        # m3 serves as a secondary but is not among those that acknowledge (votes 0, or
        # delayed): m2 is the only one beside the primary, and stopping it stalls w:majority.
        roles: dict[str, Role | None] = {"m1": P, "m2": S, "m3": S}
        shards = tuple(
            s.model_copy(update={"in_sync": ("m1", "m2")})
            for s in (member("m1", P, 0), member("m2", S, 1), member("m3", S, 1))
        )
        counts = {"rs0.voting_alive": 2, "rs0.majority_vote_count": 2}
        v = view(
            Kind.MONGODB,
            roles,
            shards,
            facts={"m3": {"votes": 0}},
            cluster_facts=counts | {"rs0.write_majority_count": 2},
        )
        refused = stop_live_node(spec("mongodb", MONGO), v, "m2")
        assert (refused.safe, refused.reason) == (
            False,
            "without m2, rs0 has 1 live voting members for a majority of 2: it could not keep"
            " or elect a primary",
        )
        # m3 has no vote: the quorum does not lose it, and w:majority never needed it.
        assert stop_live_node(spec("mongodb", MONGO), v, "m3").safe


def test_every_kind_has_a_stop_rule() -> None:
    assert set(STOP_RULES) == set(Kind)
