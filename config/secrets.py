"""Reading the secrets a spec names: the value lives in the worker's environment or a file
beside it, never in a model, an event or a log line.

Every value read, but a username's, is remembered (`remember`, `known`) so that the log
masker (worker/logs.py) hides it wherever it would show up, whoever logs it.
"""

from __future__ import annotations

import os
from pathlib import Path

from models import ClusterSpec, SecretRef

IDENTITIES = frozenset({"user", "username"})
"""Secrets that say who logs in, not what proves it: masking a username such as "admin" or
"monitor" would blank that word in every log line, workflow ids included."""
_known: set[str] = set()


def remember(value: str) -> None:
    """Mask `value` in this process's logs from now on. Empty values mean nothing."""
    if value:
        _known.add(value)


def known() -> frozenset[str]:
    """Every secret value this process has read or been told of."""
    # One C call under the GIL: safe against a probe thread adding to the set meanwhile.
    return frozenset(_known)


class SecretUnavailable(LookupError):
    """A secret the spec names cannot be read; the message names where it was looked for,
    never a value."""


def read_secret(name: str, ref: SecretRef) -> str:
    """The secret's value: the env var's, or the file's without its trailing newline.

    >>> read_secret("password", SecretRef(env="NO_SUCH_VAR"))
    Traceback (most recent call last):
    ...
    config.secrets.SecretUnavailable: secret 'password': env var NO_SUCH_VAR is not set
    """
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if value is None:
            raise SecretUnavailable(f"secret {name!r}: env var {ref.env} is not set")
    else:
        assert ref.file is not None  # SecretRef holds exactly one of env and file
        try:
            value = Path(ref.file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not UTF-8 text"
            raise SecretUnavailable(f"secret {name!r}: cannot read {ref.file}: {reason}") from None
    if name not in IDENTITIES:
        remember(value)
    return value


def read_secrets(spec: ClusterSpec, *names: str) -> dict[str, str]:
    """The values of those of `names` the spec names; the others are left out."""
    return {name: read_secret(name, spec.secrets[name]) for name in names if name in spec.secrets}


def readable(path: str, what: str) -> str:
    """`path`, once this process can read it; SecretUnavailable naming `what` otherwise.

    Drivers read TLS files only when a client is made: an unreadable one must be a node's
    error, not a probe that raises.
    """
    if not os.access(path, os.R_OK):
        raise SecretUnavailable(f"{what}: cannot read {path}")
    return path
