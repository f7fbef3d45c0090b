"""Plans of every playbook and the safety gate of each step, on views as probes return
them. No servers: `plan` and `gate` are pure, which is what lets a replay rebuild them."""

from __future__ import annotations

import pytest

from models import Kind, Role, ShardStatus
from models.plans import PLANS, Step, StepKind
from models.playbooks import PLAYBOOKS
from models.remediation import check, gate, plan
from tests.views import spec, view

ZK = ("zk1", "zk2", "zk3")
KAFKA = ("k1", "k2", "k3")
MONGO = ("m1", "m2", "m3")
L, F = Role.LEADER, Role.FOLLOWER


def names(steps: list[Step]) -> list[str]:
    return [s.name for s in steps]


def test_a_dead_member_is_started_then_waited_for() -> None:
    zk = spec("zookeeper", ZK)
    v = view(Kind.ZOOKEEPER, {"zk1": L, "zk2": F, "zk3": None})
    steps = plan(zk, "restart_dead_member", "zk3", v)
    assert [(s.name, s.kind.value, s.stops_service) for s in steps] == [
        ("start-zk3", "service", False),
        ("wait-zk3-serving", "wait_serving", False),
    ]
    assert gate(zk, v, steps[0]).safe
    with pytest.raises(ValueError, match="'zk9' is not a node of c1"):
        plan(zk, "restart_dead_member", "zk9", v)
    with pytest.raises(ValueError, match="restart_dead_member needs a target node"):
        check(zk, "restart_dead_member", None)
    with pytest.raises(ValueError, match="'step_down_primary' is not a zookeeper playbook"):
        check(zk, "step_down_primary", None)


def test_zookeeper_rolling_restart_restarts_the_leader_last() -> None:
    zk = spec("zookeeper", ZK)
    v = view(Kind.ZOOKEEPER, {"zk1": F, "zk2": L, "zk3": F})
    steps = plan(zk, "rolling_restart", None, v)
    assert names(steps) == [
        "restart-zk1",
        "wait-zk1-serving",
        "restart-zk3",
        "wait-zk3-serving",
        "restart-zk2",
        "wait-zk2-serving",
    ]
    assert all(s.stops_service for s in steps if s.kind is StepKind.SERVICE)
    assert gate(zk, v, steps[0]).reason == "2 of 3 voting members stay: quorum kept"
    # One member down already: restarting another would lose the quorum.
    down = view(Kind.ZOOKEEPER, {"zk1": F, "zk2": L, "zk3": None})
    assert gate(zk, down, steps[0]).reason == (
        "zk3 not serving: stopping zk1 as well risks the cluster"
    )


def partition(name: str, leader: str, in_sync: tuple[str, ...]) -> ShardStatus:
    return ShardStatus(
        shard_id=name,
        node_id=leader,
        role=Role.LEADER,
        replicas=KAFKA,
        in_sync=in_sync,
        min_in_sync=2,
    )


def test_kafka_rolling_restart_waits_in_sync_and_elects_preferred_leaders_at_the_end() -> None:
    kafka = spec("kafka", KAFKA)
    b = Role.BROKER
    v = view(
        Kind.KAFKA,
        {"k1": Role.CONTROLLER, "k2": b, "k3": b},
        (partition("t/0", "k1", KAFKA),),
    )
    steps = plan(kafka, "rolling_restart", None, v)
    assert names(steps) == [
        "restart-k2",
        "wait-k2-serving",
        "wait-in-sync-after-k2",
        "restart-k3",
        "wait-k3-serving",
        "wait-in-sync-after-k3",
        "restart-k1",
        "wait-k1-serving",
        "wait-in-sync-after-k1",
        "elect-preferred-leaders",
        "wait-leaders-preferred",
    ]
    assert gate(kafka, v, steps[0]).safe
    # A partition still catching up: no broker is stopped until it is in sync again.
    behind = v.model_copy(update={"shards": (partition("t/0", "k1", ("k1", "k3")),)})
    assert gate(kafka, behind, steps[0]).reason == (
        "1 partition(s) under-replicated: wait for them first"
    )


def test_mongodb_step_down_plans_on_the_primary_it_sees() -> None:
    mongo = spec("mongodb", MONGO)
    p, s = Role.PRIMARY, Role.SECONDARY
    shards = tuple(
        ShardStatus(shard_id="rs0", node_id=n, role=r, lag=lag)
        for n, r, lag in (("m1", s, 1), ("m2", p, 0), ("m3", s, 2))
    )
    v = view(Kind.MONGODB, {"m1": s, "m2": p, "m3": s}, shards)
    steps = plan(mongo, "step_down_primary", None, v)
    assert [(x.name, x.kind, x.node_id) for x in steps] == [
        ("step-down-m2", StepKind.STEP_DOWN, "m2"),
        ("wait-primary-other-than-m2", StepKind.WAIT_NEW_LEADER, "m2"),
    ]
    assert gate(mongo, v, steps[0]).reason == (
        "electable secondaries within 10 s: m1 (1 s behind), m3 (2 s behind)"
    )
    with pytest.raises(ValueError, match="'m1' is not the primary of c1 \\(m2 is\\)"):
        plan(mongo, "step_down_primary", "m1", v)
    leaderless = view(Kind.MONGODB, {"m1": s, "m2": s, "m3": None})
    with pytest.raises(ValueError, match="c1 has no primary to step down"):
        plan(mongo, "step_down_primary", None, leaderless)


def test_every_playbook_has_a_planner_and_every_planner_a_playbook() -> None:
    assert {kind: set(by_name) for kind, by_name in PLANS.items()} == {
        kind: set(by_name) for kind, by_name in PLAYBOOKS.items()
    }
