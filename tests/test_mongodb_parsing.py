"""The MongoDB adapter on replies reconstructed from public sources for MongoDB 4.4 to 8.0
(tests/replies/mongodb/, where the README says where each shape comes from). None was
captured from a server: these tests prove the parser against those shapes, and
tests/test_mongodb_live.py proves the adapter against a real replica set.

The probe tests at the end serve the same replies over the wire protocol from local
stand-in servers (tests/mongodb_wire.py), so pymongo, timeouts and error handling run end
to end without a MongoDB.
"""

from __future__ import annotations

import asyncio
import doctest
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
from bson import json_util
from temporalio.testing import ActivityEnvironment

import activities.mongodb.connection
import activities.mongodb.replies
from activities.mongodb.adapter import MongoDBAdapter
from activities.mongodb.links import LINK_STOP_WAIT_S
from activities.mongodb.replica_set import replica_set
from activities.mongodb.replies import (
    Reading,
    parse_connection_string,
    replication_lag,
    shard_routes,
)
from activities.mongodb.view import cluster_view
from activities.monitor import WatchActivities
from models import (
    ClusterSpec,
    ClusterView,
    Role,
    WatchRequest,
    evaluate,
    parse_spec,
    watch_key,
)
from store import SQLiteEventStore
from tests.mongodb_wire import ReplayServer, replaying

REPLIES = Path(__file__).parent / "replies" / "mongodb"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WIRE_VERSIONS = {"4.4": 9, "5.0": 13, "6.0": 17, "7.0": 21, "8.0": 25}
PSS80 = {"m1": "8.0/pss/primary.json", "m2": "8.0/pss/secondary-a.json"} | {
    "m3": "8.0/pss/secondary-b.json"
}
SHARDED = "8.0/sharded"


def replies(path: str) -> dict[str, Any]:
    """One server's replies by command name, with the types pymongo hands over."""
    return cast(dict[str, Any], json_util.loads((REPLIES / path).read_text()))


def reading(path: str | None, address: str) -> Reading:
    """What `read_server` makes of a server: its hello is the isMaster reply where the
    server predates `hello`. No file: the server refused the connection."""
    if path is None:
        return Reading(address, error="connection refused")
    found = replies(path)
    if "hello" not in found:
        found["hello"] = found["isMaster"]
    return Reading(address, found, latency_ms=1.5)


def host(name: str, port: int = 27017) -> str:
    return f"{name}.example.net:{port}"


def spec_for(addresses: Mapping[str, str], **expect: int) -> ClusterSpec:
    return parse_spec(
        {
            "cluster_id": "c1",
            "kind": "mongodb",
            "nodes": [{"node_id": n, "address": a} for n, a in addresses.items()],
            "expect": expect,
        }
    )


def view_of(
    servers: Mapping[str, str | None],
    *,
    addresses: Mapping[str, str] | None = None,
    found: Mapping[str, str | None] | None = None,
    **expect: int,
) -> tuple[ClusterSpec, ClusterView]:
    """The view of spec nodes `servers` (node id -> reply file; None: refused) dialled at
    their host (or `addresses`), plus servers found through a mongos (address -> file)."""
    dial = {n: (addresses or {}).get(n, host(n)) for n in servers}
    spec = spec_for(dial, **expect)
    readings = {dial[n]: reading(path, dial[n]) for n, path in servers.items()}
    readings |= {address: reading(path, address) for address, path in (found or {}).items()}
    return spec, cluster_view(spec, readings, T0)


def codes(spec: ClusterSpec, view: ClusterView) -> list[tuple[str, str]]:
    return sorted((f.code, f.subject) for f in evaluate(spec, view))


@pytest.mark.parametrize(
    "module",
    [activities.mongodb.replies, activities.mongodb.connection],
    ids=lambda m: m.__name__,
)
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


# --- the reply files ----------------------------------------------------------------------


def reply_files() -> list[Path]:
    return sorted(REPLIES.rglob("*.json"))


@pytest.mark.parametrize("path", reply_files(), ids=lambda p: str(p.relative_to(REPLIES)))
def test_reply_file_is_extended_json_of_one_server(path: Path) -> None:
    found = replies(str(path.relative_to(REPLIES)))
    assert set(found) <= {
        "hello",
        "isMaster",
        "buildInfo",
        "replSetGetStatus",
        "replSetGetConfig",
        "serverStatus",
        "listShards",
        "getShardMap",
        "balancerStatus",
    }
    version = path.relative_to(REPLIES).parts[0]
    if version in WIRE_VERSIONS:
        hello = found.get("hello") or found["isMaster"]
        assert hello["maxWireVersion"] == WIRE_VERSIONS[version]
        assert found["buildInfo"]["version"].startswith(version + ".")


def test_reply_shapes_differ_as_the_versions_do() -> None:
    """The differences the files cover, so a regenerated set cannot lose them unnoticed."""
    v44, v50 = replies("4.4/psa/primary.json"), replies("5.0/pss/primary.json")
    v80 = replies("8.0/pss/primary.json")
    # 4.4.0-4.4.1 know no `hello`: isMaster answers, with `ismaster`; 5.0 onwards `hello`.
    assert "hello" not in v44 and v44["isMaster"]["ismaster"] is True
    assert v50["hello"]["isWritablePrimary"] is True and "ismaster" not in v50["hello"]
    # 5.0 renamed slaveDelay to secondaryDelaySecs and dropped getLastErrorDefaults.
    assert "slaveDelay" in v44["replSetGetConfig"]["config"]["members"][0]
    assert "secondaryDelaySecs" in v50["replSetGetConfig"]["config"]["members"][0]
    assert "getLastErrorDefaults" in v44["replSetGetConfig"]["config"]["settings"]
    assert "getLastErrorDefaults" not in v50["replSetGetConfig"]["config"]["settings"]
    # 8.0 added the written optimes; every version here has the 4.4-era counts.
    assert "writtenOpTime" in v80["replSetGetStatus"]["optimes"]
    assert "optimeWritten" in v80["replSetGetStatus"]["members"][1]
    assert "writtenOpTime" not in v50["replSetGetStatus"]["optimes"]
    for reply in (v44, v50, v80):
        status = reply["replSetGetStatus"]
        assert {"writeMajorityCount", "votingMembersCount", "lastStableRecoveryTimestamp"} <= set(
            status
        )
        assert "electionCandidateMetrics" in status
    assert "writeMajorityCount" not in replies("partial/no-counts.json")["replSetGetStatus"]
    # A member nobody reaches: health 0 and the stateStr the server gives it.
    down = replies("6.0/primary-down/secondary-a.json")["replSetGetStatus"]["members"][0]
    assert (down["health"], down["state"], down["stateStr"]) == (0.0, 8, "(not reachable/healthy)")


def test_the_files_cover_every_member_state() -> None:
    seen: set[str | None] = set()
    for path in reply_files():
        status = replies(str(path.relative_to(REPLIES))).get("replSetGetStatus", {})
        seen |= {m.get("stateStr") for m in status.get("members", []) if isinstance(m, dict)}
        if "stateStr" in status:  # a removed member's own error reply
            seen.add(status["stateStr"])
    assert {
        "STARTUP",
        "PRIMARY",
        "SECONDARY",
        "RECOVERING",
        "STARTUP2",
        "UNKNOWN",
        "ARBITER",
        "(not reachable/healthy)",  # DOWN
        "ROLLBACK",
        "REMOVED",
    } <= seen


# --- small parsers ------------------------------------------------------------------------


def test_connection_strings() -> None:
    assert parse_connection_string("configRepl/cfg1.example.net:27019") == (
        "configRepl",
        ["cfg1.example.net:27019"],
    )
    assert parse_connection_string("a:1, b:2,") == (None, ["a:1", "b:2"])


def test_lag_is_seconds_behind_the_primary_as_the_shell_reckons_it() -> None:
    status = replies("4.4/psa/primary.json")["replSetGetStatus"]
    assert replication_lag(status["members"]) == {
        host("m1"): 0,
        host("m2"): 42,
        host("m4"): 308,  # in ROLLBACK, and the shell prints it too
    }


def test_lag_without_a_primary_is_behind_the_freshest_member() -> None:
    status = replies("6.0/primary-down/secondary-a.json")["replSetGetStatus"]
    # m1 is DOWN (no figure, not "50 years"), m4 never heard from (health -1).
    assert replication_lag(status["members"]) == {host("m2"): 0, host("m3"): 3}


# --- replica sets, version by version -----------------------------------------------------


def test_4_4_primary_secondary_arbiter_and_a_member_in_rollback() -> None:
    spec, view = view_of(
        {
            "m1": "4.4/psa/primary.json",
            "m2": "4.4/psa/secondary.json",
            "m3": "4.4/psa/arbiter.json",
            "m4": "4.4/psa/rollback.json",
        },
        max_lag=10,
    )
    assert [(n.node_id, n.reachable, n.role, n.version) for n in view.nodes] == [
        ("m1", True, Role.PRIMARY, "4.4.1"),
        ("m2", True, Role.SECONDARY, "4.4.1"),
        ("m3", True, Role.ARBITER, "4.4.1"),
        ("m4", True, Role.LOOKING, "4.4.1"),
    ]
    assert (view.leader, view.quorum, view.voting_alive, view.voting_configured) == (
        "m1",
        True,
        3,
        3,
    )
    assert [(s.shard_id, s.node_id, s.role, s.lag) for s in view.shards] == [
        ("rs44", "m1", Role.PRIMARY, 0),
        ("rs44", "m2", Role.SECONDARY, 42),
        ("rs44", "m3", Role.ARBITER, None),
        ("rs44", "m4", Role.LOOKING, 308),
    ]
    primary = view.shards[0]
    assert primary.commit_offset == 1600955598  # the optime's seconds
    assert view.shards[2].commit_offset is None  # an arbiter holds no data
    # Arbiters and non-voting members do not count toward w:majority.
    assert (primary.replicas, primary.in_sync, primary.min_in_sync) == (
        ("m1", "m2"),
        ("m1", "m2"),
        2,
    )
    assert view.facts["rs44.write_majority_count"] == 2
    assert view.facts["rs44.majority_commit_lag_s"] == 42
    assert view.facts["set_name"] == "rs44"
    m2 = view.nodes[1]
    assert m2.facts["sync_source"] == host("m1")
    assert m2.facts["state"] == "SECONDARY"
    assert m2.facts["optime_date"] == "2020-09-24T13:52:36+00:00"
    assert m2.uptime_s == 86000.0 and m2.latency_ms == 1.5
    assert view.nodes[3].facts["votes"] == 0
    assert codes(spec, view) == [("node_not_serving", "m4"), ("secondary_lagging", "m2")]


def test_4_4_secondary_down_puts_majority_writes_at_risk_though_the_arbiter_keeps_quorum() -> None:
    spec, view = view_of(
        {
            "m1": "4.4/psa-secondary-down/primary.json",
            "m2": None,
            "m3": "4.4/psa-secondary-down/arbiter.json",
        }
    )
    assert (view.leader, view.quorum, view.voting_alive, view.voting_configured) == (
        "m1",
        True,
        2,
        3,
    )
    m2 = view.nodes[1]
    assert (m2.reachable, m2.error, m2.role) == (False, "connection refused", Role.UNKNOWN)
    assert m2.facts["state_seen_by_set"] == "DOWN"
    assert "Connection refused" in str(m2.facts["last_heartbeat_message"])
    assert codes(spec, view) == [("majority_writes_at_risk", "c1"), ("node_down", "m2")]
    (risk,) = [f for f in evaluate(spec, view) if f.code == "majority_writes_at_risk"]
    assert risk.message == (
        "replica set rs44: 1 of 2 data-bearing voting members can acknowledge writes,"
        " w:majority needs 2 (arbiters do not count); down or not serving: m2"
    )


def test_4_4_set_as_seen_from_its_arbiter_alone() -> None:
    # Only the arbiter answers: its status still knows the set, the primary included.
    spec, view = view_of({"m1": None, "m2": None, "m3": "4.4/psa-secondary-down/arbiter.json"})
    assert view.leader == "m1"  # the set has a primary; the probe cannot reach it
    assert view.quorum is True
    assert [f for f in codes(spec, view) if f[0] != "node_down"] == [
        ("majority_writes_at_risk", "c1")
    ]


def test_5_0_recovering_and_initial_sync_members_answer_but_do_not_serve() -> None:
    spec, view = view_of(
        {
            "m1": "5.0/pss/primary.json",
            "m2": "5.0/pss/secondary.json",
            "m3": "5.0/pss/recovering.json",
            "m4": "5.0/pss/startup2.json",
        },
        max_lag=60,
    )
    assert [(n.node_id, n.role, n.facts["state"]) for n in view.nodes] == [
        ("m1", Role.PRIMARY, "PRIMARY"),
        ("m2", Role.SECONDARY, "SECONDARY"),
        ("m3", Role.LOOKING, "RECOVERING"),
        ("m4", Role.LOOKING, "STARTUP2"),
    ]
    # RECOVERING members vote; the new member was added with votes 0.
    assert (view.quorum, view.voting_alive, view.voting_configured) == (True, 3, 3)
    primary = view.shards[0]
    assert (primary.replicas, primary.in_sync, primary.min_in_sync) == (
        ("m1", "m2", "m3"),
        ("m1", "m2"),
        2,
    )
    assert view.shards[3].lag is None  # in initial sync: no optime yet
    assert "optime_date" not in view.nodes[3].facts
    # The recovering member lags 94 s, but it is not a SECONDARY: not "lagging", not serving.
    assert codes(spec, view) == [("node_not_serving", "m3"), ("node_not_serving", "m4")]


def test_6_0_primary_gone_and_no_election_yet() -> None:
    spec, view = view_of(
        {
            "m1": None,
            "m2": "6.0/primary-down/secondary-a.json",
            "m3": "6.0/primary-down/secondary-b.json",
        },
        max_lag=1,
    )
    assert (view.leader, view.quorum, view.voting_alive, view.voting_configured) == (
        None,
        True,
        2,
        3,
    )
    # m4 was just added and not yet heard from (health -1): UNKNOWN, no vote, not a spec node.
    assert [(s.node_id, s.role, s.lag) for s in view.shards] == [
        ("m1", Role.UNKNOWN, None),
        ("m2", Role.SECONDARY, 0),
        ("m3", Role.SECONDARY, 3),
        (host("m4"), Role.UNKNOWN, None),
    ]
    assert codes(spec, view) == [
        ("no_primary", "c1"),
        ("node_down", "m1"),
        ("secondary_lagging", "m3"),
    ]
    (lagging,) = [f for f in evaluate(spec, view) if f.code == "secondary_lagging"]
    assert lagging.message == "m3 is 3 s behind the freshest member of rs60 (max_lag 1 s)"


def test_7_0_majority_gone_one_member_down_one_removed() -> None:
    spec, view = view_of(
        {
            "m1": None,
            "m2": "7.0/majority-down/removed.json",
            "m3": "7.0/majority-down/secondary.json",
        }
    )
    assert (view.leader, view.quorum, view.voting_alive, view.voting_configured) == (
        None,
        False,
        1,
        3,
    )
    m2 = view.nodes[1]
    # m2 left the config in a reconfig m3 has not learned: it answers, serves nothing, and
    # m3's config (the one whose status is used) still lists it.
    assert (m2.reachable, m2.role, m2.facts["state"]) == (True, Role.LOOKING, "REMOVED")
    assert "in_set_config" not in m2.facts
    assert str(m2.facts["status_error"]).startswith("InvalidReplicaSetConfig")
    assert view.shards[1].role is Role.LOOKING
    # Quorum lost says it all: no majority_writes_at_risk beside it.
    assert codes(spec, view) == [
        ("node_down", "m1"),
        ("node_not_serving", "m2"),
        ("quorum_lost", "c1"),
    ]


def test_8_0_healthy_set_with_a_member_still_starting() -> None:
    spec, view = view_of(PSS80, max_lag=2)
    assert (view.leader, view.quorum, view.voting_alive, view.voting_configured) == (
        "m1",
        True,
        3,
        3,
    )
    assert [(s.node_id, s.role, s.lag) for s in view.shards] == [
        ("m1", Role.PRIMARY, 0),
        ("m2", Role.SECONDARY, 0),
        ("m3", Role.SECONDARY, 3),
        (host("m4"), Role.LOOKING, None),  # STARTUP as the primary sees it: no config yet
    ]
    assert view.facts["rs80.term"] == 3
    assert view.nodes[2].facts["sync_source"] == host("m2")  # chained replication
    assert codes(spec, view) == [("secondary_lagging", "m3")]
    assert codes(*view_of(PSS80)) == []  # no max_lag in the spec: no lag finding


def test_8_0_a_spec_node_the_set_does_not_contain_is_reported_as_such() -> None:
    spec, view = view_of(PSS80 | {"m5": "8.0/pss/removed.json"})
    m5 = view.nodes[3]
    assert (m5.reachable, m5.role, m5.facts["in_set_config"]) == (True, Role.LOOKING, False)
    assert [s.node_id for s in view.shards] == ["m1", "m2", "m3", host("m4")]
    assert codes(spec, view) == [("node_not_serving", "m5"), ("not_in_replica_set", "m5")]


def test_members_are_matched_to_spec_nodes_by_hello_me_and_case_insensitive_host() -> None:
    # The spec dials an IP and a hostname in capitals; the set names its members otherwise.
    _, view = view_of(PSS80, addresses={"m1": "10.0.0.1:27017", "m2": "M2.Example.NET:27017"})
    assert [s.node_id for s in view.shards][:3] == ["m1", "m2", "m3"]
    assert view.leader == "m1"
    assert view.nodes[0].address == "10.0.0.1:27017"


@pytest.mark.parametrize("first", ["m2", "m3"])
def test_the_primarys_status_is_preferred_whatever_the_spec_order(first: str) -> None:
    order = {first: PSS80[first]} | PSS80
    _, view = view_of(order)
    # Only the primary's status carries electionCandidateMetrics; its view of lag is used.
    assert view.leader == "m1" and view.shards[2].lag == 3
    chosen = replica_set([reading(PSS80[n], host(n)) for n in order]).status
    assert chosen["myState"] == 1


def test_a_deposed_primary_loses_to_the_member_that_saw_the_new_term() -> None:
    old = reading("8.0/pss/primary.json", host("m1"))
    newer = reading("8.0/pss/secondary-a.json", host("m2"))
    status = dict(newer.replies["replSetGetStatus"])
    status["term"] = 4  # m2 has heard of an election m1 has not
    newer = Reading(newer.address, {**newer.replies, "replSetGetStatus": status})
    assert replica_set([old, newer]).status["term"] == 4


# --- sharded clusters ---------------------------------------------------------------------

SHARD_MEMBERS = {
    host("s1a", 27018): f"{SHARDED}/shard01-a.json",
    host("s1b", 27018): f"{SHARDED}/shard01-b.json",
    host("s1c", 27018): f"{SHARDED}/shard01-c.json",
    host("s2a", 27018): None,
    host("s2b", 27018): f"{SHARDED}/shard02-b.json",
    host("cfg1", 27019): f"{SHARDED}/config-a.json",
}


def test_mongos_routes_to_its_shards_and_config_servers() -> None:
    router = reading(f"{SHARDED}/mongos.json", host("mongos1"))
    assert [(r.shard_id, r.set_name, r.hosts) for r in shard_routes(router)] == [
        ("shard01", "shard01", tuple(host(f"s1{x}", 27018) for x in "abc")),
        ("shard02", "shard02", (host("s2a", 27018), host("s2b", 27018))),
        ("config", "configRepl", (host("cfg1", 27019),)),
    ]
    # Where getShardMap is refused, serverStatus names the config servers.
    refused = {**router.replies, "getShardMap": {"ok": 0.0, "codeName": "Unauthorized"}}
    assert shard_routes(Reading(router.address, refused))[-1].hosts == (host("cfg1", 27019),)


def test_sharded_cluster_with_one_shard_primary_down() -> None:
    spec, view = view_of(
        {"router": f"{SHARDED}/mongos.json"},
        addresses={"router": host("mongos1")},
        found=SHARD_MEMBERS,
    )
    assert (view.leader, view.quorum, view.facts["topology"], view.facts["shards"]) == (
        None,
        None,
        "sharded",
        2,
    )
    assert [(n.node_id, n.reachable, n.role) for n in view.nodes] == [
        ("router", True, Role.ROUTER),
        (host("s1a", 27018), True, Role.PRIMARY),
        (host("s1b", 27018), True, Role.SECONDARY),
        (host("s1c", 27018), True, Role.SECONDARY),
        (host("s2a", 27018), False, Role.UNKNOWN),
        (host("s2b", 27018), True, Role.SECONDARY),
        (host("cfg1", 27019), True, Role.PRIMARY),
    ]
    assert [(s.shard_id, s.node_id, s.role) for s in view.shards] == [
        ("shard01", host("s1a", 27018), Role.PRIMARY),
        ("shard01", host("s1b", 27018), Role.SECONDARY),
        ("shard01", host("s1c", 27018), Role.SECONDARY),
        ("shard02", host("s2a", 27018), Role.UNKNOWN),
        ("shard02", host("s2b", 27018), Role.SECONDARY),
        ("shard02", host("s2c", 27018), Role.ARBITER),  # not dialled: the set names it
        ("config", host("cfg1", 27019), Role.PRIMARY),
    ]
    assert view.facts["shard01.primary"] == host("s1a", 27018)
    assert view.facts["shard02.quorum"] is True and "shard02.primary" not in view.facts
    assert view.facts["config.set_name"] == "configRepl"
    assert codes(spec, view) == [
        ("majority_writes_at_risk", "shard02"),
        ("node_down", host("s2a", 27018)),
        ("shard_no_primary", "shard02"),
    ]
    messages = {f.code: f.message for f in evaluate(spec, view)}
    assert messages["shard_no_primary"] == (
        "shard shard02: a majority of members is alive but none is primary"
    )


def test_sharded_cluster_whose_shard_lost_its_majority() -> None:
    found = dict(SHARD_MEMBERS)
    found[host("s2b", 27018)] = None
    found[host("cfg1", 27019)] = None
    spec, view = view_of(
        {"router": f"{SHARDED}/mongos.json"}, addresses={"router": host("mongos1")}, found=found
    )
    # Nobody in shard02 or the config set answers: membership is guessed from the routes.
    assert view.facts["shard02.quorum"] is False
    assert ("shard_quorum_lost", "shard02") in codes(spec, view)
    assert ("shard_quorum_lost", "config") in codes(spec, view)
    assert ("no_primary", "c1") not in codes(spec, view)


def test_a_mongos_that_may_not_list_shards_says_why() -> None:
    mongos = replies(f"{SHARDED}/mongos.json")
    mongos["listShards"] = {
        "ok": 0.0,
        "errmsg": "not authorized",
        "code": 13,
        "codeName": "Unauthorized",
    }
    spec = spec_for({"router": host("mongos1")})
    view = cluster_view(spec, {host("mongos1"): Reading(host("mongos1"), mongos)}, T0)
    assert view.facts["routing_error"] == "Unauthorized: not authorized"
    assert view.shards == () and view.nodes[0].role is Role.ROUTER


# --- partial and garbage replies ----------------------------------------------------------


def test_uninitialized_member_answers_and_serves_nothing() -> None:
    spec, view = view_of({"m1": "partial/uninitialized.json"})
    (node,) = view.nodes
    assert (node.reachable, node.role) == (True, Role.LOOKING)
    assert node.facts["info"] == "Does not have a valid replica set config"
    assert node.facts["status_error"] == "NotYetInitialized: no replset config has been received"
    assert view.shards == ()
    assert codes(spec, view) == [("node_not_serving", "m1"), ("quorum_lost", "c1")]


def test_standalone_server() -> None:
    spec, view = view_of({"m1": "partial/standalone.json"})
    assert (view.nodes[0].role, view.leader, view.quorum, view.facts) == (
        Role.STANDALONE,
        "m1",
        None,
        {"topology": "standalone"},
    )
    assert codes(spec, view) == []


def test_refused_status_leaves_the_role_from_hello_and_an_unknown_quorum() -> None:
    # Auth is on and the probe has no credentials: hello answers anyone, the rest is refused.
    spec, view = view_of({"m2": "partial/unauthorized.json"})
    (node,) = view.nodes
    assert (node.reachable, node.role, node.version) == (True, Role.SECONDARY, "7.0.15")
    # The set's members come from the hello's host list; their health is unknown, so
    # neither quorum nor the write majority can be judged.
    assert view.quorum is None
    assert [s.node_id for s in view.shards] == [host("m1"), "m2", host("m3")]
    assert codes(spec, view) == [("status_not_authorized", "m2")]


def test_status_without_the_counts_gets_them_from_the_config() -> None:
    _, view = view_of({"m1": "partial/no-counts.json"})
    assert view.facts["rs70.write_majority_count"] == 2
    assert view.facts["rs70.majority_vote_count"] == 2
    assert view.shards[0].replicas == ("m1", host("m2"))  # the arbiter does not count


def test_mangled_replies_do_not_break_the_parser() -> None:
    _, view = view_of({"m1": "partial/mangled.json"})
    (node,) = view.nodes
    assert (node.reachable, node.role, node.version, node.uptime_s) == (
        True,
        Role.PRIMARY,
        "7.0.15",  # buildInfo.version is a number here: serverStatus says
        86000.0,  # serverStatus.uptime is not: the status' own entry says
    )
    assert "connections" not in node.facts
    # The nameless member is dropped; the one with a string for health is not counted alive.
    assert [s.node_id for s in view.shards] == ["m1", host("m2")]
    assert view.shards[1].lag is None


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("garbage-hello", "unexpected hello reply: 'HTTP/1.1 400 Bad Request'"),
        ("hello-refused", "hello refused: AuthenticationFailed: Authentication failed."),
    ],
)
def test_unusable_hello_makes_the_server_unreachable(name: str, error: str) -> None:
    spec, view = view_of({"m1": f"partial/{name}.json"})
    assert (view.nodes[0].reachable, view.nodes[0].error) == (False, error)
    assert codes(spec, view) == [("node_down", "m1"), ("quorum_lost", "c1")]


def test_every_server_down() -> None:
    spec, view = view_of({"m1": None, "m2": None, "m3": None})
    assert (view.quorum, view.voting_alive, view.voting_configured, view.shards) == (
        False,
        0,
        3,
        (),
    )
    assert [c for c, _ in codes(spec, view)] == ["node_down"] * 3 + ["quorum_lost"]


# --- the probe, on replayed replies -------------------------------------------------------


def closed_port_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def probe_spec(addresses: Mapping[str, str], timeout_s: float = 1.0, **extra: Any) -> ClusterSpec:
    return parse_spec(
        {
            "cluster_id": "replayed",
            "kind": "mongodb",
            "nodes": [{"node_id": n, "address": a} for n, a in addresses.items()],
            "probe": {"timeout_s": timeout_s},
            **extra,
        }
    )


@contextmanager
def servers(files: Mapping[str, str]) -> Iterator[dict[str, ReplayServer]]:
    with ExitStack() as stack:
        yield {n: stack.enter_context(replaying(replies(f))) for n, f in files.items()}


async def test_probe_reads_a_replica_set_over_the_wire() -> None:
    with servers(PSS80) as running:
        spec = probe_spec({n: s.address for n, s in running.items()})
        view = await MongoDBAdapter().probe(spec)
        asked = running["m1"].commands
    # The servers are dialled at 127.0.0.1; their hello `me` ties them to the set's names.
    assert [(n.node_id, n.reachable, n.role) for n in view.nodes] == [
        ("m1", True, Role.PRIMARY),
        ("m2", True, Role.SECONDARY),
        ("m3", True, Role.SECONDARY),
    ]
    assert view.leader == "m1" and view.shards[2].lag == 3
    assert all(n.latency_ms is not None and n.latency_ms > 0 for n in view.nodes)
    for command in ("hello", "buildInfo", "replSetGetStatus", "replSetGetConfig", "serverStatus"):
        assert command in asked


async def test_probe_falls_back_to_ismaster_on_a_server_without_hello() -> None:
    with servers({"m1": "4.4/psa/primary.json"}) as running:
        view = await MongoDBAdapter().probe(probe_spec({"m1": running["m1"].address}))
        asked = running["m1"].commands
    assert view.nodes[0].role is Role.PRIMARY and view.nodes[0].version == "4.4.1"
    # pymongo's handshake is isMaster; our `hello` is refused, then isMaster asked.
    assert asked.index("hello") < asked.index("isMaster")


async def test_probe_reports_dead_hung_and_garbled_servers_within_the_timeout() -> None:
    http = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    with (
        servers({"m1": "8.0/pss/primary.json"}) as running,
        replaying(hang=True) as hung,
        replaying(garbage=http) as garbled,
    ):
        spec = probe_spec(
            {
                "m1": running["m1"].address,
                "m2": hung.address,
                "m3": garbled.address,
                "m4": closed_port_address(),
            },
            timeout_s=1.0,
        )
        started = time.monotonic()
        view = await MongoDBAdapter().probe(spec)
        took = time.monotonic() - started
    # pymongo's server selection looks again every 0.5 s: a refused server may take that long.
    assert took < 1.0 + 0.5 + 0.3
    assert [n.reachable for n in view.nodes] == [True, False, False, False]
    assert view.nodes[1].error == "timeout after 1.0s"
    # pymongo reads "HTTP" as a message length and the next bytes as a response id.
    assert str(view.nodes[2].error).startswith("not a MongoDB reply: Got response id")
    assert view.nodes[3].error == "connection refused"


async def test_refused_credentials_are_an_observation_and_the_password_stays_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPLICANTE_SECRET_TEST_MONGODB_USER", "monitor")
    monkeypatch.setenv("REPLICANTE_SECRET_TEST_MONGODB_PASSWORD", "s3cret-value")
    with servers({"m1": "8.0/pss/primary.json"}) as running:
        spec = probe_spec(
            {"m1": running["m1"].address},
            secrets={
                "username": {"env": "REPLICANTE_SECRET_TEST_MONGODB_USER"},
                "password": {"env": "REPLICANTE_SECRET_TEST_MONGODB_PASSWORD"},
            },
        )
        view = await MongoDBAdapter().probe(spec)
        asked = running["m1"].commands
    # Alive (its monitor's hello needs no login), so never node_down, whose playbook would
    # restart a member for our wrong password: auth_failed, which no playbook answers.
    node = view.nodes[0]
    assert (node.reachable, node.role, node.error) == (True, Role.PRIMARY, "authentication failed")
    assert [f.code for f in evaluate(spec, view)] == ["auth_failed"]
    assert "saslStart" in asked
    assert "s3cret-value" not in view.model_dump_json()


async def test_a_secret_that_cannot_be_read_is_reported_on_every_node() -> None:
    spec = probe_spec(
        {"m1": closed_port_address(), "m2": closed_port_address()},
        secrets={"password": {"env": "REPLICANTE_SECRET_TEST_NO_SUCH_VAR"}},
    )
    view = await MongoDBAdapter().probe(spec)
    assert {n.error for n in view.nodes} == {
        "secret 'password': env var REPLICANTE_SECRET_TEST_NO_SUCH_VAR is not set"
    }


def readdressed(value: Any, addresses: Mapping[str, str]) -> Any:
    """`value` with every member host replaced by the address its stand-in listens on."""
    if isinstance(value, str):
        for name, address in addresses.items():
            value = value.replace(name, address)
        return value
    if isinstance(value, dict):
        return {readdressed(k, addresses): readdressed(v, addresses) for k, v in value.items()}
    if isinstance(value, list):
        return [readdressed(v, addresses) for v in value]
    return value


async def test_probe_follows_a_mongos_to_its_shard_members() -> None:
    files = {h: f for h, f in SHARD_MEMBERS.items() if f is not None}
    with servers(files) as running:
        addresses = {h: s.address for h, s in running.items()}
        addresses[host("s2a", 27018)] = closed_port_address()
        mongos = readdressed(replies(f"{SHARDED}/mongos.json"), addresses)
        with replaying(mongos) as router:
            view = await MongoDBAdapter().probe(probe_spec({"router": router.address}))
    # Members found through the mongos are named by the address dialled.
    assert [(n.node_id, n.reachable, n.role) for n in view.nodes] == [
        ("router", True, Role.ROUTER),
        (addresses[host("s1a", 27018)], True, Role.PRIMARY),
        (addresses[host("s1b", 27018)], True, Role.SECONDARY),
        (addresses[host("s1c", 27018)], True, Role.SECONDARY),
        (addresses[host("s2a", 27018)], False, Role.UNKNOWN),
        (addresses[host("s2b", 27018)], True, Role.SECONDARY),
        (addresses[host("cfg1", 27019)], True, Role.PRIMARY),
    ]
    assert view.nodes[4].error == "connection refused"
    assert view.facts["shard01.primary"] == addresses[host("s1a", 27018)]
    assert [s.shard_id for s in view.shards].count("shard02") == 3


async def test_held_links_see_a_crash_at_once_and_close_within_the_bound() -> None:
    changes: list[float] = []
    with servers(PSS80) as running:
        spec = probe_spec({n: s.address for n, s in running.items()})
        adapter = MongoDBAdapter()
        links = adapter.hold_links(spec, lambda: changes.append(time.monotonic()))
        await asyncio.to_thread(links.__enter__)
        try:
            await adapter.probe(spec)
            handshakes = running["m1"].commands.count("ismaster")
            await adapter.probe(spec)
            # The probe reads through the held clients: no new connection, no new handshake.
            assert running["m1"].commands.count("ismaster") == handshakes
            await asyncio.sleep(0.6)
            before, crashed = len(changes), time.monotonic()
            running["m2"].stop()
            await asyncio.sleep(0.3)
            assert len(changes) > before
            assert changes[before] - crashed < 0.1
            view = await adapter.probe(spec)
            assert view.nodes[1].reachable is False
        finally:
            started = time.monotonic()
            await asyncio.to_thread(links.__exit__, None, None, None)
            assert time.monotonic() - started < LINK_STOP_WAIT_S + 0.2


async def test_watch_returns_at_once_when_a_held_link_sees_a_member_die(tmp_path: Path) -> None:
    """The watch activity (outside Temporal) on stand-ins: with a 60 s interval, only the held
    link's callback can make it probe again within the second."""
    with servers(PSS80) as running:
        spec = probe_spec({n: s.address for n, s in running.items()})
        spec = spec.model_copy(update={"probe": spec.probe.model_copy(update={"interval_s": 60.0})})
        env = ActivityEnvironment()
        watch_cluster = WatchActivities(SQLiteEventStore(tmp_path / "events.db")).watch_cluster
        first = await env.run(watch_cluster, WatchRequest(spec=spec))
        assert first.leader == "m1"
        watching = asyncio.ensure_future(
            env.run(watch_cluster, WatchRequest(spec=spec, last_key=watch_key(spec, first)))
        )
        await asyncio.sleep(1.5)  # the links open and the first probes find nothing new
        assert not watching.done()
        stopped = time.monotonic()
        running["m3"].stop()
        view = await asyncio.wait_for(watching, timeout=5.0)
        took = time.monotonic() - stopped
        await asyncio.sleep(LINK_STOP_WAIT_S)  # the watch closes its links after it returns
    assert view.nodes[2].reachable is False
    assert view.nodes[2].error in ("connection closed", "connection refused")
    # The held link's monitor saw the connection close; the probe takes its word for it
    # rather than waiting out a server selection for the same answer.
    print(f"member stopped -> watch returned in {took * 1000:.0f} ms")
    assert took < 0.5
