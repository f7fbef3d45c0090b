"""The Kafka adapter against the session's real 3-broker KRaft cluster (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import tracemalloc
from collections.abc import Callable

from kafka import KafkaProducer
from kafka.errors import KafkaError

from activities.kafka.adapter import KafkaAdapter
from devstack.kafka import KafkaCluster
from models import ClusterSpec, ClusterView, NodeStatus, Role, ShardStatus, evaluate
from testkit.fakes import Behaviour, fake_members
from testkit.kafka import new_topic
from testkit.specs import kafka_spec, spec_of
from tests.test_kafka_parsing import holding

WAIT_S = 30.0


def produce(cluster: KafkaCluster, topic: str, partition: int, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all")
    try:
        for _ in range(count):
            producer.send(topic, b"x", partition=partition)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)


async def probe_until(
    spec: ClusterSpec, check: Callable[[ClusterView], bool], timeout: float = WAIT_S
) -> ClusterView:
    """Probe every 0.2 s until `check` holds for a view."""
    deadline = time.monotonic() + timeout
    adapter = KafkaAdapter()
    while True:
        view = await adapter.probe(spec)
        if check(view):
            return view
        if time.monotonic() >= deadline:
            raise AssertionError(f"no view within {timeout}s satisfied the check; last: {view}")
        await asyncio.sleep(0.2)


def codes(spec: ClusterSpec, view: ClusterView) -> set[str]:
    return {f.code for f in evaluate(spec, view)}


def of_topic(view: ClusterView, topic: str) -> dict[int, ShardStatus]:
    return {
        int(s.shard_id.rpartition("/")[2]): s
        for s in view.shards
        if s.shard_id.startswith(f"{topic}/")
    }


def node(view: ClusterView, node_id: str | None) -> NodeStatus:
    found = view.node(node_id or "")
    assert found is not None, f"no node {node_id} in the view"
    return found


def broker(node_id: str | None) -> int:
    assert node_id is not None and node_id.startswith("kafka")
    return int(node_id.removeprefix("kafka"))


async def test_healthy_view(kafka_healthy: KafkaCluster) -> None:
    spec = kafka_spec(kafka_healthy, "kafka-healthy")
    # Follower lag is read only for a spec that sets a max_lag.
    spec = spec.model_copy(update={"expect": spec.expect.model_copy(update={"max_lag": 100})})
    topic = new_topic(kafka_healthy, partitions=3)
    # Looking up a group's coordinator makes Kafka create __consumer_offsets (if not yet).
    with kafka_healthy.admin(timeout=30) as admin, contextlib.suppress(KafkaError):
        admin.describe_groups(["probe-test"])
    before = await probe_until(
        spec, lambda v: any(s.shard_id.startswith("__consumer_offsets/") for s in v.shards)
    )
    controller = kafka_healthy.active_controller()
    assert [(n.node_id, n.reachable, n.error, n.version) for n in before.nodes] == [
        (f"kafka{n}", True, None, "4.3") for n in (1, 2, 3)
    ]
    assert [n.node_id for n in before.nodes if n.role is Role.CONTROLLER] == [f"kafka{controller}"]
    assert {n.role for n in before.nodes if n.node_id != before.leader} == {Role.BROKER}
    assert before.leader == f"kafka{controller}"
    assert (before.quorum, before.voting_alive, before.voting_configured) == (True, 3, 3)
    shards = {s.shard_id: s for s in before.shards}
    for p in range(3):
        shard = shards[f"{topic}/{p}"]
        assert shard.node_id == shard.replicas[0]  # a new topic is led by its preferred replicas
        assert len(shard.replicas) == 3 and set(shard.in_sync) == set(shard.replicas)
        assert shard.min_in_sync == 2  # the brokers' default
        assert shard.lag == 0
    assert shards[f"{topic}/0"].commit_offset == 0
    produce(kafka_healthy, topic, partition=0, count=5)
    after = await probe_until(
        spec, lambda v: next(s for s in v.shards if s.shard_id == f"{topic}/0").commit_offset == 5
    )
    assert next(s for s in after.shards if s.shard_id == f"{topic}/1").commit_offset == 0
    without_lag = await KafkaAdapter().probe(kafka_spec(kafka_healthy, "kafka-no-lag"))
    assert {s.lag for s in without_lag.shards} == {None}


async def test_killed_broker_then_restarted(kafka_healthy: KafkaCluster) -> None:
    spec = kafka_spec(kafka_healthy, "kafka-kill")
    topic = new_topic(kafka_healthy, partitions=3, min_isr=3)
    before = await probe_until(spec, lambda v: len(of_topic(v, topic)) == 3)
    controller = broker(before.leader)
    # A broker that is not the controller, and the partition it is preferred for and leads.
    victim, partition = next(
        (broker(s.node_id), p)
        for p, s in of_topic(before, topic).items()
        if broker(s.node_id) != controller and s.node_id == s.replicas[0]
    )
    victim_id = f"kafka{victim}"

    with holding(*kafka_healthy.addresses) as (_, changes):
        assert changes.wait_for(3, timeout=10)
        killed_at = time.monotonic()
        kafka_healthy.kill_member(victim)
        assert changes.wait_for(4, timeout=5)
    # A killed broker's sockets close with it: the held link hears it in milliseconds.
    assert changes.times[3] - killed_at < 0.5

    down = await KafkaAdapter().probe(spec)
    dead = node(down, victim_id)
    assert (dead.reachable, dead.error) == (False, "connection refused")
    # Kafka itself notices once the broker misses its session (broker.session.timeout.ms).
    fenced = await probe_until(
        spec, lambda v: {"under_replicated", "below_min_isr"} <= codes(spec, v)
    )
    moved = of_topic(fenced, topic)[partition]
    assert moved.replicas[0] == victim_id
    assert moved.node_id not in (None, victim_id)
    assert victim_id not in moved.in_sync
    # The finding lists five partitions at most, and other tests' topics may come first:
    # check that this partition is one the finding counts.
    assert moved.min_in_sync is not None and len(moved.in_sync) < moved.min_in_sync

    kafka_healthy.start_member(victim)
    back = await probe_until(
        spec,
        lambda v: (
            v.node(victim_id).role is Role.BROKER  # type: ignore[union-attr]
            and not {"under_replicated", "below_min_isr", "node_down"} & codes(spec, v)
        ),
        timeout=60,
    )
    # Back in sync, but Kafka moves leadership back only at its next rebalance (5 min).
    returned = of_topic(back, topic)[partition]
    assert returned.node_id == moved.node_id
    assert "leader_not_preferred" in codes(spec, back)
    assert returned.replicas[0] == victim_id and victim_id in returned.in_sync


async def test_killed_controller_is_replaced(kafka_healthy: KafkaCluster) -> None:
    spec = kafka_spec(kafka_healthy, "kafka-controller")
    before = await probe_until(spec, lambda v: v.leader is not None)
    old = before.leader
    kafka_healthy.kill_member(broker(old))
    after = await probe_until(spec, lambda v: v.leader not in (None, old))
    assert after.leader == f"kafka{kafka_healthy.active_controller()}"
    assert node(after, after.leader).role is Role.CONTROLLER
    assert not node(after, old).reachable
    # The dead voter stops fetching from the new controller: 2 of 3 follow, still a quorum.
    counted = await probe_until(spec, lambda v: v.voting_alive == 2)
    assert (counted.quorum, counted.voting_configured) == (True, 3)


def test_links_come_up_for_every_broker(kafka_healthy: KafkaCluster) -> None:
    with holding(*kafka_healthy.addresses) as (holder, changes):
        assert changes.wait_for(3, timeout=10)
        assert [link.state for link in holder.links] == ["up", "up", "up"]


async def test_a_member_announcing_a_huge_reply_costs_what_it_sends() -> None:
    """kafka-python's parser set aside the 63 MB a frame announced as soon as it read its
    size: a member that announces that and sends a byte a second held 63 MB per link and
    probe. Now a frame costs what has arrived of it."""
    with fake_members("127.0.0.1", {Behaviour.PROMISE: 1}) as fakes:
        spec = spec_of("kafka", "b", fakes[Behaviour.PROMISE], "kafka-promise", 1.0, {})
        spec = spec.model_copy(
            update={"probe": spec.probe.model_copy(update={"hold_connections": False})}
        )
        tracemalloc.start()
        try:
            view = await KafkaAdapter().probe(spec)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert view.nodes[0].error == "timeout after 1.0s", view.nodes[0]
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MB"
