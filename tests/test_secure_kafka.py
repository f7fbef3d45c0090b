"""Kafka with SASL logins (spec `auth: {mechanism: PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512}`
and the secrets `username` and `password`: SASL_PLAINTEXT, and SASL_SSL with `tls`), on
a real 1-broker KRaft cluster whose client listeners want them: the adapter's own protocol
path logs in with each mechanism, over TLS too; a wrong or missing password, or a broker
certificate the spec's CA did not sign, is an observation on the broker (reachable,
`auth_failed`), never a broker down; kafka-python clients (the remediation's admin client)
get the same login from the spec, and the event stream's from REPLICANTE_EVENTS_KAFKA_*."""

from __future__ import annotations

import doctest
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from activities.kafka.adapter import KafkaAdapter
from activities.kafka.links import LINK_RETRY_S
from activities.stream import KafkaPublisher
from config import stream
from config.kafka import KafkaLogin
from config.stream import StreamSettings, login_from_env
from devstack.kafka import KafkaCluster
from models import ClusterSpec, Event, Role, SpecError, evaluate, parse_spec
from tests.conftest import heal
from tests.helpers import Changes
from tests.secure_certs import TestCa

USER = "monitor"


def sasl_spec(
    cluster: KafkaCluster, mechanism: str, password_file: Path, ca: Path | None = None
) -> ClusterSpec:
    """SASL_PLAINTEXT; SASL_SSL on the TLS listener, trusting `ca`, when given one."""
    tls = {"tls": {"ca_file": str(ca)}} if ca is not None else {}
    return parse_spec(
        {
            "cluster_id": f"kafka-sasl-{uuid.uuid4().hex[:6]}",
            "kind": "kafka",
            "nodes": [
                {"node_id": f"kafka{n}", "address": address}
                for n, address in enumerate(
                    cluster.addresses if ca is None else cluster.tls_addresses, start=1
                )
            ],
            **tls,
            "probe": {"timeout_s": 2.0},
            "secrets": {
                "username": {"env": "REPLICANTE_SECRET_TEST_KAFKA_USER"},
                "password": {"file": str(password_file)},
            },
            "auth": {"mechanism": mechanism},
        }
    )


@pytest.fixture
def password_file(
    kafka_sasl_cluster: KafkaCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Holds the right password; the username comes from an env var."""
    monkeypatch.setenv("REPLICANTE_SECRET_TEST_KAFKA_USER", USER)
    path = tmp_path / "kafka-password"
    path.write_text(kafka_sasl_cluster.sasl_users[USER] + "\n")
    return path


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_the_probe_logs_in_with_each_mechanism(
    kafka_sasl_cluster: KafkaCluster, password_file: Path, mechanism: str
) -> None:
    spec = sasl_spec(kafka_sasl_cluster, mechanism, password_file)
    view = await KafkaAdapter().probe(spec)
    [node] = view.nodes
    assert (node.reachable, node.error, node.role) == (True, None, Role.CONTROLLER), node
    assert view.leader == "kafka1" and view.facts["partitions"] == 0
    assert evaluate(spec, view) == []


def brokers_seen(addresses: list[str], login: KafkaLogin) -> int:
    """How many brokers kafka-python's admin client, logged in as `login`, is told of."""
    admin = KafkaAdminClient(
        bootstrap_servers=addresses,
        request_timeout_ms=5000,
        bootstrap_timeout_ms=5000,
        **login.client_options(),
    )
    try:
        return len(admin.describe_cluster()["brokers"])
    finally:
        admin.close()


@pytest.mark.parametrize(
    ("mechanism", "case", "says"),
    [
        (
            "PLAIN",
            "wrong",
            "authentication failed: Authentication failed: Invalid username or password",
        ),
        (
            "SCRAM-SHA-512",
            "wrong",
            "authentication failed: Authentication failed during authentication due to invalid"
            " credentials with SASL mechanism SCRAM-SHA-512",
        ),
        ("PLAIN", "missing", "authentication failed: secret 'password': cannot read {file}"),
    ],
)
async def test_a_wrong_or_missing_password_is_an_observation(
    kafka_sasl_cluster: KafkaCluster, password_file: Path, mechanism: str, case: str, says: str
) -> None:
    password = kafka_sasl_cluster.sasl_users[USER]
    if case == "wrong":
        password_file.write_text(f"{password}-but-wrong")
    else:
        password_file.unlink()
    spec = sasl_spec(kafka_sasl_cluster, mechanism, password_file)
    view = await KafkaAdapter().probe(spec)
    [node] = view.nodes
    assert node.reachable and node.error is not None, node
    assert node.error.startswith(says.format(file=password_file)), node.error
    assert [(f.code, f.subject) for f in evaluate(spec, view)] == [("auth_failed", "kafka1")]
    assert password not in view.model_dump_json()


async def test_sasl_ssl_with_the_spec_ca_and_an_untrusted_one(
    kafka_sasl_cluster: KafkaCluster, password_file: Path, test_ca: TestCa, tmp_path: Path
) -> None:
    spec = sasl_spec(kafka_sasl_cluster, "SCRAM-SHA-256", password_file, test_ca.cert)
    assert KafkaAdapter().login_of(spec).security_protocol == "SASL_SSL"
    view = await KafkaAdapter().probe(spec)
    [node] = view.nodes
    assert (node.reachable, node.error, node.role) == (True, None, Role.CONTROLLER), node
    assert evaluate(spec, view) == []
    assert brokers_seen(kafka_sasl_cluster.tls_addresses, KafkaAdapter().login_of(spec)) == 1

    other = TestCa.create(tmp_path, "other-ca")
    untrusting = sasl_spec(kafka_sasl_cluster, "SCRAM-SHA-256", password_file, other.cert)
    [node] = (await KafkaAdapter().probe(untrusting)).nodes
    assert node.reachable, node
    assert str(node.error).startswith("TLS: certificate verify failed"), node.error


def test_held_links_over_tls_see_the_broker_die_at_once_and_come_back(
    kafka_sasl_cluster: KafkaCluster, password_file: Path, test_ca: TestCa, tmp_path: Path
) -> None:
    """A link is TLS (handshake, then ApiVersions, which the SASL_SSL listener answers
    before any login): it comes up with the spec's CA, never with a CA that did not sign
    the broker's certificate, and tells of a SIGKILLed broker at once, not at the next
    probe, then of its return."""
    spec = sasl_spec(kafka_sasl_cluster, "PLAIN", password_file, test_ca.cert)
    other = TestCa.create(tmp_path, "other-ca")
    untrusting = sasl_spec(kafka_sasl_cluster, "PLAIN", password_file, other.cert)
    changes, untrusted = Changes(), Changes()
    adapter = KafkaAdapter()
    with adapter.hold_links(spec, changes), adapter.hold_links(untrusting, untrusted):
        assert changes.wait_for(1, timeout=10)
        # Past the window in which a link dropped right after coming up is a broker in
        # trouble whatever the reconnect says.
        time.sleep(2 * LINK_RETRY_S + 0.2)
        try:
            killed = time.monotonic()
            kafka_sasl_cluster.kill_member(1)
            seen = changes.first_after(killed, timeout=5)
            assert seen is not None and seen < 2.0, seen  # the probe interval is 5 s
            kafka_sasl_cluster.start_member(1)
            kafka_sasl_cluster.wait_ready(timeout=60)
            assert changes.wait_for(3, timeout=10), changes.times
        finally:
            heal(kafka_sasl_cluster, timeout=90)
        assert untrusted.times == []


async def test_a_spec_without_auth_at_a_sasl_listener_is_a_login_not_a_broker_down(
    kafka_sasl_cluster: KafkaCluster, password_file: Path
) -> None:
    """The broker answers ApiVersions, then closes the connection on DescribeCluster (it
    wants SaslHandshake first): alive, and our config is wrong, so `auth_failed`, never
    `node_down` (whose playbook would restart a broker that is alive). Twice: the next
    probe reconnects and reads the same."""
    spec = sasl_spec(kafka_sasl_cluster, "PLAIN", password_file).model_copy(update={"auth": None})
    assert KafkaAdapter().login_of(spec).security_protocol == "PLAINTEXT"
    adapter = KafkaAdapter()
    for _ in range(2):
        view = await adapter.probe(spec)
        [node] = view.nodes
        assert node.reachable and node.role is Role.UNKNOWN, node
        assert node.error == (
            "answers ApiVersions but closed the connection on DescribeCluster:"
            " it may need a login (spec `auth`)"
        ), node.error
        codes = [f.code for f in evaluate(spec, view)]
        assert "auth_failed" in codes and "node_down" not in codes, codes


async def test_a_spec_without_tls_at_a_tls_listener_is_not_a_broker_down(
    kafka_sasl_cluster: KafkaCluster, password_file: Path, test_ca: TestCa
) -> None:
    """The TLS listener answers our plaintext ApiVersions with a TLS alert: alive."""
    spec = sasl_spec(kafka_sasl_cluster, "PLAIN", password_file, test_ca.cert).model_copy(
        update={"auth": None, "tls": None}
    )
    view = await KafkaAdapter().probe(spec)
    [node] = view.nodes
    assert node.reachable, node
    assert node.error == "answers TLS, not plaintext: it may need spec `tls`", node.error
    assert [f.code for f in evaluate(spec, view)] == ["auth_failed"]


def test_kafka_python_clients_log_in_as_the_spec_says(
    kafka_sasl_cluster: KafkaCluster, password_file: Path
) -> None:
    spec = sasl_spec(kafka_sasl_cluster, "SCRAM-SHA-256", password_file)
    login = KafkaAdapter().login_of(spec)
    assert login == KafkaLogin(
        mechanism="SCRAM-SHA-256", username=USER, password=kafka_sasl_cluster.sasl_users[USER]
    )
    assert kafka_sasl_cluster.sasl_users[USER] not in repr(login)
    assert brokers_seen(kafka_sasl_cluster.addresses, login) == 1


def test_the_event_stream_publishes_and_reads_back_with_a_login(
    kafka_sasl_cluster: KafkaCluster,
) -> None:
    """The relay's producer, admin client and read-back consumer, logged in from
    REPLICANTE_EVENTS_KAFKA_* as a worker reads them."""
    login = login_from_env(
        {
            "REPLICANTE_EVENTS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "REPLICANTE_EVENTS_KAFKA_USERNAME": USER,
            "REPLICANTE_EVENTS_KAFKA_PASSWORD": kafka_sasl_cluster.sasl_users[USER],
        }
    )
    settings = StreamSettings(
        bootstrap=kafka_sasl_cluster.bootstrap,
        topic=f"test.events.{uuid.uuid4().hex[:8]}",
        login=login,
    )
    events = [
        Event(
            event_id=f"sasl/{n}",
            cluster_id="sasl",
            type="test.numbered",
            at=datetime.now(UTC),
            message=f"event {n}",
        )
        for n in range(3)
    ]
    publisher = KafkaPublisher(settings)
    try:
        publisher.ensure_topic(partitions=1)
        publisher.publish(events)
        assert publisher.already_there({e.event_id for e in events} | {"sasl/9"}) == {
            e.event_id for e in events
        }
    finally:
        publisher.close()


def test_doctests() -> None:
    result = doctest.testmod(stream)
    assert result.attempted and not result.failed


def test_an_unknown_stream_mechanism_is_one_line() -> None:
    with pytest.raises(SpecError, match="SASL_MECHANISM=GSSAPI: use one of PLAIN, SCRAM"):
        login_from_env({"REPLICANTE_EVENTS_KAFKA_SASL_MECHANISM": "GSSAPI"})
