"""MongoDB's findings on hand-built views: what each rule fires on, and what it leaves to the
common rules (node_down, node_not_serving, quorum_lost, no_primary)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from models import ClusterSpec, ClusterView, Kind, NodeStatus, Role, ShardStatus, parse_spec
from models.findings import Severity, evaluate
from models.findings.mongodb import evaluate as mongodb_rules
from models.findings.mongodb import set_fact

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def spec(max_lag: int | None = None, nodes: int = 3) -> ClusterSpec:
    return parse_spec(
        {
            "cluster_id": "c1",
            "kind": "mongodb",
            "nodes": [
                {"node_id": f"m{n}", "address": f"m{n}.example.net:27017"}
                for n in range(1, nodes + 1)
            ],
            "expect": {"max_lag": max_lag},
        }
    )


def member(
    node_id: str,
    role: Role,
    lag: int | None = 0,
    *,
    shard_id: str = "rs0",
    replicas: tuple[str, ...] = ("m1", "m2", "m3"),
    in_sync: tuple[str, ...] = ("m1", "m2", "m3"),
    write_majority: int = 2,
) -> ShardStatus:
    return ShardStatus(
        shard_id=shard_id,
        node_id=node_id,
        role=role,
        lag=lag,
        replicas=replicas,
        in_sync=in_sync,
        min_in_sync=write_majority,
    )


def view(
    *shards: ShardStatus,
    quorum: bool | None = True,
    sharded: bool = False,
    nodes: tuple[NodeStatus, ...] = (),
    **facts: bool | int | str,
) -> ClusterView:
    set_facts: dict[str, bool | int | str] = {}
    for shard_id in dict.fromkeys(s.shard_id for s in shards):
        set_facts[set_fact(shard_id, "voting_alive")] = 3 if quorum else 1
        set_facts[set_fact(shard_id, "voting_configured")] = 3
        if quorum is not None:
            set_facts[set_fact(shard_id, "quorum")] = quorum
    primary = next((s.node_id for s in shards if s.role is Role.PRIMARY), None)
    return ClusterView(
        cluster_id="c1",
        kind=Kind.MONGODB,
        observed_at=T0,
        nodes=nodes
        or tuple(
            NodeStatus(node_id=f"m{n}", address=f"m{n}.example.net:27017", reachable=True)
            for n in (1, 2, 3)
        ),
        shards=shards,
        leader=None if sharded else primary,
        quorum=None if sharded else quorum,
        voting_alive=None if sharded else (3 if quorum else 1),
        voting_configured=None if sharded else 3,
        facts={"topology": "sharded" if sharded else "replica_set", "set_name": "rs0"}
        | set_facts
        | facts,
    )


HEALTHY = (
    member("m1", Role.PRIMARY),
    member("m2", Role.SECONDARY, 4),
    member("m3", Role.SECONDARY, 11),
)


def test_healthy_set_has_no_findings() -> None:
    assert evaluate(spec(max_lag=30), view(*HEALTHY)) == []


def test_kind_rules_are_registered_for_mongodb() -> None:
    lagging = evaluate(spec(max_lag=10), view(*HEALTHY))
    assert [(f.code, f.subject) for f in lagging] == [("secondary_lagging", "m3")]


@pytest.mark.parametrize(
    ("max_lag", "lagging"),
    [(None, []), (11, []), (10, ["m3"]), (3, ["m2", "m3"]), (0, ["m2", "m3"])],
)
def test_secondary_lagging_is_lag_over_max_lag(max_lag: int | None, lagging: list[str]) -> None:
    found = mongodb_rules(spec(max_lag=max_lag), view(*HEALTHY))
    assert [f.subject for f in found if f.code == "secondary_lagging"] == lagging
    assert all(f.severity is Severity.WARNING for f in found)


def test_secondary_lagging_message() -> None:
    (finding,) = mongodb_rules(spec(max_lag=10), view(*HEALTHY))
    assert finding.message == "m3 is 11 s behind the primary of rs0 (max_lag 10 s)"


def test_only_secondaries_lag() -> None:
    # A member in RECOVERING or rolling back may be far behind: node_not_serving says it.
    shards = (
        member("m1", Role.PRIMARY),
        member("m2", Role.LOOKING, 900),
        member("m3", Role.SECONDARY, None),  # no optime known: no figure, no finding
    )
    assert mongodb_rules(spec(max_lag=10), view(*shards)) == []


def test_majority_writes_at_risk_when_too_few_data_bearing_voters_can_acknowledge() -> None:
    # Primary + secondary + arbiter, the secondary down: the arbiter keeps the quorum, but
    # w:majority needs both data-bearing members.
    shards = tuple(
        member(n, role, None, replicas=("m1", "m2"), in_sync=("m1",))
        for n, role in (("m1", Role.PRIMARY), ("m2", Role.UNKNOWN), ("m3", Role.ARBITER))
    )
    (finding,) = mongodb_rules(spec(), view(*shards))
    assert (finding.code, finding.severity, finding.subject) == (
        "majority_writes_at_risk",
        Severity.CRITICAL,
        "c1",
    )
    assert finding.message == (
        "replica set rs0: 1 of 2 data-bearing voting members can acknowledge writes,"
        " w:majority needs 2 (arbiters do not count); down or not serving: m2"
    )


def test_majority_writes_are_not_at_risk_with_exactly_the_write_majority() -> None:
    shards = (
        member("m1", Role.PRIMARY, in_sync=("m1", "m2")),
        member("m2", Role.SECONDARY, in_sync=("m1", "m2")),
        member("m3", Role.UNKNOWN, None, in_sync=("m1", "m2")),
    )
    assert mongodb_rules(spec(), view(*shards)) == []


@pytest.mark.parametrize("quorum", [False, None])
def test_majority_writes_at_risk_is_left_to_quorum_when_it_is_lost_or_unknown(
    quorum: bool | None,
) -> None:
    shards = (member("m1", Role.SECONDARY, in_sync=("m1",)),)
    assert mongodb_rules(spec(), view(*shards, quorum=quorum)) == []


def test_replica_set_quorum_and_primary_are_the_common_rules_business() -> None:
    # No primary in a plain replica set: the common rule's no_primary, nothing of ours.
    shards = (member("m1", Role.SECONDARY), member("m2", Role.SECONDARY))
    found = evaluate(spec(), view(*shards))
    assert [(f.code, f.subject) for f in found] == [("no_primary", "c1")]
    lost = evaluate(spec(), view(member("m1", Role.SECONDARY, in_sync=("m1",)), quorum=False))
    assert [f.code for f in lost] == ["quorum_lost"]


def test_sharded_cluster_gets_per_shard_quorum_and_primary_findings() -> None:
    shards = (
        member("a1", Role.PRIMARY, shard_id="shard01"),
        member("a2", Role.SECONDARY, shard_id="shard01"),
        member("b1", Role.SECONDARY, shard_id="shard02"),
        member("b2", Role.SECONDARY, shard_id="shard02"),
        member("c1", Role.SECONDARY, shard_id="config"),
    )
    v = view(*shards, sharded=True)
    facts = dict(v.facts)
    facts[set_fact("config", "quorum")] = False
    facts[set_fact("config", "voting_alive")] = 1
    v = v.model_copy(update={"facts": facts})
    found = {(f.code, f.subject): f for f in evaluate(spec(), v)}
    assert set(found) == {("shard_no_primary", "shard02"), ("shard_quorum_lost", "config")}
    assert found["shard_no_primary", "shard02"].message == (
        "shard shard02: a majority of members is alive but none is primary"
    )
    assert found["shard_quorum_lost", "config"].message == (
        "shard config: 1 of 3 voting members alive; it cannot elect a primary or accept writes"
    )
    assert all(f.severity is Severity.CRITICAL for f in found.values())


def test_sharded_write_majority_and_lag_findings_name_the_shard() -> None:
    shards = (
        member("b1", Role.PRIMARY, shard_id="shard02", replicas=("b1", "b2"), in_sync=("b1",)),
        member(
            "b2", Role.SECONDARY, 50, shard_id="shard02", replicas=("b1", "b2"), in_sync=("b1",)
        ),
    )
    found = mongodb_rules(spec(max_lag=10), view(*shards, sharded=True))
    assert [(f.code, f.subject) for f in found] == [
        ("majority_writes_at_risk", "shard02"),
        ("secondary_lagging", "b2"),
    ]
    assert found[0].message.startswith("shard shard02: 1 of 2 data-bearing voting members")


def test_spec_node_outside_the_set_and_a_refused_status_are_reported() -> None:
    nodes = (
        NodeStatus(
            node_id="m1",
            address="m1.example.net:27017",
            reachable=True,
            role=Role.SECONDARY,
            facts={
                "status_error": "Unauthorized: Command replSetGetStatus requires authentication"
            },
        ),
        NodeStatus(
            node_id="m4",
            address="m4.example.net:27017",
            reachable=True,
            role=Role.LOOKING,
            facts={"in_set_config": False},
        ),
    )
    found = mongodb_rules(spec(), view(nodes=nodes, quorum=None))
    assert [(f.code, f.subject, f.severity) for f in found] == [
        ("status_not_authorized", "m1", Severity.WARNING),
        ("not_in_replica_set", "m4", Severity.WARNING),
    ]
    assert found[1].message == (
        "m4 (m4.example.net:27017) answers but is not a member of replica set rs0"
    )
