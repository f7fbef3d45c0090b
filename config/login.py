"""What every datastore login over TLS holds: the files that make the TLS connection and
the credentials of the login, none of them secret in a repr. Each kind's login
(config/kafka.py, config/mongodb.py) adds how its driver takes them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TlsLogin:
    tls: bool = False
    ca_file: str | None = None
    """The CA that signed the servers' certificates; None with `tls`: the system's roots."""
    cert_file: str | None = None
    """One PEM file of client certificate and key."""
    mechanism: str | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
