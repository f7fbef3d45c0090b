"""The ClusterView of a replica set or a sharded cluster, from every server's readings
(`cluster_view`, `node_status`). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from activities.mongodb.replica_set import (
    Member,
    ReplicaSet,
    _own_role,
    _own_state,
    _state_role,
    replica_set,
)
from activities.mongodb.replies import (
    ACKNOWLEDGING_STATES,
    CONFIG_SHARD,
    PRIMARY,
    ROUTER_MSG,
    STATE_NAMES,
    VOTING_STATES,
    Reading,
    Reply,
    _date_seconds,
    _doc,
    _error_text,
    _int,
    _key,
    _member_optime,
    _number,
    _ok,
    _str,
    cluster_routes,
    config_shard,
    optime_seconds,
    shard_routes,
)
from models import ClusterSpec, ClusterView, Kind, NodeStatus, Role, ShardStatus
from models.findings.mongodb import set_fact
from models.view import FactValue


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
    voting = [m for m in rs.members if m.voter]
    voting_alive = max(
        sum(1 for m in voting if healths[m.name] == 1 and states[m.name] in VOTING_STATES)
        - rs.uncounted_voters,
        0,
    )
    data_voting = sorted((m for m in voting if not m.arbiter), key=lambda m: -(m.priority or 0.0))
    replicas = tuple(directory.node_id(m.name) for m in data_voting)
    # Who can acknowledge a w:majority write now: the voting data-bearing members that apply
    # writes as they come. A delayed member applies them only after its delay, so a write
    # majority that needs it waits that long.
    in_sync = tuple(
        directory.node_id(m.name)
        for m in data_voting
        if healths[m.name] == 1 and states[m.name] in ACKNOWLEDGING_STATES and m.delay_s == 0
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
        set_fact(shard_id, "voting_configured"): rs.voting_members_count,
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
        voting_configured=rs.voting_members_count,
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
        if seen.delay_s:
            facts["secondary_delay_s"] = seen.delay_s
        if seen.newly_added:
            facts["newly_added"] = True
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
    if server_status and not _ok(server_status):
        # A server that wants a login the spec does not give may still answer the rest
        # (FerretDB has no replSetGetStatus to refuse): this is then the only sign of it.
        facts["server_status_error"] = _error_text(server_status)
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


def _balancer(router: Reading) -> dict[str, FactValue]:
    """balancerStatus as the mongos answered it: `mode` ("full" or "off") and whether a
    round, which migrates chunks, is under way (a round begun goes on after the balancer is
    turned off, so `inBalancerRound` is what says a migration may be running)."""
    status = router.reply("balancerStatus")
    in_round = status.get("inBalancerRound")
    if not _ok(status) or not isinstance(in_round, bool):
        return {"balancer_error": _error_text(status) if status else "not asked"}
    facts: dict[str, FactValue] = {"balancer_in_round": in_round}
    if (mode := _str(status.get("mode"))) is not None:
        facts["balancer_mode"] = mode
    return facts


def _sharded_view(
    spec: ClusterSpec,
    readings: Mapping[str, Reading],
    routers: Sequence[Reading],
    directory: _Directory,
    observed_at: datetime,
) -> ClusterView:
    routes = cluster_routes(routers)
    router = next((r for r in routers if shard_routes(r)), routers[0])
    holds_data = config_shard(router)
    facts: dict[str, FactValue] = {
        "topology": "sharded",
        "shards": sum(1 for r in routes if r.shard_id != CONFIG_SHARD or holds_data),
    }
    if holds_data:
        facts["config_shard"] = True
    if not routes:
        facts["routing_error"] = _error_text(router.reply("listShards"))
    facts |= _balancer(router)
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
