"""The pure functions of models/: `changes()`, `evaluate()`, `health_of()`, signatures, and
the doctests in models/ and client/cli.py. No servers: these run in milliseconds."""

from __future__ import annotations

import doctest
import importlib
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest

from models import (
    ClusterSpec,
    ClusterView,
    EventDraft,
    Finding,
    Health,
    Kind,
    MonitorInput,
    MonitorState,
    NodeStatus,
    Role,
    Severity,
    changes,
    evaluate,
    health_of,
    parse_spec,
    watch_key,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ADDRESSES = {"zk1": "10.0.0.1:2181", "zk2": "10.0.0.2:2181", "zk3": "10.0.0.3:2181"}


def spec(members: int | None = None) -> ClusterSpec:
    return parse_spec(
        {
            "cluster_id": "c1",
            "kind": "zookeeper",
            "nodes": [{"node_id": n, "address": a} for n, a in ADDRESSES.items()],
            "expect": {"members": members},
        }
    )


def node(
    node_id: str,
    role: Role | None,
    *,
    latency_ms: float = 1.0,
    zxid: int = 1,
    error: str = "connection refused",
) -> NodeStatus:
    """`role=None` means unreachable."""
    if role is None:
        return NodeStatus(node_id=node_id, address=ADDRESSES[node_id], reachable=False, error=error)
    return NodeStatus(
        node_id=node_id,
        address=ADDRESSES[node_id],
        reachable=True,
        role=role,
        latency_ms=latency_ms,
        facts={"zxid": zxid},
    )


def view(
    *roles: Role | None,
    at: datetime = T0,
    latency_ms: float = 1.0,
    zxid: int = 1,
    error: str = "connection refused",
) -> ClusterView:
    """A view of zk1..zk3 with these roles; leader and quorum derived as the probe does."""
    nodes = tuple(
        node(f"zk{i}", role, latency_ms=latency_ms, zxid=zxid, error=error)
        for i, role in enumerate(roles, start=1)
    )
    leaders = [n.node_id for n in nodes if n.role is Role.LEADER]
    alive = sum(1 for n in nodes if n.reachable)
    leader = leaders[0] if len(leaders) == 1 else None
    return ClusterView(
        cluster_id="c1",
        kind=Kind.ZOOKEEPER,
        observed_at=at,
        nodes=nodes,
        leader=leader,
        quorum=alive > len(nodes) // 2,
        voting_alive=alive,
        voting_configured=len(nodes),
    )


L, F, LOOKING = Role.LEADER, Role.FOLLOWER, Role.LOOKING
HEALTHY = view(L, F, F)


def step(
    before: ClusterView | None,
    after: ClusterView,
    s: ClusterSpec | None = None,
    finding_events: bool = False,
) -> list[EventDraft]:
    """The events between two views; without finding events unless asked, so each test
    reads the node and cluster events it is about."""
    s = s or spec()
    return changes(
        before,
        after,
        evaluate(s, before) if before is not None else [],
        evaluate(s, after),
        finding_events=finding_events,
    )


def types(drafts: list[EventDraft]) -> list[tuple[str, str | None]]:
    return [(d.type, d.node_id) for d in drafts]


# --- changes() -----------------------------------------------------------------------------


def test_first_view_emits_only_health_changed() -> None:
    drafts = step(None, HEALTHY)
    assert types(drafts) == [("cluster.health_changed", None)]
    assert drafts[0].payload == {"from": "unknown", "to": "healthy", "findings": []}
    assert drafts[0].severity is Severity.INFO


def test_first_view_of_a_degraded_cluster_does_not_claim_a_node_went_down() -> None:
    drafts = step(None, view(L, F, None))
    assert types(drafts) == [("cluster.health_changed", None)]
    assert drafts[0].payload["to"] == "degraded"
    assert drafts[0].payload["findings"] == ["node_down/zk3"]
    assert drafts[0].severity is Severity.WARNING


def test_same_view_emits_nothing() -> None:
    assert step(HEALTHY, HEALTHY) == []
    # Moving counters are no change either.
    assert step(HEALTHY, view(L, F, F, latency_ms=80.0, zxid=99)) == []


def test_follower_down() -> None:
    drafts = step(HEALTHY, view(L, F, None))
    assert types(drafts) == [("node.down", "zk3"), ("cluster.health_changed", None)]
    down = drafts[0]
    assert down.severity is Severity.WARNING
    assert down.payload == {"address": "10.0.0.3:2181", "error": "connection refused", "was": F}
    assert "connection refused" in down.message
    assert drafts[1].payload["from"] == "healthy"
    assert drafts[1].payload["to"] == "degraded"


def test_follower_up_again() -> None:
    drafts = step(view(L, F, None), HEALTHY)
    assert types(drafts) == [("node.up", "zk3"), ("cluster.health_changed", None)]
    assert drafts[0].payload == {"address": "10.0.0.3:2181", "role": F}
    assert drafts[1].payload == {"from": "degraded", "to": "healthy", "findings": []}
    assert drafts[1].severity is Severity.INFO


def test_role_changed_and_leader_changed() -> None:
    drafts = step(HEALTHY, view(F, L, F))
    assert types(drafts) == [
        ("node.role_changed", "zk1"),
        ("node.role_changed", "zk2"),
        ("cluster.leader_changed", "zk2"),
    ]
    assert drafts[0].payload == {"from": L, "to": F}
    assert drafts[1].payload == {"from": F, "to": L}
    assert drafts[2].payload == {"from": "zk1", "to": "zk2"}


def test_leader_killed_then_a_new_leader() -> None:
    electing = view(None, LOOKING, LOOKING)
    lost = step(HEALTHY, electing)
    assert types(lost) == [
        ("node.down", "zk1"),
        ("node.role_changed", "zk2"),
        ("node.role_changed", "zk3"),
        ("cluster.leader_lost", "zk1"),
        ("cluster.health_changed", None),
    ]
    # Two of three alive and electing: a quorum without a leader, not quorum lost.
    assert lost[3].payload == {"was": "zk1"}
    assert lost[4].payload["to"] == "unavailable"
    assert lost[4].payload["findings"] == [
        "node_down/zk1",
        "node_not_serving/zk2",
        "node_not_serving/zk3",
        "no_leader/c1",
    ]

    findings = evaluate(spec(), electing)
    regained = changes(
        electing,
        view(None, F, L),
        findings,
        evaluate(spec(), view(None, F, L)),
        "zk1",
        finding_events=False,
    )
    assert types(regained) == [
        ("node.role_changed", "zk2"),
        ("node.role_changed", "zk3"),
        ("cluster.leader_changed", "zk3"),
        ("cluster.health_changed", None),
    ]
    # The leader before the election is what leader_changed reports as "from".
    assert regained[2].payload == {"from": "zk1", "to": "zk3"}
    assert regained[3].payload["from"] == "unavailable"
    assert regained[3].payload["to"] == "degraded"


def test_two_followers_down_loses_quorum_once() -> None:
    one_down = view(L, F, None)
    lost_view = view(LOOKING, None, None)
    drafts = step(one_down, lost_view)
    assert ("cluster.quorum_lost", None) in types(drafts)
    assert ("node.down", "zk2") in types(drafts)
    # Still without quorum a moment later: no second quorum_lost.
    assert step(lost_view, view(LOOKING, None, None, latency_ms=9.0)) == []
    back = step(lost_view, view(L, F, None))
    assert ("cluster.quorum_regained", None) in types(back)
    assert ("cluster.quorum_lost", None) not in types(back)


def test_findings_open_and_resolve_as_events() -> None:
    down = step(HEALTHY, view(L, F, None), finding_events=True)
    assert types(down) == [
        ("node.down", "zk3"),
        ("finding.opened", "zk3"),
        ("cluster.health_changed", None),
    ]
    assert down[1].payload == {"finding": "node_down/zk3", "code": "node_down", "subject": "zk3"}
    assert down[1].severity is Severity.WARNING
    lost = step(view(L, F, None), view(LOOKING, None, None), finding_events=True)
    opened = [d.payload["finding"] for d in lost if d.type == "finding.opened"]
    assert opened == ["node_not_serving/zk1", "node_down/zk2", "quorum_lost/c1"]
    # Cluster-wide findings name no node.
    assert [d.node_id for d in lost if d.type == "finding.opened"][-1] is None
    back = step(view(LOOKING, None, None), HEALTHY, finding_events=True)
    resolved = [d.payload["finding"] for d in back if d.type == "finding.resolved"]
    assert resolved == ["node_not_serving/zk1", "node_down/zk2", "node_down/zk3", "quorum_lost/c1"]
    assert all(d.severity is Severity.INFO for d in back if d.type == "finding.resolved")


def test_node_missing_from_the_earlier_view_is_not_reported() -> None:
    """A node the spec gained (replace_spec) has no 'before': nothing came up."""
    before = ClusterView(
        cluster_id="c1",
        kind=Kind.ZOOKEEPER,
        observed_at=T0,
        nodes=HEALTHY.nodes[:2],
        leader="zk1",
        quorum=True,
        voting_alive=2,
        voting_configured=3,
    )
    assert [d.type for d in step(before, HEALTHY)] == []


# --- evaluate() and health_of() ------------------------------------------------------------


def codes(findings: list[Finding]) -> list[str]:
    return [f.key for f in findings]


def test_evaluate_healthy_has_no_findings() -> None:
    assert evaluate(spec(members=3), HEALTHY) == []


def test_evaluate_node_down_and_members_missing() -> None:
    findings = evaluate(spec(members=3), view(L, F, None, error="timeout after 1.0s"))
    assert codes(findings) == ["node_down/zk3", "members_missing/c1"]
    assert [f.severity for f in findings] == [Severity.WARNING, Severity.WARNING]
    assert "timeout after 1.0s" in findings[0].message
    assert "10.0.0.3:2181" in findings[0].message
    assert findings[1].message == "2 members serving, 3 expected"
    # Without the expectation, a missing member is only the node_down finding.
    assert codes(evaluate(spec(), view(L, F, None))) == ["node_down/zk3"]


def test_evaluate_looking_member_is_not_serving() -> None:
    findings = evaluate(spec(members=2), view(L, F, LOOKING))
    assert codes(findings) == ["node_not_serving/zk3"]


def test_evaluate_quorum_lost_is_critical() -> None:
    findings = evaluate(spec(), view(LOOKING, None, None))
    assert codes(findings) == [
        "node_not_serving/zk1",
        "node_down/zk2",
        "node_down/zk3",
        "quorum_lost/c1",
    ]
    assert findings[-1].severity is Severity.CRITICAL
    # zk1 is alive (out of quorum, not serving): alive counts, serving does not.
    assert findings[-1].message.startswith("1 of 3 voting members alive")


def test_evaluate_quorum_without_leader() -> None:
    odd = HEALTHY.model_copy(update={"leader": None, "quorum": True})
    findings = evaluate(spec(), odd)
    assert codes(findings) == ["no_leader/c1"]
    assert findings[0].severity is Severity.CRITICAL


@pytest.mark.parametrize(
    ("findings", "expected"),
    [
        ([], Health.HEALTHY),
        # An INFO finding (a leader not on its preferred replica) is no degradation.
        ([Severity.INFO], Health.HEALTHY),
        ([Severity.WARNING, Severity.INFO], Health.DEGRADED),
        ([Severity.WARNING, Severity.CRITICAL], Health.UNAVAILABLE),
    ],
)
def test_health_of(findings: list[Severity], expected: Health) -> None:
    made = [
        Finding(code="x", severity=s, subject=f"s{i}", message="m") for i, s in enumerate(findings)
    ]
    assert health_of(HEALTHY, made) is expected


def test_health_of_no_view_is_unknown_whatever_the_findings() -> None:
    assert health_of(None, []) is Health.UNKNOWN
    critical = Finding(code="quorum_lost", severity=Severity.CRITICAL, subject="c1", message="m")
    assert health_of(None, [critical]) is Health.UNKNOWN


# --- ClusterView.signature() ---------------------------------------------------------------


def test_signature_ignores_moving_counters_and_time() -> None:
    later = view(L, F, F, at=T0 + timedelta(minutes=5), latency_ms=250.0, zxid=0x500000007)
    assert later != HEALTHY
    assert later.signature() == HEALTHY.signature()


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(view(F, L, F), id="role"),
        pytest.param(view(L, F, None), id="reachability"),
        pytest.param(view(L, F, LOOKING), id="looking"),
        pytest.param(HEALTHY.model_copy(update={"leader": "zk2"}), id="leader"),
        pytest.param(HEALTHY.model_copy(update={"quorum": False}), id="quorum"),
    ],
)
def test_signature_sees_role_reachability_leader_and_quorum(other: ClusterView) -> None:
    assert other.signature() != HEALTHY.signature()


# --- doctests ------------------------------------------------------------------------------

DOCTEST_MODULES = [
    "models.agent",
    "models.events",
    "models.findings.base",
    "models.playbooks",
    "models.monitor",
    "models.spec",
    "models.view",
    "client.cli",
    "config.codec",
    "config.kafka",
    "config.logs",
    "config.mongodb",
    "config.secret_scope",
    "config.secrets",
    "config.settings",
    "config.stream",
    "config.temporal",
    "config.traces",
    "config.zookeeper",
    "workflows.guards",
]


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_doctests_pass(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


@pytest.mark.parametrize(
    "name", ["models.spec", "client.cli", *(m for m in DOCTEST_MODULES if m.startswith("config."))]
)
def test_documented_modules_have_doctests(name: str) -> None:
    """Guards against the doctest runner passing vacuously (e.g. a module that lost them)."""
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0


def test_watch_key_follows_the_signature_and_the_open_findings() -> None:
    assert watch_key(spec(), HEALTHY) == watch_key(spec(), view(L, F, F, latency_ms=80.0, zxid=9))
    assert watch_key(spec(), HEALTHY) != watch_key(spec(), view(L, F, None))
    # Same view, a stricter spec: a finding opens, so the watch must report.
    two = view(L, F, LOOKING)
    assert watch_key(spec(members=2), two) != watch_key(spec(members=3), two)


# --- MonitorInput: one state object, the flat wire form -----------------------------------


def test_monitor_input_carries_one_state_and_keeps_its_flat_wire_form() -> None:
    state = MonitorState(view=HEALTHY, paused=True, spec_generation=3, last_leader="zk1")
    state.blocked_until["node_down/zk2"] = T0
    carried = MonitorInput(spec=spec(), state=state, changes_per_run=7)
    assert carried.state is state
    wire = carried.model_dump(mode="json")
    # The keys monitors started before the state was one object send and read.
    assert sorted(wire) == [
        "blocked_until",
        "changes_per_run",
        "last_leader",
        "paused",
        "remediating",
        "spec",
        "spec_generation",
        "view",
    ]
    back = MonitorInput.model_validate_json(carried.model_dump_json())
    assert back == carried
    assert back.state.paused and back.state.blocked_until == {"node_down/zk2": T0}
    fresh = MonitorInput(spec=spec())
    assert fresh.state == MonitorState()
    assert MonitorInput.model_validate({"spec": spec(), "paused": True}).state.paused
