"""The event stream's settings: where the Kafka topic is, how to log in to its brokers, and
how its events are keyed; read by the relay that publishes and the CLI that follows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from config.kafka import MECHANISMS, PLAINTEXT, KafkaLogin
from config.masking import remember
from models import SpecError


@dataclass(frozen=True)
class StreamSettings:
    bootstrap: str
    """Comma-separated host:port of the brokers."""
    topic: str = "replicante.events"
    batch: int = 500
    """Most events per publish; also how deep the relay reads back after a failure."""
    timeout_s: float = 10.0
    """How long one publish may wait for acks before the relay calls Kafka down."""
    poll_s: float = 0.2
    """How often an idle relay looks for new events in the store."""
    login: KafkaLogin = PLAINTEXT
    """TLS and SASL to the brokers (`login_from_env`)."""


ENV = "REPLICANTE_EVENTS_KAFKA_"


def login_from_env(env: Mapping[str, str]) -> KafkaLogin:
    """The stream's TLS and login: REPLICANTE_EVENTS_KAFKA_SASL_MECHANISM (PLAIN,
    SCRAM-SHA-256, SCRAM-SHA-512) with _USERNAME and _PASSWORD; TLS with
    REPLICANTE_EVENTS_KAFKA_TLS=1 (the system's roots), _TLS_CA, or _TLS_CERT (one PEM
    of client certificate and key). SpecError for an unknown mechanism.

    >>> login_from_env({"REPLICANTE_EVENTS_KAFKA_TLS_CA": "/etc/ca.pem"})
    KafkaLogin(tls=True, ca_file='/etc/ca.pem', cert_file=None, mechanism=None)
    """
    ca, cert = env.get(f"{ENV}TLS_CA") or None, env.get(f"{ENV}TLS_CERT") or None
    tls = bool(ca or cert) or env.get(f"{ENV}TLS", "").lower() in ("1", "true", "yes", "on")
    mechanism = env.get(f"{ENV}SASL_MECHANISM") or None
    if mechanism is None:
        return KafkaLogin(tls=tls, ca_file=ca, cert_file=cert)
    if mechanism not in MECHANISMS:
        raise SpecError(f"{ENV}SASL_MECHANISM={mechanism}: use one of {', '.join(MECHANISMS)}")
    password = env.get(f"{ENV}PASSWORD", "")
    remember(password)
    return KafkaLogin(
        tls=tls,
        ca_file=ca,
        cert_file=cert,
        mechanism=mechanism,
        username=env.get(f"{ENV}USERNAME", ""),
        password=password,
    )


def cluster_key(cluster_id: str) -> bytes:
    """Events are keyed by cluster id: one cluster's events land on one partition, in order."""
    return cluster_id.encode()
