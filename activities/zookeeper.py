"""ZooKeeper: the four-letter words `srvr`, `mntr` and `conf` for the probe, one kazoo
session per member for the held links.

The parsers were written against replies recorded from ZooKeeper 3.9.5
(tests/replies/zookeeper/).

A spec's `auth` (SASL DIGEST-MD5, or ZooKeeper's `digest` scheme) with its secrets
`username` and `password` logs the held links in. ZooKeeper answers the four-letter words
to anyone who reaches the client port, logged in or not, so they still read role, zxid and
the rest; to know the login works, the probe also opens a session per member, logs in and
reads `/`'s stat, then closes it (two transactions on the ensemble, per member and probe).
A refused login is reported on the member that refused it, which stays reachable with its
role (`auth_failed`): a wrong password must never read as a member down, nor start its
restart. Credentials are read from their references at every probe, never logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

from kazoo.client import KazooClient
from kazoo.exceptions import AuthFailedError, KazooException, SessionClosedRequireSaslError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.states import KazooState, KeeperState
from kazoo.retry import KazooRetry

from activities.adapter import Adapter
from activities.links import stop_all
from activities.telemetry import probe_node, traced_probe
from config.secrets import SecretUnavailable, read_secrets
from models import (
    AuthMechanism,
    ClusterSpec,
    ClusterView,
    Kind,
    NodeSpec,
    NodeStatus,
    Role,
    ShardStatus,
)
from models.view import FactValue

NOT_SERVING = "This ZooKeeper instance is not currently serving requests"
SHARD_ID = "zk"
MODES = {
    "leader": Role.LEADER,
    "follower": Role.FOLLOWER,
    "observer": Role.OBSERVER,
    "standalone": Role.STANDALONE,
    # Answers reads without a quorum (readonlymode.enabled): not a working member.
    "read-only": Role.LOOKING,
}
SERVING = frozenset({Role.LEADER, Role.FOLLOWER, Role.OBSERVER, Role.STANDALONE})
# mntr has ~450 lines in 3.9.5, mostly histograms; these are the ones an operator looks at.
MNTR_FACTS = (
    "zk_server_state",
    "zk_peer_state",
    "zk_avg_latency",
    "zk_max_latency",
    "zk_num_alive_connections",
    "zk_synced_followers",
    "zk_pending_syncs",
    "zk_open_file_descriptor_count",
    "zk_max_file_descriptor_count",
    "zk_approximate_data_size",
)
# A whole mntr is ~18 KB; anything far bigger is not ZooKeeper talking.
MAX_REPLY = 1 << 20
# Closing a healthy link takes 15-35 ms, one to a hung member up to its session timeout;
# the watch hands its view over only after closing, so it waits for the healthy ones only.
LINK_STOP_WAIT_S = 0.5

# kazoo logs each reconnect attempt at WARNING, about once a second per link to a dead
# member; the link's state changes already reach the watch through on_change.
_kazoo_log = logging.getLogger(f"{__name__}.kazoo")
_kazoo_log.setLevel(logging.ERROR)


class UnparseableReply(ValueError):
    def __init__(self, reply: str) -> None:
        super().__init__(f"unparseable reply: {reply[:80]!r}")


@dataclass(frozen=True)
class Srvr:
    version: str
    role: Role
    zxid: int
    outstanding: int
    node_count: int


def parse_srvr(reply: str) -> Srvr | None:
    r"""The `srvr` reply; None from a member that answers but does not serve.

    >>> srvr = parse_srvr("Zookeeper version: 3.9.5-293c895a, built on 2026-02-11 20:18 UTC\n"
    ...                   "Outstanding: 0\nZxid: 0x100000010\nMode: follower\nNode count: 18\n")
    >>> srvr.version, srvr.role.value, hex(srvr.zxid), srvr.node_count
    ('3.9.5', 'follower', '0x100000010', 18)
    >>> parse_srvr("This ZooKeeper instance is not currently serving requests\n") is None
    True
    >>> parse_srvr("SSH-2.0-OpenSSH_9.2p1\r\n")
    Traceback (most recent call last):
    activities.zookeeper.UnparseableReply: unparseable reply: 'SSH-2.0-OpenSSH_9.2p1\r\n'
    """
    if reply.strip() == NOT_SERVING:
        return None
    fields = {}
    for line in reply.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    try:
        version = re.match(r"\d+(\.\d+)+", fields["Zookeeper version"])
        if version is None:
            raise ValueError
        return Srvr(
            version=version.group(),
            role=MODES[fields["Mode"]],
            zxid=int(fields["Zxid"], 16),
            outstanding=int(fields["Outstanding"]),
            node_count=int(fields["Node count"]),
        )
    except (KeyError, ValueError):
        raise UnparseableReply(reply) from None


def parse_mntr(reply: str) -> dict[str, str]:
    r"""Every `key<TAB>value` line; nothing from a reply without any, such as a refusal.

    >>> parse_mntr("zk_server_state\tleader\nzk_synced_followers\t2\n")
    {'zk_server_state': 'leader', 'zk_synced_followers': '2'}
    >>> parse_mntr("mntr is not executed because it is not in the whitelist.\n")
    {}
    """
    return {
        key: value
        for key, sep, value in (line.partition("\t") for line in reply.splitlines())
        if sep
    }


def parse_conf(reply: str) -> dict[str, str]:
    r"""Every `key=value` line, the membership's `server.N=...` lines included.

    >>> parse_conf("serverId=2\nmembership: \nserver.1=10.0.0.1:2888:3888:participant\n"
    ...            "version=0")
    {'serverId': '2', 'server.1': '10.0.0.1:2888:3888:participant', 'version': '0'}
    >>> parse_conf("conf is not executed because it is not in the whitelist.\n")
    {}
    """
    return {
        key: value
        for key, sep, value in (line.partition("=") for line in reply.splitlines())
        if sep
    }


def voting_members(conf: dict[str, str]) -> int | None:
    """How many members vote according to `conf`; None when it lists no membership
    (a standalone server, or `conf` not whitelisted).

    >>> voting_members({"server.1": "a:2888:3888:participant",
    ...                 "server.2": "b:2888:3888:participant;0.0.0.0:2181",
    ...                 "server.3": "c:2888:3888:observer"})
    2
    >>> voting_members({"serverId": "0"}) is None
    True
    """
    # The client address, if any, follows a ';'; without a role, a member votes.
    servers = [value.split(";")[0] for key, value in conf.items() if key.startswith("server.")]
    if not servers:
        return None
    return sum(1 for server in servers if not server.endswith(":observer"))


def zxid_lag(leader: int, member: int) -> int | None:
    """Transactions `member` has yet to apply to catch up with `leader`.

    A zxid is epoch << 32 | counter. A serving member still on an older epoch synced with
    the leader when it joined, so it lacks exactly this epoch's transactions. A member on
    a newer epoch than the leader was read after a new election: no answer then.

    >>> zxid_lag(0x500000007, 0x500000004)
    3
    >>> zxid_lag(0x500000000, 0x40000001A)  # no write since the election
    0
    >>> zxid_lag(0x500000003, 0x500000009)  # the member was read a moment later
    0
    >>> zxid_lag(0x400000009, 0x500000000) is None
    True
    """
    leader_epoch, member_epoch = leader >> 32, member >> 32
    counter = leader & 0xFFFFFFFF
    if member_epoch > leader_epoch:
        return None
    if member_epoch < leader_epoch:
        return counter
    return max(counter - (member & 0xFFFFFFFF), 0)


def _fact(value: str) -> FactValue:
    for kind in (int, float):
        with suppress(ValueError):
            return kind(value)
    return value


class NoReply(ConnectionError):
    pass


async def _ask(node: NodeSpec, word: str) -> str:
    """Each word takes a connection of its own: the server replies, then closes."""
    reader, writer = await asyncio.open_connection(node.host, node.port)
    try:
        writer.write(word.encode())
        reply = bytearray()
        while len(reply) <= MAX_REPLY and (chunk := await reader.read(65536)):
            reply += chunk
        if not reply:
            # A member that is dying (or not a ZooKeeper at all) accepts, then hangs up.
            raise NoReply("closed the connection without a reply")
        return reply.decode(errors="replace")
    finally:
        writer.close()


async def _ask_extra(node: NodeSpec, word: str) -> str:
    """A word beyond srvr is a bonus: a member may refuse it (whitelist) or drop it."""
    with suppress(OSError):
        return await _ask(node, word)
    return ""


@dataclass(frozen=True)
class _Reading:
    status: NodeStatus
    zxid: int | None = None
    voting_members: int | None = None


async def _read_node(node: NodeSpec, timeout: float) -> _Reading:
    try:
        async with asyncio.timeout(timeout):
            started = time.perf_counter()
            srvr_reply = await _ask(node, "srvr")
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            srvr = parse_srvr(srvr_reply)
            if srvr is None:
                return _Reading(
                    NodeStatus(
                        node_id=node.node_id,
                        address=node.address,
                        reachable=True,
                        role=Role.LOOKING,
                        latency_ms=latency_ms,
                    )
                )
            mntr_reply, conf_reply = await asyncio.gather(
                _ask_extra(node, "mntr"), _ask_extra(node, "conf")
            )
    except TimeoutError:
        error = f"timeout after {timeout}s"
    except ConnectionRefusedError:
        error = "connection refused"
    except UnparseableReply as e:
        error = str(e)
    except OSError as e:
        error = e.strerror.lower() if e.strerror else str(e)
    else:
        mntr, conf = parse_mntr(mntr_reply), parse_conf(conf_reply)
        facts: dict[str, FactValue] = {
            "zxid": srvr.zxid,
            "outstanding_requests": srvr.outstanding,
            "znode_count": srvr.node_count,
        }
        if conf.get("serverId", "").isdigit():
            facts["server_id"] = int(conf["serverId"])
        facts |= {key.removeprefix("zk_"): _fact(mntr[key]) for key in MNTR_FACTS if key in mntr}
        uptime_ms = _fact(mntr.get("zk_uptime", ""))
        return _Reading(
            NodeStatus(
                node_id=node.node_id,
                address=node.address,
                reachable=True,
                version=srvr.version,
                role=srvr.role,
                uptime_s=uptime_ms / 1000 if isinstance(uptime_ms, int) else None,
                latency_ms=latency_ms,
                facts=facts,
            ),
            zxid=srvr.zxid,
            voting_members=voting_members(conf),
        )
    return _Reading(
        NodeStatus(node_id=node.node_id, address=node.address, reachable=False, error=error)
    )


def _error(reading: _Reading) -> str | None:
    return reading.status.error


def _stop(client: KazooClient) -> None:
    client.stop()
    client.close()


Login = dict[str, Any]
"""kazoo's keyword arguments that log a session in; empty without `auth`."""


def login_of(spec: ClusterSpec) -> Login:
    """How to log in as the spec says, its secrets read now. Raises SecretUnavailable."""
    if spec.auth is None:
        return {}
    secrets = read_secrets(spec, "username", "password")
    user, password = secrets["username"], secrets["password"]
    if spec.auth.mechanism is AuthMechanism.DIGEST_MD5:
        return {"sasl_options": {"mechanism": "DIGEST-MD5", "username": user, "password": password}}
    return {"auth_data": [("digest", f"{user}:{password}")]}


class _Connection(ConnectionHandler):  # type: ignore[misc]
    """kazoo 2.11 lets a server's refusal of a SASL login (SESSIONCLOSEDREQUIRESASLAUTH,
    what a ZooKeeper that enforces SASL answers a wrong password with) escape its
    connection thread, which dies with a traceback while the client still says CONNECTED.
    As AuthFailedError it ends the session as AUTH_FAILED, as kazoo ends one whose member
    dropped the SASL exchange: pending requests fail with it, listeners hear LOST."""

    def _authenticate_with_sasl(self, host: str, timeout: float) -> None:
        try:
            super()._authenticate_with_sasl(host, timeout)
        except SessionClosedRequireSaslError as refused:
            raise AuthFailedError("SASL login refused") from refused


def _kazoo(address: str, timeout: float, login: Login, retry: KazooRetry) -> KazooClient:
    """A client pinned to one member, logging in as `login` says."""
    client = KazooClient(
        hosts=address, timeout=timeout, connection_retry=retry, logger=_kazoo_log, **login
    )
    if "sasl_options" in login:
        client._connection = _Connection(
            client, client._conn_retry.copy(), logger=_kazoo_log, sasl_options=login["sasl_options"]
        )
    return client


REFUSED = "authentication failed: the member refused the login"
LOGIN_GRACE_S = 0.5


def _log_in(address: str, timeout: float, login: Login) -> str | None:
    """None when the member takes the login and answers a request; else why not. Blocking:
    a session of its own, closed before it returns."""
    client = _kazoo(address, timeout, login, KazooRetry(max_tries=0))
    deadline = time.monotonic() + timeout
    settled, refused = threading.Event(), threading.Event()

    def listen(_: KazooState) -> None:
        # A refusal can end the session between kazoo's state checks and its waits: `start`
        # then says "Connection time-out" at once, or a request queued just after is never
        # answered. The session's state says what happened; waiting on it never races.
        if client.client_state == KeeperState.AUTH_FAILED:
            refused.set()
            settled.set()

    client.add_listener(listen)
    try:
        client.start(timeout=timeout)
        # The login completes before the member answers any request: this read tells.
        answer = client.exists_async("/")
        answer.rawlink(lambda _: settled.set())
        settled.wait(max(0.0, deadline - time.monotonic()))
        if refused.is_set():
            return REFUSED
        answer.get(block=False)
    except AuthFailedError:
        return REFUSED
    except SessionClosedRequireSaslError:
        return "authentication failed: the member requires a SASL login (auth: DIGEST-MD5)"
    except (KazooTimeoutError, TimeoutError):
        return REFUSED if refused.is_set() else f"login: no answer within {timeout}s"
    except KazooException as error:
        return f"login: {type(error).__name__}"
    finally:
        stop_all([partial(_stop, client)], 0.0)
    return None


async def _check_login(address: str, timeout: float, login: Login) -> str | None:
    try:
        # The thread keeps its own deadline; the grace lets it say why it gave up.
        return await asyncio.wait_for(
            asyncio.to_thread(_log_in, address, timeout, login), timeout + LOGIN_GRACE_S
        )
    except TimeoutError:
        # The thread ends on its own, within kazoo's timeouts.
        return f"login: no answer within {timeout}s"


async def _read_member(
    node: NodeSpec, timeout: float, login: Login | SecretUnavailable | None
) -> _Reading:
    """The member's four-letter words, and with a login whether it takes it: what a
    member that refuses the login says is kept, its error says why."""
    refused: str | None = None
    if login is None:
        reading = await _read_node(node, timeout)
    elif isinstance(login, SecretUnavailable):
        reading, refused = await _read_node(node, timeout), f"authentication failed: {login}"
    else:
        reading, refused = await asyncio.gather(
            _read_node(node, timeout), _check_login(node.address, timeout, login)
        )
    if not reading.status.reachable or refused is None:
        return reading
    return replace(reading, status=reading.status.model_copy(update={"error": refused}))


class ZooKeeperAdapter(Adapter):
    kind: ClassVar[Kind] = Kind.ZOOKEEPER

    @traced_probe
    async def probe(self, spec: ClusterSpec) -> ClusterView:
        observed_at = datetime.now(UTC)
        login: Login | SecretUnavailable | None = None
        if spec.auth is not None:
            try:
                login = login_of(spec)
            except SecretUnavailable as error:
                login = error
        readings = await asyncio.gather(
            *(
                probe_node(
                    spec, n.node_id, partial(_read_member, n, spec.probe.timeout_s, login), _error
                )
                for n in spec.nodes
            )
        )
        nodes = tuple(r.status for r in readings)
        leaders = [r for r in readings if r.status.role in (Role.LEADER, Role.STANDALONE)]
        leader = leaders[0] if len(leaders) == 1 else None
        # The ensemble's own membership, the leader's first, beats counting the spec's nodes.
        known = [r.voting_members for r in [*leaders, *readings] if r.voting_members]
        voting_configured = (
            known[0] if known else sum(1 for n in nodes if n.role is not Role.OBSERVER)
        )
        # Alive, not necessarily serving: members electing a leader still make up a quorum,
        # so a leader failover reads as `no_leader` for a moment, not as quorum lost.
        voting_alive = sum(1 for n in nodes if n.reachable and n.role is not Role.OBSERVER)
        shards = tuple(
            ShardStatus(
                shard_id=SHARD_ID,
                node_id=r.status.node_id,
                role=r.status.role,
                commit_offset=r.zxid,
                lag=zxid_lag(leader.zxid, r.zxid) if leader and leader.zxid is not None else None,
            )
            for r in readings
            if r.status.role in SERVING and r.zxid is not None
        )
        return ClusterView(
            cluster_id=spec.cluster_id,
            kind=self.kind,
            observed_at=observed_at,
            nodes=nodes,
            shards=shards,
            leader=leader.status.node_id if leader else None,
            quorum=voting_alive > voting_configured // 2,
            voting_alive=voting_alive,
            voting_configured=voting_configured,
        )

    @contextmanager
    def hold_links(self, spec: ClusterSpec, on_change: Callable[[], None]) -> Iterator[None]:
        try:
            login = login_of(spec)
        except SecretUnavailable:
            # The probe reports the missing secret on every member; links could not log in.
            yield
            return

        def listener(state: str) -> None:
            on_change()

        # One client per member, pinned to it: a multi-host client would fail over and hide
        # the very crash we hold the link to see. The session timeout also bounds how long a
        # hung (SIGSTOPped) member goes unnoticed: kazoo drops a link after 2/3 of it
        # without a ping reply.
        clients = [
            _kazoo(
                node.address,
                spec.probe.timeout_s,
                login,
                KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0),
            )
            for node in spec.nodes
        ]
        for client in clients:
            client.add_listener(listener)
            client.start_async()
        try:
            yield
        finally:
            for client in clients:
                client.remove_listener(listener)
            # stop() waits for the member to confirm the close; a hung member never does, and
            # kazoo gives up only at its read timeout.
            stop_all([partial(_stop, c) for c in clients], LINK_STOP_WAIT_S)
