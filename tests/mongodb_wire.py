"""A stand-in MongoDB server for the adapter's I/O tests: it speaks the wire protocol
(OP_MSG) and answers each command with one server's reply from tests/replies/mongodb/, so
pymongo, our timeouts and our error handling run end to end without a MongoDB.

It is not MongoDB: it runs no command and answers every hello alike. Its one change of
state is the one a test scripts: an accepted `replSetStepDown` makes a stand-in set answer
with the replies the test gave for after the election. What it proves is how the adapter
talks and copes (a dead, hung, garbled or refusing server, a step-down accepted, refused,
or cut short by a closed connection); what a real server answers is
tests/test_mongodb_live.py's business.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import bson

OP_MSG = 2013
HEADER = struct.Struct("<iiii")
# The longest an awaitable hello is held; pymongo asks for its heartbeat interval.
MAX_AWAIT_S = 1.0


def _not_found(name: str) -> dict[str, Any]:
    return {
        "ok": 0.0,
        "errmsg": f"no such command: '{name}'",
        "code": 59,
        "codeName": "CommandNotFound",
    }


AUTH_FAILED = {
    "ok": 0.0,
    "errmsg": "Authentication failed.",
    "code": 18,
    "codeName": "AuthenticationFailed",
}


class _HangUp(Exception):
    """Drop every connection instead of answering."""


class ReplayServer:
    """Listens on 127.0.0.1 on a port of its own, on a thread of its own (pymongo's threads
    talk to it while a test blocks), until `stop()`.

    `replies` maps command names, as the reply files name them, to replies. `garbage` is
    written to each connection instead of any reply; `hang` accepts and never answers.
    With `tls` it speaks TLS only, and takes a MONGODB-X509 `authenticate` from a client
    whose certificate the context verified, as the certificate's subject (`CN=...`).

    `replSetStepDown` is answered from `replies` too, after `step_down_wait_s` (a primary
    waits up to secondaryCatchUpPeriodSecs for a secondary to catch up). When that answer is
    ok, `on_step_down` runs first, and `closes_on_step_down` then drops every connection
    instead of answering, as servers before 4.2 do.
    """

    replies: dict[str, Mapping[str, Any]]

    def __init__(
        self,
        replies: Mapping[str, Any] | None = None,
        *,
        garbage: bytes | None = None,
        hang: bool = False,
        step_down_wait_s: float = 0.0,
        closes_on_step_down: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.answer(replies or {})
        self.garbage = garbage
        self.hang = hang
        self.step_down_wait_s = step_down_wait_s
        self.closes_on_step_down = closes_on_step_down
        self.tls = tls
        self.on_step_down: Callable[[], None] | None = None
        self.received: list[Mapping[str, Any]] = []
        """Every command received, in order (hello and isMaster included), as sent."""
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.address = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)

    def answer(self, replies: Mapping[str, Any]) -> None:
        """Answer with `replies` from now on."""
        self.replies = {name.lower(): reply for name, reply in replies.items()}

    @property
    def commands(self) -> list[str]:
        """The name of every command received, in order."""
        return [next(iter(command)) for command in self.received]

    async def _start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        """Go away as a killed process does: the port closes, open connections drop."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        serving = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.garbage is not None:
                writer.write(self.garbage)
                await writer.drain()
                await reader.read()
                return
            while True:
                header = await reader.readexactly(HEADER.size)
                length, request_id, _, opcode = HEADER.unpack(header)
                body = await reader.readexactly(length - HEADER.size)
                if self.hang:
                    continue
                if opcode != OP_MSG:
                    return
                command = bson.decode(body[5:])  # flagBits, then a kind-0 section
                reply = await self._answer(command, _subject(writer))
                payload = struct.pack("<iB", 0, 0) + bson.encode(reply)
                writer.write(
                    HEADER.pack(HEADER.size + len(payload), next(self._ids), request_id, OP_MSG)
                    + payload
                )
                await writer.drain()
        except _HangUp:
            for open_writer in list(self._writers):
                open_writer.transport.abort()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            # The client went away, or stop() is tearing this connection down.
            pass
        finally:
            self._writers.discard(writer)
            with suppress(Exception):
                writer.close()

    async def _answer(self, command: Mapping[str, Any], subject: str | None) -> Mapping[str, Any]:
        name = next(iter(command))
        self.received.append(command)
        if name.lower() in ("hello", "ismaster"):
            if "maxAwaitTimeMS" in command:
                # An awaitable hello: a server answers when its topology changes or the
                # wait is over; this one never changes.
                await asyncio.sleep(min(command["maxAwaitTimeMS"] / 1000, MAX_AWAIT_S))
            return self._hello(name, command)
        x509 = name == "authenticate" and command.get("mechanism") == "MONGODB-X509"
        if x509 and subject is not None:
            return {"ok": 1.0, "dbname": "$external", "user": subject}
        if name in ("saslStart", "saslContinue", "authenticate"):
            return AUTH_FAILED
        if name == "endSessions":
            return {"ok": 1.0}
        reply = self.replies.get(name.lower())
        if reply is None:
            return _not_found(name)
        if name == "replSetStepDown":
            await asyncio.sleep(self.step_down_wait_s)
            if reply.get("ok") == 1 and self.on_step_down is not None:
                self.on_step_down()
            if reply.get("ok") == 1 and self.closes_on_step_down:
                raise _HangUp
        return reply

    def _hello(self, name: str, command: Mapping[str, Any]) -> Mapping[str, Any]:
        if name == "hello":
            return self.replies.get("hello") or _not_found(name)
        legacy = self.replies.get("ismaster")
        if legacy is not None:
            return legacy
        # What a 4.4.2+ server answers to the legacy name: the same reply, the old field
        # name, and helloOk when the client offers it.
        modern = dict(self.replies.get("hello") or _not_found(name))
        if "isWritablePrimary" in modern:
            modern = {("ismaster" if k == "isWritablePrimary" else k): v for k, v in modern.items()}
        if command.get("helloOk"):
            modern["helloOk"] = True
        return modern


def _subject(writer: asyncio.StreamWriter) -> str | None:
    """`CN=<name>` of the client certificate TLS verified; None without one."""
    certificate = writer.get_extra_info("peercert")
    if not certificate:
        return None
    names = dict(pair for rdn in certificate["subject"] for pair in rdn)
    return f"CN={names['commonName']}"


@contextmanager
def replaying(replies: Mapping[str, Any] | None = None, **behaviour: Any) -> Iterator[ReplayServer]:
    server = ReplayServer(replies, **behaviour)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def replaying_set(
    members: Mapping[str, Mapping[str, Any]],
    after_step_down: Mapping[str, Mapping[str, Any]],
    **behaviour: Any,
) -> Iterator[dict[str, ReplayServer]]:
    """Stand-ins for the members of one replica set, by node id. A `replSetStepDown` one of
    them accepts makes every one answer with its `after_step_down` replies from then on: the
    set as it is once the election that follows is over (none is played out)."""
    with ExitStack() as stack:
        running = {n: stack.enter_context(replaying(r, **behaviour)) for n, r in members.items()}

        def elected() -> None:
            for node_id, server in running.items():
                server.answer(after_step_down[node_id])

        for server in running.values():
            server.on_step_down = elected
        yield running
