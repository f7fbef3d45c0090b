"""The monitor end to end: real Temporal dev server, real ZooKeeper ensemble."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from devstack.zookeeper import ZooKeeperEnsemble
from models import Role
from store import EventQuery
from testkit.events import wait_for_event
from testkit.specs import zk_spec
from tests.helpers import Monitor, monitoring
from workflows.monitor import ClusterMonitorWorkflow


@pytest.fixture
async def monitor(
    temporal_env: WorkflowEnvironment, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> AsyncIterator[Monitor]:
    spec = zk_spec(zk_healthy, f"t-{uuid.uuid4().hex[:8]}")
    async with monitoring(temporal_env.client, spec, tmp_path) as m:
        yield m


def member_node(n: int) -> str:
    return f"zk{n}"


def follower_of(ensemble: ZooKeeperEnsemble) -> int:
    leader = ensemble.leader()
    assert leader is not None
    return next(n for n in (1, 2, 3) if n != leader)


async def test_first_view_is_healthy_with_one_leader(
    monitor: Monitor, zk_healthy: ZooKeeperEnsemble
) -> None:
    status = await monitor.handle.query(ClusterMonitorWorkflow.status)
    assert status.health == "healthy"
    assert status.view is not None
    assert status.view.leader == member_node(zk_healthy.leader() or 0)
    assert [n.reachable for n in status.view.nodes] == [True, True, True]
    assert status.findings == []


async def test_follower_killed_then_restarted(
    monitor: Monitor, zk_healthy: ZooKeeperEnsemble
) -> None:
    n = follower_of(zk_healthy)
    monitor.set_mark()
    zk_healthy.kill_member(n)
    down = await monitor.until("node.down", member_node(n))
    # Caught as the process dies, or after: either way the error says the process is gone.
    assert any(
        gone in (down.payload["error"] or "")
        for gone in ("refused", "reset by peer", "without a reply")
    )
    findings = await monitor.handle.query(ClusterMonitorWorkflow.findings)
    assert [f.code for f in findings] == ["node_down"]
    monitor.set_mark()
    zk_healthy.start_member(n)
    up = await monitor.until("node.up", member_node(n), timeout=60)
    # A restarted member answers before it has synced with the leader: looking, then follower.
    assert up.payload["role"] in (Role.LOOKING, Role.FOLLOWER)
    await wait_for_event(
        monitor.store,
        monitor.spec.cluster_id,
        lambda e: e.type == "cluster.health_changed" and e.payload["to"] == "healthy",
        timeout=30,
        after=monitor.mark,
    )
    view = await monitor.handle.query(ClusterMonitorWorkflow.view)
    restarted = view.node(member_node(n)) if view is not None else None
    assert restarted is not None and restarted.role is Role.FOLLOWER


async def test_leader_killed_names_the_new_leader(
    monitor: Monitor, zk_healthy: ZooKeeperEnsemble
) -> None:
    old = zk_healthy.leader()
    assert old is not None
    monitor.set_mark()
    zk_healthy.kill_member(old)
    await monitor.until("node.down", member_node(old))
    changed = await monitor.until("cluster.leader_changed", timeout=60)
    new_leader = changed.payload["to"]
    assert new_leader != member_node(old)
    assert new_leader == member_node(zk_healthy.leader() or 0)
    role = await wait_for_event(
        monitor.store,
        monitor.spec.cluster_id,
        lambda e: e.type == "node.role_changed" and e.payload["to"] == Role.LEADER,
        after=monitor.mark,
    )
    assert role.node_id == new_leader


async def test_two_of_three_down_loses_quorum(
    monitor: Monitor, zk_healthy: ZooKeeperEnsemble
) -> None:
    leader = zk_healthy.leader()
    followers = [n for n in (1, 2, 3) if n != leader]
    monitor.set_mark()
    for n in followers:
        zk_healthy.kill_member(n)
    lost = await monitor.until("cluster.quorum_lost", timeout=60)
    # The surviving leader steps down once it loses its followers; a probe may catch it first.
    assert lost.payload["voting_configured"] == 3
    assert lost.payload["voting_alive"] <= 1
    status = await monitor.handle.query(ClusterMonitorWorkflow.status)
    assert "quorum_lost" in [f.code for f in status.findings]
    assert status.health == "unavailable"
    monitor.set_mark()
    zk_healthy.start_member(followers[0])
    await monitor.until("cluster.quorum_regained", timeout=60)


async def test_hung_member_is_unreachable_within_its_timeout(
    monitor: Monitor, zk_healthy: ZooKeeperEnsemble
) -> None:
    n = follower_of(zk_healthy)
    monitor.set_mark()
    started = time.time()
    zk_healthy.pause_member(n)
    try:
        down = await monitor.until("node.down", member_node(n), timeout=15)
        # interval 1 s + its own 1 s timeout, plus scheduling slack
        assert time.time() - started < monitor.spec.probe.interval_s + 1.0 + 2.0
        assert "timeout" in (down.payload["error"] or "")
        view = await monitor.handle.query(ClusterMonitorWorkflow.view)
        assert view is not None
        others = [node for node in view.nodes if node.node_id != member_node(n)]
        assert all(node.reachable and node.latency_ms is not None for node in others)
        assert all(node.latency_ms is not None and node.latency_ms < 500 for node in others)
    finally:
        zk_healthy.resume_member(n)
    await monitor.until("node.up", member_node(n), timeout=30)


async def test_pause_and_resume(monitor: Monitor, zk_healthy: ZooKeeperEnsemble) -> None:
    monitor.set_mark()
    await monitor.handle.signal(ClusterMonitorWorkflow.pause, "maintenance")
    await monitor.until("monitor.paused")
    n = follower_of(zk_healthy)
    zk_healthy.kill_member(n)
    status = await monitor.handle.query(ClusterMonitorWorkflow.status)
    assert status.paused
    await wait_for_nothing(monitor, "node.down", seconds=3)
    await monitor.handle.signal(ClusterMonitorWorkflow.resume, "done")
    await monitor.until("monitor.resumed")
    await monitor.until("node.down", member_node(n))


async def wait_for_nothing(monitor: Monitor, type_: str, seconds: float) -> None:
    with pytest.raises(AssertionError, match="no matching event"):
        await monitor.until(type_, timeout=seconds)


async def test_replace_spec_is_validated_and_applied(monitor: Monitor) -> None:
    other = monitor.spec.model_copy(update={"cluster_id": "someone-else"})
    with pytest.raises(WorkflowUpdateFailedError) as rejected:
        await monitor.handle.execute_update(ClusterMonitorWorkflow.replace_spec, other)
    assert "cluster_id" in str(rejected.value.cause)
    status = await monitor.handle.query(ClusterMonitorWorkflow.status)
    assert status.spec_generation == 1

    # Expect more members than listed cannot be expressed: the model refuses it. Expect
    # fewer and the update applies, with a new generation and an event.
    stricter = monitor.spec.model_copy(
        update={"expect": monitor.spec.expect.model_copy(update={"members": 3})}
    )
    generation = await monitor.handle.execute_update(ClusterMonitorWorkflow.replace_spec, stricter)
    assert generation == 2
    event = await monitor.until("cluster.spec_replaced")
    assert event.payload["generation"] == 2


async def test_stored_events_are_not_duplicated(monitor: Monitor) -> None:
    stored = monitor.store.query(EventQuery(cluster_id=monitor.spec.cluster_id))
    ids = [s.event.event_id for s in stored]
    assert len(ids) == len(set(ids))
    # Appending the same batch again (a retried activity) stores nothing new.
    assert monitor.store.append([s.event for s in stored]) == 0
