"""What the four-letter words' replies say (`srvr`, `mntr`, `conf`): pure, tested on the
replies recorded in tests/replies/zookeeper/."""

from __future__ import annotations

import re
from contextlib import suppress
from dataclasses import dataclass

from models import (
    Role,
)
from models.view import FactValue

NOT_SERVING = "This ZooKeeper instance is not currently serving requests"
MODES = {
    "leader": Role.LEADER,
    "follower": Role.FOLLOWER,
    "observer": Role.OBSERVER,
    "standalone": Role.STANDALONE,
    # Answers reads without a quorum (readonlymode.enabled): not a working member.
    "read-only": Role.LOOKING,
}
SERVING = frozenset({Role.LEADER, Role.FOLLOWER, Role.OBSERVER, Role.STANDALONE})


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
    activities.zookeeper.replies.UnparseableReply: unparseable reply: 'SSH-2.0-OpenSSH_9.2p1\r\n'
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
