"""TLS and mTLS to Temporal (REPLICANTE_TEMPORAL_TLS*): a core worker (a process of its
own) and CLI calls reach the real dev server only through a TLS-terminating proxy that
requires client certificates, and a connection that cannot be trusted is one line naming
what to check, no traceback.

The dev server cannot serve TLS itself (`temporal server start-dev` has no TLS flags), so
the proxy terminates TLS and forwards the bytes to its gRPC port: gRPC over TLS needs
nothing of the proxy beyond TCP.
"""

from __future__ import annotations

import asyncio
import doctest
import os
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from config import temporal as tls
from testkit.workers import worker_processes
from tests.helpers import Run, closed_port_address, run_cli
from tests.secure_certs import Issued, TestCa

SERVER_NAME = "temporal.test"


@dataclass
class TlsProxy:
    address: str
    clients: list[str] = field(default_factory=list)
    """The subject CN of each client certificate a connection presented."""


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(OSError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    with suppress(OSError):
        writer.close()


@contextmanager
def tls_proxy(upstream: str, ca: TestCa, server: Issued) -> Iterator[TlsProxy]:
    """TLS on a free port of 127.0.0.1, client certificate signed by `ca` required; the
    plaintext to `upstream`. It runs on a loop in a thread of its own: a test that blocks
    its own loop (waiting for a worker process to stop) must not stall the worker's RPCs."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca.cert)
    context.load_cert_chain(server.cert, server.key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    host, port = upstream.rsplit(":", 1)
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        subject = dict(pair[0] for pair in peer.get("subject", ()))
        proxy.clients.append(subject.get("commonName", "?"))
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(serve(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def close(listening: asyncio.Server) -> None:
        listening.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="tls-proxy", daemon=True)
    thread.start()
    try:
        listening = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(track, "127.0.0.1", 0, ssl=context), loop
        ).result()
        proxy = TlsProxy(f"127.0.0.1:{listening.sockets[0].getsockname()[1]}")
        try:
            yield proxy
        finally:
            asyncio.run_coroutine_threadsafe(close(listening), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCa, Issued, Issued]:
    """The test CA, the proxy's certificate (for SERVER_NAME only) and a client's."""
    ca = TestCa.create(tmp_path_factory.mktemp("pki"), "replicante-test-ca")
    return ca, ca.issue("temporal-proxy", (SERVER_NAME,)), ca.issue("replicante-client")


def tls_env(
    temporal_env: WorkflowEnvironment, address: str, ca: Path, client: Issued | None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICANTE_TEMPORAL_TLS")}
    env.update(
        REPLICANTE_TEMPORAL_ADDRESS=address,
        REPLICANTE_NAMESPACE=temporal_env.client.namespace,
        REPLICANTE_TEMPORAL_TLS_CA=str(ca),
        REPLICANTE_TEMPORAL_TLS_SERVER_NAME=SERVER_NAME,
    )
    if client is not None:
        env.update(
            REPLICANTE_TEMPORAL_TLS_CERT=str(client.cert),
            REPLICANTE_TEMPORAL_TLS_KEY=str(client.key),
        )
    return env


def point_cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The CLI's settings from `env`'s REPLICANTE_* variables alone."""
    for name in os.environ:
        if name.startswith("REPLICANTE_TEMPORAL_TLS"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("REPLICANTE_"):
            monkeypatch.setenv(name, value)


def one_line_error(run: Run) -> str:
    """The run's single error line; fails on a traceback or on more than one."""
    errors = [line for line in run.err.splitlines() if line.startswith("replicante: error:")]
    assert "Traceback" not in run.err, run.err
    assert len(errors) == 1, run.err
    return errors[0]


async def test_a_worker_and_cli_calls_work_through_mtls(
    temporal_env: WorkflowEnvironment,
    pki: tuple[TestCa, Issued, Issued],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca, server, client = pki
    cid = f"tls-{uuid.uuid4().hex[:6]}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "cluster_id": cid,
                "kind": "zookeeper",
                "nodes": [{"node_id": "zk1", "address": closed_port_address()}],
                "probe": {"interval_s": 0.5, "timeout_s": 0.5},
            }
        )
    )
    upstream = temporal_env.client.service_client.config.target_host
    with tls_proxy(upstream, ca, server) as proxy:
        env = tls_env(temporal_env, proxy.address, ca.cert, client)
        env.update(REPLICANTE_TASK_QUEUE=f"q-{cid}", REPLICANTE_STORE=str(tmp_path / "ev.db"))
        point_cli(monkeypatch, env)
        with worker_processes(env, tmp_path) as workers:
            workers.start()
            applied = await run_cli(capsys, "cluster", "apply", "-f", str(spec))
            assert applied.code == 0, applied.err
            # The monitor's first view comes from the worker, whose only way to Temporal is
            # through the proxy.
            for _ in range(100):
                status = await run_cli(capsys, "status", cid, "--json")
                assert status.code == 0, status.err
                if '"reachable": false' in status.out:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"no view from the worker: {status.out}\n{workers.tail()}")
            await temporal_env.client.get_workflow_handle(f"monitor/{cid}").terminate()
    assert proxy.clients and set(proxy.clients) == {"replicante-client"}, proxy.clients


async def test_a_connection_that_cannot_be_trusted_is_one_line(
    temporal_env: WorkflowEnvironment,
    pki: tuple[TestCa, Issued, Issued],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca, server, client = pki
    other = TestCa.create(tmp_path, "other-ca")
    upstream = temporal_env.client.service_client.config.target_host
    with tls_proxy(upstream, ca, server) as proxy:

        async def refused(env: dict[str, str], code: int = 1) -> str:
            point_cli(monkeypatch, env)
            run = await run_cli(capsys, "cluster", "ls")
            assert run.code == code, run.err
            return one_line_error(run)

        wrong_ca = await refused(tls_env(temporal_env, proxy.address, other.cert, client))
        assert wrong_ca.endswith(
            f"(Temporal at {proxy.address}; its certificate is not signed by a CA this client"
            f" trusts (REPLICANTE_TEMPORAL_TLS_CA={other.cert}))"
        ), wrong_ca

        env = tls_env(temporal_env, proxy.address, ca.cert, client)
        del env["REPLICANTE_TEMPORAL_TLS_SERVER_NAME"]
        assert (await refused(env)).endswith(
            "its certificate is for another name:"
            " set REPLICANTE_TEMPORAL_TLS_SERVER_NAME to one it holds)"
        )

        no_client_cert = await refused(tls_env(temporal_env, proxy.address, ca.cert, None))
        assert no_client_cert.endswith(
            "does it want a client certificate it trusts"
            " (none set: REPLICANTE_TEMPORAL_TLS_CERT, _KEY)?)"
        ), no_client_cert

        # TLS to the dev server itself, which speaks plaintext.
        plain = await refused(tls_env(temporal_env, upstream, ca.cert, client))
        assert plain.endswith("it does not speak TLS: unset REPLICANTE_TEMPORAL_TLS*)"), plain

        no_file = tmp_path / "missing.pem"
        missing = await refused(tls_env(temporal_env, proxy.address, no_file, client), code=2)
        assert missing == (
            f"replicante: error: REPLICANTE_TEMPORAL_TLS_CA={no_file}: cannot read:"
            " No such file or directory"
        )
    # Not one of them got a connection to Temporal through.
    assert proxy.clients == [], proxy.clients


def test_doctests() -> None:
    result = doctest.testmod(tls, optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed
