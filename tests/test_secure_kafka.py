"""Kafka with SASL logins (spec `auth: {mechanism: PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512}`
and the secrets `username` and `password`, SASL_PLAINTEXT), on a real 1-broker KRaft
cluster whose client listener wants them: the adapter's own protocol path logs in with each
mechanism; a wrong or missing password is an observation on the broker (reachable,
`auth_failed`), never a broker down; kafka-python clients (the remediation's admin client)
get the same login from the spec."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from activities.kafka import KafkaAdapter, KafkaLogin, login_of
from devstack.kafka import KafkaCluster
from models import ClusterSpec, Role, evaluate, parse_spec

USER = "monitor"


def sasl_spec(cluster: KafkaCluster, mechanism: str, password_file: Path) -> ClusterSpec:
    return parse_spec(
        {
            "cluster_id": f"kafka-sasl-{uuid.uuid4().hex[:6]}",
            "kind": "kafka",
            "nodes": [
                {"node_id": f"kafka{n}", "address": address}
                for n, address in enumerate(cluster.addresses, start=1)
            ],
            "probe": {"timeout_s": 2.0},
            "secrets": {
                "username": {"env": "REPLICANTE_TEST_KAFKA_USER"},
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
    monkeypatch.setenv("REPLICANTE_TEST_KAFKA_USER", USER)
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


def test_kafka_python_clients_log_in_as_the_spec_says(
    kafka_sasl_cluster: KafkaCluster, password_file: Path
) -> None:
    spec = sasl_spec(kafka_sasl_cluster, "SCRAM-SHA-256", password_file)
    login = login_of(spec)
    assert login == KafkaLogin(
        mechanism="SCRAM-SHA-256", username=USER, password=kafka_sasl_cluster.sasl_users[USER]
    )
    assert kafka_sasl_cluster.sasl_users[USER] not in repr(login)
    admin = KafkaAdminClient(
        bootstrap_servers=kafka_sasl_cluster.addresses,
        request_timeout_ms=5000,
        bootstrap_timeout_ms=5000,
        **login.client_options(),
    )
    try:
        assert len(admin.describe_cluster()["brokers"]) == 1
    finally:
        admin.close()
