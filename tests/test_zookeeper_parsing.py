"""The ZooKeeper adapter on replies recorded from ZooKeeper 3.9.5 (tests/replies/zookeeper/).

The probe tests replay those replies from local sockets, so the whole path from socket to
ClusterView runs without a ZooKeeper.
"""

from __future__ import annotations

import asyncio
import doctest
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import ModuleType

import pytest

import activities.zookeeper.probe
import activities.zookeeper.replies
from activities.zookeeper.adapter import ZooKeeperAdapter
from activities.zookeeper.replies import (
    UnparseableReply,
    parse_conf,
    parse_mntr,
    parse_srvr,
    voting_members,
    zxid_lag,
)
from models import ClusterSpec, Role, parse_spec
from tests.helpers import closed_port_address

REPLIES = Path(__file__).parent / "replies" / "zookeeper"


def reply(name: str) -> str:
    # Bytes, not read_text(): universal newlines would hide a '\r' the server sent.
    return (REPLIES / f"{name}.txt").read_bytes().decode()


def member(role: str) -> dict[str, str]:
    return {word: reply(f"{role}.{word}") for word in ("srvr", "mntr", "conf")}


NOT_SERVING = dict.fromkeys(("srvr", "mntr", "conf"), reply("not-serving.srvr"))
SRVR_ONLY = {
    "srvr": reply("standalone.srvr"),
    "mntr": reply("not-whitelisted.mntr"),
    "conf": reply("not-whitelisted.conf"),
}


@pytest.mark.parametrize(
    "module",
    [activities.zookeeper.replies, activities.zookeeper.probe],
    ids=lambda m: m.__name__,
)
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(
    ("role", "expected_role", "zxid", "node_count"),
    [
        ("leader", Role.LEADER, 0x100000010, 18),
        ("follower", Role.FOLLOWER, 0x100000010, 18),
        ("observer", Role.OBSERVER, 0x100000010, 18),
        ("standalone", Role.STANDALONE, 0x6, 9),
    ],
)
def test_srvr(role: str, expected_role: Role, zxid: int, node_count: int) -> None:
    srvr = parse_srvr(reply(f"{role}.srvr"))
    assert srvr is not None
    assert (srvr.version, srvr.role, srvr.zxid, srvr.outstanding, srvr.node_count) == (
        "3.9.5",
        expected_role,
        zxid,
        0,
        node_count,
    )


def test_a_member_without_quorum_answers_every_word_with_one_line() -> None:
    assert parse_srvr(reply("not-serving.srvr")) is None
    assert parse_mntr(reply("not-serving.mntr")) == {}
    assert parse_conf(reply("not-serving.srvr")) == {}


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("garbage.srvr", "unparseable reply: 'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\\r\\n'"),
        ("election-port.srvr", "unparseable reply: ''"),
        ("leader.mntr", "unparseable reply: 'zk_version\\t3.9.5-293c895a8d96"),
    ],
)
def test_garbage_srvr_raises_with_the_start_of_the_reply(name: str, error: str) -> None:
    with pytest.raises(UnparseableReply) as raised:
        parse_srvr(reply(name))
    assert str(raised.value).startswith(error)


def test_unparseable_reply_quotes_only_its_first_80_characters() -> None:
    with pytest.raises(UnparseableReply, match=r"^unparseable reply: 'x{80}'$"):
        parse_srvr("x" * 500)


def test_mntr() -> None:
    leader, follower = parse_mntr(reply("leader.mntr")), parse_mntr(reply("follower.mntr"))
    # 3.9.5 sends ~450 lines (~18 KB), mostly latency histograms.
    assert len(leader) > 400
    assert leader["zk_server_state"] == "leader"
    assert leader["zk_synced_followers"] == "2"
    assert leader["zk_uptime"].isdigit()  # milliseconds
    assert "zk_synced_followers" not in follower
    assert parse_mntr(reply("not-whitelisted.mntr")) == {}


def test_conf_membership() -> None:
    leader = parse_conf(reply("leader.conf"))
    assert leader["serverId"] == "3"
    assert leader["server.4"] == "127.0.0.94:2888:3888:observer"
    assert voting_members(leader) == 3
    standalone = parse_conf(reply("standalone.conf"))
    assert standalone["serverId"] == "0"
    assert voting_members(standalone) is None
    assert parse_conf(reply("not-whitelisted.conf")) == {}


def test_recorded_follower_has_caught_up() -> None:
    leader, follower = parse_srvr(reply("leader.srvr")), parse_srvr(reply("follower.srvr"))
    assert leader is not None and follower is not None
    assert zxid_lag(leader.zxid, follower.zxid) == 0


# --- the probe, on replayed replies ----------------------------------------------------------


@asynccontextmanager
async def replaying(replies: Mapping[str, str] | None) -> AsyncIterator[str]:
    """A local server answering each word with its recorded reply, or, given None, accepting
    connections and never answering (a SIGSTOPped member); yields its address."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        word = (await reader.read(4)).decode()
        if replies is None:
            await reader.read()
        else:
            writer.write(replies.get(word, "").encode())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


@asynccontextmanager
async def cluster(
    *members: Mapping[str, str] | str | None, timeout_s: float = 1.0
) -> AsyncIterator[ClusterSpec]:
    """A spec whose node zkN replays members[N-1]; a string is used as the address as is."""
    async with AsyncExitStack() as stack:
        addresses = [
            m if isinstance(m, str) else await stack.enter_async_context(replaying(m))
            for m in members
        ]
        yield parse_spec(
            {
                "cluster_id": "replayed",
                "kind": "zookeeper",
                "nodes": [
                    {"node_id": f"zk{n}", "address": address}
                    for n, address in enumerate(addresses, start=1)
                ],
                "probe": {"timeout_s": timeout_s},
            }
        )


async def test_probe_ensemble_with_an_observer_and_a_member_out_of_quorum() -> None:
    async with cluster(
        member("leader"), member("follower"), member("observer"), NOT_SERVING
    ) as spec:
        view = await ZooKeeperAdapter().probe(spec)
    assert [(n.node_id, n.reachable, n.role, n.error) for n in view.nodes] == [
        ("zk1", True, Role.LEADER, None),
        ("zk2", True, Role.FOLLOWER, None),
        ("zk3", True, Role.OBSERVER, None),
        ("zk4", True, Role.LOOKING, None),
    ]
    assert view.leader == "zk1"
    # The leader's conf lists 3 participants and 1 observer: the spec's 4 nodes do not vote.
    # zk4 is out of quorum but alive, so it still counts toward one.
    assert (view.voting_configured, view.voting_alive, view.quorum) == (3, 3, True)
    assert [(s.node_id, s.role, s.commit_offset, s.lag) for s in view.shards] == [
        ("zk1", Role.LEADER, 0x100000010, 0),
        ("zk2", Role.FOLLOWER, 0x100000010, 0),
        ("zk3", Role.OBSERVER, 0x100000010, 0),
    ]
    leader = view.nodes[0]
    assert leader.version == "3.9.5"
    assert leader.uptime_s is not None and leader.uptime_s > 0
    assert leader.latency_ms is not None and leader.latency_ms > 0
    assert leader.facts["server_id"] == 3
    assert leader.facts["synced_followers"] == 2
    assert leader.facts["server_state"] == "leader"
    assert leader.facts["zxid"] == 0x100000010
    assert view.nodes[3].version is None  # a member out of quorum tells nothing more


async def test_probe_standalone_is_its_own_leader_and_quorum() -> None:
    async with cluster(member("standalone")) as spec:
        view = await ZooKeeperAdapter().probe(spec)
    assert (view.leader, view.quorum, view.voting_alive, view.voting_configured) == (
        "zk1",
        True,
        1,
        1,
    )
    assert view.nodes[0].role is Role.STANDALONE


async def test_probe_keeps_srvr_data_when_mntr_and_conf_are_not_whitelisted() -> None:
    async with cluster(SRVR_ONLY) as spec:
        (node,) = (await ZooKeeperAdapter().probe(spec)).nodes
    assert (node.reachable, node.role, node.version, node.uptime_s) == (
        True,
        Role.STANDALONE,
        "3.9.5",
        None,
    )
    assert node.facts == {"zxid": 6, "outstanding_requests": 0, "znode_count": 9}


async def test_probe_marks_garbage_down_and_bounds_dead_and_hung_members() -> None:
    garbage = {"srvr": reply("garbage.srvr")}
    async with cluster(
        member("leader"), garbage, {}, None, closed_port_address(), timeout_s=0.3
    ) as spec:
        started = time.monotonic()
        view = await ZooKeeperAdapter().probe(spec)
        took = time.monotonic() - started
    assert took < 0.3 + 0.2
    assert [(n.reachable, n.error) for n in view.nodes] == [
        (True, None),
        (False, "unparseable reply: 'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\\r\\n'"),
        (False, "closed the connection without a reply"),
        (False, "timeout after 0.3s"),
        (False, "connection refused"),
    ]
    # Only the leader answers, and the leader's conf says 3 vote: 1 of 3 is no quorum.
    assert (view.leader, view.voting_alive, view.voting_configured, view.quorum) == (
        "zk1",
        1,
        3,
        False,
    )
