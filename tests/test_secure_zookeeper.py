"""ZooKeeper with SASL logins (spec `auth: {mechanism: DIGEST-MD5}` and the secrets
`username` and `password`), on a real 3-member ensemble that requires them: the probe with
the right secret reads the ensemble healthy; a wrong or missing password is an observation
on each member (reachable, with its role, `auth_failed`), never a crash nor a member down;
held links log in; and a monitor on the real Temporal dev server sees a password go wrong
and be put right, with the password nowhere in views, events, logs or the history as the
server holds it."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.zookeeper.adapter import ZooKeeperAdapter
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, Role, evaluate, parse_spec
from store import EventQuery
from tests.helpers import Changes, monitoring
from workflows.monitor import ClusterMonitorWorkflow

USER = "monitor"


def sasl_spec(
    ensemble: ZooKeeperEnsemble, password_file: Path, user_env: str, mechanism: str = "DIGEST-MD5"
) -> ClusterSpec:
    """The username from an env var, the password from a file: both kinds of reference."""
    return parse_spec(
        {
            "cluster_id": f"zk-sasl-{uuid.uuid4().hex[:6]}",
            "kind": "zookeeper",
            "nodes": [
                {"node_id": f"zk{n}", "address": address}
                for n, address in enumerate(ensemble.addresses, start=1)
            ],
            "probe": {"interval_s": 0.5, "timeout_s": 2.0},
            "secrets": {"username": {"env": user_env}, "password": {"file": str(password_file)}},
            "auth": {"mechanism": mechanism},
        }
    )


@pytest.fixture
def spec(
    zk_sasl_ensemble: ZooKeeperEnsemble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ClusterSpec:
    """A spec of the SASL ensemble whose password file holds the right password."""
    user_env = f"REPLICANTE_SECRET_TEST_ZK_USER_{uuid.uuid4().hex[:6].upper()}"
    monkeypatch.setenv(user_env, USER)
    password_file = tmp_path / "zk-password"
    password_file.write_text(zk_sasl_ensemble.sasl_users[USER] + "\n")
    return sasl_spec(zk_sasl_ensemble, password_file, user_env)


def password_file(spec: ClusterSpec) -> Path:
    ref = spec.secrets["password"].file
    assert ref is not None
    return Path(ref)


async def test_the_right_secret_reads_the_ensemble_healthy(spec: ClusterSpec) -> None:
    view = await ZooKeeperAdapter().probe(spec)
    assert [(n.reachable, n.error) for n in view.nodes] == [(True, None)] * 3
    assert sorted(n.role for n in view.nodes) == [Role.FOLLOWER, Role.FOLLOWER, Role.LEADER]
    assert view.quorum and view.leader is not None
    assert evaluate(spec, view) == []


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("wrong", "authentication failed: the member refused the login"),
        ("missing", "authentication failed: secret 'password': cannot read {file}: No such"),
        ("digest", "authentication failed: the member requires a SASL login (auth: DIGEST-MD5)"),
    ],
)
async def test_a_wrong_or_missing_password_is_an_observation_on_each_member(
    spec: ClusterSpec, zk_sasl_ensemble: ZooKeeperEnsemble, case: str, says: str
) -> None:
    secret = password_file(spec)
    if case == "wrong":
        secret.write_text("not-the-password")
    elif case == "missing":
        secret.unlink()
    else:
        # ZooKeeper's digest scheme, right password, on an ensemble that requires SASL.
        spec = spec.model_copy(
            update={"auth": spec.auth.model_copy(update={"mechanism": "digest"})}  # type: ignore[union-attr]
        )
    view = await ZooKeeperAdapter().probe(spec)
    expected = says.format(file=secret)
    assert all(n.reachable and (n.error or "").startswith(expected) for n in view.nodes), view
    # What the four-letter words say is kept: roles, leader, quorum.
    assert sorted(n.role for n in view.nodes) == [Role.FOLLOWER, Role.FOLLOWER, Role.LEADER]
    assert view.quorum and view.leader is not None
    findings = evaluate(spec, view)
    assert sorted((f.code, f.subject) for f in findings) == [
        ("auth_failed", "zk1"),
        ("auth_failed", "zk2"),
        ("auth_failed", "zk3"),
    ]
    assert zk_sasl_ensemble.sasl_users[USER] not in view.model_dump_json()


async def test_a_refused_login_never_reads_as_a_member_that_did_not_answer(
    spec: ClusterSpec,
) -> None:
    """A refusal can end the session inside kazoo's `start` or just before a request is
    queued; either race once read as "no answer within 2.0s" about one probe in sixty."""
    password_file(spec).write_text("not-the-password")
    adapter = ZooKeeperAdapter()
    errors: Counter[str | None] = Counter()
    for _ in range(120):
        view = await adapter.probe(spec)
        errors.update(n.error for n in view.nodes)
    assert errors == {"authentication failed: the member refused the login": 360}


def test_held_links_log_in_and_a_refused_login_ends_them_cleanly(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    changes = Changes()
    adapter = ZooKeeperAdapter()
    with adapter.hold_links(spec, changes):
        # Each link tells of its connection, then nothing: logged in, it stays up.
        assert changes.wait_for(3, timeout=10)
        time.sleep(1.5)
        assert len(changes.times) == 3
    password_file(spec).write_text("not-the-password")
    refused = Changes()
    with adapter.hold_links(spec, refused):
        # Connected, then lost as the login is refused; kazoo alone would crash the link's
        # thread and leave it saying it is connected.
        assert refused.wait_for(6, timeout=10)
        time.sleep(1.0)
        assert len(refused.times) == 6
    assert crashed == []


async def test_a_monitor_sees_a_password_go_wrong_and_put_right_and_never_shows_it(
    temporal_env: WorkflowEnvironment,
    zk_sasl_ensemble: ZooKeeperEnsemble,
    spec: ClusterSpec,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = zk_sasl_ensemble.sasl_users[USER]
    secret = password_file(spec)
    async with monitoring(temporal_env.client, spec, tmp_path) as monitor:
        healthy = await monitor.until("cluster.health_changed")
        assert healthy.payload["to"] == "healthy", healthy
        monitor.set_mark()
        secret.write_text(f"{password}-but-wrong")
        opened = await monitor.first(
            lambda e: e.type == "finding.opened" and e.payload.get("code") == "auth_failed"
        )
        assert "authentication failed: the member refused the login" in opened.message
        monitor.set_mark()
        secret.write_text(password)
        await monitor.first(
            lambda e: e.type == "finding.resolved" and e.payload.get("code") == "auth_failed"
        )
        status = await monitor.handle.query(ClusterMonitorWorkflow.status)
        history = await monitor.handle.fetch_history()
        events = list(monitor.store.query(EventQuery(cluster_id=spec.cluster_id)))
    raw = b"".join(event.SerializeToString() for event in history.events)
    # The search sees payloads in clear (the test server has no codec): the spec's
    # reference to the password is there, the password is not.
    assert str(secret).encode() in raw
    assert password.encode() not in raw
    assert password not in str(status)
    assert events and not [s for s in events if password in s.event.model_dump_json()]
    assert password not in caplog.text
