"""Reading one server's replies as they came, error replies included: the member states,
the `Reading` of a server, optimes and lag, and the routes a mongos lists. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models import Role

Reply = Mapping[str, Any]


# fmt: off
STATE_NAMES = dict(enumerate((
    "STARTUP", "PRIMARY", "SECONDARY", "RECOVERING", "FATAL", "STARTUP2", "UNKNOWN", "ARBITER",
    "DOWN", "ROLLBACK", "REMOVED",
)))
# fmt: on
PRIMARY, SECONDARY, ARBITER, DOWN, REMOVED = 1, 2, 7, 8, 10
# Answers but does not serve: starting up, in initial sync, recovering, rolling back.
NOT_SERVING = (0, 3, 5, 9)
# UNKNOWN, DOWN and REMOVED are what the other members report of one they cannot read (or
# that left the config): they say nothing of the member's own role.
STATE_ROLES = {PRIMARY: Role.PRIMARY, SECONDARY: Role.SECONDARY, ARBITER: Role.ARBITER} | (
    dict.fromkeys(NOT_SERVING, Role.LOOKING)
)
# The states in which a member votes in an election (the manual: "Replica Set Member
# States"): STARTUP2 too, but for a member newly added, which the server counts as no voter.
VOTING_STATES = frozenset({PRIMARY, SECONDARY, 3, 5, ARBITER, 9})
# Not yet through initial sync: starting, syncing, or never heard from (UNKNOWN).
INITIAL_STATES = frozenset({0, 5, 6})
# The states in which a data-bearing member applies writes and can acknowledge w:majority.
ACKNOWLEDGING_STATES = frozenset({PRIMARY, SECONDARY})
CONFIG_SHARD = "config"
ROUTER_MSG = "isdbgrid"
MAX_ERROR = 200


def _doc(value: object) -> Reply:
    return value if isinstance(value, Mapping) else {}


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _ok(reply: Reply) -> bool:
    return _number(reply.get("ok")) == 1


def _quote(value: object, most: int = 80) -> str:
    return repr(value)[:most]


def _votes(member_config: Reply) -> int:
    """A member's votes; 1 when its config does not say (the default)."""
    votes = _int(member_config.get("votes"))
    return 1 if votes is None else votes


def _key(address: str) -> str:
    """Member names compare case-insensitively (hostnames do)."""
    return address.strip().lower()


def _error_text(reply: Reply) -> str:
    """A command's error reply in one line: `CodeName: errmsg`."""
    name = _str(reply.get("codeName")) or str(reply.get("code", "error"))
    return f"{name}: {_str(reply.get('errmsg')) or 'no message'}"[:MAX_ERROR]


@dataclass(frozen=True)
class Reading:
    """What one server answered, every reply as it came (error replies included), or why it
    could not be read at all (`error`)."""

    address: str
    replies: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    latency_ms: float | None = None
    refused_as: Role | None = None
    """Set when the server answered, as this role, but refused our login (`error` says
    so): alive, so never a node down whose restart a wrong password could start."""

    def reply(self, command: str) -> Reply:
        """The command's reply; an empty one when it was not asked or is not a document."""
        return _doc(self.replies.get(command))

    @property
    def hello(self) -> Reply:
        return self.reply("hello")

    @property
    def failure(self) -> str | None:
        """Why this server counts as unreachable; None when it answered a usable hello."""
        if self.error is not None:
            return self.error
        hello = self.replies.get("hello")
        if not isinstance(hello, Mapping):
            return f"unexpected hello reply: {_quote(hello)}"
        if not _ok(hello):
            return f"hello refused: {_error_text(hello)}"
        return None

    @property
    def is_router(self) -> bool:
        return self.failure is None and self.hello.get("msg") == ROUTER_MSG


def optime_seconds(optime: object) -> int | None:
    """Seconds of an optime: `{ts: Timestamp, t: term}` (every server since 4.0) or a bare
    Timestamp (protocol version 0); None for the null optime of a member nobody has heard.

    >>> from bson import Int64, Timestamp
    >>> optime_seconds({"ts": Timestamp(1731863052, 1), "t": Int64(1)})
    1731863052
    >>> optime_seconds({"ts": Timestamp(0, 0), "t": Int64(-1)}) is None
    True
    >>> optime_seconds("garbage") is None
    True
    """
    ts = optime.get("ts") if isinstance(optime, Mapping) else optime
    seconds = getattr(ts, "time", None)
    return seconds if isinstance(seconds, int) and seconds > 0 else None


def _date_seconds(value: object) -> int | None:
    if not isinstance(value, datetime):
        return None
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    seconds = int(moment.timestamp())
    return seconds if seconds > 0 else None


def _member_optime(member: Reply) -> int | None:
    """`optimeDate` is the optime's seconds as a date; the optime itself when it is absent."""
    return _date_seconds(member.get("optimeDate")) or optime_seconds(member.get("optime"))


def replication_lag(members: Sequence[Reply]) -> dict[str, int]:
    """Seconds each member is behind, reckoned as `rs.printSecondaryReplicationInfo()` does:
    against the primary's optimeDate, or with no primary against the freshest member's.

    Unlike the shell, a member without a known optime (DOWN, or not yet heard from) gets no
    figure rather than "50 years", and a member a heartbeat ahead of the primary's report
    gets 0 rather than a negative lag. Arbiters hold no data and get none.

    >>> from datetime import datetime
    >>> replication_lag([
    ...     {"name": "a:1", "state": 1, "health": 1, "optimeDate": datetime(2024, 1, 1, 0, 1)},
    ...     {"name": "b:1", "state": 2, "health": 1, "optimeDate": datetime(2024, 1, 1, 0, 0)},
    ...     {"name": "c:1", "state": 8, "health": 0, "optimeDate": datetime(1970, 1, 1)},
    ...     {"name": "d:1", "state": 7, "health": 1},
    ... ])
    {'a:1': 0, 'b:1': 60}
    """
    known = [
        (name, _int(m.get("state")), seconds)
        for m in members
        if (name := _str(m.get("name")))
        and _number(m.get("health")) == 1
        and _int(m.get("state")) != ARBITER
        and (seconds := _member_optime(m)) is not None
    ]
    if not known:
        return {}
    primaries = [seconds for _, state, seconds in known if state == PRIMARY]
    reference = primaries[0] if primaries else max(seconds for _, _, seconds in known)
    return {name: max(reference - seconds, 0) for name, _, seconds in known}


def majorities(voting: int, writable_voting: int) -> tuple[int, int]:
    """(votes needed to elect, data-bearing members needed for w:majority), as the server
    computes `majorityVoteCount` and `writeMajorityCount` from its config.

    >>> majorities(3, 2)  # primary, secondary, arbiter: w:majority needs both data members
    (2, 2)
    >>> majorities(5, 5)
    (3, 3)
    """
    majority = voting // 2 + 1
    return majority, min(majority, writable_voting)


def parse_connection_string(text: str) -> tuple[str | None, list[str]]:
    """`set/host:port,host:port`, as listShards and getShardMap give a replica set's hosts.

    >>> parse_connection_string("shard01/a.example:27018,B.example:27018")
    ('shard01', ['a.example:27018', 'B.example:27018'])
    >>> parse_connection_string("cfg.example:27019")
    (None, ['cfg.example:27019'])
    """
    name, slash, hosts = text.rpartition("/")
    return (name if slash else None), [h.strip() for h in hosts.split(",") if h.strip()]


@dataclass(frozen=True)
class Route:
    """One replica set a mongos routes to: a shard, or the config servers."""

    shard_id: str
    set_name: str | None
    hosts: tuple[str, ...]


def shard_routes(router: Reading) -> list[Route]:
    """The shards a mongos lists and its config server replica set, each replica set once.

    The config servers come from `getShardMap`'s `map.config`, or from
    `serverStatus.sharding.configsvrConnectionString` where getShardMap is refused. An 8.0
    config shard (the config servers holding data too) is listed by listShards as `_id:
    "config"`: the same replica set, so it is not added again.
    """
    routes = []
    for shard in router.reply("listShards").get("shards") or ():
        shard_id, host = _str(_doc(shard).get("_id")), _str(_doc(shard).get("host"))
        if shard_id and host:
            set_name, hosts = parse_connection_string(host)
            routes.append(Route(shard_id, set_name, tuple(hosts)))
    config = _str(_doc(router.reply("getShardMap").get("map")).get(CONFIG_SHARD)) or _str(
        _doc(router.reply("serverStatus").get("sharding")).get("configsvrConnectionString")
    )
    if routes and config and all(r.shard_id != CONFIG_SHARD for r in routes):
        set_name, hosts = parse_connection_string(config)
        routes.append(Route(CONFIG_SHARD, set_name, tuple(hosts)))
    return routes


def config_shard(router: Reading) -> bool:
    """Whether listShards names the config servers as a shard (8.0's config shard)."""
    shards = router.reply("listShards").get("shards") or ()
    return any(_doc(s).get("_id") == CONFIG_SHARD for s in shards)


def cluster_routes(readings: Iterable[Reading]) -> list[Route]:
    """The routes of the first mongos among `readings` that lists its shards."""
    return next((routes for r in readings if r.is_router and (routes := shard_routes(r))), [])
