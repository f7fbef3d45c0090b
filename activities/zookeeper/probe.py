"""Reading a member: its four-letter words, each on a connection of its own, and with a
login whether it takes it."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from dataclasses import dataclass, replace

from activities.lookups import open_connection
from activities.zookeeper.connection import _check_login
from activities.zookeeper.replies import (
    UnparseableReply,
    _fact,
    parse_conf,
    parse_mntr,
    parse_srvr,
    voting_members,
)
from config.secret_scope import SecretUnavailable
from config.zookeeper import ZooKeeperLogin
from models import (
    NodeSpec,
    NodeStatus,
    Role,
)
from models.view import FactValue

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


class NoReply(ConnectionError):
    pass


async def _ask(node: NodeSpec, word: str) -> str:
    """Each word takes a connection of its own: the server replies, then closes."""
    reader, writer = await open_connection(node.host, node.port)
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


def describe_error(error: BaseException, timeout: float) -> str:
    """One line for NodeStatus.error: why a member's four-letter words went unanswered.

    >>> describe_error(ConnectionRefusedError(111, "Connection refused"), 2.0)
    'connection refused'
    >>> describe_error(TimeoutError(), 2.0)
    'timeout after 2.0s'
    >>> describe_error(UnparseableReply("SSH-2.0-OpenSSH_9.2p1"), 2.0)
    "unparseable reply: 'SSH-2.0-OpenSSH_9.2p1'"
    """
    if isinstance(error, TimeoutError):
        return f"timeout after {timeout}s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError):
        return error.strerror.lower() if error.strerror else str(error)
    return str(error) or type(error).__name__


DETAILS_MAX_AGE_S = 30.0
"""How long a watch reuses a member's mntr and conf (`Details`) while its srvr says the
same mode: what they add (latency, connections, file descriptors, membership) moves slowly,
and asking them every round tripled the connections a probe opens."""


@dataclass(frozen=True)
class Details:
    """What a member's mntr and conf said, and when (monotonic s)."""

    role: Role
    facts: dict[str, FactValue]
    uptime_ms: int | None
    voting_members: int | None
    taken: float

    def fresh_for(self, role: Role, now: float) -> bool:
        return role is self.role and now - self.taken < DETAILS_MAX_AGE_S


READING_MAX_AGE_S = 60.0
"""How long a watch keeps a member's whole reading while its held link serves without a
break (`LinkStates`): the link answers for the member every interval (a member that leaves
the quorum or loses its leader drops its clients, and with them the link), and what else a
reading holds (zxid, latency, membership) moves no finding of a watch's: it is read again
this often, for the views the watch hands over."""


@dataclass(frozen=True)
class Kept:
    """A member's last reading in one watch: the details it used, the login it was checked
    with, and the stretch of the member's link it was taken in (None: it did not serve)."""

    reading: _Reading
    details: Details | None
    login: ZooKeeperLogin | SecretUnavailable | None
    stretch: int | None
    taken: float

    def holds(
        self, stretch: int | None, login: ZooKeeperLogin | SecretUnavailable | None, now: float
    ) -> bool:
        """Whether the reading still stands for the member: it was good, with the login the
        spec's secrets give now (a password changed since must be tried: the link logged in
        with the old one), and the link has served since, without a break, for less than
        READING_MAX_AGE_S."""
        return (
            stretch is not None
            and stretch == self.stretch
            and login == self.login
            and self.reading.status.reachable
            and self.reading.status.error is None
            and now - self.taken < READING_MAX_AGE_S
        )


async def _read_details(node: NodeSpec, role: Role) -> Details:
    mntr_reply, conf_reply = await asyncio.gather(
        _ask_extra(node, "mntr"), _ask_extra(node, "conf")
    )
    mntr, conf = parse_mntr(mntr_reply), parse_conf(conf_reply)
    facts: dict[str, FactValue] = {}
    if conf.get("serverId", "").isdigit():
        facts["server_id"] = int(conf["serverId"])
    facts |= {key.removeprefix("zk_"): _fact(mntr[key]) for key in MNTR_FACTS if key in mntr}
    uptime_ms = _fact(mntr.get("zk_uptime", ""))
    return Details(
        role=role,
        facts=facts,
        uptime_ms=uptime_ms if isinstance(uptime_ms, int) else None,
        voting_members=voting_members(conf),
        taken=time.monotonic(),
    )


async def _read_node(
    node: NodeSpec, timeout: float, known: Details | None = None
) -> tuple[_Reading, Details | None]:
    """The member's srvr, and its mntr and conf unless `known` still holds for the mode srvr
    gives (`Details.fresh_for`); the reading and the details it used (None: unreachable, or
    not serving)."""
    try:
        async with asyncio.timeout(timeout):
            started = time.perf_counter()
            srvr_reply = await _ask(node, "srvr")
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            srvr = parse_srvr(srvr_reply)
            if srvr is None:
                status = NodeStatus(
                    node_id=node.node_id,
                    address=node.address,
                    reachable=True,
                    role=Role.LOOKING,
                    latency_ms=latency_ms,
                )
                return _Reading(status), None
            now = time.monotonic()
            details = (
                known
                if known is not None and known.fresh_for(srvr.role, now)
                else await _read_details(node, srvr.role)
            )
    except (OSError, UnparseableReply) as e:
        error = describe_error(e, timeout)
    else:
        facts: dict[str, FactValue] = {
            "zxid": srvr.zxid,
            "outstanding_requests": srvr.outstanding,
            "znode_count": srvr.node_count,
            **details.facts,
        }
        uptime_ms = details.uptime_ms
        if uptime_ms is not None:
            uptime_ms += round((now - details.taken) * 1000)
        reading = _Reading(
            NodeStatus(
                node_id=node.node_id,
                address=node.address,
                reachable=True,
                version=srvr.version,
                role=srvr.role,
                uptime_s=uptime_ms / 1000 if uptime_ms is not None else None,
                latency_ms=latency_ms,
                facts=facts,
            ),
            zxid=srvr.zxid,
            voting_members=details.voting_members,
        )
        return reading, details
    status = NodeStatus(node_id=node.node_id, address=node.address, reachable=False, error=error)
    return _Reading(status), None


async def _read_member(
    node: NodeSpec,
    timeout: float,
    login: ZooKeeperLogin | SecretUnavailable | None,
    known: Details | None = None,
) -> tuple[_Reading, Details | None]:
    """The member's four-letter words (`_read_node`), and with a login whether it takes it:
    what a member that refuses the login says is kept, its error says why."""
    refused: str | None = None
    if login is None:
        reading, details = await _read_node(node, timeout, known)
    elif isinstance(login, SecretUnavailable):
        reading, details = await _read_node(node, timeout, known)
        refused = f"authentication failed: {login}"
    else:
        (reading, details), refused = await asyncio.gather(
            _read_node(node, timeout, known), _check_login(node.address, timeout, login)
        )
    if not reading.status.reachable or refused is None:
        return reading, details
    status = reading.status.model_copy(update={"error": refused})
    return replace(reading, status=status), details
