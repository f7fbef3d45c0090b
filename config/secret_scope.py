"""Where a spec's secrets may come from: the worker's own configuration says, never the
spec. A spec names a file or an environment variable; a spec from anyone allowed to apply
one could otherwise make the worker read /etc/shadow or its own environment and send it to
an address the same spec names as a password.

So a secret file must lie in one of the directories of REPLICANTE_SECRETS_DIRS (default
`$REPLICANTE_HOME/secrets`), once every symlink is resolved, and an env secret's name must
start with REPLICANTE_SECRETS_ENV_PREFIX (default `REPLICANTE_SECRET_`). The same check
refuses a spec at apply (the CLI, one line) and a read at use (the worker's, whatever
started the monitor).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from models import ClusterSpec, SecretRef, SpecError

DIRS_ENV = "REPLICANTE_SECRETS_DIRS"
PREFIX_ENV = "REPLICANTE_SECRETS_ENV_PREFIX"
DEFAULT_PREFIX = "REPLICANTE_SECRET_"
WORKER_SECRETS = frozenset(
    {
        "REPLICANTE_STORE_MONGODB_URI",
        "REPLICANTE_CODEC_KEY",
        "REPLICANTE_CODEC_SERVER_TOKENS",
        "REPLICANTE_EVENTS_KAFKA_PASSWORD",
    }
)
"""The worker's own secrets: no prefix an operator picks makes them a spec's to send."""


class SecretUnavailable(LookupError):
    """A secret the spec names cannot be read, or may not be; the message names where it
    was looked for, never a value."""


@dataclass(frozen=True)
class SecretScope:
    dirs: tuple[Path, ...]
    """Where secret files may be; a relative `file` is in the first. Empty: no files."""
    env_prefix: str
    """What an env secret's name starts with. Empty: no env secrets at all."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], home: Path) -> SecretScope:
        """
        >>> SecretScope.from_env({}, Path("/srv/rep"))
        SecretScope(dirs=(PosixPath('/srv/rep/secrets'),), env_prefix='REPLICANTE_SECRET_')
        >>> SecretScope.from_env({DIRS_ENV: "/a:/b", PREFIX_ENV: ""}, Path("/srv/rep"))
        SecretScope(dirs=(PosixPath('/a'), PosixPath('/b')), env_prefix='')
        """
        listed = env.get(DIRS_ENV)
        dirs = (
            (home / "secrets",)
            if listed is None
            else tuple(map(Path, filter(None, listed.split(os.pathsep))))
        )
        return cls(dirs=dirs, env_prefix=env.get(PREFIX_ENV, DEFAULT_PREFIX))

    def file(self, what: str, path: str) -> Path:
        """The real path of `path`, once it is inside an allowed directory."""
        if not self.dirs:
            raise SecretUnavailable(f"{what}: {path}: no secret directories ({DIRS_ENV} is empty)")
        given = Path(path)
        # realpath resolves symlinks too: a link in an allowed directory to /etc/shadow is
        # judged by where it leads.
        real = Path(os.path.realpath(given if given.is_absolute() else self.dirs[0] / given))
        for allowed in self.dirs:
            root = Path(os.path.realpath(allowed))
            if real != root and real.is_relative_to(root):
                return real
        shown = ", ".join(map(str, self.dirs))
        raise SecretUnavailable(
            f"{what}: {path} is outside the secret directories ({shown}; {DIRS_ENV})"
        )

    def env(self, what: str, name: str) -> str:
        """`name`, once the worker's configuration lets a spec read that variable."""
        if name in WORKER_SECRETS:
            raise SecretUnavailable(f"{what}: env var {name} is the worker's own secret")
        if not self.env_prefix:
            raise SecretUnavailable(
                f"{what}: env var {name}: env secrets are off ({PREFIX_ENV} is empty)"
            )
        if not name.startswith(self.env_prefix):
            raise SecretUnavailable(
                f"{what}: env var {name} does not start with {self.env_prefix} ({PREFIX_ENV})"
            )
        return name

    def check(self, ref: SecretRef, what: str) -> None:
        if ref.env is not None:
            self.env(what, ref.env)
        else:
            assert ref.file is not None  # SecretRef holds exactly one of env and file
            self.file(what, ref.file)

    def admit(self, spec: ClusterSpec) -> None:
        """SpecError naming the first of the spec's references this scope refuses."""
        try:
            for name, ref in spec.secrets.items():
                self.check(ref, f"secrets.{name}")
            if spec.tls is not None and spec.tls.ca_file is not None:
                self.file("tls.ca_file", spec.tls.ca_file)
        except SecretUnavailable as error:
            raise SpecError(f"{spec.cluster_id}: {error}") from None
