"""How to reach and log in to a Kafka cluster's brokers: TLS and SASL, as a value the probe,
its held links and the event stream's clients all take. Only `ssl` is needed to hold it."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from config.login import TlsLogin


@dataclass(frozen=True)
class KafkaLogin(TlsLogin):
    """How to reach and log in to a cluster's brokers, from its spec; links are kept for as
    long as it stays equal."""

    @property
    def security_protocol(self) -> str:
        sasl = "SASL_" if self.mechanism is not None else ""
        return f"{sasl}{'SSL' if self.tls else 'PLAINTEXT'}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file)
        return context

    def client_options(self) -> dict[str, Any]:
        """kafka-python's keyword arguments for clients of this cluster.

        >>> KafkaLogin(mechanism="PLAIN", username="u", password="p").client_options()
        {'security_protocol': 'SASL_PLAINTEXT', 'sasl_mechanism': 'PLAIN', \
'sasl_plain_username': 'u', 'sasl_plain_password': 'p'}
        """
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.tls:
            options |= {"ssl_cafile": self.ca_file, "ssl_certfile": self.cert_file}
        if self.mechanism is not None:
            options |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        return options


PLAINTEXT = KafkaLogin()
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
