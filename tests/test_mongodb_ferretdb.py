"""The MongoDB adapter against FerretDB: a real, independent implementation of MongoDB's
wire protocol, its commands and SCRAM (tests/conftest.py `ferretdb`, built by
scripts/install.sh), where the other MongoDB tests have only our stand-in.

FerretDB is not MongoDB and has no replica sets: its hello calls it the writable primary of
set rs0, alone, and it has no replSetGetStatus, replSetGetConfig or replSetStepDown. What
these tests prove is pymongo and our code against a server we did not write: the connection,
SCRAM-SHA-256 and SCRAM-SHA-1 logins with the spec's secrets, a wrong password and a missing
login, a hung and a killed server, and the view an honest reading of its hello gives.
Membership, member states and step-down stay on the recorded replies
(tests/test_mongodb_parsing.py) and on a real replica set (tests/test_mongodb_live.py).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from activities.mongodb.adapter import MongoDBAdapter
from devstack import processes
from devstack.ferretdb import SET_NAME, VERSION, FerretDB
from models import ClusterSpec, ClusterView, Role, evaluate, parse_spec

USER_ENV = "REPLICANTE_SECRET_FERRETDB_USER"
PASSWORD_ENV = "REPLICANTE_SECRET_FERRETDB_PASSWORD"


@pytest.fixture
def server(ferretdb_running: FerretDB) -> FerretDB:
    return ferretdb_running


def ferretdb_spec(
    server: FerretDB,
    secrets: dict[str, Any] | None = None,
    *,
    cluster_id: str = "ferretdb",
    **extra: Any,
) -> ClusterSpec:
    return parse_spec(
        {
            "cluster_id": cluster_id,
            "kind": "mongodb",
            "nodes": [{"node_id": "f1", "address": server.address}],
            "probe": {"timeout_s": 1.0},
            "secrets": secrets or {},
            **extra,
        }
    )


def env_login(monkeypatch: pytest.MonkeyPatch, user: str, password: str) -> dict[str, Any]:
    """The spec's username and password secrets, as env references in the secret scope."""
    monkeypatch.setenv(USER_ENV, user)
    monkeypatch.setenv(PASSWORD_ENV, password)
    return {"username": {"env": USER_ENV}, "password": {"env": PASSWORD_ENV}}


def codes(spec: ClusterSpec, view: ClusterView) -> list[tuple[str, str]]:
    return [(f.code, f.subject) for f in evaluate(spec, view)]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", None])
async def test_ferretdb_logs_in_and_reads_as_the_lone_primary_its_hello_claims(
    server: FerretDB, monkeypatch: pytest.MonkeyPatch, mechanism: str | None
) -> None:
    """With each mechanism (None: the server's choice). serverStatus needs the login, so an
    uptime means it worked. The rest is what the adapter derives from a hello with a
    setName and no member list, and a replSetGetStatus FerretDB does not have: one member,
    primary, voting alone, so a quorum of 1 of 1; no finding, as a lone mongod primary
    would have none. It is FerretDB: it says MongoDB 7.0.42, its process says otherwise."""
    secrets = env_login(monkeypatch, server.username, server.password)
    auth: dict[str, Any] = {"auth": {"mechanism": mechanism}} if mechanism else {}
    spec = ferretdb_spec(server, secrets, **auth)

    view = await MongoDBAdapter().probe(spec)

    (node,) = view.nodes
    assert (node.reachable, node.error, node.role) == (True, None, Role.PRIMARY), node
    assert node.version == "7.0.42"
    assert node.uptime_s is not None and node.uptime_s > 0
    assert node.facts["process"] == "ferretdb"
    assert node.facts["set_name"] == SET_NAME
    assert node.facts["status_error"] == "CommandNotFound: no such command: 'replSetGetStatus'"
    assert "server_status_error" not in node.facts
    assert (view.facts["topology"], view.facts["set_name"]) == ("replica_set", SET_NAME)
    assert (view.leader, view.quorum, view.voting_alive, view.voting_configured) == (
        "f1",
        True,
        1,
        1,
    )
    assert [(s.shard_id, s.node_id, s.role) for s in view.shards] == [
        (SET_NAME, "f1", Role.PRIMARY)
    ]
    assert codes(spec, view) == []


def test_ferretdb_is_the_version_install_sh_built(server: FerretDB) -> None:
    """buildInfo names FerretDB's own version beside the MongoDB one it claims."""
    client: MongoClient[dict[str, Any]] = MongoClient(server.uri(), directConnection=True)
    with client:
        info = client.admin.command("buildInfo")
    assert (info["ferretdbVersion"], info["version"]) == (VERSION, "7.0.42")


async def test_secrets_from_files_in_the_scope_log_in_to_ferretdb(
    server: FerretDB, tmp_path: Path
) -> None:
    """tmp_path lies under pytest's base temp dir, the suite's REPLICANTE_SECRETS_DIRS."""
    (tmp_path / "user").write_text(f"{server.username}\n")
    (tmp_path / "password").write_text(server.password)
    secrets = {"username": {"file": str(tmp_path / "user")}}
    secrets |= {"password": {"file": str(tmp_path / "password")}}

    view = await MongoDBAdapter().probe(ferretdb_spec(server, secrets))

    (node,) = view.nodes
    assert (node.reachable, node.error, node.role) == (True, None, Role.PRIMARY), node
    assert node.uptime_s is not None


@pytest.mark.parametrize("user", ["monitor", "nobody"])
async def test_a_wrong_login_on_ferretdb_is_auth_failed_never_a_node_down(
    server: FerretDB, monkeypatch: pytest.MonkeyPatch, user: str
) -> None:
    """A wrong password, or a user the server does not have: FerretDB answers code 18,
    the node reads as alive in the role its hello gives anyone, and the only finding is
    auth_failed, which no playbook answers (a restart would not fix our secret)."""
    password = "wr0ng-password-value"
    spec = ferretdb_spec(server, env_login(monkeypatch, user, password))

    view = await MongoDBAdapter().probe(spec)

    (node,) = view.nodes
    assert (node.reachable, node.role, node.error) == (True, Role.PRIMARY, "authentication failed")
    assert codes(spec, view) == [("auth_failed", "f1")]
    assert password not in view.model_dump_json()


async def test_no_login_on_a_ferretdb_that_requires_one_is_status_not_authorized(
    server: FerretDB,
) -> None:
    """hello and buildInfo answer anyone; serverStatus wants a login (code 13), and with no
    replSetGetStatus to refuse, that refusal is what tells the operator."""
    spec = ferretdb_spec(server)

    view = await MongoDBAdapter().probe(spec)

    (node,) = view.nodes
    assert (node.reachable, node.error, node.role) == (True, None, Role.PRIMARY), node
    assert node.uptime_s is None
    assert node.facts["server_status_error"] == (
        "Unauthorized: Command serverStatus requires authentication"
    )
    (finding,) = evaluate(spec, view)
    assert (finding.code, finding.subject) == ("status_not_authorized", "f1")
    assert finding.message.startswith("f1 refuses serverStatus to the probe")


async def test_a_hung_ferretdb_times_out_within_the_probe_timeout(server: FerretDB) -> None:
    """SIGSTOP: the kernel still accepts connections, nothing answers them."""
    pid = server.pid()
    assert pid is not None
    processes.send_signal(pid, signal.SIGSTOP)
    started = time.monotonic()
    view = await MongoDBAdapter().probe(ferretdb_spec(server))
    took = time.monotonic() - started

    (node,) = view.nodes
    assert (node.reachable, node.error) == (False, "timeout after 1.0s"), node
    assert took < 1.0 + 0.5 + 0.5, took
    # Its one member unread, the set it was has no voter left: no writes anywhere.
    assert codes(ferretdb_spec(server), view) == [("node_down", "f1"), ("quorum_lost", "ferretdb")]


async def test_a_held_link_hears_ferretdb_killed_then_the_probe_reads_it_refused(
    server: FerretDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch's held link (a pymongo monitor logged in as the spec says) tells of the
    crash without waiting for the next probe, and the probe through it says why."""
    spec = ferretdb_spec(server, env_login(monkeypatch, server.username, server.password))
    adapter = MongoDBAdapter()
    changed = threading.Event()
    with adapter.hold_links(spec, changed.set):
        up = await adapter.probe(spec)
        assert up.nodes[0].error is None, up.nodes[0]
        changed.clear()
        pid = server.pid()
        assert pid is not None
        processes.send_signal(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert changed.wait(timeout=5.0), "the held link never heard of the crash"
        heard_s = time.monotonic() - killed
        down = await adapter.probe(spec)
    assert heard_s < 1.5, heard_s  # ~0.5 s here: pymongo's heartbeat floor
    (node,) = down.nodes
    # What the held link's monitor last saw: its socket closed, or its reconnect refused.
    assert not node.reachable and node.error in ("connection closed", "connection refused"), node

    server.start()
    again = await MongoDBAdapter().probe(spec)
    assert (again.nodes[0].reachable, again.nodes[0].error) == (True, None), again.nodes[0]
