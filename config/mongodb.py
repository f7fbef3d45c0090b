"""How to reach and log in to a MongoDB deployment's servers: TLS and the login, as a value
the probe, its held links and the step-down all take; pymongo's keyword arguments come from
it (`client_options`), and no secret shows in its repr."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from config.login import TlsLogin

AUTH_SOURCE = "admin"


@dataclass(frozen=True)
class MongoDBLogin(TlsLogin):
    """TLS and login as a spec says, its secrets read; empty: neither.

    >>> login = MongoDBLogin(username="monitor", password="s3cret", mechanism="SCRAM-SHA-256")
    >>> login
    MongoDBLogin(tls=False, ca_file=None, cert_file=None, mechanism='SCRAM-SHA-256')
    >>> login.client_options()
    {'username': 'monitor', 'password': 's3cret', 'authSource': 'admin', \
'authMechanism': 'SCRAM-SHA-256'}
    >>> MongoDBLogin().client_options()
    {}

    Without a `mechanism`, the server chooses; MONGODB-X509 logs in as the certificate's
    subject.
    """

    def client_options(self) -> dict[str, Any]:
        """pymongo's keyword arguments for TLS and login."""
        options: dict[str, Any] = {}
        if self.tls:
            options["tls"] = True
        if self.ca_file is not None:
            options["tlsCAFile"] = self.ca_file
        if self.cert_file is not None:
            options["tlsCertificateKeyFile"] = self.cert_file
        if self.username is not None:
            options |= {
                "username": self.username,
                "password": self.password or "",
                "authSource": AUTH_SOURCE,
            }
        if self.mechanism is not None:
            options["authMechanism"] = self.mechanism
        return options
