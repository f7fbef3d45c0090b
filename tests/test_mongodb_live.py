"""The MongoDB adapter against a real replica set, whenever REPLICANTE_TEST_MONGODB_URI names
one; skipped otherwise (no MongoDB server can run where this was written, so these tests
have not run there). docker-compose.yml has a 3-member set, its comment gives the URI.

The spec is built from the set's own member list, read from the URI's servers; a user and
password in the URI become the spec's `username` and `password` secrets (through env vars,
as a spec names them), and the adapter authenticates against `admin`. The URI is never
printed: it may carry a password.

The last test steps the set's primary down (a RemediationWorkflow on the session's Temporal
dev server): the set keeps a different primary for at least the 60 s the old one may not
stand again. With credentials, the user needs `replSetStepDown` (clusterManager) besides
clusterMonitor.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.uri_parser import parse_uri
from temporalio.testing import WorkflowEnvironment

from activities.mongodb.adapter import MongoDBAdapter
from activities.mongodb.links import LINK_STOP_WAIT_S
from models import ClusterSpec, Role, Severity, evaluate, parse_spec
from models.monitor import Outcome
from tests.test_mongodb_remediation import remediate

URI = os.environ.get("REPLICANTE_TEST_MONGODB_URI")
SKIP_REASON = (
    "needs a real MongoDB replica set: set REPLICANTE_TEST_MONGODB_URI"
    " (docker-compose.yml has a 3-member replica set)"
)
pytestmark = pytest.mark.skipif(not URI, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def members() -> list[str]:
    """Every member of the set, as the set names them (hosts, passives, arbiters)."""
    assert URI is not None
    client: MongoClient[dict[str, Any]] = MongoClient(URI, serverSelectionTimeoutMS=10_000)
    with client:
        hello = client.admin.command("hello")
    assert hello.get("setName"), "REPLICANTE_TEST_MONGODB_URI must name a replica set"
    found = [*hello.get("hosts", []), *hello.get("passives", []), *hello.get("arbiters", [])]
    return list(found)


@pytest.fixture
def spec(members: list[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ClusterSpec]:
    assert URI is not None
    parsed = parse_uri(URI)
    secrets = {}
    if parsed["username"]:
        monkeypatch.setenv("REPLICANTE_SECRET_LIVE_MONGODB_USER", parsed["username"])
        monkeypatch.setenv("REPLICANTE_SECRET_LIVE_MONGODB_PASSWORD", parsed["password"] or "")
        secrets = {
            "username": {"env": "REPLICANTE_SECRET_LIVE_MONGODB_USER"},
            "password": {"env": "REPLICANTE_SECRET_LIVE_MONGODB_PASSWORD"},
        }
    yield parse_spec(
        {
            "cluster_id": "live-mongodb",
            "kind": "mongodb",
            "nodes": [
                {"node_id": f"member{n}", "address": address}
                for n, address in enumerate(members, start=1)
            ],
            "probe": {"timeout_s": 5.0},
            "secrets": secrets,
        }
    )


async def test_probe_of_a_real_replica_set_sees_one_primary_and_every_member(
    spec: ClusterSpec,
) -> None:
    view = await MongoDBAdapter().probe(spec)
    unreachable = [(n.node_id, n.error) for n in view.nodes if not n.reachable]
    assert unreachable == []
    roles = [n.role for n in view.nodes]
    assert roles.count(Role.PRIMARY) == 1
    assert set(roles) <= {Role.PRIMARY, Role.SECONDARY, Role.ARBITER}
    assert view.leader == next(n.node_id for n in view.nodes if n.role is Role.PRIMARY)
    assert view.quorum is True
    assert view.voting_alive == view.voting_configured
    for node in view.nodes:
        assert node.version is not None and re.fullmatch(r"\d+\.\d+\.\d+.*", node.version)
        assert node.uptime_s is not None and node.uptime_s > 0
        assert node.latency_ms is not None and node.latency_ms > 0
        assert node.facts["set_name"] == view.facts["set_name"]
    set_name = str(view.facts["set_name"])
    majority = int(view.voting_configured or 0) // 2 + 1
    assert int(view.facts[f"{set_name}.write_majority_count"]) <= majority
    # A healthy set writes a no-op every 10 s even when idle: optimes are recent, and the
    # secondaries are seconds behind, not minutes.
    now = datetime.now(UTC).timestamp()
    data = [s for s in view.shards if s.role in (Role.PRIMARY, Role.SECONDARY)]
    assert data and all(s.commit_offset is not None for s in data)
    assert all(abs(now - (s.commit_offset or 0)) < 120 for s in data)
    assert all(s.lag is not None and 0 <= s.lag < 60 for s in data)
    assert [s.lag for s in data if s.role is Role.PRIMARY] == [0]
    primary_entry = next(s for s in view.shards if s.role is Role.PRIMARY)
    assert len(primary_entry.in_sync) >= (primary_entry.min_in_sync or 0)
    assert [f for f in evaluate(spec, view) if f.severity is Severity.CRITICAL] == []


async def test_held_links_to_a_real_replica_set_see_it_and_close_in_time(
    spec: ClusterSpec,
) -> None:
    changes: list[float] = []
    adapter = MongoDBAdapter()
    links = adapter.hold_links(spec, lambda: changes.append(time.monotonic()))
    await asyncio.to_thread(links.__enter__)
    try:
        # Each client's first heartbeat turns its server from unknown to primary/secondary.
        deadline = time.monotonic() + 5.0
        while len(changes) < len(spec.nodes) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(changes) >= len(spec.nodes)
        # The probe reads through the held clients.
        view = await adapter.probe(spec)
        assert all(n.reachable for n in view.nodes)
    finally:
        started = time.monotonic()
        await asyncio.to_thread(links.__exit__, None, None, None)
        closing = time.monotonic() - started
    assert closing < LINK_STOP_WAIT_S + 0.2


def primary_other_than(old: str, timeout: float) -> str | None:
    """The primary the set names once it names one other than `old`, asked through a plain
    replica set client rather than our adapter; None if it does not within `timeout`."""
    assert URI is not None
    client: MongoClient[dict[str, Any]] = MongoClient(URI, serverSelectionTimeoutMS=10_000)
    deadline = time.monotonic() + timeout
    with client:
        while time.monotonic() < deadline:
            primary = client.admin.command("hello").get("primary")
            if isinstance(primary, str) and primary.lower() != old.lower():
                return primary
            time.sleep(0.5)
    return None


async def test_step_down_remediation_hands_a_real_primary_to_another_member(
    spec: ClusterSpec, temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    before = await MongoDBAdapter().probe(spec)
    old = before.leader
    assert old is not None, "the set has no primary to step down"
    status, finished = await remediate(temporal_env, spec, tmp_path)
    assert status.outcome is Outcome.HEALED, finished
    assert status.verdict is not None and status.verdict.reason.startswith(
        "electable secondaries within 10 s: "
    )
    assert [(r.step.name, r.state) for r in status.steps] == [
        (f"step-down-{old}", "done"),
        (f"wait-primary-other-than-{old}", "done"),
    ]
    assert status.steps[0].detail.startswith(f"{old} stepped down")
    after = await MongoDBAdapter().probe(spec)
    assert after.leader is not None and after.leader != old
    stepped_down = after.node(old)
    assert stepped_down is not None and stepped_down.role is Role.SECONDARY
    # The set's own word, not only our adapter's: the old primary may not stand again for
    # 60 s, so nothing hands the role back meanwhile.
    primary = await asyncio.to_thread(primary_other_than, spec.node(old).address, 30.0)
    assert primary is not None, f"the set still names {old} its primary"
    assert primary.lower() == spec.node(after.leader).address.lower()
