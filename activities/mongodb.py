"""MongoDB: per server `hello`, `buildInfo`, `replSetGetStatus`, `replSetGetConfig` and a
trimmed `serverStatus` for the probe (`listShards` and `getShardMap` instead of the replica
set commands on a mongos), and one pymongo client per member for the held links.

Parsing is kept apart from I/O: `read_server` asks one server and keeps every reply as it
came, error replies included; `cluster_view` turns the replies of all servers into a
ClusterView. The replies it was written against are reconstructions of MongoDB 4.4 to 8.0
output from public sources (tests/replies/mongodb/README.md), not captures: no MongoDB
server runs where this was written, and tests/test_mongodb_live.py is what checks the
adapter against a real replica set.

Every server is read on a client pinned to it (directConnection), in a thread, within the
spec's probe timeout; pymongo's server selection looks again at an unreachable server every
0.5 s, so one that refuses connections is reported up to 0.5 s past it. A mongos among the
spec's nodes makes a second round: the members of its shards and config servers, read the
same way. While the watch holds links, the probe reads through the held clients instead of
opening new ones each interval.

A spec's secrets `username` and `password`, when it names them, authenticate every
connection (authSource `admin`, the mechanism `auth.mechanism` names or the server's
choice); the user needs the clusterMonitor role. With `tls` every connection is TLS (the
CA of `tls.ca_file`, the client certificate of the secret `tls.client_cert`), and
`auth: {mechanism: MONGODB-X509}` logs in as that certificate's subject instead.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

import pymongo
from pymongo import MongoClient, monitoring
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.server_type import SERVER_TYPE

from activities.adapter import Adapter
from activities.links import stop_all
from activities.telemetry import probe_node, traced_probe
from config.secrets import SecretUnavailable, read_secrets, readable
from models import AuthMechanism, ClusterSpec, ClusterView, Kind, NodeStatus, Role, ShardStatus
from models.findings.mongodb import set_fact
from models.view import FactValue

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
# The states in which a member votes in an election (the manual: "Replica Set Elections").
VOTING_STATES = frozenset({PRIMARY, SECONDARY, 3, 5, ARBITER, 9})
# The states in which a data-bearing member applies writes and can acknowledge w:majority.
ACKNOWLEDGING_STATES = frozenset({PRIMARY, SECONDARY})
CONFIG_SHARD = "config"
ROUTER_MSG = "isdbgrid"
COMMAND_NOT_FOUND = 59
AUTH_FAILED = 18
"""The server's AuthenticationFailed code."""

# serverStatus answers ~40 sections by default, some of them large (wiredTiger, metrics,
# locks); the probe reads the top-level uptime, `connections` and, on a mongos, `sharding`.
# A section a server does not know is ignored, and sections newer than this list still come.
# fmt: off
SERVER_STATUS_OFF = (
    "asserts", "batchedDeletes", "catalogStats", "collectionCatalog", "electionMetrics",
    "extra_info", "flowControl", "globalLock", "indexBuilds", "indexBulkBuilder", "indexStats",
    "locks", "logicalSessionRecordCache", "metrics", "network", "opLatencies",
    "opReadConcernCounters", "opWriteConcernCounters", "opcounters", "opcountersRepl",
    "oplogTruncation", "planCache", "queryAnalyzers", "querySettings", "queues",
    "readConcernCounters", "readPreferenceCounters", "repl", "scramCache", "security",
    "shardingStatistics", "storageEngine", "tcmalloc", "tenantMigrations", "trafficRecording",
    "transactions", "transportSecurity", "twoPhaseCommitCoordinator", "wiredTiger",
)
# fmt: on
SERVER_STATUS: dict[str, int] = {"serverStatus": 1} | dict.fromkeys(SERVER_STATUS_OFF, 0)
MONGOD_COMMANDS: dict[str, dict[str, int]] = {
    "buildInfo": {"buildInfo": 1},
    "replSetGetStatus": {"replSetGetStatus": 1},
    "replSetGetConfig": {"replSetGetConfig": 1},
    "serverStatus": SERVER_STATUS,
}
ROUTER_COMMANDS: dict[str, dict[str, int]] = {
    "buildInfo": {"buildInfo": 1},
    "serverStatus": SERVER_STATUS,
    "listShards": {"listShards": 1},
    "getShardMap": {"getShardMap": 1},
}
# The held links' heartbeat: pymongo's floor. On 4.4+ the heartbeat is a streamed hello
# the server holds open, so a crash is seen when its socket closes, not at the next beat.
LINK_HEARTBEAT_MS = 500
# A probe-only client asks once per probe: its own heartbeats would only add load.
PROBE_HEARTBEAT_MS = 60_000
# How long past the probe timeout a read may run before it is abandoned. pymongo bounds each
# read itself (pymongo.timeout), but its server selection looks again at an unreachable
# server only every 0.5 s, so a refused connection is reported up to 0.5 s late; this only
# guards against a read that outlives even that.
READ_GRACE_S = 1.0
LINK_STOP_WAIT_S = 0.5
AUTH_SOURCE = "admin"
# How pymongo's ProtocolError messages start: what answered is not speaking MongoDB.
PROTOCOL_ERRORS = ("Got response id", "Message length", "Unsupported OP_", "Truncated")
MAX_ERROR = 200


# --- reading replies --------------------------------------------------------------------


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
    """The shards a mongos lists and its config server replica set.

    The config servers come from `getShardMap`'s `map.config`, or from
    `serverStatus.sharding.configsvrConnectionString` where getShardMap is refused.
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
    if routes and config:
        set_name, hosts = parse_connection_string(config)
        routes.append(Route(CONFIG_SHARD, set_name, tuple(hosts)))
    return routes


def cluster_routes(readings: Iterable[Reading]) -> list[Route]:
    """The routes of the first mongos among `readings` that lists its shards."""
    return next((routes for r in readings if r.is_router and (routes := shard_routes(r))), [])


# --- one replica set --------------------------------------------------------------------


def _own_state(reading: Reading) -> int | None:
    """The member state a server reports of itself: replSetGetStatus's `myState` (a removed
    member's error reply still carries `state`), or what its hello implies."""
    status = reading.reply("replSetGetStatus")
    state = _int(status.get("myState") if _ok(status) else status.get("state"))
    if state is not None:
        return state
    hello = reading.hello
    if "setName" not in hello:
        return None
    if hello.get("isWritablePrimary") or hello.get("ismaster"):
        return PRIMARY
    if hello.get("secondary"):
        return SECONDARY
    if hello.get("arbiterOnly"):
        return ARBITER
    return None


def _state_role(state: int | None) -> Role:
    return Role.UNKNOWN if state is None else STATE_ROLES.get(state, Role.UNKNOWN)


def _own_role(reading: Reading) -> Role:
    hello = reading.hello
    if hello.get("msg") == ROUTER_MSG:
        return Role.ROUTER
    if "setName" not in hello and not hello.get("isreplicaset"):
        return Role.STANDALONE
    state = _own_state(reading)
    if state is None or state == REMOVED:
        # A member without a config, or out of it: it answers and serves nothing.
        return Role.LOOKING
    return _state_role(state)


@dataclass(frozen=True)
class Member:
    """One member as its replica set describes it (config and the chosen status)."""

    name: str
    state: int | None = None
    """As the set sees it; None when no member's status was readable."""
    health: float | None = None
    votes: int = 1
    arbiter: bool = False
    priority: float | None = None
    hidden: bool = False
    heartbeat_message: str | None = None


@dataclass(frozen=True)
class ReplicaSet:
    name: str | None
    members: tuple[Member, ...]
    authoritative: bool
    """Whether `members` is the set's own config (from a status or a config reply), rather
    than guessed from hellos or the addresses dialled."""
    status: Reply = field(default_factory=dict)
    majority_vote_count: int = 1
    write_majority_count: int = 1
    lag: Mapping[str, int] = field(default_factory=dict)


def _pick_status(readings: Sequence[Reading], name: str | None) -> tuple[Reading | None, Reply]:
    """The replSetGetStatus of the member that has seen the latest term, the primary's among
    equals (it hears from every member); on a tie, the first in order. A deposed primary that
    has not yet heard of the election loses to any member that has."""
    statuses = [
        (r, status)
        for r in readings
        if r.failure is None
        and _ok(status := r.reply("replSetGetStatus"))
        and isinstance(status.get("members"), list)
        and (name is None or status.get("set") == name)
    ]
    return max(
        statuses,
        key=lambda s: (_int(s[1].get("term")) or -1, _int(s[1].get("myState")) == PRIMARY),
        default=(None, {}),
    )


def _config(reading: Reading, name: str | None) -> Reply:
    reply = reading.reply("replSetGetConfig")
    config = _doc(reply.get("config"))
    usable = reading.failure is None and _ok(reply) and isinstance(config.get("members"), list)
    return config if usable and (name is None or config.get("_id") == name) else {}


def _pick_config(
    readings: Sequence[Reading], name: str | None, status_from: Reading | None
) -> Reply:
    """The config of the member whose status is used, so that both describe the same
    members; else the newest any member answered (highest term, then version)."""
    if status_from is not None and (config := _config(status_from, name)):
        return config
    return max(
        (config for r in readings if (config := _config(r, name))),
        key=lambda c: (_int(c.get("term")) or -1, _int(c.get("version")) or -1),
        default={},
    )


def _members_from_status(status: Reply, config: Reply) -> list[Member]:
    by_id = {_int(_doc(m).get("_id")): _doc(m) for m in config.get("members") or () if _doc(m)}
    members = []
    for entry in status.get("members") or ():
        m = _doc(entry)
        name = _str(m.get("name"))
        if not name:
            continue
        conf = by_id.get(_int(m.get("_id")), {})
        state, health = _int(m.get("state")), _number(m.get("health"))
        members.append(
            Member(
                name=name,
                # A member nobody can reach keeps its last state in the reply; it is DOWN.
                state=DOWN if health == 0 else state,
                health=health,
                votes=_votes(conf),
                arbiter=bool(conf.get("arbiterOnly")) or state == ARBITER,
                priority=_number(conf.get("priority")),
                hidden=bool(conf.get("hidden")),
                heartbeat_message=_str(m.get("lastHeartbeatMessage")) or None,
            )
        )
    return members


def _members_from_config(config: Reply) -> list[Member]:
    return [
        Member(
            name=name,
            votes=_votes(m),
            arbiter=bool(m.get("arbiterOnly")),
            priority=_number(m.get("priority")),
            hidden=bool(m.get("hidden")),
        )
        for m in map(_doc, config.get("members") or ())
        if (name := _str(m.get("host")))
    ]


def _members_from_hellos(readings: Sequence[Reading]) -> list[Member]:
    """What a member's hello lists: electable `hosts`, priority-0 `passives` and `arbiters`;
    hidden members are not listed anywhere but in the config."""
    for r in sorted(readings, key=lambda r: _own_state(r) != PRIMARY):
        hello = r.hello if r.failure is None else {}
        lists = [hello.get(k) for k in ("hosts", "passives", "arbiters")]
        if any(isinstance(names, list) and names for names in lists):
            return [
                Member(name=name, arbiter=kind == "arbiters")
                for kind, names in zip(("hosts", "passives", "arbiters"), lists, strict=True)
                if isinstance(names, list)
                for name in names
                if isinstance(name, str)
            ]
    return []


def replica_set(readings: Sequence[Reading], name: str | None = None) -> ReplicaSet:
    """The replica set these servers (its members, as dialled) make up, seen by the member
    that knows it best. `name` restricts the replies used to those of that set."""
    status_from, status = _pick_status(readings, name)
    config = _pick_config(readings, name or _str(status.get("set")), status_from)
    set_name = name or _str(status.get("set")) or _str(config.get("_id"))
    if set_name is None:
        named = [_str(r.hello.get("setName")) for r in readings if r.failure is None]
        set_name = next((n for n in named if n), None)
    members = _members_from_status(status, config) if status else []
    authoritative = bool(members)
    if not members:
        members = _members_from_config(config)
        authoritative = bool(members)
    if not members:
        members = _members_from_hellos(readings) or [Member(r.address) for r in readings]
    voting = _int(status.get("votingMembersCount"))
    writable = _int(status.get("writableVotingMembersCount"))
    if voting is None or writable is None:
        voting = sum(1 for m in members if m.votes > 0)
        writable = sum(1 for m in members if m.votes > 0 and not m.arbiter)
    majority, write_majority = majorities(voting, writable)
    return ReplicaSet(
        name=set_name,
        members=tuple(members),
        authoritative=authoritative,
        status=status,
        majority_vote_count=_int(status.get("majorityVoteCount")) or majority,
        # 4.2.1 added writeMajorityCount; where a reply lacks it, the config says it.
        write_majority_count=_int(status.get("writeMajorityCount")) or write_majority,
        lag=replication_lag([_doc(m) for m in status.get("members") or ()]),
    )


# --- the cluster ------------------------------------------------------------------------


class _Directory:
    """Who is who: each member name resolved to a node id and to the reading of that server,
    matching host:port case-insensitively. A server that answers is known by its hello `me`,
    the name its set knows it by, which may differ from the address dialled (an IP, an
    alias); one that does not is known by the address dialled."""

    def __init__(self, spec: ClusterSpec, readings: Mapping[str, Reading]) -> None:
        self.ids: dict[str, str] = {}
        self.seen: dict[str, Reading] = {}
        spec_ids = {_key(n.address): n.node_id for n in spec.nodes}
        for address, reading in readings.items():
            node_id = spec_ids.get(_key(address), address)
            me = _str(reading.hello.get("me")) if reading.failure is None else None
            self.ids.setdefault(_key(me or address), node_id)
            self.seen.setdefault(_key(me or address), reading)

    def node_id(self, name: str) -> str:
        return self.ids.get(_key(name), name)

    def reading(self, name: str) -> Reading | None:
        return self.seen.get(_key(name))


@dataclass(frozen=True)
class _SetView:
    shards: list[ShardStatus]
    facts: dict[str, FactValue]
    seen_by_set: dict[str, Member]
    """Members by node id, for the facts of the nodes the probe read."""
    leader: str | None
    voting_alive: int
    voting_configured: int
    quorum: bool | None


def _set_view(shard_id: str, rs: ReplicaSet, directory: _Directory) -> _SetView:
    states: dict[str, int | None] = {}
    healths: dict[str, float | None] = {}
    roles: dict[str, Role] = {}
    for m in rs.members:
        reading = directory.reading(m.name)
        read = reading is not None and reading.failure is None
        own = _own_state(reading) if reading is not None and read else None
        # A member read directly is fresher about its own state than the set's heartbeats.
        states[m.name] = own if own is not None else m.state
        healths[m.name] = (
            m.health if rs.status else (1.0 if read else 0.0 if reading is not None else None)
        )
        if reading is not None and read:
            roles[m.name] = _own_role(reading)
        else:
            roles[m.name] = _state_role(states[m.name])
    voting = [m for m in rs.members if m.votes > 0]
    voting_alive = sum(
        1 for m in voting if healths[m.name] == 1 and states[m.name] in VOTING_STATES
    )
    data_voting = sorted((m for m in voting if not m.arbiter), key=lambda m: -(m.priority or 0.0))
    replicas = tuple(directory.node_id(m.name) for m in data_voting)
    in_sync = tuple(
        directory.node_id(m.name)
        for m in data_voting
        if healths[m.name] == 1 and states[m.name] in ACKNOWLEDGING_STATES
    )
    status_members = {_str(_doc(e).get("name")): _doc(e) for e in rs.status.get("members") or ()}
    primaries = [m.name for m in rs.members if states[m.name] == PRIMARY]
    if len(primaries) > 1:
        # A deposed primary still says PRIMARY until it hears of the election: the set's
        # latest word (the chosen status) names the one in charge.
        primaries = [m.name for m in rs.members if m.name in primaries and m.state == PRIMARY]
    shards = [
        ShardStatus(
            shard_id=shard_id,
            node_id=directory.node_id(m.name),
            role=roles[m.name],
            commit_offset=None if m.arbiter else _member_optime(status_members.get(m.name, {})),
            lag=rs.lag.get(m.name),
            replicas=replicas,
            in_sync=in_sync,
            min_in_sync=rs.write_majority_count,
        )
        for m in rs.members
    ]
    # Without any member's status, members the probe did not dial are of unknown health: a
    # shortfall may be ours, not the set's (a spec listing some members, auth refused).
    undetermined = not rs.status and any(
        (r := directory.reading(m.name)) is None or r.refused_as is not None for m in voting
    )
    quorum: bool | None = voting_alive >= rs.majority_vote_count
    if undetermined and not quorum:
        quorum = None
    leader = directory.node_id(primaries[0]) if len(primaries) == 1 else None
    facts: dict[str, FactValue] = {
        set_fact(shard_id, "voting_alive"): voting_alive,
        set_fact(shard_id, "voting_configured"): len(voting),
        set_fact(shard_id, "majority_vote_count"): rs.majority_vote_count,
        set_fact(shard_id, "write_majority_count"): rs.write_majority_count,
    }
    if rs.name is not None and rs.name != shard_id:
        facts[set_fact(shard_id, "set_name")] = rs.name
    if quorum is not None:
        facts[set_fact(shard_id, "quorum")] = quorum
    if leader is not None:
        facts[set_fact(shard_id, "primary")] = leader
    if (term := _int(rs.status.get("term"))) is not None:
        facts[set_fact(shard_id, "term")] = term
    optimes = _doc(rs.status.get("optimes"))
    applied = optime_seconds(optimes.get("appliedOpTime"))
    committed = optime_seconds(optimes.get("lastCommittedOpTime"))
    if applied is not None and committed is not None:
        # How far the majority commit point trails this member's last applied write.
        facts[set_fact(shard_id, "majority_commit_lag_s")] = max(applied - committed, 0)
    return _SetView(
        shards=shards,
        facts=facts,
        seen_by_set={directory.node_id(m.name): m for m in rs.members},
        leader=leader,
        voting_alive=voting_alive,
        voting_configured=len(voting),
        quorum=quorum,
    )


def _self_entry(reading: Reading) -> Reply:
    """The server's own entry in its own replSetGetStatus."""
    for entry in reading.reply("replSetGetStatus").get("members") or ():
        if _doc(entry).get("self") is True:
            return _doc(entry)
    return {}


def node_status(
    node_id: str, reading: Reading, seen: Member | None, set_name: str | None
) -> NodeStatus:
    """One server as the probe read it, with what its replica set says of it (`seen`)."""
    facts: dict[str, FactValue] = {}
    failure = reading.failure
    if seen is not None:
        if seen.state is not None and (failure is not None or seen.state != _own_state(reading)):
            facts["state_seen_by_set"] = STATE_NAMES.get(seen.state, str(seen.state))
        if seen.health is not None:
            facts["health"] = seen.health
        facts["votes"] = seen.votes
        if seen.priority is not None:
            facts["priority"] = seen.priority
        if seen.hidden:
            facts["hidden"] = True
    elif set_name is not None:
        facts["in_set_config"] = False
    if failure is not None:
        if seen is not None and seen.heartbeat_message:
            facts["last_heartbeat_message"] = seen.heartbeat_message
        if reading.refused_as is not None:
            # Finding auth_failed: our secret, not the node, is what to fix.
            return NodeStatus(
                node_id=node_id,
                address=reading.address,
                reachable=True,
                error=failure,
                role=reading.refused_as,
                facts=facts,
            )
        return NodeStatus(
            node_id=node_id, address=reading.address, reachable=False, error=failure, facts=facts
        )
    hello, status = reading.hello, reading.reply("replSetGetStatus")
    server_status, build_info = reading.reply("serverStatus"), reading.reply("buildInfo")
    own = _own_state(reading)
    me = _self_entry(reading)
    facts |= {
        key: value
        for key, value in (
            ("process", _str(server_status.get("process"))),
            ("state", STATE_NAMES.get(own) if own is not None else None),
            ("set_name", _str(hello.get("setName"))),
            ("info", _str(hello.get("info"))),
            ("max_wire_version", _int(hello.get("maxWireVersion"))),
            ("connections", _int(_doc(server_status.get("connections")).get("current"))),
            ("sync_source", _str(me.get("syncSourceHost")) or None),
            ("optime_date", _iso(me.get("optimeDate"))),
            ("config_version", _int(me.get("configVersion"))),
        )
        if value is not None
    }
    if status and not _ok(status) and hello.get("msg") != ROUTER_MSG:
        facts["status_error"] = _error_text(status)
    uptime = _number(server_status.get("uptime"))
    if uptime is None:
        uptime = _number(me.get("uptime"))
    return NodeStatus(
        node_id=node_id,
        address=reading.address,
        reachable=True,
        version=_str(build_info.get("version")) or _str(server_status.get("version")),
        role=_own_role(reading),
        uptime_s=uptime,
        latency_ms=reading.latency_ms,
        facts=facts,
    )


def _iso(value: object) -> str | None:
    """A date as ISO 8601 in UTC; None for the epoch a member without an optime reports."""
    seconds = _date_seconds(value)
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def cluster_view(
    spec: ClusterSpec, readings: Mapping[str, Reading], observed_at: datetime
) -> ClusterView:
    """The view from every server's replies: `readings` by the address dialled, the spec's
    nodes first, then (for a sharded cluster) the shard and config members found through a
    mongos, whose node ids are their host:port.

    A replica set's members and their states come from the primary's replSetGetStatus, or
    failing that from the member that saw the latest term; each member read directly speaks
    for its own state. A mongos among the spec's nodes makes the cluster sharded: one shard
    id per shard replica set, `config` for the config servers.
    """
    directory = _Directory(spec, readings)
    spec_readings = [readings[n.address] for n in spec.nodes if n.address in readings]
    routers = [r for r in spec_readings if r.is_router]
    if routers:
        return _sharded_view(spec, readings, routers, directory, observed_at)
    standalone = [
        r
        for r in spec_readings
        if r.failure is None and "setName" not in r.hello and not r.hello.get("isreplicaset")
    ]
    if standalone and len(standalone) == len([r for r in spec_readings if r.failure is None]):
        nodes = tuple(node_status(n.node_id, readings[n.address], None, None) for n in spec.nodes)
        return ClusterView(
            cluster_id=spec.cluster_id,
            kind=Kind.MONGODB,
            observed_at=observed_at,
            nodes=nodes,
            leader=spec.nodes[0].node_id if len(spec.nodes) == 1 else None,
            facts={"topology": "standalone"},
        )
    rs = replica_set(spec_readings)
    shard_id = rs.name or "rs"
    seen = _set_view(shard_id, rs, directory)
    in_config = rs.name if rs.authoritative else None
    nodes = tuple(
        node_status(
            n.node_id,
            readings[n.address],
            seen.seen_by_set.get(n.node_id),
            in_config if readings[n.address].failure is None else None,
        )
        for n in spec.nodes
    )
    facts: dict[str, FactValue] = {"topology": "replica_set", **seen.facts}
    if rs.name is not None:
        facts["set_name"] = rs.name
    return ClusterView(
        cluster_id=spec.cluster_id,
        kind=Kind.MONGODB,
        observed_at=observed_at,
        nodes=nodes,
        # Without any member's word on the set (all unreachable, or none would say), there is
        # no member list to name a shard after: the nodes say enough.
        shards=tuple(seen.shards) if rs.name is not None else (),
        leader=seen.leader,
        quorum=seen.quorum,
        voting_alive=seen.voting_alive,
        voting_configured=seen.voting_configured,
        facts=facts,
    )


def _sharded_view(
    spec: ClusterSpec,
    readings: Mapping[str, Reading],
    routers: Sequence[Reading],
    directory: _Directory,
    observed_at: datetime,
) -> ClusterView:
    routes = cluster_routes(routers)
    facts: dict[str, FactValue] = {
        "topology": "sharded",
        "shards": sum(1 for r in routes if r.shard_id != CONFIG_SHARD),
    }
    if not routes:
        facts["routing_error"] = _error_text(routers[0].reply("listShards"))
    shards: list[ShardStatus] = []
    seen_by_set: dict[str, tuple[Member, str | None]] = {}
    for route in routes:
        members = [readings[h] for h in route.hosts if h in readings]
        rs = replica_set(members, route.set_name)
        view = _set_view(route.shard_id, rs, directory)
        shards += view.shards
        facts |= view.facts
        for node_id, member in view.seen_by_set.items():
            seen_by_set.setdefault(node_id, (member, rs.name))
    spec_addresses = {_key(n.address) for n in spec.nodes}
    nodes = [
        node_status(n.node_id, readings[n.address], *seen_by_set.get(n.node_id, (None, None)))
        for n in spec.nodes
    ]
    nodes += [
        node_status(address, reading, *seen_by_set.get(address, (None, None)))
        for address, reading in readings.items()
        if _key(address) not in spec_addresses
    ]
    return ClusterView(
        cluster_id=spec.cluster_id,
        kind=Kind.MONGODB,
        observed_at=observed_at,
        nodes=tuple(nodes),
        shards=tuple(shards),
        facts=facts,
    )


# --- asking servers ---------------------------------------------------------------------


def describe_error(error: PyMongoError, timeout: float) -> str:
    """One line saying why a server could not be read; never a credential (pymongo's
    messages carry none: the client is built from an address and separate credentials)."""
    if isinstance(error, OperationFailure):
        if error.code == AUTH_FAILED:
            return "authentication failed"
        return _error_text(_doc(error.details) or {"code": error.code, "errmsg": str(error)})
    # pymongo leads with `host:port: cause`, then appends its timeouts and the topology.
    cause = str(error).split(" (configured timeouts", 1)[0].split(", Timeout:", 1)[0].strip()
    address, colon, rest = cause.partition(": ")
    if colon and ":" in address and " " not in address:
        cause = rest.strip()
    if "Connection refused" in cause:
        return "connection refused"
    if "timed out" in cause or (error.timeout and cause.startswith("No servers found")):
        return f"timeout after {timeout}s"
    if any(marker in cause for marker in PROTOCOL_ERRORS):
        return f"not a MongoDB reply: {cause}"[:MAX_ERROR]
    # An OS error (`[Errno -2] Name or service not known`) reads as its reason alone.
    cause = re.sub(r"^\[Errno -?\d+\] (\w)", lambda m: m.group(1).lower(), cause)
    return cause.splitlines()[0][:MAX_ERROR] if cause else type(error).__name__


def ask_hello(client: MongoClient[dict[str, Any]]) -> dict[str, Any]:
    """`hello`, or `isMaster` from a server older than 4.4.2 that lacks it."""
    try:
        return client.admin.command("hello")
    except OperationFailure as error:
        if error.code != COMMAND_NOT_FOUND:
            raise
        return client.admin.command("isMaster")


def _ask(client: MongoClient[dict[str, Any]], command: Mapping[str, int]) -> Reply:
    """The command's reply; a refusal (not authorized, not a replica set member, ...) is a
    reply too, kept for the parser. Network errors and timeouts propagate."""
    try:
        return client.admin.command(dict(command))
    except OperationFailure as error:
        return _doc(error.details) or {"ok": 0, "code": error.code, "errmsg": str(error)}


def _known_failure(client: MongoClient[dict[str, Any]]) -> Exception | None:
    """Why the client's own monitor last failed to reach its server, if the server has not
    answered since. A held link's monitor hears of a crash at once; asking again would only
    wait out the server selection timeout for the same answer."""
    for server in client.topology_description.server_descriptions().values():
        if server.error is not None and not server.is_server_type_known:
            return server.error
    return None


def read_server(client: MongoClient[dict[str, Any]], address: str, timeout: float) -> Reading:
    """Ask one server every command the probe needs, all within `timeout`. Blocking."""
    known = _known_failure(client)
    if isinstance(known, PyMongoError):
        return Reading(address, error=describe_error(known, timeout))
    try:
        with pymongo.timeout(timeout):
            started = time.perf_counter()
            hello = ask_hello(client)
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            commands = ROUTER_COMMANDS if hello.get("msg") == ROUTER_MSG else MONGOD_COMMANDS
            replies = {"hello": hello} | {
                name: _ask(client, command) for name, command in commands.items()
            }
    except PyMongoError as error:
        refused = isinstance(error, OperationFailure) and error.code == AUTH_FAILED
        return Reading(
            address,
            error=describe_error(error, timeout),
            refused_as=_role_without_login(address, timeout) if refused else None,
        )
    return Reading(address, replies, latency_ms=latency_ms)


MONITORED_ROLES = {
    SERVER_TYPE.RSPrimary: Role.PRIMARY,
    SERVER_TYPE.RSSecondary: Role.SECONDARY,
    SERVER_TYPE.RSArbiter: Role.ARBITER,
    SERVER_TYPE.Mongos: Role.ROUTER,
    SERVER_TYPE.Standalone: Role.STANDALONE,
}


def _role_without_login(address: str, timeout: float) -> Role:
    """The role a server gives anyone: `hello` needs no login. Asked only of a server that
    refused ours, on a client of its own (the refusing one has marked the server unknown)."""
    client = pinned_client(address, timeout, {}, heartbeat_ms=60_000)
    try:
        with pymongo.timeout(timeout):
            ask_hello(client)
        described = client.topology_description.server_descriptions().values()
        return next(
            (MONITORED_ROLES.get(d.server_type, Role.UNKNOWN) for d in described), Role.UNKNOWN
        )
    except PyMongoError:
        return Role.UNKNOWN
    finally:
        client.close()


class _LinkWatch(monitoring.ServerHeartbeatListener, monitoring.ServerListener):
    """Calls `on_change` when its server's type changes (primary, secondary, unknown, ...)
    or a heartbeat fails after one succeeded. pymongo calls it from its monitor thread."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._up = False
        self.closing = False
        """Set when the links close: what their clients see while closing is no news."""

    def _tell(self) -> None:
        if not self.closing:
            self._on_change()

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        self._up = True

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        if self._up:
            self._up = False
            self._tell()

    def opened(self, event: monitoring.ServerOpeningEvent) -> None:
        pass

    def description_changed(self, event: monitoring.ServerDescriptionChangedEvent) -> None:
        if event.previous_description.server_type != event.new_description.server_type:
            self._tell()

    def closed(self, event: monitoring.ServerClosedEvent) -> None:
        pass


Login = Mapping[str, Any]
"""pymongo's keyword arguments for TLS and login."""


def login_of(spec: ClusterSpec) -> Login:
    """TLS and login as the spec says, its secrets read now; raises SecretUnavailable.

    >>> from models import parse_spec
    >>> login_of(parse_spec({"cluster_id": "m", "kind": "mongodb",
    ...     "nodes": [{"node_id": "m1", "address": "db1:27017"}],
    ...     "tls": {}, "secrets": {"username": {"env": "PATH"}, "password": {"env": "PATH"}},
    ...     "auth": {"mechanism": "SCRAM-SHA-256"}}))["authMechanism"]
    'SCRAM-SHA-256'
    """
    login: dict[str, Any] = {}
    if spec.tls is not None:
        login["tls"] = True
        if spec.tls.ca_file is not None:
            login["tlsCAFile"] = readable(spec.tls.ca_file, "tls.ca_file")
        if spec.tls.client_cert is not None:
            name = spec.tls.client_cert
            file = spec.secrets[name].file  # the spec holds it to be a file reference
            assert file is not None
            login["tlsCertificateKeyFile"] = readable(file, f"secret {name!r}")
    mechanism = spec.auth.mechanism if spec.auth is not None else None
    if mechanism is AuthMechanism.MONGODB_X509:
        # The server takes the user from the certificate's subject.
        return login | {"authMechanism": mechanism.value}
    credentials = read_secrets(spec, "username", "password")
    if "username" in credentials:
        login |= {
            "username": credentials["username"],
            "password": credentials.get("password", ""),
            "authSource": AUTH_SOURCE,
        }
        if mechanism is not None:
            login["authMechanism"] = mechanism.value
    return login


def pinned_client(
    address: str,
    timeout: float,
    login: Login,
    heartbeat_ms: int,
    listener: _LinkWatch | None = None,
) -> MongoClient[dict[str, Any]]:
    """A client pinned to one server: a replica set client would follow the primary and
    hide the very member it is meant to read."""
    ms = max(int(timeout * 1000), 1)
    return MongoClient(
        address,
        directConnection=True,
        appname="replicante",
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=ms,
        heartbeatFrequencyMS=heartbeat_ms,
        retryReads=False,
        retryWrites=False,
        event_listeners=[listener] if listener is not None else [],
        **login,
    )


def _failure(reading: Reading) -> str | None:
    return reading.failure


class MongoDBAdapter(Adapter):
    kind: ClassVar[Kind] = Kind.MONGODB

    def __init__(self) -> None:
        # While links are held, the probe reads through their clients, and keeps the clients
        # it opens for members outside the spec (shards found through a mongos) until the
        # links are closed: the watch probes every interval, and each new client costs a
        # connection and, with credentials, an authentication.
        self._lock = threading.Lock()
        self._clients: dict[str, MongoClient[dict[str, Any]]] | None = None

    @traced_probe
    async def probe(self, spec: ClusterSpec) -> ClusterView:
        observed_at = datetime.now(UTC)
        try:
            login = login_of(spec)
        except SecretUnavailable as error:
            unread = {n.address: Reading(n.address, error=str(error)) for n in spec.nodes}
            return cluster_view(spec, unread, observed_at)
        addresses = [n.address for n in spec.nodes]
        readings = await self._read_all(spec, addresses, login)
        # A mongos among the spec's nodes: its shards' and config servers' members next.
        dialled = {_key(a) for a in readings}
        routes = cluster_routes(readings.values())
        members = list(
            dict.fromkeys(h for route in routes for h in route.hosts if _key(h) not in dialled)
        )
        if members:
            readings |= await self._read_all(spec, members, login)
        return cluster_view(spec, readings, observed_at)

    async def _read_all(
        self, spec: ClusterSpec, addresses: Sequence[str], login: Login
    ) -> dict[str, Reading]:
        # A member found through a mongos is named by its address, as in the view.
        names = {_key(n.address): n.node_id for n in spec.nodes}
        found = await asyncio.gather(
            *(
                probe_node(
                    spec,
                    names.get(_key(a), a),
                    partial(self._read, a, spec.probe.timeout_s, login),
                    _failure,
                )
                for a in addresses
            )
        )
        return dict(zip(addresses, found, strict=True))

    async def _read(self, address: str, timeout: float, login: Login) -> Reading:
        with self._lock:
            cached = self._clients
            client = cached.get(address) if cached is not None else None
            owned = client is None and cached is None
            if client is None:
                client = pinned_client(address, timeout, login, PROBE_HEARTBEAT_MS)
                if cached is not None:
                    cached[address] = client
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(read_server, client, address, timeout), timeout + READ_GRACE_S
            )
        except TimeoutError:
            return Reading(address, error=f"timeout after {timeout}s")
        finally:
            if owned:
                # Closing may wait on a dead server; the probe's answer need not.
                stop_all([client.close], 0.0)

    @contextmanager
    def hold_links(self, spec: ClusterSpec, on_change: Callable[[], None]) -> Iterator[None]:
        try:
            login = login_of(spec)
        except SecretUnavailable:
            # The probe reports the missing secret on every node; links could not log in.
            yield
            return
        watches = {node.address: _LinkWatch(on_change) for node in spec.nodes}
        clients = {
            address: pinned_client(address, spec.probe.timeout_s, login, LINK_HEARTBEAT_MS, watch)
            for address, watch in watches.items()
        }
        with self._lock:
            self._clients = dict(clients)
        try:
            yield
        finally:
            for watch in watches.values():
                watch.closing = True
            with self._lock:
                held, self._clients = self._clients or {}, None
            stop_all([c.close for c in held.values()], LINK_STOP_WAIT_S)
