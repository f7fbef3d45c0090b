"""The ZooKeeper adapter against the session's real 3-member ensemble (tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from activities.zookeeper.adapter import ZooKeeperAdapter
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, Role
from testkit.specs import zk_spec
from tests.helpers import Changes


def a_follower(ensemble: ZooKeeperEnsemble) -> int:
    leader = ensemble.leader()
    return next(n for n in ensemble.members if n != leader)


@contextmanager
def links(spec: ClusterSpec) -> Iterator[Changes]:
    changes = Changes()
    with ZooKeeperAdapter().hold_links(spec, changes):
        # Every link reports its first CONNECTED.
        assert changes.wait_for(len(spec.nodes), timeout=10)
        yield changes


async def test_healthy_probe(zk_healthy: ZooKeeperEnsemble) -> None:
    spec = zk_spec(zk_healthy, "zk-healthy")
    view = await ZooKeeperAdapter().probe(spec)
    assert all(n.reachable and n.error is None for n in view.nodes)
    assert {n.version for n in view.nodes} == {"3.9.5"}
    assert sorted(n.role for n in view.nodes) == [Role.FOLLOWER, Role.FOLLOWER, Role.LEADER]
    assert view.leader == f"zk{zk_healthy.leader()}"
    assert (view.quorum, view.voting_alive, view.voting_configured) == (True, 3, 3)
    assert len(view.shards) == 3
    assert all(s.lag is not None and s.lag >= 0 for s in view.shards)
    assert all(isinstance(n.uptime_s, float) for n in view.nodes)


async def test_killed_follower_is_refused_and_quorum_holds(zk_healthy: ZooKeeperEnsemble) -> None:
    spec = zk_spec(zk_healthy, "zk-kill")
    leader, victim = zk_healthy.leader(), a_follower(zk_healthy)
    zk_healthy.kill_member(victim)
    view = await ZooKeeperAdapter().probe(spec)
    dead = view.node(f"zk{victim}")
    assert dead is not None
    assert (dead.reachable, dead.error) == (False, "connection refused")
    assert view.leader == f"zk{leader}"
    assert (view.quorum, view.voting_alive, view.voting_configured) == (True, 2, 3)


async def test_paused_member_costs_the_probe_only_its_timeout(
    zk_healthy: ZooKeeperEnsemble,
) -> None:
    spec = zk_spec(zk_healthy, "zk-pause")
    victim = a_follower(zk_healthy)
    zk_healthy.pause_member(victim)
    try:
        started = time.monotonic()
        view = await ZooKeeperAdapter().probe(spec)
        took = time.monotonic() - started
    finally:
        zk_healthy.resume_member(victim)
    assert took < spec.probe.timeout_s + 0.5
    for node in view.nodes:
        if node.node_id == f"zk{victim}":
            assert (node.reachable, node.error) == (False, f"timeout after {spec.probe.timeout_s}s")
        else:
            assert node.reachable


def test_links_report_a_killed_member_at_once(zk_healthy: ZooKeeperEnsemble) -> None:
    with links(zk_spec(zk_healthy, "zk-links-kill")) as changes:
        killed_at = time.monotonic()
        zk_healthy.kill_member(a_follower(zk_healthy))
        delay = changes.first_after(killed_at, timeout=5)
    assert delay is not None and delay < 0.5


def test_links_exit_quickly_while_a_member_is_paused(zk_healthy: ZooKeeperEnsemble) -> None:
    victim = a_follower(zk_healthy)
    try:
        with links(zk_spec(zk_healthy, "zk-links-pause")):
            zk_healthy.pause_member(victim)
            leaving = time.monotonic()
        took = time.monotonic() - leaving
    finally:
        zk_healthy.resume_member(victim)
    assert took < 2.0


def test_link_to_a_member_down_at_start_reports_when_it_comes_up(
    zk_healthy: ZooKeeperEnsemble,
) -> None:
    victim = a_follower(zk_healthy)
    zk_healthy.kill_member(victim)
    changes = Changes()
    with ZooKeeperAdapter().hold_links(zk_spec(zk_healthy, "zk-links-late"), changes):
        assert changes.wait_for(2, timeout=10)  # the two live members
        started_at = time.monotonic()
        zk_healthy.start_member(victim)
        zk_healthy.wait_ready(timeout=60)
        serving_at = time.monotonic()
        delay = changes.first_after(started_at, timeout=5)
    assert delay is not None
    # The link retries at least once a second, so it connects soon after the member serves.
    assert started_at + delay < serving_at + 1.5
