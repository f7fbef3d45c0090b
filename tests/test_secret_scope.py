"""Secrets only from where the worker's own configuration allows (config/secret_scope.py).

A spec once made the worker read /etc/shadow, ../../etc/passwd, /proc/self/environ and its
own PATH and send them, as a login, to a fake ZooKeeper the same spec named. Here the
same attack meets the scope: the fake member hears nothing of those values, and the node's
error says why; the same spec with the secret inside the scope does reach the fake (so the
test would see a leak), and the scope's rules hold for symlinks, FIFOs, huge files, the
worker's own variables and the masking of short values.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.zookeeper.adapter import ZooKeeperAdapter
from config.masking import known, remember
from config.secret_scope import DIRS_ENV, PREFIX_ENV, SecretScope, SecretUnavailable
from config.secrets import MAX_SECRET_BYTES, read_secret
from config.settings import Settings
from models import ClusterSpec, SecretRef, SpecError, parse_spec


class FakeMember:
    """Accepts ZooKeeper sessions on a loopback port and keeps every byte it is sent; it
    answers a session's handshake, so a client goes on to send its login, and the four-letter
    words as a member out of quorum does, so the probe reads it reachable."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.heard = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        answered = False
        with conn:
            try:
                while data := conn.recv(65536):
                    with self._lock:
                        self.heard += data
                    if data[:4].isalpha():  # a four-letter word: a member out of quorum
                        conn.sendall(b"This ZooKeeper instance is not currently serving requests\n")
                        return
                    if not answered:
                        # ConnectResponse: protocol, timeout, session id, password, read-only.
                        body = struct.pack(">iiqi", 0, 10000, 1, 16) + bytes(16) + b"\0"
                        conn.sendall(struct.pack(">i", len(body)) + body)
                        answered = True
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def member() -> Iterator[FakeMember]:
    fake = FakeMember()
    yield fake
    fake.close()


def digest_spec(address: str, username: SecretRef, password: SecretRef) -> ClusterSpec:
    """ZooKeeper's digest scheme sends `user:password` in clear inside its auth packet."""
    return parse_spec(
        {
            "cluster_id": "scope",
            "kind": "zookeeper",
            "nodes": [{"node_id": "zk1", "address": address}],
            "auth": {"mechanism": "digest"},
            "secrets": {
                "username": username.model_dump(exclude_none=True),
                "password": password.model_dump(exclude_none=True),
            },
        }
    )


@pytest.fixture
def scope_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The worker's one secret directory for this test; tmp_path itself is outside it."""
    allowed = tmp_path / "secrets"
    allowed.mkdir()
    monkeypatch.setenv(DIRS_ENV, str(allowed))
    monkeypatch.delenv(PREFIX_ENV, raising=False)
    return allowed


async def heard_after_probe(member: FakeMember, spec: ClusterSpec) -> tuple[bytes, str]:
    view = await ZooKeeperAdapter().probe(spec)
    time.sleep(0.2)  # the fake's threads keep what was in flight
    return bytes(member.heard), view.nodes[0].error or ""


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("outside", "is outside the secret directories"),
        ("dotdot", "is outside the secret directories"),
        ("symlink", "is outside the secret directories"),
        ("environ", "is outside the secret directories"),
    ],
)
async def test_a_spec_cannot_send_a_file_outside_the_scope(
    member: FakeMember,
    scope_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    says: str,
) -> None:
    planted = f"planted-{os.urandom(8).hex()}"
    outside = tmp_path / "shadow"
    outside.write_text(planted)
    monkeypatch.setenv("REPLICANTE_SECRET_SCOPE_USER", "attacker")
    path = {
        "outside": str(outside),
        "dotdot": "../shadow",
        "symlink": str(scope_dir / "link"),
        "environ": "/proc/self/environ",
    }[where]
    (scope_dir / "link").symlink_to(outside)
    spec = digest_spec(
        member.address, SecretRef(env="REPLICANTE_SECRET_SCOPE_USER"), SecretRef(file=path)
    )
    heard, error = await heard_after_probe(member, spec)
    assert planted.encode() not in heard
    assert b"attacker" not in heard  # no login was sent at all
    assert says in error and "REPLICANTE_SECRETS_DIRS" in error, error


async def test_a_spec_cannot_send_the_workers_environment(
    member: FakeMember, scope_dir: Path
) -> None:
    (scope_dir / "password").write_text("in-scope-password")
    spec = digest_spec(member.address, SecretRef(env="PATH"), SecretRef(file="password"))
    heard, error = await heard_after_probe(member, spec)
    assert os.environ["PATH"].encode() not in heard
    assert "env var PATH does not start with REPLICANTE_SECRET_" in error, error


async def test_a_secret_inside_the_scope_is_sent(member: FakeMember, scope_dir: Path) -> None:
    """The control: without it the tests above could pass on a probe that sends nothing."""
    planted = f"planted-{os.urandom(8).hex()}"
    (scope_dir / "password").write_text(planted + "\n")
    os.environ["REPLICANTE_SECRET_SCOPE_OK"] = "monitor"
    try:
        spec = digest_spec(
            member.address, SecretRef(env="REPLICANTE_SECRET_SCOPE_OK"), SecretRef(file="password")
        )
        heard, _ = await heard_after_probe(member, spec)
    finally:
        del os.environ["REPLICANTE_SECRET_SCOPE_OK"]
    assert f"monitor:{planted}".encode() in heard


def test_the_default_scope_is_the_homes_secrets_and_the_prefix(tmp_path: Path) -> None:
    scope = SecretScope.from_env({"REPLICANTE_HOME": str(tmp_path)}, tmp_path)
    assert scope == SecretScope((tmp_path / "secrets",), "REPLICANTE_SECRET_")
    settings_scope = Settings.from_env().secret_scope
    assert settings_scope.env_prefix == os.environ.get(PREFIX_ENV, "REPLICANTE_SECRET_")


@pytest.mark.parametrize(
    ("scope", "name", "says"),
    [
        (SecretScope((), "REPLICANTE_"), "REPLICANTE_CODEC_KEY", "is the worker's own secret"),
        (SecretScope((), "REPLICANTE_"), "REPLICANTE_STORE_MONGODB_URI", "worker's own secret"),
        (SecretScope((), ""), "REPLICANTE_SECRET_X", "env secrets are off"),
        (SecretScope((), "REPLICANTE_SECRET_"), "HOME", "does not start with REPLICANTE_SECRET_"),
    ],
)
def test_env_secrets_only_under_the_prefix(scope: SecretScope, name: str, says: str) -> None:
    with pytest.raises(SecretUnavailable, match=says):
        read_secret("password", SecretRef(env=name), scope)


def test_files_inside_any_allowed_directory_and_nothing_else(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
        (directory / "pw").write_text(f"value-of-{directory.name}\n")
    scope = SecretScope((first, second), "")
    assert read_secret("password", SecretRef(file="pw"), scope) == "value-of-a"
    assert read_secret("password", SecretRef(file=str(second / "pw")), scope) == "value-of-b"
    for refused in (str(first), "/etc/passwd", "../b/../../escape", str(tmp_path / "pw")):
        with pytest.raises(SecretUnavailable, match="outside the secret directories"):
            read_secret("password", SecretRef(file=refused), scope)
    with pytest.raises(SecretUnavailable, match="REPLICANTE_SECRETS_DIRS is empty"):
        read_secret("password", SecretRef(file="pw"), SecretScope((), ""))


def test_a_fifo_or_a_huge_file_is_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "huge").write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    scope = SecretScope((tmp_path,), "")
    started = time.monotonic()
    with pytest.raises(SecretUnavailable, match="is not a regular file"):
        read_secret("password", SecretRef(file="fifo"), scope)
    assert time.monotonic() - started < 1
    with pytest.raises(SecretUnavailable, match=f"larger than {MAX_SECRET_BYTES} bytes"):
        read_secret("password", SecretRef(file="huge"), scope)


def test_apply_refuses_a_reference_outside_the_scope_naming_the_field(tmp_path: Path) -> None:
    scope = SecretScope((tmp_path,), "REPLICANTE_SECRET_")
    good = digest_spec(
        "127.0.0.1:2181", SecretRef(env="REPLICANTE_SECRET_U"), SecretRef(file="password")
    )
    scope.admit(good)
    kafka = parse_spec(
        {
            "cluster_id": "scope",
            "kind": "kafka",
            "nodes": [{"node_id": "b1", "address": "127.0.0.1:9092"}],
            "tls": {"ca_file": "/etc/ssl/private/server-key.pem"},
        }
    )
    for spec, says in [
        (
            good.model_copy(
                update={"secrets": {**good.secrets, "password": SecretRef(file="/etc/shadow")}}
            ),
            "scope: secrets.password: /etc/shadow is outside the secret directories",
        ),
        (
            good.model_copy(
                update={"secrets": {**good.secrets, "username": SecretRef(env="PATH")}}
            ),
            "scope: secrets.username: env var PATH does not start with REPLICANTE_SECRET_",
        ),
        (kafka, "scope: tls.ca_file: /etc/ssl/private/server-key.pem is outside the secret"),
    ]:
        with pytest.raises(SpecError) as refused:
            scope.admit(spec)
        assert str(refused.value).startswith(says), refused.value
        assert "\n" not in str(refused.value)


def test_short_values_are_not_masked() -> None:
    """A password `rt-b13`, another cluster's id, masked that id in every log line."""
    remember("rt-b13")
    remember("long-enough-secret")
    assert "rt-b13" not in known()
    assert "long-enough-secret" in known()
