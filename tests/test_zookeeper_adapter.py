"""The ZooKeeper adapter against the session's real 3-member ensemble (tests/conftest.py)."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from kazoo.retry import KazooRetry

from activities.links import NO_LINKS, LinkStates
from activities.zookeeper import probe as probe_module
from activities.zookeeper.adapter import ZooKeeperAdapter
from activities.zookeeper.connection import _kazoo, _kazoo_log, _stop
from config.zookeeper import ZooKeeperLogin
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, NodeSpec, Role
from testkit.fakes import Behaviour, fake_members
from testkit.specs import spec_of, zk_spec
from tests.helpers import Changes, closed_port_address


def a_follower(ensemble: ZooKeeperEnsemble) -> int:
    leader = ensemble.leader()
    return next(n for n in ensemble.members if n != leader)


@contextlib.contextmanager
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


@pytest.fixture(scope="module")
def hostile() -> Iterator[dict[Behaviour, list[str]]]:
    with fake_members("127.0.0.1", {b: 1 for b in Behaviour}) as fakes:
        yield fakes


def test_links_to_members_that_flood_or_babble_hold_little_and_live_on(
    hostile: dict[Behaviour, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    """kazoo read whatever length a reply announced (~63 MB from the flood, at each
    reconnect), and a session reply of garbage that decoded killed the link's thread at
    the next attempt. Now a reply beyond ZooKeeper's own limit is refused before it is
    read, a session without a password is none, and the links go on retrying."""
    addresses = hostile[Behaviour.FLOOD] + hostile[Behaviour.GARBAGE]
    spec = spec_of("zookeeper", "zk", addresses, "zk-flood", 1.0, {})
    caplog.set_level(logging.ERROR, logger=_kazoo_log.name)
    tracemalloc.start()
    try:
        with ZooKeeperAdapter().hold_links(spec, Changes()):
            time.sleep(4)  # a few reconnects each
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MB"
    assert not [r for r in caplog.records if "Unhandled exception" in r.getMessage()]


def test_a_link_to_a_member_that_trickles_stops_within_its_timeout(
    hostile: dict[Behaviour, list[str]],
) -> None:
    """The member announces a 1 kB reply and sends a byte a second: kazoo waited its
    timeout per byte, so the link's connect attempt never ended, nor did its stop."""
    timeout = 2.0
    client = _kazoo(hostile[Behaviour.TRICKLE][0], timeout, ZooKeeperLogin(), KazooRetry(-1))
    client.start_async()
    time.sleep(1.5)  # inside the first attempt, a byte or two in
    stopping = threading.Thread(target=_stop, args=(client,), daemon=True)
    stopping.start()
    stopping.join(timeout + 1.0)
    assert not stopping.is_alive()


@contextlib.contextmanager
def answering(reply: bytes) -> Iterator[str]:
    """A loopback server that answers every connection's first bytes with `reply`; its
    address."""
    done = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)

        def answer() -> None:
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    conn, _ = server.accept()
                    with conn:
                        conn.recv(4096)
                        conn.sendall(reply)

        answering = threading.Thread(target=answer, daemon=True)
        answering.start()
        try:
            yield f"127.0.0.1:{server.getsockname()[1]}"
        finally:
            done.set()
            answering.join()


def held(address: str, seconds: float) -> None:
    """A client of `address` retrying for `seconds`, as a held link does."""
    client = _kazoo(address, 1.0, ZooKeeperLogin(), KazooRetry(-1, delay=0.1, max_delay=1.0))
    client.start_async()
    try:
        time.sleep(seconds)
    finally:
        _stop(client)


def test_a_session_reply_without_a_password_is_no_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage that decodes as a session without a password: kazoo took it, and its next
    connect attempt failed on the missing password and killed the link's thread."""
    session = struct.pack(">iiqi", 0, 1000, 1, -1)  # version, timeout, id, no password
    caplog.set_level(logging.ERROR, logger=_kazoo_log.name)
    with answering(struct.pack(">i", len(session)) + session) as address:
        held(address, 2)  # a few attempts
    assert not [r for r in caplog.records if "Unhandled exception" in r.getMessage()]


def test_a_link_that_keeps_failing_logs_each_error_once(caplog: pytest.LogCaptureFixture) -> None:
    """kazoo logs an undecodable session reply at ERROR, with its traceback, at every
    reconnect attempt: a line a second for as long as the link is held. Once per link
    until its state changes, naming the member; a member where nothing listens costs
    no line at all (its reconnects are WARNINGs, and it is a node down in the view)."""
    caplog.set_level(logging.ERROR, logger=_kazoo_log.name)
    with answering(struct.pack(">i", 8) + b"garbage!") as garbage:
        held(garbage, 4)
    said = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.getMessage().split(":")[0], getattr(r, "address", None)) for r in said] == [
        ("Exception raised during deserialization of request", garbage)
    ]
    caplog.clear()
    held(closed_port_address(), 4)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_watchs_rounds_ask_mntr_and_conf_again_only_when_they_are_old(
    zk_healthy: ZooKeeperEnsemble, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real_ask = probe_module._ask

    async def counting(node: NodeSpec, word: str) -> str:
        asked.append(word)
        return await real_ask(node, word)

    monkeypatch.setattr(probe_module, "_ask", counting)
    spec = zk_spec(zk_healthy, "zk-prober")
    probe = ZooKeeperAdapter().prober(spec, NO_LINKS)
    first = await probe()
    assert sorted(asked) == ["conf"] * 3 + ["mntr"] * 3 + ["srvr"] * 3
    asked.clear()
    second = await probe()
    assert asked == ["srvr"] * 3
    # What the details said is kept: the same view but for the counters srvr moves.
    assert second.voting_configured == 3 and second.leader == first.leader
    for before, now in zip(first.nodes, second.nodes, strict=True):
        assert now.facts["server_id"] == before.facts["server_id"]
        assert now.uptime_s is not None and before.uptime_s is not None
        assert now.uptime_s >= before.uptime_s
    asked.clear()
    monkeypatch.setattr(probe_module, "DETAILS_MAX_AGE_S", 0.0)
    await probe()
    assert sorted(asked) == ["conf"] * 3 + ["mntr"] * 3 + ["srvr"] * 3
    # A whole probe (status, doctor, remediations) asks everything every time.
    monkeypatch.setattr(probe_module, "DETAILS_MAX_AGE_S", 30.0)
    asked.clear()
    await ZooKeeperAdapter().probe(spec)
    assert len(asked) == 9


def serving(states: LinkStates, spec: ClusterSpec, within: float) -> set[str]:
    """The nodes whose links serve once `within` s have passed or all of them serve."""
    deadline = time.monotonic() + within
    while True:
        now = {n.node_id for n in spec.nodes if states.serving(n.node_id) is not None}
        if len(now) == len(spec.nodes) or time.monotonic() >= deadline:
            return now
        time.sleep(0.05)


async def test_a_watchs_rounds_ask_nothing_of_a_member_its_link_answers_for(
    zk_healthy: ZooKeeperEnsemble, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, str]] = []
    real_ask = probe_module._ask

    async def counting(node: NodeSpec, word: str) -> str:
        asked.append((node.node_id, word))
        return await real_ask(node, word)

    monkeypatch.setattr(probe_module, "_ask", counting)
    spec = zk_spec(zk_healthy, "zk-link-rounds")
    victim, paused = (f"zk{n}" for n in zk_healthy.members if n != zk_healthy.leader())
    adapter = ZooKeeperAdapter()
    with adapter.hold_links(spec, Changes()) as states:
        assert serving(states, spec, within=10) == {n.node_id for n in spec.nodes}
        probe = adapter.prober(spec, states)
        first = await probe()
        assert sorted(word for _, word in asked) == ["conf"] * 3 + ["mntr"] * 3 + ["srvr"] * 3
        asked.clear()
        assert (await probe()).nodes == first.nodes
        assert asked == []
        # A spec that bounds lag watches zxids: srvr every round, links or not.
        bounded = spec.model_copy(update={"expect": spec.expect.model_copy(update={"max_lag": 9})})
        lagging = adapter.prober(bounded, states)
        await lagging()
        asked.clear()
        await lagging()
        assert sorted(asked) == [(n.node_id, "srvr") for n in spec.nodes]
        asked.clear()

        zk_healthy.kill_member(int(victim.removeprefix("zk")))
        assert victim not in serving(states, spec, within=5)
        view = await probe()
        assert asked == [(victim, "srvr")]
        down = view.node(victim)
        assert down is not None and (down.reachable, down.error) == (False, "connection refused")
        asked.clear()

        # A hung member: its link misses a ping's answer within the interval and timeout.
        zk_healthy.pause_member(int(paused.removeprefix("zk")))
        try:
            stopped = time.monotonic()
            while paused in serving(states, spec, within=0):
                assert time.monotonic() - stopped < 2 * spec.probe.interval_s + 1, "still serving"
                time.sleep(0.05)
        finally:
            zk_healthy.resume_member(int(paused.removeprefix("zk")))
