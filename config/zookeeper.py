"""How a kazoo session logs in to a ZooKeeper member: SASL DIGEST-MD5, ZooKeeper's `digest`
scheme, or not at all, as a value the probe and its held links take; kazoo's keyword
arguments come from it (`client_options`), and no secret shows in its repr."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SASL_DIGEST_MD5 = "DIGEST-MD5"


@dataclass(frozen=True)
class ZooKeeperLogin:
    """A spec's `auth` and its secrets, read; no mechanism: no login.

    >>> login = ZooKeeperLogin("digest", username="monitor", password="s3cret")
    >>> login
    ZooKeeperLogin(mechanism='digest')
    >>> login.client_options()
    {'auth_data': [('digest', 'monitor:s3cret')]}
    >>> ZooKeeperLogin().client_options()
    {}
    """

    mechanism: str | None = None
    """`DIGEST-MD5` (SASL), `digest` (ZooKeeper's scheme) or None."""
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def client_options(self) -> dict[str, Any]:
        """kazoo's keyword arguments that log a session in; empty without a mechanism."""
        if self.mechanism is None:
            return {}
        if self.mechanism == SASL_DIGEST_MD5:
            return {
                "sasl_options": {
                    "mechanism": SASL_DIGEST_MD5,
                    "username": self.username,
                    "password": self.password,
                }
            }
        return {"auth_data": [("digest", f"{self.username}:{self.password}")]}
