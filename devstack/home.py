"""Where the local stack keeps its state, logs, server jars and the servers built from source."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def state_home() -> Path:
    """The stack's state dir: $REPLICANTE_HOME, else <repo>/.replicante."""
    env = os.environ.get("REPLICANTE_HOME")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".replicante"


def jars_dir(server: str = "zookeeper") -> Path:
    """Jars of one server; $REPLICANTE_JARS overrides the root (<state home>/jars).

    Kept apart from the state home a test passes to an ensemble: tests run servers in a
    throwaway home but reuse the jars scripts/install.sh fetched once.
    """
    env = os.environ.get("REPLICANTE_JARS")
    root = Path(env).expanduser().resolve() if env else state_home() / "jars"
    return root / server


def build_dir(server: str) -> Path:
    """A server scripts/install.sh builds from source; $REPLICANTE_BUILDS overrides the root
    (<user cache>/replicante/builds).

    Outside the checkout, unlike the jars: a build takes minutes, so one per machine serves
    every checkout and clean clone on it.
    """
    env = os.environ.get("REPLICANTE_BUILDS")
    if env:
        return Path(env).expanduser().resolve() / server
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser().resolve() / "replicante" / "builds" / server
