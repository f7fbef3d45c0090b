"""Replica set membership as the server computes it, in the view, the findings and every
safety verdict, on reconstructed replies (tests/replies/mongodb/README.md says where each
shape comes from; none was captured from a server):

- the write majority counts only voting, data-bearing members that apply writes as they
  come (`_calculateMajorities` in src/mongo/db/repl/repl_set_config.cpp, and the counts of
  replSetGetStatus); a votes-0 or a delayed secondary never keeps w:majority writes going;
- a delayed member's designed delay is not lag; hidden, priority-0 and delayed members are
  never step-down targets;
- arbiters vote and hold no data: PSA with a data-bearing member gone is at risk;
- a newly added member has no vote until initial sync ends (MemberConfig::isVoter), which
  replSetGetConfig does not show and replSetGetStatus's counts do;
- each member state's role, vote and acknowledgement;
- a sharded cluster's config shard counted once, and its balancer read before any stop.

"Nothing is done if there is a risk to the data": a stop judged safe that stalls w:majority
writes is the worst bug there is, and the stop tests here are the ones that would catch it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from activities.mongodb.replica_set import replica_set
from activities.mongodb.replies import (
    ACKNOWLEDGING_STATES,
    STATE_NAMES,
    STATE_ROLES,
    VOTING_STATES,
    Reading,
)
from activities.mongodb.view import cluster_view
from models import ClusterSpec, ClusterView, Role
from models.base import ServiceAction
from models.findings import evaluate
from models.plans import StepKind
from models.remediation import gate, plan
from models.safety.mongodb import stop_member
from tests.test_mongodb_parsing import SHARD_MEMBERS, T0, codes, host, reading, view_of
from tests.test_mongodb_remediation import PSA44, PSA44_SECONDARY_DOWN, recorded, step, view_from

# 8.0 rs80 after two reconfigs: m3 hidden and delayed an hour (still a voter), m4 a votes-0
# secondary, m5 added and in initial sync (its config says votes 1: newlyAdded is not shown).
MEMBERS80 = {
    "m1": "8.0/members/primary.json",
    "m2": "8.0/members/secondary.json",
    "m3": "8.0/members/delayed.json",
}
# 4.4.18 rs44 answering `hello`: primary, secondary, arbiter, and m4 hidden and delayed an
# hour (`slaveDelay`) with a vote: a PSA set whose delayed voter raises the write majority.
HELLO44 = {n: f"4.4/hello/{f}.json" for n, f in (("m1", "primary"), ("m2", "secondary"))} | {
    "m3": "4.4/hello/arbiter.json"
}
PSA44_DIALLED = {n: PSA44[n] for n in ("m1", "m2", "m3")}


def stop(spec: ClusterSpec, view: ClusterView, node_id: str) -> tuple[bool, str]:
    verdict = gate(
        spec, view, step(f"stop-{node_id}", StepKind.SERVICE, node_id, ServiceAction.STOP)
    )
    return verdict.safe, verdict.reason


def serving_besides(view: ClusterView, set_name: str, node_id: str) -> list[str]:
    """What a rule that counted members by their role would count: every primary and
    secondary other than `node_id`."""
    return [
        s.node_id or ""
        for s in view.shards
        if s.shard_id == set_name
        and s.node_id != node_id
        and s.role in (Role.PRIMARY, Role.SECONDARY)
    ]


# --- the write majority -----------------------------------------------------------------


def test_only_voting_data_bearing_members_that_keep_up_can_acknowledge_majority_writes() -> None:
    spec, view = view_from(recorded(MEMBERS80))
    assert (
        view.facts["rs80.write_majority_count"],
        view.facts["rs80.majority_vote_count"],
        view.voting_configured,
    ) == (2, 2, 3)
    (first, *_) = view.shards
    # m4 has no vote, m5 none yet; m3 votes but applies every write an hour late.
    assert first.replicas == ("m1", "m2", "m3")
    assert first.in_sync == ("m1", "m2")
    assert codes(spec, view) == []


def test_a_stop_that_would_stall_majority_writes_is_refused() -> None:
    spec, view = view_from(recorded(MEMBERS80))
    # Counted by role, m1, m3 and m4 would be left for a write majority of 2: "safe".
    assert serving_besides(view, "rs80", "m2") == ["m1", "m3", host("m4")]
    assert stop(spec, view, "m2") == (
        False,
        "without m2, rs80 has 1 members that can acknowledge w:majority writes (m1) for a"
        " write majority of 2: majority writes would stop",
    )
    # The delayed member takes nothing away: w:majority never waited for it.
    assert stop(spec, view, "m3") == (
        True,
        "majority writes keep going without m3: rs80 keeps 2 live voters (majority 2) and"
        " m1, m2 to acknowledge w:majority (needs 2)",
    )


def test_the_servers_counts_are_used_and_computed_as_the_server_does_when_absent() -> None:
    servers = recorded(MEMBERS80)
    rs = replica_set(list(servers.values()))
    assert (rs.voting_members_count, rs.majority_vote_count, rs.write_majority_count) == (3, 2, 2)
    # A reply without the counts (4.2.0, or cut short): from the config, which shows m5's
    # vote. Without the server's word, m5 cannot be told from a voter, as the server would.
    stripped = {}
    for node_id, server in servers.items():
        found = copy.deepcopy(dict(server.replies))
        for field in (
            "majorityVoteCount",
            "writeMajorityCount",
            "votingMembersCount",
            "writableVotingMembersCount",
        ):
            del found["replSetGetStatus"][field]
        stripped[node_id] = Reading(server.address, found)
    rs = replica_set(list(stripped.values()))
    assert (rs.voting_members_count, rs.majority_vote_count, rs.write_majority_count) == (4, 3, 3)


# --- delayed, hidden, priority 0 ----------------------------------------------------------


def test_a_delayed_members_designed_delay_is_not_lag() -> None:
    spec, view = view_from(recorded(MEMBERS80), max_lag=10)
    lag = {s.node_id: s.lag for s in view.shards}
    # m3's optime is 3601 s behind the primary's, 1 s past its secondaryDelaySecs.
    assert (lag["m2"], lag["m3"], lag[host("m4")]) == (0, 1, 1)
    m3 = view.node("m3")
    assert m3 is not None and m3.facts["secondary_delay_s"] == 3600 and m3.facts["hidden"]
    assert codes(spec, view) == []
    # 4.4's slaveDelay: the same reading.
    spec, view = view_from(recorded(HELLO44 | {"m4": None}), max_lag=60)
    assert {s.node_id: s.lag for s in view.shards}["m4"] == 30


def test_hidden_priority_0_and_delayed_members_are_never_step_down_targets() -> None:
    spec, view = view_from(recorded(MEMBERS80))
    verdict = gate(spec, view, plan(spec, "step_down_primary", None, view)[0])
    assert (verdict.safe, verdict.reason) == (
        True,
        "electable secondaries within 10 s: m2 (0 s behind)",
    )
    # Without m2, m3 (1 s past its delay, hidden, priority 0) is no successor.
    spec, view = view_from(recorded(MEMBERS80 | {"m2": None}))
    verdict = gate(spec, view, plan(spec, "step_down_primary", None, view)[0])
    assert (verdict.safe, verdict.reason) == (
        False,
        "no electable secondary within 10 s of m1: stepping down would leave the set without"
        " a primary or lose writes; never electable: m3 (priority 0)",
    )


def test_a_delayed_voter_in_a_psa_set_puts_majority_writes_at_risk_while_all_are_up() -> None:
    # Four voters, three data-bearing: w:majority needs 3, and the third is an hour late.
    spec, view = view_from(recorded(HELLO44 | {"m4": None}))
    assert view.facts["rs44.write_majority_count"] == 3
    assert view.shards[0].in_sync == ("m1", "m2")
    assert ("majority_writes_at_risk", "c1") in codes(spec, view)


# --- arbiters -----------------------------------------------------------------------------


def test_an_arbiter_votes_but_never_acknowledges_a_write() -> None:
    spec, view = view_from(recorded(PSA44_DIALLED))
    assert codes(spec, view) == []
    assert view.shards[0].in_sync == ("m1", "m2")
    assert serving_besides(view, "rs44", "m2") == ["m1"]
    # m3, the arbiter, keeps the quorum; nothing but m2 can acknowledge beside the primary.
    assert stop(spec, view, "m2") == (
        False,
        "without m2, rs44 has 1 members that can acknowledge w:majority writes (m1) for a"
        " write majority of 2: majority writes would stop",
    )
    assert stop(spec, view, "m3")[0] is True


def test_psa_with_a_data_bearing_member_down_is_at_risk_and_nothing_else_stops() -> None:
    spec, view = view_from(recorded(PSA44_SECONDARY_DOWN))
    assert view.quorum is True
    findings = {f.code: f.message for f in evaluate(spec, view)}
    assert findings["majority_writes_at_risk"] == (
        "replica set rs44: 1 of 2 data-bearing voting members can acknowledge writes,"
        " w:majority needs 2 (arbiters do not count); down or not serving: m2"
    )
    assert stop(spec, view, "m1") == (
        False,
        "m2 not serving: stopping m1 as well risks the cluster",
    )
    # The rule itself, past the check that every other node serves: the arbiter's vote is
    # all that keeps the primary, and the primary must step down before it stops.
    assert stop_member(spec, view, "m3").reason == (
        "without m3, rs44 has 1 live voting members for a majority of 2: it could not keep or"
        " elect a primary"
    )
    assert stop_member(spec, view, "m1").reason == "m1 is the primary: step it down first"


# --- newly added members ------------------------------------------------------------------


def test_a_newly_added_member_has_no_vote_until_its_initial_sync_ends() -> None:
    _spec, view = view_from(recorded(MEMBERS80))
    rs = replica_set([reading(f, host(n)) for n, f in MEMBERS80.items()])
    m5 = next(m for m in rs.members if m.name == host("m5"))
    assert (m5.votes, m5.newly_added, m5.voter, STATE_NAMES[m5.state or 0]) == (
        1,
        True,
        False,
        "STARTUP2",
    )
    # STARTUP2 votes, but not while newly added: three live voters, not four.
    assert (view.voting_alive, view.voting_configured) == (3, 3)
    assert view.facts["rs80.voting_alive"] == 3


def test_voters_the_server_does_not_count_and_none_explains_are_not_counted_alive() -> None:
    # Derived: m5 reported a secondary while the server still counts three voters (a reply
    # caught mid-reconfig). Which member lacks its vote cannot be told, so one fewer is
    # counted alive, and a stop that needs that vote is refused.
    servers = recorded(MEMBERS80)
    changed = {}
    for node_id, server in servers.items():
        found: dict[str, Any] = copy.deepcopy(dict(server.replies))
        entry = next(m for m in found["replSetGetStatus"]["members"] if m["name"] == host("m5"))
        entry |= {"state": 2, "stateStr": "SECONDARY"}
        changed[node_id] = Reading(server.address, found)
    _spec, view = view_from(changed)
    assert (view.voting_alive, view.voting_configured) == (3, 3)
    assert replica_set(list(changed.values())).uncounted_voters == 1


# --- member states --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "member", "state", "role", "votes", "acknowledges"),
    [
        ({"m1": "5.0/pss/primary.json"}, "m3", "RECOVERING", Role.LOOKING, True, False),
        ({"m1": "4.4/psa/primary.json"}, "m4", "ROLLBACK", Role.LOOKING, True, False),
        ({"m1": "8.0/pss/primary.json"}, "m4", "STARTUP", Role.LOOKING, False, False),
        ({"m1": "5.0/pss/primary.json"}, "m4", "STARTUP2", Role.LOOKING, True, False),
        ({"m2": "6.0/primary-down/secondary-a.json"}, "m1", "DOWN", Role.UNKNOWN, False, False),
        ({"m2": "6.0/primary-down/secondary-a.json"}, "m4", "UNKNOWN", Role.UNKNOWN, False, False),
        ({"m3": "7.0/majority-down/secondary.json"}, "m2", "REMOVED", Role.UNKNOWN, False, False),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_member_state_as_the_set_reports_it(
    files: dict[str, str],
    member: str,
    state: str,
    role: Role,
    votes: bool,
    acknowledges: bool,
) -> None:
    # The member as its set's status shows it (the member itself is not dialled); the vote
    # and acknowledgement as the manual's "Replica Set Member States" gives them.
    rs = replica_set([reading(f, host(n)) for n, f in files.items()])
    seen = next(m for m in rs.members if m.name == host(member))
    assert seen.state is not None and STATE_NAMES[seen.state] == state
    _spec, view = view_of(files)
    shard = next(s for s in view.shards if s.node_id == host(member))
    assert shard.role is role
    assert STATE_ROLES.get(seen.state, Role.UNKNOWN) is role
    assert (seen.state in VOTING_STATES, seen.state in ACKNOWLEDGING_STATES) == (
        votes,
        acknowledges,
    )
    assert host(member) not in shard.in_sync


def test_a_removed_member_says_so_of_itself_and_serves_nothing() -> None:
    _spec, view = view_of({"m2": "7.0/majority-down/removed.json"})
    node = view.node("m2")
    assert node is not None and node.role is Role.LOOKING and node.facts["state"] == "REMOVED"


# --- sharded clusters -------------------------------------------------------------------


def sharded(mongos: str, **found: str | None) -> tuple[ClusterSpec, ClusterView]:
    return view_of(
        {"router": mongos},
        addresses={"router": host("mongos1")},
        found=SHARD_MEMBERS | {host(k, 27018): v for k, v in found.items()},
    )


def test_a_config_shard_is_one_replica_set_counted_once() -> None:
    _, dedicated = sharded("8.0/sharded/mongos.json")
    _, combined = sharded("8.0/config-shard/mongos.json")
    assert (dedicated.facts["shards"], "config_shard" in dedicated.facts) == (2, False)
    assert (combined.facts["shards"], combined.facts["config_shard"]) == (3, True)
    config_rows = [(s.shard_id, s.node_id) for s in combined.shards if s.shard_id == "config"]
    assert config_rows == [("config", host("cfg1", 27019))]
    assert [n.node_id for n in combined.nodes].count(host("cfg1", 27019)) == 1


def balancing(view: ClusterView, facts: dict[str, Any]) -> ClusterView:
    kept = {k: v for k, v in view.facts.items() if not k.startswith("balancer_")}
    return view.model_copy(update={"facts": kept | facts})


def test_no_member_of_a_sharded_cluster_stops_while_the_balancer_migrates_chunks() -> None:
    spec, view = sharded("8.0/sharded/mongos.json")
    assert (view.facts["balancer_mode"], view.facts["balancer_in_round"]) == ("full", False)
    s1c = host("s1c", 27018)
    assert stop_member(spec, view, s1c).safe
    in_round = stop_member(spec, balancing(view, {"balancer_in_round": True}), s1c)
    assert (in_round.safe, in_round.reason) == (
        False,
        "the balancer is in a round, migrating chunks (balancerStatus inBalancerRound): wait"
        " for it to end, or stop the balancer (sh.stopBalancer()) first",
    )
    unread = balancing(view, {"balancer_error": "Unauthorized: not authorized"})
    assert stop_member(spec, unread, s1c).reason == (
        "the view does not say whether the balancer is migrating chunks (balancerStatus:"
        " Unauthorized: not authorized)"
    )


def test_a_refused_balancer_status_is_read_as_unknown() -> None:
    router = reading("8.0/sharded/mongos.json", host("mongos1"))
    refused = dict(router.replies) | {
        "balancerStatus": {
            "ok": 0.0,
            "errmsg": "not authorized",
            "code": 13,
            "codeName": "Unauthorized",
        }
    }
    spec, _ = view_of({"router": "8.0/sharded/mongos.json"}, addresses={"router": host("mongos1")})
    view = cluster_view(spec, {host("mongos1"): Reading(host("mongos1"), refused)}, T0)
    assert view.facts["balancer_error"] == "Unauthorized: not authorized"
    assert "balancer_in_round" not in view.facts
