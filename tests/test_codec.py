"""Payload encryption (worker/codec.py) and the codec server (client/codec_server.py).

The keys and the codec on their own; then, on the real Temporal dev server and ZooKeeper
ensemble, a core worker and a node agent (`python -m worker` processes) and CLI calls, all
with the codec from the environment, watch a cluster and heal a killed member, and the
histories read straight from the server hold no spec, view or secret in clear; then the
codec server over real HTTP, for `temporal workflow show` and for a browser's preflight.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from client.codec_server import COOKIE, GRANTED
from config.codec import TOKENS_ENV
from config.logs import LogFormat
from config.settings import REPO_ROOT, Settings
from devstack.temporal import temporal_binary
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, MonitorInput, Policy, SecretRef, SpecError
from store import SQLiteEventStore
from testkit.events import of_type, wait_for_event
from testkit.specs import own_agents, spec_of, zk_spec
from testkit.workers import worker_processes
from tests.helpers import closed_port_address, process_env, run_cli
from tests.remediation_stage import follower_agent
from tests.test_imports import CLI
from worker.codec import (
    ENCODING,
    KEY_ID,
    CodecKeyError,
    EncryptionCodec,
    KeylessCodec,
    load_keys,
)
from worker.connection import connect, data_converter
from worker.logs import formatter
from workflows.monitor import ClusterMonitorWorkflow, workflow_id

ORIGIN = "http://127.0.0.1:8233"
TEMPORAL = str(temporal_binary())


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def write_keys(path: Path, active: str, keys: dict[str, str]) -> Path:
    path.write_text(yaml.safe_dump({"active": active, "keys": keys}))
    return path


def plain(text: str) -> Payload:
    """A payload as the pydantic converter makes it."""
    return pydantic_data_converter.payload_converter.to_payloads([text])[0]


def payloads_in(message: Message, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Payload]]:
    """Every Payload inside a protobuf message, with the dotted path of fields to it."""
    if isinstance(message, Payload):
        yield ".".join(path), message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if not field.is_repeated:
            items = [value]
        elif field.message_type.GetOptions().map_entry:
            items = list(value.values())
        else:
            items = list(value)
        for item in items:
            if isinstance(item, Message):
                yield from payloads_in(item, (*path, field.name))


# The keys and the codec on their own.


async def test_keys_from_a_file_or_one_key_and_none_without_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_file = write_keys(tmp_path / "keys.yaml", "b", {"a": new_key(), "b": new_key()})
    keys = load_keys(keys_file, None)
    assert keys is not None and (keys.active, keys.ids) == ("b", ["a", "b"])
    one = load_keys(None, f"k-1:{new_key()}")
    assert one is not None and (one.active, one.ids) == ("k-1", ["k-1"])

    for name in ("REPLICANTE_CODEC_KEYS", "REPLICANTE_CODEC_KEY"):
        monkeypatch.delenv(name, raising=False)
    keyless = data_converter(Settings.from_env())
    assert isinstance(keyless.payload_codec, KeylessCodec)
    assert await keyless.encode(["in clear"]) == [plain("in clear")]
    monkeypatch.setenv("REPLICANTE_CODEC_KEYS", str(keys_file))
    converter = data_converter(Settings.from_env())
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class


def test_a_loaded_key_is_masked_in_the_logs(tmp_path: Path) -> None:
    key = new_key()
    load_keys(write_keys(tmp_path / "keys.yaml", "a", {"a": key}), None)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, f"pasted {key} by mistake", (), None)
    line = formatter(LogFormat.JSON).format(record)
    assert key not in line and "pasted *** by mistake" in line


@pytest.mark.parametrize(
    ("keys", "single", "says"),
    [
        ({"active": "c", "keys": {"a": "KEY"}}, None, "active key 'c' is not among the keys"),
        ({"active": "a", "keys": {"a": "SHORT"}}, None, "key 'a' is 16 bytes, not 32"),
        ({"active": "a", "keys": {"a": "KEY!"}}, None, "key 'a' is not base64"),
        ({"activ": "a", "keys": {"a": "KEY"}}, None, "want `active: KEY_ID`"),
        ({"active": "a", "keys": {"a b": "KEY"}}, None, "key id 'a b': use [A-Za-z0-9._-]"),
        ("active: a\nkeys: {a: KEY", None, "not a YAML file"),
        (None, "KEY", "give KEY_ID:BASE64"),
        (None, "a:SHORT", "REPLICANTE_CODEC_KEY: key 'a' is 16 bytes"),
        ({"active": "a", "keys": {"a": "KEY"}}, "a:KEY", "set one of REPLICANTE_CODEC_KEYS"),
    ],
)
def test_bad_keys_are_one_line_naming_the_key_id_never_the_key(
    keys: dict[str, object] | str | None, single: str | None, says: str, tmp_path: Path
) -> None:
    key, short = new_key(), base64.b64encode(os.urandom(16)).decode()

    def filled(text: str) -> str:
        return text.replace("SHORT", short).replace("KEY", key)

    path = None
    if keys is not None:
        path = tmp_path / "keys.yaml"
        text = keys if isinstance(keys, str) else yaml.safe_dump(keys)
        path.write_text(filled(text))
    with pytest.raises(SpecError) as refused:
        load_keys(path, None if single is None else filled(single))
    message = str(refused.value)
    assert says in message and "\n" not in message
    assert key not in message and short not in message


def test_no_repr_shows_a_key(tmp_path: Path) -> None:
    key = new_key()
    keys_file = write_keys(tmp_path / "keys.yaml", "a", {"a": key})
    settings = Settings(codec_key=f"b:{key}", codec_keys_file=keys_file)
    keys = load_keys(keys_file, None)
    shown = repr(settings) + repr(keys) + repr(EncryptionCodec(keys) if keys else None)
    raw = base64.b64decode(key)
    assert key not in shown and repr(raw) not in shown and raw.hex() not in shown
    assert "'a'" in shown  # the key id is there, to tell which key a process holds


async def test_rotation_keeps_old_payloads_readable_until_their_key_goes(tmp_path: Path) -> None:
    a, b = new_key(), new_key()
    keys_file = tmp_path / "keys.yaml"

    def codec() -> EncryptionCodec:
        keys = load_keys(keys_file, None)
        assert keys is not None
        return EncryptionCodec(keys)

    write_keys(keys_file, "a", {"a": a})
    [by_a] = await codec().encode([plain("written under a")])
    assert by_a.metadata["encoding"] == ENCODING and by_a.metadata[KEY_ID] == b"a"
    assert b"written under a" not in by_a.data

    write_keys(keys_file, "b", {"a": a, "b": b})
    rotated = codec()
    [by_b] = await rotated.encode([plain("written under b")])
    assert by_b.metadata[KEY_ID] == b"b"
    # A payload from before encryption was turned on passes through.
    decoded = await rotated.decode([by_a, by_b, plain("never encrypted")])
    assert decoded == [plain("written under a"), plain("written under b"), plain("never encrypted")]

    write_keys(keys_file, "b", {"b": b})
    without_a = codec()
    assert await without_a.decode([by_b]) == [plain("written under b")]
    with pytest.raises(CodecKeyError) as missing:
        await without_a.decode([by_a])
    message = str(missing.value)
    assert message == (
        f"payload encrypted with codec key 'a', which REPLICANTE_CODEC_KEYS={keys_file} does"
        " not hold (it holds b): put that key back among the keys"
    )

    # The id alone decides nothing: another key under the same id, or a damaged payload,
    # fails AES-GCM's authentication.
    write_keys(keys_file, "a", {"a": b})
    with pytest.raises(CodecKeyError, match="'a' does not decrypt with the key"):
        await codec().decode([by_a])
    damaged = Payload(metadata=by_b.metadata, data=by_b.data[:-1] + bytes([by_b.data[-1] ^ 1]))
    truncated = Payload(metadata=by_b.metadata, data=by_b.data[:5])
    for broken in (damaged, truncated):
        with pytest.raises(CodecKeyError, match="another key, or a damaged payload"):
            await rotated.decode([broken])


async def test_cli_with_bad_keys_fails_in_one_line_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens there: a call that got past the keys would fail on the connection.
    monkeypatch.setenv("REPLICANTE_TEMPORAL_ADDRESS", closed_port_address())
    monkeypatch.setenv("REPLICANTE_CODEC_KEY", "k1:c2VjcmV0")
    run = await run_cli(capsys, "status", "anything")
    assert run.code == 2
    assert (
        run.err
        == "replicante: error: REPLICANTE_CODEC_KEY: key 'k1' is 6 bytes, not 32 (AES-256)\n"
    )


# On the real server: worker, agent and CLI with the codec.


async def cli_call(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """`replicante ARGV` as a process of its own, in `env`."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CLI, *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def history_payloads(client: Client, workflow: str) -> list[tuple[str, Payload]]:
    """Every payload of the workflow's history as the server holds it."""
    history = await client.get_workflow_handle(workflow).fetch_history()
    return [found for event in history.events for found in payloads_in(event)]


# Payloads no codec sees, by Temporal's design: search attributes (the server indexes
# them) and the SDK's patch markers (written by its core: patch ids).
CLEAR_BY_DESIGN = (
    "search_attributes.indexed_fields",
    "marker_recorded_event_attributes.details.payloads",
)


async def test_worker_agent_and_cli_encrypt_every_payload_and_rotate_keys(
    temporal_env: WorkflowEnvironment, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> None:
    raw_client = temporal_env.client  # the pydantic converter, no codec: it sees the bytes
    cid = f"codec-{uuid.uuid4().hex[:8]}"
    secret_env = f"REPLICANTE_SECRET_TEST_{uuid.uuid4().hex[:8].upper()}"
    secret = f"planted-{uuid.uuid4().hex}"
    spec = own_agents(zk_spec(zk_healthy, cid, interval_s=0.5)).model_copy(
        update={
            "remediation": {"restart_dead_member": Policy.AUTO},
            "secrets": {"password": SecretRef(env=secret_env)},
        }
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    n, agent = follower_agent(zk_healthy, spec, tmp_path)
    old, new = new_key(), new_key()
    keys_file = write_keys(tmp_path / "keys.yaml", "2026-01", {"2026-01": old})
    plain_env = process_env(raw_client, tmp_path, REPLICANTE_TASK_QUEUE=f"q-{cid}")
    plain_env[secret_env] = secret
    env = {**plain_env, "REPLICANTE_CODEC_KEYS": str(keys_file)}
    remediation = f"remediate/{cid}/node_down/zk{n}"
    store = SQLiteEventStore(tmp_path / "events.db")
    try:
        with worker_processes(env, tmp_path) as workers:
            core = workers.start()
            workers.start("--agent", agent)
            applied = await cli_call(env, "cluster", "apply", "-f", str(spec_file))
            assert applied.returncode == 0, applied.stderr + workers.tail()
            await wait_for_event(store, cid, of_type("cluster.health_changed"), timeout=30)
            zk_healthy.kill_member(n)
            healed = await wait_for_event(store, cid, of_type("remediation.finished"), timeout=60)
            assert healed.payload["outcome"] == "healed", healed
            assert (await cli_call(env, "status", cid)).stdout.startswith(f"cluster {cid} ")
            shown = await cli_call(env, "actions", "show", remediation)
            assert shown.stdout.startswith(f"{remediation}  state: finished  outcome: healed")
            # Without keys, the CLI cannot read what the worker answers, and says why.
            blind = await cli_call(plain_env, "status", cid)
            assert (blind.returncode, blind.stderr) == (
                2,
                "replicante: error: payload encrypted with codec key '2026-01', and this"
                " process holds no codec keys: set REPLICANTE_CODEC_KEYS or"
                " REPLICANTE_CODEC_KEY\n",
            )
            first = await history_payloads(raw_client, workflow_id(cid))
            healing = await history_payloads(raw_client, remediation)
            sees_no_plain_text(first + healing, spec, secret, ["2026-01"])
            decoded = [p for _, p in await decoded_payloads(keys_file, first + healing)]
            clear = b"".join(p.data for p in decoded)
            for needle in [
                cid,
                *(node.address for node in spec.nodes),
                secret_env,
                "follower",
                "restart_dead_member",
            ]:
                assert needle.encode() in clear, needle  # the search above can find them
            assert secret.encode() not in clear  # only its reference is ever in history

            # Rotation: a new active key; the core worker restarted with it replays the
            # monitor's history written under the old one and goes on under the new.
            write_keys(keys_file, "2026-02", {"2026-01": old, "2026-02": new})
            workers.procs[core].terminate()
            workers.procs[core].wait(30)
            workers.start()
            mark = time.time()
            for control in ("pause", "resume"):
                done = await cli_call(env, control, cid, "--reason", "rotation")
                assert done.returncode == 0, done.stderr + workers.tail()
            await wait_for_event(store, cid, of_type("monitor.resumed"), timeout=30, after=mark)
            status = await cli_call(env, "status", cid)
            assert status.stdout.startswith(f"cluster {cid} (zookeeper)  health: healthy")
            rotated = await history_payloads(raw_client, workflow_id(cid))
            sees_no_plain_text(rotated, spec, secret, ["2026-01", "2026-02"])
            await decoded_payloads(keys_file, rotated)
            # The old key gone, what it encrypted is unreadable, in one line naming its id.
            write_keys(keys_file, "2026-02", {"2026-02": new})
            lost = await cli_call(env, "actions", "show", remediation)
            assert (lost.returncode, lost.stderr) == (
                2,
                "replicante: error: payload encrypted with codec key '2026-01', which"
                f" REPLICANTE_CODEC_KEYS={keys_file} does not hold (it holds 2026-02):"
                " put that key back among the keys\n",
            )
            await raw_client.get_workflow_handle(workflow_id(cid)).terminate("test over")
    finally:
        store.close()


def written_by_the_server(path: str, payload: Payload) -> bool:
    """The server's own words, which no codec of ours sees: the details it records when a
    workflow cancels an activity no worker has started yet (a watch a pause cancels while
    it is scheduled)."""
    return (
        path.endswith("activity_task_canceled_event_attributes.details.payloads")
        and payload.data == b'"ACTIVITY_ID_NOT_STARTED"'
    )


def sees_no_plain_text(
    payloads: list[tuple[str, Payload]], spec: ClusterSpec, secret: str, key_ids: list[str]
) -> None:
    """Every payload a codec sees is encrypted under one of `key_ids`, each used; none,
    encrypted or not, holds the spec, the view or the secret in clear but the search
    attributes' cluster id."""
    sealed_payloads = [
        (path, p)
        for path, p in payloads
        if not path.endswith(CLEAR_BY_DESIGN) and not written_by_the_server(path, p)
    ]
    sealed = [p for _, p in sealed_payloads]
    assert len(sealed) > 10
    assert [path for path, p in sealed_payloads if p.metadata["encoding"] != ENCODING] == []
    # Nothing else: the pydantic converter's message type names stay inside the ciphertext.
    assert {frozenset(p.metadata) for p in sealed} == {frozenset({"encoding", KEY_ID})}
    assert sorted({p.metadata[KEY_ID].decode() for p in sealed}) == key_ids
    secret_ref = spec.secrets["password"].env
    assert secret_ref is not None
    needles = [
        spec.cluster_id,
        *(node.address for node in spec.nodes),
        secret_ref,
        secret,
        "follower",
        "leader",
    ]
    seen = {
        (path, needle) for path, p in payloads for needle in needles if needle.encode() in p.data
    }
    search_attributes = "search_attributes.indexed_fields"
    assert {needle for path, needle in seen if path.endswith(search_attributes)} == {
        spec.cluster_id
    }
    assert {
        (path, needle) for path, needle in seen if not path.endswith(search_attributes)
    } == set()


async def decoded_payloads(
    keys_file: Path, payloads: list[tuple[str, Payload]]
) -> list[tuple[str, Payload]]:
    """The payloads decoded with the keys of `keys_file`; fails on one it cannot decode."""
    keys = load_keys(keys_file, None)
    assert keys is not None
    codec = EncryptionCodec(keys)
    decoded = await codec.decode(p for _, p in payloads)
    return [(path, p) for (path, _), p in zip(payloads, decoded, strict=True)]


# The codec server.


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"REPLICANTE_CODEC_SERVER_TOKENS": "0123456789abcdef"}, "no codec keys: set"),
        ({"REPLICANTE_CODEC_KEY": "KEY"}, "REPLICANTE_CODEC_SERVER_TOKENS is not set"),
        (
            {"REPLICANTE_CODEC_KEY": "KEY", "REPLICANTE_CODEC_SERVER_TOKENS": "short"},
            "REPLICANTE_CODEC_SERVER_TOKENS: a token is shorter than 16 characters",
        ),
        (
            {"REPLICANTE_CODEC_KEY": "KEY", "REPLICANTE_CODEC_SERVER_TOKENS": "/no/such/file"},
            "REPLICANTE_CODEC_SERVER_TOKENS=/no/such/file: cannot read: No such file",
        ),
    ],
)
async def test_codec_server_refuses_to_start_without_keys_or_tokens(
    env: dict[str, str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("REPLICANTE_CODEC_KEYS", "REPLICANTE_CODEC_KEY", TOKENS_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("KEY", f"k1:{new_key()}"))
    run = await run_cli(capsys, "codec-server", "--listen", closed_port_address())
    assert run.code == 2 and run.out == ""
    assert run.err.startswith(f"replicante: error: {says}") and run.err.count("\n") == 1


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


def call(
    url: str, headers: dict[str, str], body: bytes | None = None, method: str = "POST"
) -> Reply:
    """One HTTP request; an error status is a reply like any other."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return Reply(reply.status, dict(reply.headers), reply.read().decode())
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), error.read().decode())


def payloads_json(*payloads: Payload) -> bytes:
    return json_format.MessageToJson(Payloads(payloads=payloads)).encode()


async def test_codec_server_decodes_for_token_holders_and_answers_the_ui_preflight(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    key, token = new_key(), secrets.token_urlsafe(24)
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# the operators' tokens\n{token}\n{secrets.token_urlsafe(24)}\n")
    address = temporal_env.client.service_client.config.target_host
    env = {
        **os.environ,
        "REPLICANTE_CODEC_KEY": f"k1:{key}",
        TOKENS_ENV: str(tokens_file),
    }
    listen = closed_port_address()
    url = f"http://{listen}"
    server = subprocess.Popen(
        [sys.executable, "-c", CLI, "codec-server", "--listen", listen, "--allow-origin", ORIGIN],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == f"codec server on {url} (Ctrl-C stops)\n"
        keys = load_keys(None, f"k1:{key}")
        assert keys is not None
        codec = EncryptionCodec(keys)
        original = plain("the view of a cluster")
        sealed = codec.encrypt(original)
        bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        # What the UI sends: its origin, the namespace, the user's token.
        ui = {**bearer, "Origin": ORIGIN, "X-Namespace": "default"}
        decoded = call(f"{url}/decode", ui, payloads_json(sealed))
        assert decoded.status == 200, decoded
        assert json_format.Parse(decoded.body, Payloads()).payloads == [original]
        assert decoded.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert decoded.headers["Access-Control-Allow-Credentials"] == "true"
        # A templated endpoint (http://HOST:PORT/{namespace}); encoding with the active key.
        encoded = call(f"{url}/default/encode", bearer, payloads_json(original))
        [again] = json_format.Parse(encoded.body, Payloads()).payloads
        assert again.metadata[KEY_ID] == b"k1" and codec.decrypt(again) == original

        for authorization, why in (
            ({}, "no bearer token"),
            ({"Authorization": "Bearer not-a-token-of-ours"}, "token refused"),
            ({"Authorization": f"Basic {token}"}, "token refused"),
        ):
            headers = {"Origin": ORIGIN, **authorization}
            refused = call(f"{url}/decode", headers, payloads_json(sealed))
            assert (refused.status, refused.body) == (
                401,
                f"{why}: send Authorization: Bearer TOKEN, or open /login?token=TOKEN\n",
            )
            # The UI reads why: the reply carries the CORS headers of its origin.
            assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")

        # A browser logs in once: its cookie, an HMAC of the token and not the token, then
        # stands for the token; the token itself as the cookie does not.
        login = call(f"{url}/login?token={token}", {}, method="GET")
        assert (login.status, login.body) == (200, f"{GRANTED}\n")
        name_value, *attributes = login.headers["Set-Cookie"].split("; ")
        assert attributes == ["HttpOnly", "SameSite=Lax", "Path=/"]
        assert name_value.startswith(f"{COOKIE}=") and token not in name_value
        browser = {"Origin": ORIGIN, "Cookie": f"theme=dark; {name_value}"}
        by_cookie = call(f"{url}/default/decode", browser, payloads_json(sealed))
        assert by_cookie.status == 200, by_cookie
        assert json_format.Parse(by_cookie.body, Payloads()).payloads == [original]
        forged = {"Origin": ORIGIN, "Cookie": f"{COOKIE}={token}"}
        assert call(f"{url}/decode", forged, payloads_json(sealed)).status == 401
        wrong = call(f"{url}/login?token=not-a-token-of-ours", {}, method="GET")
        assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
        logout = call(f"{url}/logout", {}, method="GET")
        assert logout.status == 200
        assert (
            logout.headers["Set-Cookie"] == f"{COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"
        )

        # The browser's preflight carries no credentials, and is answered for the UI only.
        asks = {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        }
        preflight = call(f"{url}/decode", asks, method="OPTIONS")
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert preflight.headers["Access-Control-Allow-Methods"] == "POST"
        allowed = preflight.headers["Access-Control-Allow-Headers"].lower().split(", ")
        assert {"authorization", "content-type", "x-namespace"} <= set(allowed)
        assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
        elsewhere = "http://elsewhere.example"
        for method in ("OPTIONS", "POST"):
            foreign = call(f"{url}/decode", {**bearer, "Origin": elsewhere}, method=method)
            assert (foreign.status, foreign.body) == (
                403,
                f"origin {elsewhere} is not allowed (--allow-origin)\n",
            )
            assert "Access-Control-Allow-Origin" not in foreign.headers

        bad = call(f"{url}/decode", bearer, b'{"payloads": "none"}')
        assert (bad.status, bad.body) == (400, 'want {"payloads": [...]} in protobuf JSON\n')
        # A key the server does not hold: one line naming its id.
        other = load_keys(None, f"k0:{new_key()}")
        assert other is not None
        unknown = call(
            f"{url}/decode", bearer, payloads_json(EncryptionCodec(other).encrypt(original))
        )
        assert unknown.status == 422 and unknown.body.count("\n") == 1
        assert unknown.body.startswith("payload encrypted with codec key 'k0', which")

        # `temporal workflow show` through it: a monitor's input, written encrypted by a
        # client with the codec (no worker needed: the monitor never runs), shown decoded.
        cid = f"codec-{uuid.uuid4().hex[:8]}"
        spec = spec_of("zookeeper", "zk", ["10.20.30.40:2181"], cid, 1.0, {})
        client = await connect(
            Settings(temporal_address=address, namespace="default", codec_key=f"k1:{key}")
        )
        handle = await client.start_workflow(
            ClusterMonitorWorkflow.run,
            MonitorInput(spec=spec),
            id=workflow_id(spec.cluster_id),
            task_queue=f"q-{spec.cluster_id}",
        )
        show = [TEMPORAL, "workflow", "show", "-w", handle.id, "--address", address, "-o", "json"]
        try:
            through = await shown_input(
                *show, "--codec-endpoint", url, "--codec-auth", f"Bearer {token}"
            )
            blind = await shown_input(*show)
        finally:
            await handle.terminate("test over")
        assert through.metadata["encoding"] == b"json/plain"
        assert MonitorInput.model_validate_json(through.data).spec == spec
        assert blind.metadata["encoding"] == ENCODING
        assert spec.cluster_id.encode() not in blind.data
    finally:
        server.send_signal(signal.SIGINT)
        logged, _ = server.communicate(timeout=10)
    assert server.returncode == 130 and "Traceback" not in logged  # Ctrl-C stops it cleanly
    # Each request is logged with its status, refusals too; never a token or a key.
    decodes = [line for line in logged.splitlines() if "POST /decode HTTP/1.1" in line]
    assert [" 401 " in line for line in decodes].count(True) == 4, logged
    assert token not in logged and key not in logged


async def shown_input(*show: str) -> Payload:
    """The first payload of the started event, as `temporal workflow show -o json` shows it."""
    done = await asyncio.to_thread(subprocess.run, show, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    started = json.loads(done.stdout)["events"][0]["workflowExecutionStartedEventAttributes"]
    return json_format.ParseDict(started["input"]["payloads"][0], Payload())


def test_dev_up_with_keys_points_the_ui_at_a_codec_server_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devstack import playground as dev
    from devstack import processes

    keyless = Settings(home=tmp_path)
    assert dev._temporal(keyless).extra_args == []
    listen = closed_port_address()
    monkeypatch.setattr(dev, "CODEC_LISTEN", listen)
    key = f"k1:{new_key()}"
    monkeypatch.setenv("REPLICANTE_CODEC_KEY", key)  # the codec server's environment
    settings = Settings(home=tmp_path, codec_key=key)
    temporal = dev._temporal(settings)
    assert temporal.extra_args == ["--ui-codec-endpoint", f"http://{listen}"]
    assert temporal.ui_url is not None
    pid, tokens = dev._start_codec_server(settings, temporal.ui_url)
    try:
        assert tokens == tmp_path / "codec-server" / "tokens"
        assert tokens.stat().st_mode & 0o777 == 0o600
        token = tokens.read_text().strip()
        assert len(token) >= 40
        assert dev._start_codec_server(settings, temporal.ui_url) == (pid, tokens)  # once
        host, port = listen.rsplit(":", 1)
        processes.wait_for_port(host, int(port), 30, alive=lambda: processes.is_alive(pid))
        login = call(f"http://{listen}/login?token={token}", {}, method="GET")
        assert (login.status, login.body) == (200, f"{GRANTED}\n")
        preflight = call(
            f"http://{listen}/decode",
            {"Origin": temporal.ui_url, "Access-Control-Request-Method": "POST"},
            method="OPTIONS",
        )
        assert preflight.headers["Access-Control-Allow-Origin"] == temporal.ui_url
    finally:
        assert (
            processes.stop_recorded(
                tmp_path / "codec-server" / "codec-server.pid", dev.CODEC_MARKER
            )
            == pid
        )
