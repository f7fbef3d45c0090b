"""The local stack itself: real ZooKeeper members, real Kafka brokers and a real Temporal
dev server."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from kazoo.client import KazooClient
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from devstack import processes
from devstack.kafka import KafkaCluster
from devstack.temporal import TemporalDevServer
from devstack.zookeeper import ZooKeeperEnsemble
from workflows import search_attributes


def a_follower(zk: ZooKeeperEnsemble) -> int:
    return next(n for n in zk.members if zk.mode(n) == "follower")


def test_ensemble_elects_exactly_one_leader(zk_healthy: ZooKeeperEnsemble) -> None:
    modes = sorted(str(zk_healthy.mode(n)) for n in zk_healthy.members)
    assert modes == ["follower", "follower", "leader"]
    assert zk_healthy.leader() in zk_healthy.members


def test_clients_reach_every_member(zk_healthy: ZooKeeperEnsemble) -> None:
    client = KazooClient(hosts=zk_healthy.connect_string, timeout=5)
    client.start(timeout=10)
    try:
        client.ensure_path("/devstack-test")
        assert client.exists("/devstack-test") is not None
    finally:
        client.stop()
        client.close()


def test_killing_a_follower_leaves_a_quorum(zk_healthy: ZooKeeperEnsemble) -> None:
    follower = a_follower(zk_healthy)
    leader = zk_healthy.leader()
    zk_healthy.kill_member(follower)
    assert not zk_healthy.member_running(follower)
    assert zk_healthy.mode(follower) is None
    zk_healthy.wait_ready(timeout=10)
    assert zk_healthy.leader() == leader


def test_killing_the_leader_elects_another(zk_healthy: ZooKeeperEnsemble) -> None:
    leader = zk_healthy.leader()
    assert leader is not None
    zk_healthy.kill_member(leader)
    zk_healthy.wait_ready(timeout=20)
    assert zk_healthy.leader() not in (None, leader)


def test_restarted_member_rejoins_as_follower(zk_healthy: ZooKeeperEnsemble) -> None:
    follower = a_follower(zk_healthy)
    old_pid = zk_healthy.member_pid(follower)
    zk_healthy.kill_member(follower)
    new_pid = zk_healthy.start_member(follower)
    assert new_pid != old_pid
    zk_healthy.wait_ready(timeout=20)
    assert zk_healthy.mode(follower) == "follower"


def test_paused_member_goes_silent_until_resumed(zk_healthy: ZooKeeperEnsemble) -> None:
    follower = a_follower(zk_healthy)
    zk_healthy.pause_member(follower)
    try:
        assert zk_healthy.member_paused(follower)
        assert zk_healthy.member_running(follower)
        assert zk_healthy.srvr(follower, timeout=0.5) is None
    finally:
        zk_healthy.resume_member(follower)
    zk_healthy.wait_ready(timeout=20)
    assert zk_healthy.mode(follower) == "follower"


def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `check` until it holds; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what} not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - start


def a_plain_broker(kafka: KafkaCluster) -> int:
    """A broker that is not the active controller, so breaking it moves no controller."""
    controller = kafka.active_controller()
    assert controller is not None
    return next(n for n in kafka.members if n != controller)


def produce(kafka: KafkaCluster, topic: str, values: list[bytes]) -> None:
    """Write with acks=all: each write reaches min.insync.replicas (2) brokers or fails."""
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    try:
        # kafka-python picks its protocol versions from the brokers' ApiVersions reply:
        # Kafka 4.3 is the newest it knows, and the release scripts/jars/kafka/pom.xml pins.
        assert producer.config["api_version"] == (4, 3)
        for value in values:
            producer.send(topic, value).get(timeout=20)
    finally:
        producer.close()


def test_kafka_registers_three_brokers_and_elects_a_controller(kafka_healthy: KafkaCluster) -> None:
    view = kafka_healthy.view()
    assert view is not None
    assert view.unfenced == set(kafka_healthy.members)
    assert not view.fenced
    controller = view.controller
    assert controller is not None
    assert controller in kafka_healthy.members
    assert view.cluster_id == kafka_healthy.cluster_id()
    assert kafka_healthy.describe(controller).startswith("broker, active controller")

    # kafka-python's admin client agrees (it may ask any broker, hence the healthy cluster).
    with kafka_healthy.admin() as admin:
        brokers = admin.describe_cluster()["brokers"]
        (metadata_log,) = admin.describe_metadata_quorum()["topics"]
    listed = sorted((b["broker_id"], f"{b['host']}:{b['port']}") for b in brokers)
    assert listed == list(zip(kafka_healthy.members, kafka_healthy.addresses, strict=True))
    (partition,) = metadata_log["partitions"]
    assert partition["leader_id"] == controller
    assert sorted(v["replica_id"] for v in partition["current_voters"]) == [1, 2, 3]


def test_kafka_python_round_trip_on_a_replicated_topic(kafka_healthy: KafkaCluster) -> None:
    assert (kafka_healthy.jars / "kafka_2.13-4.3.1.jar").exists()
    topic = "devstack-round-trip"
    kafka_healthy.create_topic(topic, partitions=3, replication_factor=3)
    kafka_healthy.create_topic(topic, partitions=3, replication_factor=3)  # idempotent
    with kafka_healthy.admin() as admin:
        (described,) = admin.describe_topics([topic])
    assert [sorted(p["isr_nodes"]) for p in described["partitions"]] == [[1, 2, 3]] * 3

    sent = [f"m{i}".encode() for i in range(30)]
    produce(kafka_healthy, topic, sent)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_healthy.bootstrap,
        group_id="devstack-test",
        auto_offset_reset="earliest",
        consumer_timeout_ms=20_000,
    )
    received: list[bytes] = []
    try:
        for message in consumer:
            received.append(message.value)
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
    assert sorted(received) == sorted(sent)


def test_killed_broker_is_fenced_cluster_serves_and_restart_rejoins(
    kafka_healthy: KafkaCluster,
) -> None:
    topic = "devstack-survivors"
    kafka_healthy.create_topic(topic, partitions=3)
    broker = a_plain_broker(kafka_healthy)
    kafka_healthy.kill_member(broker)
    assert not kafka_healthy.member_running(broker)
    assert kafka_healthy.describe(broker) == "stopped"
    kafka_healthy.wait_ready(timeout=20)

    # The controller fences a broker whose heartbeats stop after broker.session.timeout.ms.
    def fenced() -> bool:
        view = kafka_healthy.view()
        return view is not None and broker in view.fenced

    took = eventually(fenced, timeout=10, what=f"broker {broker} fenced")
    assert took < 6
    # Fenced, it leaves every ISR: each partition of the topic lacks one in-sync replica.
    lagging = kafka_healthy.under_replicated()
    assert lagging is not None
    assert {f"{topic}/{p}" for p in range(3)} <= set(lagging)
    produce(kafka_healthy, topic, [b"two of three brokers suffice"])

    old_pid = kafka_healthy.member_pid(broker)
    assert kafka_healthy.start_member(broker) != old_pid
    kafka_healthy.wait_ready(timeout=60)
    view = kafka_healthy.view()
    assert view is not None
    assert view.unfenced == set(kafka_healthy.members)
    assert kafka_healthy.describe(broker).startswith("broker")
    kafka_healthy.wait_in_sync(timeout=30)
    assert kafka_healthy.under_replicated() == []


def test_paused_broker_is_fenced_until_resumed(kafka_healthy: KafkaCluster) -> None:
    broker = a_plain_broker(kafka_healthy)
    kafka_healthy.pause_member(broker)
    try:
        assert kafka_healthy.member_paused(broker)
        assert kafka_healthy.describe(broker).startswith("paused")
        assert not kafka_healthy.ready()

        def fenced() -> bool:
            view = kafka_healthy.view()
            return view is not None and broker in view.fenced

        eventually(fenced, timeout=10, what=f"paused broker {broker} fenced")
    finally:
        kafka_healthy.resume_member(broker)
    kafka_healthy.wait_ready(timeout=30)
    assert kafka_healthy.describe(broker).startswith("broker")


def test_killing_the_active_controller_elects_another(kafka_healthy: KafkaCluster) -> None:
    # Last of the Kafka tests: the broker it kills stays down until the session ends.
    controller = kafka_healthy.active_controller()
    assert controller is not None
    kafka_healthy.kill_member(controller)
    eventually(
        lambda: kafka_healthy.active_controller() not in (None, controller),
        timeout=20,
        what="a new active controller",
    )
    kafka_healthy.wait_ready(timeout=20)
    assert kafka_healthy.active_controller() != controller


async def test_temporal_env_registers_search_attributes(temporal_env: WorkflowEnvironment) -> None:
    response = await temporal_env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=temporal_env.client.namespace)
    )
    assert {key.name for key in search_attributes.ALL} <= set(response.custom_attributes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_with(marker: str) -> int:
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            count += marker.encode() in cmdline.read_bytes()
        except OSError:
            continue
    return count


def test_temporal_dev_server_start_and_stop_are_idempotent(tmp_path: Path) -> None:
    # Free ports rather than 7233/8233: a developer's server or another session may run.
    server = TemporalDevServer(tmp_path, port=free_port(), ui_port=free_port())
    try:
        server.start()
        pid = server.pid()
        assert pid is not None
        server.start()
        assert server.pid() == pid
        assert processes_with(str(server.db_file)) == 1
        assert processes.port_open(server.ip, server.port)

        server.stop()
        server.stop()
        assert not server.running()
        assert not processes.port_open(server.ip, server.port)
    finally:
        server.stop()
