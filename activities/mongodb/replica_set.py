"""One replica set from its members' readings: whose `replSetGetStatus` and config to
believe, and each member's own state and role."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from activities.mongodb.replies import (
    ARBITER,
    DOWN,
    INITIAL_STATES,
    PRIMARY,
    REMOVED,
    ROUTER_MSG,
    SECONDARY,
    STATE_ROLES,
    Reading,
    Reply,
    _doc,
    _int,
    _number,
    _ok,
    _str,
    _votes,
    majorities,
    replication_lag,
)
from models import Role


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
    delay_s: int = 0
    """`secondaryDelaySecs` (5.0+) or `slaveDelay` (before): how far behind the primary the
    member is made to stay."""
    newly_added: bool = False
    """Added by a reconfig and not through initial sync: the server counts it as neither a
    voter nor electable (MemberConfig::isVoter, getPriority), though replSetGetConfig shows
    its configured votes and priority."""
    heartbeat_message: str | None = None

    @property
    def voter(self) -> bool:
        """Votes in elections and counts towards the write majority, as the server counts."""
        return self.votes > 0 and not self.newly_added


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
    voting_members_count: int = 0
    """Voters as the server counts them (`votingMembersCount`), newly added members not."""
    lag: Mapping[str, int] = field(default_factory=dict)
    """Seconds each data-bearing member is behind, beyond its configured delay."""
    uncounted_voters: int = 0
    """Voters by the config that the server does not count and that could not be named
    (see `_mark_newly_added`): a quorum reckoned from the members must not count them."""


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
                delay_s=_delay(conf),
                heartbeat_message=_str(m.get("lastHeartbeatMessage")) or None,
            )
        )
    return members


def _delay(member_config: Reply) -> int:
    delay = _int(member_config.get("secondaryDelaySecs"))
    if delay is None:
        delay = _int(member_config.get("slaveDelay"))
    return max(delay or 0, 0)


def _mark_newly_added(members: list[Member], server_voters: int | None) -> list[Member]:
    """The members the server does not count as voters although their config gives them a
    vote: replSetGetConfig leaves `newlyAdded` out (MemberConfig::toBSON), so the only sign
    is a `votingMembersCount` below the config's voters. The server clears the flag once the
    member is through initial sync, so the ones it still holds are those not yet past it
    (STARTUP, STARTUP2, or not yet heard from); when they do not account for the difference
    exactly, none is named, and `uncounted_voters` keeps the difference."""
    if server_voters is None:
        return members
    excess = sum(1 for m in members if m.votes > 0) - server_voters
    syncing = [m for m in members if m.votes > 0 and not m.arbiter and m.state in INITIAL_STATES]
    if excess <= 0 or len(syncing) != excess:
        return members
    names = {m.name for m in syncing}
    return [replace(m, newly_added=True) if m.name in names else m for m in members]


def _members_from_config(config: Reply) -> list[Member]:
    return [
        Member(
            name=name,
            votes=_votes(m),
            arbiter=bool(m.get("arbiterOnly")),
            priority=_number(m.get("priority")),
            hidden=bool(m.get("hidden")),
            delay_s=_delay(m),
        )
        for m in map(_doc, config.get("members") or ())
        if (name := _str(m.get("host")))
    ]


def _members_from_hellos(readings: Sequence[Reading]) -> list[Member]:
    """What a member's hello lists: electable `hosts`, priority-0 `passives` and `arbiters`;
    hidden and delayed members are listed nowhere but in the config (fillHelloForReplSet)."""
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
    server_voters = _int(status.get("votingMembersCount"))
    members = _mark_newly_added(members, server_voters)
    voters = [m for m in members if m.voter]
    voting = len(voters) if server_voters is None else server_voters
    writable = _int(status.get("writableVotingMembersCount"))
    if writable is None:
        writable = sum(1 for m in voters if not m.arbiter)
    # _calculateMajorities in repl_set_config.cpp; the server's own figures where it gave
    # them (4.2.1 added writeMajorityCount, 4.4 the member counts).
    majority, write_majority = majorities(voting, writable)
    delays = {m.name: m.delay_s for m in members}
    return ReplicaSet(
        name=set_name,
        members=tuple(members),
        authoritative=authoritative,
        status=status,
        majority_vote_count=_int(status.get("majorityVoteCount")) or majority,
        write_majority_count=_int(status.get("writeMajorityCount")) or write_majority,
        voting_members_count=voting,
        # A delayed member's designed delay is not lag: what counts is how far it is past it.
        lag={
            name: max(lag - delays.get(name, 0), 0)
            for name, lag in replication_lag([_doc(m) for m in status.get("members") or ()]).items()
        },
        uncounted_voters=max(len(voters) - voting, 0),
    )
