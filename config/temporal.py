"""TLS and mTLS to Temporal, from the environment (REPLICANTE_TEMPORAL_TLS*), and what to
check when connecting fails.

The files are read when connecting, not when the settings are: a command that never
connects does not need them, and the key is held only by the connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from models import SpecError

SEARCH_ATTRIBUTES = {
    "ReplicanteClusterId": "Keyword",
    "ReplicanteKind": "Keyword",
    "ReplicanteHealth": "Keyword",
    "ReplicanteOpenFindings": "Int",
}
"""The custom search attributes a namespace must have registered for our monitors
(workflows/search_attributes.py keeps them current), by name, with the type the server's
tools (`temporal operator search-attribute create`, `start-dev --search-attribute`) name."""

PREFIX = "REPLICANTE_TEMPORAL_TLS"
YES = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class TlsMaterial:
    """What the SDK's TLS config takes, read from the files: held only while connecting."""

    ca: bytes | None
    cert: bytes | None
    key: bytes | None = field(repr=False)
    server_name: str | None


@dataclass(frozen=True)
class TemporalTls:
    ca: Path | None = None
    """The CA that signed the server's certificate; None: the system's roots."""
    cert: Path | None = None
    """Client certificate for mTLS, with `key`."""
    key: Path | None = None
    server_name: str | None = None
    """The name the server's certificate holds (and SNI), when the address is another."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TemporalTls | None:
        """None (plaintext) unless REPLICANTE_TEMPORAL_TLS is 1/true/yes/on or one of
        REPLICANTE_TEMPORAL_TLS_CA, _CERT, _KEY, _SERVER_NAME is set.

        >>> TemporalTls.from_env({"REPLICANTE_TEMPORAL_TLS": "0"}) is None
        True
        >>> TemporalTls.from_env({"REPLICANTE_TEMPORAL_TLS_CA": "/etc/ca.pem"})
        TemporalTls(ca=PosixPath('/etc/ca.pem'), cert=None, key=None, server_name=None)
        """
        files = {
            part: Path(value) if (value := env.get(f"{PREFIX}_{part.upper()}")) else None
            for part in ("ca", "cert", "key")
        }
        server_name = env.get(f"{PREFIX}_SERVER_NAME") or None
        wanted = env.get(PREFIX, "").strip().lower() in YES
        if not (wanted or server_name or any(files.values())):
            return None
        return cls(**files, server_name=server_name)

    def material(self) -> TlsMaterial:
        """The files' contents; SpecError (one line, naming the variable) when a file cannot
        be read or the client cert comes without its key.

        >>> TemporalTls(cert=Path("client.pem")).material()
        Traceback (most recent call last):
        ...
        models.spec.SpecError: REPLICANTE_TEMPORAL_TLS_CERT and ..._KEY go together (mTLS): ...
        """
        if (self.cert is None) != (self.key is None):
            raise SpecError(
                f"{PREFIX}_CERT and {PREFIX}_KEY go together (mTLS): set both or neither"
            )
        return TlsMaterial(
            ca=_read("ca", self.ca),
            cert=_read("cert", self.cert),
            key=_read("key", self.key),
            server_name=self.server_name,
        )


def _read(part: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise SpecError(
            f"{PREFIX}_{part.upper()}={path}: cannot read: {error.strerror or error}"
        ) from None


def dev_server_flags() -> list[str]:
    """`--search-attribute NAME=TYPE` flags for `temporal server start-dev`.

    >>> dev_server_flags()[:2]
    ['--search-attribute', 'ReplicanteClusterId=Keyword']
    """
    flags: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        flags += ["--search-attribute", f"{name}={kind}"]
    return flags


def connect_hint(tls: TemporalTls | None, error: str) -> str:
    """What to check when connecting failed with `error` (the SDK's message).

    >>> connect_hint(TemporalTls(), "InvalidCertificate(UnknownIssuer)")
    "its certificate is not signed by a CA this client trusts (the system's roots; set ..._CA)"
    """
    if tls is None:
        return "is it running? try `scripts/dev-up`"
    if "UnknownIssuer" in error:
        trusted = f"{PREFIX}_CA={tls.ca}" if tls.ca else f"the system's roots; set {PREFIX}_CA"
        return f"its certificate is not signed by a CA this client trusts ({trusted})"
    if "NotValidForName" in error:
        return f"its certificate is for another name: set {PREFIX}_SERVER_NAME to one it holds"
    if "InvalidContentType" in error:
        return f"it does not speak TLS: unset {PREFIX}*"
    client = "" if tls.cert else f" (none set: {PREFIX}_CERT, _KEY)"
    return f"is it running? does it want a client certificate it trusts{client}?"
