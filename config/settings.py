"""Where things are, read once from the environment: shared by worker, agent and CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from config.codec import TOKENS_ENV
from config.secret_scope import SecretScope
from config.stream import StreamSettings, login_from_env
from config.temporal import TemporalTls
from models import SpecError

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    temporal_address: str = "127.0.0.1:7233"
    namespace: str = "default"
    temporal_tls: TemporalTls | None = None
    """TLS (and mTLS) to Temporal, from REPLICANTE_TEMPORAL_TLS*; None: plaintext."""
    task_queue: str = "replicante-core"
    max_watches: int = 1000
    """How many clusters one core worker watches at once: each watch holds one slot of the
    worker's watch queue (`models.watch_task_queue`) for as long as it runs."""
    home: Path = REPO_ROOT / ".replicante"
    store_path: Path = REPO_ROOT / ".replicante" / "events.db"
    # Out of repr: a connection string may hold a password.
    store_mongodb_uri: str | None = field(default=None, repr=False)
    """When set, events go to MongoDB (database `replicante`) instead of `store_path`."""
    events_kafka: str | None = None
    """Bootstrap brokers (host:port,...) of the event stream; no stream when unset."""
    events_topic: str = "replicante.events"
    metrics_address: str | None = None
    """HOST:PORT where a worker or agent serves Prometheus metrics (/metrics); none when unset."""
    codec_keys_file: Path | None = None
    """Payload encryption keys (worker/codec.py): a YAML file of keys by id and the active id."""
    codec_key: str | None = field(default=None, repr=False)
    """Or one key, `KEY_ID:BASE64`. Neither: payloads go to Temporal in clear."""
    codec_server_tokens: str | None = field(default=None, repr=False)
    """Who may use `replicante codec-server`: a tokens file, or a comma list of tokens
    (config/codec.py `load_tokens`)."""
    secret_scope: SecretScope = field(
        default_factory=lambda: SecretScope.from_env({}, Settings.home)
    )
    """Where specs' secrets may come from (config/secret_scope.py)."""

    @property
    def stream(self) -> StreamSettings | None:
        if self.events_kafka is None:
            return None
        return StreamSettings(
            bootstrap=self.events_kafka, topic=self.events_topic, login=login_from_env(os.environ)
        )

    def secrets(self) -> list[str]:
        """The secret values these settings hold, longest first: the store URI's password
        (as written and %-decoded) and the payload key of REPLICANTE_CODEC_KEY (its id is
        no secret). What masks them (the log masker, the doctor's report) takes them here.

        >>> Settings(store_mongodb_uri="mongodb://app:pw%40x@db1/", codec_key="k1:S2V5").secrets()
        ['pw%40x', 'pw@x', 'S2V5']
        """
        found: list[str] = []
        if self.store_mongodb_uri is not None:
            password = urlsplit(self.store_mongodb_uri).password
            if password is not None:
                found += [password, unquote(password)]
        if self.codec_key is not None:
            found.append(self.codec_key.partition(":")[2])
        unique = dict.fromkeys(value for value in found if value)
        return sorted(unique, key=len, reverse=True)

    @classmethod
    def from_env(cls) -> Settings:
        """REPLICANTE_TEMPORAL_ADDRESS, REPLICANTE_NAMESPACE, REPLICANTE_TASK_QUEUE,
        REPLICANTE_MAX_WATCHES (clusters one core worker watches at once),
        REPLICANTE_HOME (state dir), REPLICANTE_STORE (SQLite file) and
        REPLICANTE_STORE_MONGODB_URI (MongoDB instead of the file), REPLICANTE_EVENTS_KAFKA
        and REPLICANTE_EVENTS_TOPIC (the event stream), REPLICANTE_METRICS_ADDRESS,
        REPLICANTE_CODEC_KEYS (keys file) or REPLICANTE_CODEC_KEY (payload encryption), and
        REPLICANTE_CODEC_SERVER_TOKENS (the codec server's callers), and
        REPLICANTE_SECRETS_DIRS and REPLICANTE_SECRETS_ENV_PREFIX (where specs' secrets
        may be)."""
        env = os.environ
        home = Path(env.get("REPLICANTE_HOME", cls.home))
        return cls(
            temporal_address=env.get("REPLICANTE_TEMPORAL_ADDRESS", cls.temporal_address),
            namespace=env.get("REPLICANTE_NAMESPACE", cls.namespace),
            temporal_tls=TemporalTls.from_env(env),
            task_queue=env.get("REPLICANTE_TASK_QUEUE", cls.task_queue),
            max_watches=whole_number(env, "REPLICANTE_MAX_WATCHES", cls.max_watches),
            home=home,
            store_path=Path(env.get("REPLICANTE_STORE", home / "events.db")),
            # Empty counts as unset, so `REPLICANTE_STORE_MONGODB_URI=` in a compose file
            # or an env file selects the embedded default.
            store_mongodb_uri=env.get("REPLICANTE_STORE_MONGODB_URI") or None,
            events_kafka=env.get("REPLICANTE_EVENTS_KAFKA") or None,
            events_topic=env.get("REPLICANTE_EVENTS_TOPIC") or cls.events_topic,
            metrics_address=env.get("REPLICANTE_METRICS_ADDRESS") or None,
            codec_keys_file=Path(keys) if (keys := env.get("REPLICANTE_CODEC_KEYS")) else None,
            codec_key=env.get("REPLICANTE_CODEC_KEY") or None,
            codec_server_tokens=env.get(TOKENS_ENV) or None,
            secret_scope=SecretScope.from_env(env, home),
        )


def whole_number(env: Mapping[str, str], name: str, default: int, most: int = 100_000) -> int:
    """`name`'s value, a whole number from 1 to `most`; SpecError naming it otherwise.

    >>> whole_number({"N": "0"}, "N", 5)
    Traceback (most recent call last):
    models.spec.SpecError: N: a whole number from 1 to 100000, not '0'
    """
    raw = env.get(name) or None
    if raw is None:
        return default
    # A length bound before int(): a thousand digits would cost a big-number parse.
    value = int(raw) if len(raw) <= 12 and raw.strip().isdigit() else 0
    if not 1 <= value <= most:
        raise SpecError(f"{name}: a whole number from 1 to {most}, not {raw[:40]!r}")
    return value
