"""Reading the secrets a spec names: the value lives in the worker's environment or a file
beside it, never in a model, an event or a log line, and only where the worker's
configuration lets specs look (config/secret_scope.py).

Every value read, but a username's, is remembered (config/masking.py) so that the log
masker (worker/logs.py) hides it wherever it would show up, whoever logs it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from config.masking import remember
from config.secret_scope import SecretScope, SecretUnavailable
from config.settings import Settings
from models import ClusterSpec, SecretRef

IDENTITIES = frozenset({"user", "username"})
"""Secrets that say who logs in, not what proves it: masking a username such as "admin" or
"monitor" would blank that word in every log line, workflow ids included."""
MAX_SECRET_BYTES = 64 * 1024
"""A secret file is a password, a token or a PEM: anything larger is not one."""


def read_secret(name: str, ref: SecretRef, scope: SecretScope | None = None) -> str:
    """The secret's value: the env var's, or the file's without its trailing newline, if
    `scope` (by default the worker's, from its environment) allows reading it.

    >>> read_secret("pw", SecretRef(env="REPLICANTE_SECRET_X"))
    Traceback (most recent call last):
    ...
    config.secret_scope.SecretUnavailable: secret 'pw': env var REPLICANTE_SECRET_X is not set
    """
    scope = scope or Settings.from_env().secret_scope
    what = f"secret {name!r}"
    if ref.env is not None:
        value = os.environ.get(scope.env(what, ref.env))
        if value is None:
            raise SecretUnavailable(f"{what}: env var {ref.env} is not set")
    else:
        assert ref.file is not None  # SecretRef holds exactly one of env and file
        value = _read_small(what, scope.file(what, ref.file)).rstrip("\r\n")
    if name not in IDENTITIES:
        remember(value)
    return value


def read_secrets(spec: ClusterSpec, *names: str) -> dict[str, str]:
    """The values of those of `names` the spec names; the others are left out."""
    return {name: read_secret(name, spec.secrets[name]) for name in names if name in spec.secrets}


def _read_small(what: str, path: Path) -> str:
    # O_NONBLOCK: a FIFO planted in a secrets directory would block the read (a probe
    # thread) forever; it is refused as no regular file instead.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as error:
        raise SecretUnavailable(f"{what}: cannot read {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SecretUnavailable(f"{what}: {path} is not a regular file")
        data = file.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretUnavailable(f"{what}: {path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretUnavailable(f"{what}: cannot read {path}: not UTF-8 text") from None


def readable(path: str, what: str, scope: SecretScope | None = None) -> str:
    """The real path of `path`, once `scope` allows it and this process can read it;
    SecretUnavailable naming `what` otherwise.

    Drivers read TLS files only when a client is made: an unreadable one must be a node's
    error, not a probe that raises.
    """
    real = (scope or Settings.from_env().secret_scope).file(what, path)
    if not os.access(real, os.R_OK):
        raise SecretUnavailable(f"{what}: cannot read {path}")
    return str(real)
