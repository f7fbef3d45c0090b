"""MongoDB remediation: the plans and safety verdicts of `step_down_primary` and
`restart_dead_member` on views built from reconstructed server replies
(tests/replies/mongodb/), and the step-down activity against wire-protocol stand-ins
(tests/mongodb_wire.py), alone and inside a RemediationWorkflow on the Temporal dev server.

Views are built as the probe builds them: each server's replies through `cluster_view`.
Where no recorded file shows a state, a test derives it from recorded replies by changing
named fields, and says which. None of this ran against a MongoDB server;
tests/test_mongodb_live.py does, whenever REPLICANTE_TEST_MONGODB_URI is set.
"""

from __future__ import annotations

import copy
import itertools
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.mongodb.actions import CATCH_UP_S, STEP_DOWN_S, step_down_primary, wait_caught_up
from activities.mongodb.adapter import MongoDBAdapter
from activities.mongodb.replies import Reading, majorities
from activities.mongodb.view import cluster_view
from models import ClusterSpec, ClusterView, Policy, Role
from models.base import ServiceAction
from models.monitor import Outcome
from models.plans import Step, StepKind
from models.remediation import (
    NodeRequest,
    RemediationInput,
    RemediationStatus,
    gate,
    plan,
    workflow_id,
)
from models.safety.mongodb import behind
from store import EventQuery, SQLiteEventStore
from tests.helpers import closed_port_address
from tests.mongodb_wire import ReplayServer, replaying, replaying_set
from tests.test_mongodb_parsing import (
    PSS80,
    T0,
    host,
    probe_spec,
    readdressed,
    reading,
    replies,
    servers,
    spec_for,
)
from worker.core import core_worker
from workflows.remediation import RemediationWorkflow

PSA44 = {
    "m1": "4.4/psa/primary.json",
    "m2": "4.4/psa/secondary.json",
    "m3": "4.4/psa/arbiter.json",
    "m4": "4.4/psa/rollback.json",
}
PSS50 = {
    "m1": "5.0/pss/primary.json",
    "m2": "5.0/pss/secondary.json",
    "m3": "5.0/pss/recovering.json",
    "m4": "5.0/pss/startup2.json",
}
SHARD01 = {f"m{n}": f"8.0/sharded/shard01-{x}.json" for n, x in enumerate("abc", 1)}
SHARD01_HOSTS = {f"m{n}": host(f"s1{x}", 27018) for n, x in enumerate("abc", 1)}
SHARD02_HOSTS = {"m1": host("s2a", 27018), "m2": host("s2b", 27018)}
# Files by node id; None: the server refuses connections.
Servers = Mapping[str, str | None]
PSA44_SECONDARY_DOWN: Servers = {
    "m1": "4.4/psa-secondary-down/primary.json",
    "m2": None,
    "m3": "4.4/psa-secondary-down/arbiter.json",
}
PRIMARY_GONE60: Servers = {
    "m1": None,
    "m2": "6.0/primary-down/secondary-a.json",
    "m3": "6.0/primary-down/secondary-b.json",
}
MAJORITY_GONE70: Servers = {
    "m1": None,
    "m2": "7.0/majority-down/removed.json",
    "m3": "7.0/majority-down/secondary.json",
}

STEPPED_DOWN = {"ok": 1.0}
# What a primary answers when no electable secondary caught up within
# secondaryCatchUpPeriodSecs: the code and message of TopologyCoordinator::tryToStartStepDown
# ([mongodb/mongo] src/mongo/db/repl/topology_coordinator.cpp), the time as its
# dateToISOStringLocal writes it on a server in UTC.
NONE_CAUGHT_UP = {
    "ok": 0.0,
    "errmsg": "No electable secondaries caught up as of 2024-11-30T23:23:29.100+00:00. Please"
    " use the replSetStepDown command with the argument {force: true} to force node to step"
    " down.",
    "code": 262,
    "codeName": "ExceededTimeLimit",
}
# A node that is no longer primary when the command arrives (ReplicationCoordinatorImpl::
# stepDown); pymongo raises it as NotPrimaryError.
NOT_PRIMARY = {
    "ok": 0.0,
    "errmsg": "not primary so can't step down",
    "code": 10107,
    "codeName": "NotWritablePrimary",
}
NO_SECONDARY_WITHIN = (
    "no electable secondary within {} s of m1: stepping down would leave the set without a"
    " primary or lose writes"
)


def view_from(servers: Mapping[str, Reading], **expect: int) -> tuple[ClusterSpec, ClusterView]:
    """The spec of `servers` (node id -> what it answered) and the view the probe makes."""
    spec = spec_for({n: r.address for n, r in servers.items()}, **expect)
    return spec, cluster_view(spec, {r.address: r for r in servers.values()}, T0)


def recorded(files: Servers, addresses: Mapping[str, str] | None = None) -> dict[str, Reading]:
    return {n: reading(f, (addresses or {}).get(n, host(n))) for n, f in files.items()}


def reconfigured(servers: Mapping[str, Reading], node_id: str, **fields: Any) -> dict[str, Reading]:
    """The set's replies as they would be had its config given `node_id`'s member `fields`
    (priority, hidden, votes), changed where a server reports them (fillHelloForReplSet and
    prepareStatusResponse in TopologyCoordinator): the member's entry in every
    replSetGetConfig; in every hello, the member under `hosts` (electable), `passives`
    (priority 0) or neither (hidden), and its own `passive` and `hidden`; the voting counts
    in every replSetGetStatus."""
    name = host(node_id)
    changed = {}
    for n, server in servers.items():
        found = copy.deepcopy(dict(server.replies))
        members = found["replSetGetConfig"]["config"]["members"]
        member = next(m for m in members if m["host"] == name)
        member.update(fields)
        hello = found["hello"]
        for listed in ("hosts", "passives"):
            hello[listed] = [h for h in hello.get(listed, []) if h != name]
        if not member["hidden"]:
            hello["hosts" if member["priority"] > 0 else "passives"].append(name)
        if hello["me"] == name:
            hello |= {"passive": member["priority"] == 0, "hidden": member["hidden"]}
        voting = [m for m in members if m["votes"] > 0]
        writable = [m for m in voting if not m["arbiterOnly"]]
        majority, write_majority = majorities(len(voting), len(writable))
        found["replSetGetStatus"] |= {
            "majorityVoteCount": majority,
            "writeMajorityCount": write_majority,
            "votingMembersCount": len(voting),
            "writableVotingMembersCount": len(writable),
        }
        changed[n] = Reading(server.address, found, latency_ms=server.latency_ms)
    return changed


def after_election(files: Mapping[str, str], old: str, new: str) -> dict[str, dict[str, Any]]:
    """Each member's replies once `new` has won the election that follows `old`'s step-down,
    derived from the recorded set: `old` and `new` trade names everywhere (so `new` answers
    what `old` answered as primary, and `old` what `new` answered as a secondary) and the
    term goes up by one, as an election's does. Nothing else is adjusted: election metrics,
    optimes and the config's member ids stay as recorded."""
    # readdressed replaces in order: old's name goes to a placeholder first, or it would
    # become new's and then old's again.
    trade = {host(old): "\0", host(new): host(old), "\0": host(new)}
    swapped = {old: files[new], new: files[old]}
    after = {}
    for node_id, path in files.items():
        found = readdressed(replies(swapped.get(node_id, path)), trade)
        found["replSetGetStatus"]["term"] += 1
        after[node_id] = found
    return after


def step(name: str, kind: StepKind, node_id: str, action: ServiceAction | None = None) -> Step:
    return Step(
        name=name,
        kind=kind,
        node_id=node_id,
        action=action,
        stops_service=action is not None and action is not ServiceAction.START,
    )


# --- step_down_primary: plan and safety, on recorded replies ------------------------------


@pytest.mark.parametrize(
    ("servers", "addresses", "max_lag", "reason"),
    [
        (PSS80, None, None, "electable secondaries within 10 s: m2 (0 s behind), m3 (3 s behind)"),
        # m3 is RECOVERING and m4 in initial sync: neither is a secondary.
        (PSS50, None, None, "electable secondaries within 10 s: m2 (0 s behind)"),
        # The arbiter holds no data; m4, in ROLLBACK, is no secondary.
        (PSA44, None, 60, "electable secondaries within 60 s: m2 (42 s behind)"),
        (PSA44, None, 42, "electable secondaries within 42 s: m2 (42 s behind)"),
        # A shard's members named in a spec of their own are a plain replica set.
        (
            SHARD01,
            SHARD01_HOSTS,
            None,
            "electable secondaries within 10 s: m2 (0 s behind), m3 (1 s behind)",
        ),
        # The spec's max_lag is the threshold: m3, 3 s behind, is too far at 2 s.
        (PSS80, None, 2, "electable secondaries within 2 s: m2 (0 s behind)"),
    ],
    ids=[
        "8.0",
        "5.0-recovering-and-initial-sync",
        "4.4-arbiter-rollback",
        "4.4-at-the-limit",
        "8.0-shard",
        "8.0-max-lag",
    ],
)
def test_step_down_of_a_healthy_set_names_its_electable_secondaries_and_their_lag(
    servers: Servers, addresses: Mapping[str, str] | None, max_lag: int | None, reason: str
) -> None:
    expect = {} if max_lag is None else {"max_lag": max_lag}
    spec, view = view_from(recorded(servers, addresses), **expect)
    steps = plan(spec, "step_down_primary", None, view)
    assert steps == [
        step("step-down-m1", StepKind.STEP_DOWN, "m1"),
        step("wait-primary-other-than-m1", StepKind.WAIT_NEW_LEADER, "m1"),
    ]
    assert plan(spec, "step_down_primary", "m1", view) == steps
    verdict = gate(spec, view, steps[0])
    assert (verdict.safe, verdict.reason) == (True, reason)
    with pytest.raises(ValueError, match=r"^'m2' is not the primary of c1 \(m1 is\)$"):
        plan(spec, "step_down_primary", "m2", view)


@pytest.mark.parametrize("max_lag", [None, 41])
def test_step_down_is_refused_while_every_electable_secondary_lags_beyond_the_threshold(
    max_lag: int | None,
) -> None:
    # 4.4: m2, the only electable secondary, is 42 s behind.
    expect = {} if max_lag is None else {"max_lag": max_lag}
    spec, view = view_from(recorded(PSA44), **expect)
    assert [(s.node_id, s.lag) for s in view.shards if s.role is Role.SECONDARY] == [("m2", 42)]
    verdict = gate(spec, view, plan(spec, "step_down_primary", None, view)[0])
    assert (verdict.safe, verdict.reason) == (False, NO_SECONDARY_WITHIN.format(max_lag or 10))


@pytest.mark.parametrize(
    "fields",
    [{"priority": 0.0}, {"priority": 0.0, "hidden": True}, {"priority": 0.0, "votes": 0}],
    ids=["priority-0", "hidden", "non-voting"],
)
def test_step_down_is_refused_when_the_only_close_secondary_cannot_be_elected(
    fields: dict[str, Any],
) -> None:
    # 8.0 with max_lag 2: m2 (0 s behind) is the only close secondary, m3 is 3 s behind.
    # Derived: m2's config entry changed (MongoDB requires priority 0 of hidden and
    # non-voting members), with what the servers report of it.
    servers = recorded(PSS80)
    spec, view = view_from(servers, max_lag=2)
    assert gate(spec, view, plan(spec, "step_down_primary", None, view)[0]).safe
    spec, view = view_from(reconfigured(servers, "m2", **fields), max_lag=2)
    m2 = view.node("m2")
    assert m2 is not None and m2.role is Role.SECONDARY and m2.facts["priority"] == 0.0
    assert m2.facts.get("hidden", False) is fields.get("hidden", False)
    assert m2.facts["votes"] == fields.get("votes", 1)
    verdict = gate(spec, view, plan(spec, "step_down_primary", None, view)[0])
    assert (verdict.safe, verdict.reason) == (
        False,
        NO_SECONDARY_WITHIN.format(2) + "; never electable: m2 (priority 0)",
    )


@pytest.mark.parametrize(
    ("servers", "addresses"),
    [
        (PRIMARY_GONE60, None),
        (MAJORITY_GONE70, None),
        ({"m1": None, "m2": "8.0/sharded/shard02-b.json"}, SHARD02_HOSTS),
    ],
    ids=["6.0-primary-gone", "7.0-majority-gone", "8.0-shard-primary-down"],
)
def test_step_down_without_a_primary_has_no_plan(
    servers: Servers, addresses: Mapping[str, str] | None
) -> None:
    spec, view = view_from(recorded(servers, addresses))
    assert view.leader is None
    with pytest.raises(ValueError, match=r"^c1 has no primary to step down$"):
        plan(spec, "step_down_primary", None, view)
    verdict = gate(spec, view, step("step-down-m1", StepKind.STEP_DOWN, "m1"))
    assert (verdict.safe, verdict.reason) == (False, "no primary to step down")


# --- restart_dead_member and stops, on recorded replies -----------------------------------


@pytest.mark.parametrize(
    ("servers", "target", "live"),
    [
        (PSA44_SECONDARY_DOWN, "m2", ("m1", "primary")),
        (PRIMARY_GONE60, "m1", ("m2", "secondary")),
        (MAJORITY_GONE70, "m1", ("m3", "secondary")),
    ],
    ids=["4.4-secondary-down", "6.0-primary-down", "7.0-majority-down"],
)
def test_restart_dead_member_starts_a_down_member_and_no_live_one(
    servers: Servers, target: str, live: tuple[str, str]
) -> None:
    spec, view = view_from(recorded(servers))
    steps = plan(spec, "restart_dead_member", target, view)
    assert steps == [
        step(f"start-{target}", StepKind.SERVICE, target, ServiceAction.START),
        step(f"wait-{target}-serving", StepKind.WAIT_SERVING, target),
        step(f"wait-{target}-caught-up", StepKind.WAIT_CAUGHT_UP, target),
    ]
    verdict = gate(spec, view, steps[0])
    assert (verdict.safe, verdict.reason) == (
        True,
        f"{target} is down (connection refused); starting it cannot take a member away",
    )
    node_id, role = live
    refused = gate(spec, view, plan(spec, "restart_dead_member", node_id, view)[0])
    assert (refused.safe, refused.reason) == (False, f"{node_id} is up as {role}: nothing to start")


def test_the_primary_may_be_stopped_only_once_it_has_stepped_down() -> None:
    # No MongoDB playbook stops a member yet: these are the steps one would gate.
    stop_m1, stop_m2 = (
        step(f"stop-{n}", StepKind.SERVICE, n, ServiceAction.STOP) for n in ("m1", "m2")
    )
    spec, view = view_from(recorded(PSS80))
    refused = gate(spec, view, stop_m1)
    assert (refused.safe, refused.reason) == (False, "m1 is the primary: step it down first")
    allowed = gate(spec, view, stop_m2)
    assert (allowed.safe, allowed.reason) == (
        True,
        "majority writes keep going without m2: rs80 keeps 2 live voters (majority 2) and"
        " m1, m3 to acknowledge w:majority (needs 2)",
    )
    # Derived: the same set after m2 won the election that follows m1's step-down.
    after = after_election(PSS80, "m1", "m2")
    spec, view = view_from({n: Reading(host(n), r, latency_ms=1.5) for n, r in after.items()})
    assert view.leader == "m2"
    assert gate(spec, view, stop_m1).reason == (
        "majority writes keep going without m1: rs80 keeps 2 live voters (majority 2) and"
        " m2, m3 to acknowledge w:majority (needs 2)"
    )
    assert gate(spec, view, stop_m2).reason == "m2 is the primary: step it down first"


# --- caught up: the wait after a restart, on recorded replies and stand-ins --------------


@pytest.mark.parametrize(
    ("servers", "node_id", "expect", "still"),
    [
        (PSS80, "m1", {}, None),
        (PSS80, "m2", {}, None),
        (PSS80, "m3", {}, None),
        (PSS80, "m3", {"max_lag": 2}, "m3 is 3 s behind in rs80 (limit 2 s)"),
        (PSA44, "m3", {"max_lag": 0}, None),
        (PSS50, "m3", {}, "m3 is no secondary of rs50 yet (looking)"),
        (PSA44_SECONDARY_DOWN, "m2", {}, "m2 is no secondary of rs44 yet (unknown)"),
        (PSS80, "m9", {}, "m9 is no member of a replica set in the view"),
    ],
    ids=[
        "primary",
        "secondary-0s",
        "secondary-3s",
        "secondary-3s-over-2s",
        "arbiter",
        "recovering",
        "down",
        "not-in-the-set",
    ],
)
def test_a_member_is_caught_up_as_a_secondary_within_the_lag_limit(
    servers: Servers, node_id: str, expect: dict[str, int], still: str | None
) -> None:
    spec, view = view_from(recorded(servers), **expect)
    assert behind(spec, view, node_id) == still


async def test_the_caught_up_wait_returns_at_a_secondary_within_the_limit() -> None:
    with servers(PSS80) as running:
        request = node_request(running).model_copy(update={"node_id": "m3"})
        view = await ActivityEnvironment().run(wait_caught_up, request)
    m3 = view.node("m3")
    assert m3 is not None and m3.role is Role.SECONDARY


async def test_the_caught_up_wait_fails_past_its_timeout_saying_how_far_behind() -> None:
    beats: list[object] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.extend(details)
    with servers(PSS80) as running:
        request = node_request(
            running, expect={"max_lag": 2}, probe={"interval_s": 0.2, "timeout_s": 1.0}
        ).model_copy(update={"node_id": "m3", "timeout_s": 1.0})
        with pytest.raises(ApplicationError) as raised:
            await env.run(wait_caught_up, request)
    assert str(raised.value) == "m3 is 3 s behind in rs80 (limit 2 s) after 1 s"
    assert raised.value.non_retryable
    assert beats and set(beats) == {"m3 is 3 s behind in rs80 (limit 2 s)"}


# --- the step-down activity, against stand-ins ----------------------------------------------


def node_request(servers: Mapping[str, ReplayServer | str], **extra: Any) -> NodeRequest:
    """A step-down of m1 among `servers` (stand-ins, or addresses nothing answers at)."""
    addresses = {n: s if isinstance(s, str) else s.address for n, s in servers.items()}
    return NodeRequest(spec=probe_spec(addresses, **extra), node_id="m1")


async def step_down(request: NodeRequest) -> str:
    return await ActivityEnvironment().run(step_down_primary, request)


async def refused(request: NodeRequest) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await step_down(request)
    return raised.value


def step_downs(server: ReplayServer) -> list[Mapping[str, Any]]:
    return [c for c in server.received if "replSetStepDown" in c]


async def test_step_down_activity_asks_a_stand_in_primary_once() -> None:
    with replaying(replies(PSS80["m1"]) | {"replSetStepDown": STEPPED_DOWN}) as primary:
        assert await step_down(node_request({"m1": primary})) == "m1 stepped down"
    (sent,) = step_downs(primary)
    assert (sent["replSetStepDown"], sent["secondaryCatchUpPeriodSecs"]) == (
        STEP_DOWN_S,
        CATCH_UP_S,
    )
    assert primary.commands.index("hello") < primary.commands.index("replSetStepDown")


async def test_a_step_down_whose_reply_is_lost_counts_once_the_node_is_secondary() -> None:
    # As servers before 4.2 do: the connections close instead of a reply. The replies are
    # 4.4's, the oldest recorded; after the step-down m1 answers as the secondary it became.
    before = {"m1": replies(PSA44["m1"]) | {"replSetStepDown": STEPPED_DOWN}}
    after = after_election({"m1": PSA44["m1"], "m2": PSA44["m2"]}, "m1", "m2")
    with replaying_set(before, {"m1": after["m1"]}, closes_on_step_down=True) as running:
        result = await step_down(node_request(running))
    assert result == "m1 stepped down (no reply; it answers as a secondary now)"
    asked = running["m1"].commands
    assert asked.count("replSetStepDown") == 1
    assert "isMaster" in asked[asked.index("replSetStepDown") :]


async def test_a_step_down_whose_reply_is_lost_is_retried_while_the_node_is_primary() -> None:
    primary = replies(PSS80["m1"]) | {"replSetStepDown": STEPPED_DOWN}
    with replaying(primary, closes_on_step_down=True) as server:
        error = await refused(node_request({"m1": server}))
    assert (str(error), error.non_retryable) == ("step down m1: connection closed", False)


async def test_step_down_activity_fails_for_good_when_the_primary_refuses() -> None:
    with replaying(replies(PSS80["m1"]) | {"replSetStepDown": NONE_CAUGHT_UP}) as primary:
        error = await refused(node_request({"m1": primary}))
    assert str(error) == (
        f"m1 stayed primary: no electable secondary caught up within {CATCH_UP_S} s"
        f" (ExceededTimeLimit: {NONE_CAUGHT_UP['errmsg']})"
    )
    assert error.non_retryable
    assert len(step_downs(primary)) == 1


async def test_step_down_activity_heartbeats_while_the_primary_waits_for_a_secondary() -> None:
    # A primary may take CATCH_UP_S to answer, longer than the probe timeout and about the
    # workflow's heartbeat timeout: without heartbeats a slow refusal would time the step
    # out and be asked again, instead of failing it.
    beats: list[float] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(time.monotonic())
    primary = replies(PSS80["m1"]) | {"replSetStepDown": NONE_CAUGHT_UP}
    with (
        replaying(primary, step_down_wait_s=3.5) as server,
        pytest.raises(ApplicationError) as raised,
    ):
        await env.run(step_down_primary, node_request({"m1": server}))
    assert raised.value.non_retryable and "ExceededTimeLimit" in str(raised.value)
    # Every second or so; the bound leaves room for a loaded machine.
    assert len(beats) >= 3
    assert max(b - a for a, b in itertools.pairwise(beats)) < 3.0


@pytest.mark.parametrize(
    ("path", "answer", "result"),
    [
        (PSS80["m2"], None, "m1 is not the primary: nothing to step down"),
        (PSA44["m2"], None, "m1 is not the primary: nothing to step down"),
        # An election took the role between the hello and the command.
        (PSS80["m1"], NOT_PRIMARY, "m1 is no longer the primary: nothing to step down"),
    ],
    ids=["8.0-secondary", "4.4-secondary", "8.0-lost-the-role-meanwhile"],
)
async def test_step_down_activity_leaves_a_stand_in_that_is_not_primary_alone(
    path: str, answer: dict[str, Any] | None, result: str
) -> None:
    found = replies(path) | ({} if answer is None else {"replSetStepDown": answer})
    with replaying(found) as server:
        assert await step_down(node_request({"m1": server})) == result
    assert len(step_downs(server)) == (0 if answer is None else 1)


async def test_step_down_activity_retries_when_the_node_cannot_be_reached() -> None:
    with replaying(hang=True) as hung:
        cases = {"connection refused": closed_port_address(), "timeout after 1.0s": hung.address}
        for why, address in cases.items():
            error = await refused(node_request({"m1": address}))
            assert (str(error), error.non_retryable) == (f"step down m1: {why}", False)


async def test_step_down_activity_errors_never_carry_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = "s3cret-step-down-value"
    monkeypatch.setenv("REPLICANTE_SECRET_TEST_MONGODB_USER", "operator")
    monkeypatch.setenv("REPLICANTE_SECRET_TEST_MONGODB_PASSWORD", password)
    secrets = {
        "username": {"env": "REPLICANTE_SECRET_TEST_MONGODB_USER"},
        "password": {"env": "REPLICANTE_SECRET_TEST_MONGODB_PASSWORD"},
    }
    # The stand-in refuses every login; then a member that is gone.
    with replaying(replies(PSS80["m1"]) | {"replSetStepDown": STEPPED_DOWN}) as primary:
        denied = await refused(node_request({"m1": primary}, secrets=secrets))
    gone = await refused(node_request({"m1": closed_port_address()}, secrets=secrets))
    assert (str(denied), denied.non_retryable) == (
        "m1 refused to step down: authentication failed",
        True,
    )
    assert (str(gone), gone.non_retryable) == ("step down m1: connection refused", False)
    assert "saslStart" in primary.commands and step_downs(primary) == []
    for error in (denied, gone):
        assert error.__cause__ is None
        assert password not in f"{error!s} {error!r} {error.details!r}"


# --- the step-down remediation on the Temporal dev server, against a stand-in set ---------


async def remediate(
    env: WorkflowEnvironment, spec: ClusterSpec, home: Path
) -> tuple[RemediationStatus, str]:
    """A `step_down_primary` remediation under policy auto, run to its end by an in-process
    core worker: its final status and the message of its `remediation.finished` event."""
    store = SQLiteEventStore(home / "events.db")
    queue = f"q-{uuid.uuid4().hex[:8]}"
    try:
        async with core_worker(env.client, queue, store):
            status = await env.client.execute_workflow(
                RemediationWorkflow.run,
                RemediationInput(spec=spec, playbook="step_down_primary", policy=Policy.AUTO),
                id=workflow_id(spec.cluster_id, f"step_down_primary/{queue}"),
                task_queue=queue,
            )
        query = EventQuery(cluster_id=spec.cluster_id, types=("remediation.finished",))
        (finished,) = store.query(query)
        return status, finished.event.message
    finally:
        store.close()


def stand_in_set(step_down_answer: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The 8.0 set's replies, m1 answering `replSetStepDown` with `step_down_answer`."""
    found = {n: replies(f) for n, f in PSS80.items()}
    found["m1"] |= {"replSetStepDown": step_down_answer}
    return found


def set_spec(running: Mapping[str, ReplayServer]) -> ClusterSpec:
    return probe_spec(
        {n: s.address for n, s in running.items()}, probe={"interval_s": 0.5, "timeout_s": 1.0}
    )


async def test_step_down_remediation_on_a_stand_in_set_hands_the_primary_to_m2(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    after = after_election(PSS80, "m1", "m2")
    with replaying_set(stand_in_set(STEPPED_DOWN), after) as running:
        spec = set_spec(running)
        status, finished = await remediate(temporal_env, spec, tmp_path)
        view = await MongoDBAdapter().probe(spec)
    assert status.outcome is Outcome.HEALED, status
    assert status.verdict is not None and status.verdict.reason == (
        "electable secondaries within 10 s: m2 (0 s behind), m3 (3 s behind)"
    )
    assert [(r.step.name, r.state, r.detail) for r in status.steps] == [
        ("step-down-m1", "done", "m1 stepped down"),
        ("wait-primary-other-than-m1", "done", "verified"),
    ]
    assert finished == "step_down_primary: healed: every step done and verified"
    assert view.leader == "m2"
    assert {n: len(step_downs(s)) for n, s in running.items()} == {"m1": 1, "m2": 0, "m3": 0}


async def test_a_refused_step_down_fails_the_remediation_at_once_with_the_servers_reason(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    before = stand_in_set(NONE_CAUGHT_UP)
    with replaying_set(before, before) as running:
        status, finished = await remediate(temporal_env, set_spec(running), tmp_path)
    why = (
        f"m1 stayed primary: no electable secondary caught up within {CATCH_UP_S} s"
        f" (ExceededTimeLimit: {NONE_CAUGHT_UP['errmsg']})"
    )
    assert status.outcome is Outcome.FAILED, status
    assert [(r.step.name, r.state, r.detail) for r in status.steps] == [
        ("step-down-m1", "failed", why),
        ("wait-primary-other-than-m1", "pending", ""),
    ]
    assert finished == f"step_down_primary: failed: step-down-m1 failed: {why}"
    # Not retried: asked again, the primary would only refuse again.
    assert len(step_downs(running["m1"])) == 1
