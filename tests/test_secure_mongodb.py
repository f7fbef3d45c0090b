"""MongoDB over TLS and with x509 logins (spec `tls` and `auth: {mechanism: MONGODB-X509}`):
the pymongo options a spec makes, then the probe against the wire-protocol stand-in
(tests/mongodb_wire.py, not MongoDB) serving TLS with client certificates required, with
certificates made by openssl at test time. A real server is tests/test_mongodb_live.py's."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import pytest

from activities.mongodb.adapter import MongoDBAdapter
from models import ClusterSpec, Role, parse_spec
from tests.mongodb_wire import replaying
from tests.secure_certs import Issued, TestCa
from tests.test_mongodb_parsing import replies

PRIMARY = "8.0/pss/primary.json"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCa, Issued, Issued]:
    """The test CA, the stand-in's certificate (127.0.0.1) and the client's."""
    ca = TestCa.create(tmp_path_factory.mktemp("pki"), "replicante-test-ca")
    return ca, ca.issue("mongod", ("127.0.0.1",)), ca.issue("replicante-monitor")


def mongodb_spec(address: str, **extra: Any) -> ClusterSpec:
    return parse_spec(
        {
            "cluster_id": "tls",
            "kind": "mongodb",
            "nodes": [{"node_id": "m1", "address": address}],
            "probe": {"timeout_s": 1.0},
            **extra,
        }
    )


def x509_spec(address: str, ca: Path, client: Path) -> ClusterSpec:
    return mongodb_spec(
        address,
        tls={"ca_file": str(ca), "client_cert": "client_cert"},
        secrets={"client_cert": {"file": str(client)}},
        auth={"mechanism": "MONGODB-X509"},
    )


def server_tls(ca: TestCa, server: Issued) -> ssl.SSLContext:
    """What `mongod --tlsMode requireTLS --tlsCAFile` does: client certificates required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca.cert)
    context.load_cert_chain(server.cert, server.key)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_a_spec_makes_the_pymongo_options(
    pki: tuple[TestCa, Issued, Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, _, client = pki
    login_of = MongoDBAdapter().login_of
    assert login_of(x509_spec("db:27017", ca.cert, client.combined)).client_options() == {
        "tls": True,
        "tlsCAFile": str(ca.cert),
        "tlsCertificateKeyFile": str(client.combined),
        "authMechanism": "MONGODB-X509",
    }
    monkeypatch.setenv("REPLICANTE_SECRET_TEST_MONGODB_USER", "monitor")
    monkeypatch.setenv("REPLICANTE_SECRET_TEST_MONGODB_PASSWORD", "s3cret-value")
    passwords = {
        "username": {"env": "REPLICANTE_SECRET_TEST_MONGODB_USER"},
        "password": {"env": "REPLICANTE_SECRET_TEST_MONGODB_PASSWORD"},
    }
    scram = mongodb_spec("db:27017", tls={}, secrets=passwords, auth={"mechanism": "SCRAM-SHA-256"})
    assert login_of(scram).client_options() == {
        "tls": True,
        "username": "monitor",
        "password": "s3cret-value",
        "authSource": "admin",
        "authMechanism": "SCRAM-SHA-256",
    }
    # A spec of before: username and password, the server's choice of mechanism, no TLS.
    assert login_of(mongodb_spec("db:27017", secrets=passwords)).client_options() == {
        "username": "monitor",
        "password": "s3cret-value",
        "authSource": "admin",
    }


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            {
                "tls": {"client_cert": "client_cert"},
                "secrets": {"client_cert": {"env": "CERT"}},
                "auth": {"mechanism": "MONGODB-X509"},
            },
            "tls.client_cert: 'client_cert' must name a secret with a `file` reference",
        ),
        ({"auth": {"mechanism": "MONGODB-X509"}}, "MONGODB-X509 needs tls.client_cert"),
        ({"auth": {"mechanism": "PLAIN"}}, "mongodb takes SCRAM-SHA-256, SCRAM-SHA-1, MONGODB"),
    ],
)
def test_a_spec_that_cannot_log_in_is_refused(extra: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        mongodb_spec("db:27017", **extra)


async def test_x509_over_tls_on_the_stand_in(pki: tuple[TestCa, Issued, Issued]) -> None:
    ca, server, client = pki
    with replaying(replies(PRIMARY), tls=server_tls(ca, server)) as mongod:
        view = await MongoDBAdapter().probe(x509_spec(mongod.address, ca.cert, client.combined))
        logins = [c for c in mongod.received if "authenticate" in c]
    assert (view.nodes[0].reachable, view.nodes[0].role) == (True, Role.PRIMARY), view.nodes[0]
    assert [(c["mechanism"], c["$db"]) for c in logins] == [("MONGODB-X509", "$external")]


async def test_what_tls_refuses_is_an_observation(
    pki: tuple[TestCa, Issued, Issued], tmp_path: Path
) -> None:
    ca, server, client = pki
    other = TestCa.create(tmp_path, "other-ca")
    stranger = other.issue("stranger")
    with replaying(replies(PRIMARY), tls=server_tls(ca, server)) as mongod:
        address = mongod.address
        cases = {
            # The stand-in's certificate is not signed by the CA the spec trusts.
            "wrong_ca": x509_spec(address, other.cert, client.combined),
            # The client's is not signed by the CA the stand-in trusts.
            "stranger": x509_spec(address, ca.cert, stranger.combined),
            "no_tls": mongodb_spec(address),
            "no_cert_file": x509_spec(address, ca.cert, tmp_path / "gone.pem"),
        }
        errors = {
            case: (await MongoDBAdapter().probe(spec)).nodes[0].error
            for case, spec in cases.items()
        }
        assert not [c for c in mongod.received if "authenticate" in c]
    assert "certificate verify failed" in (errors["wrong_ca"] or ""), errors
    # A server that refuses the client's certificate, or plaintext, hangs up.
    assert (errors["stranger"], errors["no_tls"]) == ("connection closed", "connection closed")
    assert errors["no_cert_file"] == f"secret 'client_cert': cannot read {tmp_path / 'gone.pem'}"


LIVE = "REPLICANTE_TEST_MONGODB_X509"


@pytest.mark.skipif(
    not os.environ.get(f"{LIVE}_ADDRESS"),
    reason=f"no real MongoDB with x509: set {LIVE}_ADDRESS (host:port), {LIVE}_CA and"
    f" {LIVE}_CERT (PEM of certificate and key)",
)
async def test_x509_on_a_real_server() -> None:
    """Against a mongod run with `--tlsMode requireTLS --tlsCAFile CA` whose $external
    holds a user named as the certificate's subject, with the clusterMonitor role."""
    env = os.environ
    spec = x509_spec(env[f"{LIVE}_ADDRESS"], Path(env[f"{LIVE}_CA"]), Path(env[f"{LIVE}_CERT"]))
    view = await MongoDBAdapter().probe(spec)
    node = view.nodes[0]
    assert node.reachable and node.error is None and node.role is not Role.UNKNOWN, node
