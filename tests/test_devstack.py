"""The local stack itself: real ZooKeeper members and a real Temporal dev server."""

from __future__ import annotations

import socket
from pathlib import Path

from kazoo.client import KazooClient
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from devstack import processes
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
