"""Kafka's findings from partition views, and the events they turn into. No servers."""

from __future__ import annotations

from datetime import UTC, datetime

from models import (
    ClusterSpec,
    ClusterView,
    Kind,
    NodeStatus,
    Role,
    Severity,
    ShardStatus,
    changes,
    evaluate,
    parse_spec,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BROKERS = ("kafka1", "kafka2", "kafka3")


def spec(replication_factor: int | None = None, max_lag: int | None = None) -> ClusterSpec:
    return parse_spec(
        {
            "cluster_id": "k1",
            "kind": "kafka",
            "nodes": [{"node_id": b, "address": f"10.0.1.{i}:9092"} for i, b in enumerate(BROKERS)],
            "expect": {"replication_factor": replication_factor, "max_lag": max_lag},
        }
    )


def partition(
    shard_id: str,
    leader: str | None,
    replicas: tuple[str, ...] = BROKERS,
    in_sync: tuple[str, ...] | None = None,
    min_in_sync: int = 2,
) -> ShardStatus:
    return ShardStatus(
        shard_id=shard_id,
        node_id=leader,
        role=Role.LEADER if leader else Role.UNKNOWN,
        replicas=replicas,
        in_sync=replicas if in_sync is None else in_sync,
        min_in_sync=min_in_sync,
    )


def view(*shards: ShardStatus, controller: str | None = "kafka1") -> ClusterView:
    return ClusterView(
        cluster_id="k1",
        kind=Kind.KAFKA,
        observed_at=T0,
        nodes=tuple(
            NodeStatus(
                node_id=b,
                address=f"10.0.1.{i}:9092",
                reachable=True,
                role=Role.CONTROLLER if b == controller else Role.BROKER,
            )
            for i, b in enumerate(BROKERS)
        ),
        shards=shards,
        leader=controller,
        quorum=True,
        voting_alive=3,
        voting_configured=3,
    )


def keys(v: ClusterView, s: ClusterSpec | None = None) -> list[str]:
    return [f.key for f in evaluate(s or spec(), v)]


def test_balanced_fully_replicated_cluster_has_no_findings() -> None:
    second = partition("t/1", "kafka2", replicas=("kafka2", "kafka3", "kafka1"))
    assert keys(view(partition("t/0", "kafka1"), second)) == []


def test_a_shrunk_isr_is_under_replicated_and_one_below_min_isr_is_data_at_risk() -> None:
    shrunk = partition("t/0", "kafka1", in_sync=("kafka1", "kafka2"))
    at_risk = partition(
        "t/1", "kafka2", replicas=("kafka2", "kafka3", "kafka1"), in_sync=("kafka2",)
    )
    findings = evaluate(spec(), view(shrunk, at_risk))
    assert [(f.key, f.severity) for f in findings] == [
        ("below_min_isr/k1", Severity.CRITICAL),
        ("under_replicated/k1", Severity.WARNING),
    ]
    assert findings[0].message == ("1 partition(s) below min.insync.replicas (data at risk): t/1")
    assert findings[1].message == "2 partition(s) under-replicated: t/0, t/1"


def test_offline_partition_is_critical_and_not_also_counted_under_replicated() -> None:
    offline = partition("t/0", None, in_sync=())
    findings = evaluate(spec(), view(offline))
    assert [(f.key, f.severity) for f in findings] == [("offline_partitions/k1", Severity.CRITICAL)]


def test_leader_not_preferred_only_when_the_preferred_replica_could_lead() -> None:
    moved = partition("t/0", "kafka2")
    assert keys(view(moved)) == ["leader_not_preferred/k1"]
    # The preferred replica is out of the ISR: no election can fix this, so no imbalance
    # finding, only the under-replication that explains it.
    stuck = partition("t/0", "kafka2", in_sync=("kafka2", "kafka3"))
    assert keys(view(stuck)) == ["under_replicated/k1"]
    # Imbalance alone leaves the cluster healthy.
    assert evaluate(spec(), view(moved))[0].severity is Severity.INFO


def test_replication_factor_below_the_spec() -> None:
    thin = partition("t/0", "kafka1", replicas=("kafka1",), min_in_sync=1)
    assert keys(view(thin), spec(replication_factor=3)) == ["replication_factor_low/k1"]
    assert keys(view(thin)) == []


def test_a_follower_behind_the_spec_s_max_lag_is_lagging() -> None:
    behind = partition("t/0", "kafka1").model_copy(update={"lag": 501})
    close = partition("t/1", "kafka1").model_copy(update={"lag": 500})
    findings = evaluate(spec(max_lag=500), view(behind, close))
    assert [(f.key, f.severity) for f in findings] == [("replica_lagging/k1", Severity.WARNING)]
    assert findings[0].message == (
        "1 partition(s) with a follower more than 500 messages behind its leader: t/0"
    )
    # Without a max_lag nobody asked: no finding, however far behind.
    assert keys(view(behind)) == []


def test_no_active_controller_is_named_for_kafka() -> None:
    assert keys(view(partition("t/0", "kafka1"), controller=None)) == ["no_controller/k1"]


def test_many_partitions_make_one_finding_with_a_short_list() -> None:
    shards = [partition(f"t/{n}", "kafka1", in_sync=("kafka1", "kafka2")) for n in range(40)]
    (finding,) = evaluate(spec(), view(*shards))
    assert (
        finding.message == "40 partition(s) under-replicated: t/0, t/1, t/2, t/3, t/4 and 35 more"
    )


def test_under_replication_opens_and_resolves_one_finding_event() -> None:
    healthy = view(partition("t/0", "kafka1"))
    shrunk = view(partition("t/0", "kafka1", in_sync=("kafka1", "kafka3")))
    s = spec()
    opened = changes(healthy, shrunk, evaluate(s, healthy), evaluate(s, shrunk))
    assert [(d.type, d.payload.get("finding")) for d in opened] == [
        ("finding.opened", "under_replicated/k1"),
        ("cluster.health_changed", None),
    ]
    assert opened[0].node_id is None
    # More partitions joining an open finding is no new event: the finding is still open.
    worse = view(
        partition("t/0", "kafka1", in_sync=("kafka1", "kafka3")),
        partition("t/1", "kafka2", in_sync=("kafka2", "kafka3")),
    )
    assert changes(shrunk, worse, evaluate(s, shrunk), evaluate(s, worse)) == []
    resolved = changes(worse, healthy, evaluate(s, worse), evaluate(s, healthy))
    assert [d.type for d in resolved] == ["finding.resolved", "cluster.health_changed"]


def test_shard_changes_are_in_the_signature_but_high_watermarks_are_not() -> None:
    base = view(partition("t/0", "kafka1"))
    moved_hw = view(partition("t/0", "kafka1").model_copy(update={"commit_offset": 99}))
    assert base.signature() == moved_hw.signature()
    assert base.signature() != view(partition("t/0", "kafka2")).signature()
    assert base.signature() != view(partition("t/0", "kafka1", in_sync=("kafka1",))).signature()
