"""A stand-in MongoDB server for the adapter's I/O tests: it speaks the wire protocol
(OP_MSG) and answers each command with one server's reply from tests/replies/mongodb/, so
pymongo, our timeouts and our error handling run end to end without a MongoDB.

It is not MongoDB: it knows no state, runs no command, and answers every hello alike. What
it proves is how the adapter talks and copes (a dead, hung, garbled or refusing server);
what a real server answers is tests/test_mongodb_live.py's business.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
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


class ReplayServer:
    """Listens on 127.0.0.1 on a port of its own, on a thread of its own (pymongo's threads
    talk to it while a test blocks), until `stop()`.

    `replies` maps command names, as the reply files name them, to replies. `garbage` is
    written to each connection instead of any reply; `hang` accepts and never answers.
    """

    def __init__(
        self,
        replies: Mapping[str, Any] | None = None,
        *,
        garbage: bytes | None = None,
        hang: bool = False,
    ) -> None:
        self.replies: dict[str, Mapping[str, Any]] = {
            name.lower(): reply for name, reply in (replies or {}).items()
        }
        self.garbage = garbage
        self.hang = hang
        self.commands: list[str] = []
        """Every command name received, in order (hello and isMaster included)."""
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.address = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)

    async def _start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
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
                reply = await self._answer(command)
                payload = struct.pack("<iB", 0, 0) + bson.encode(reply)
                writer.write(
                    HEADER.pack(HEADER.size + len(payload), next(self._ids), request_id, OP_MSG)
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            # The client went away, or stop() is tearing this connection down.
            pass
        finally:
            self._writers.discard(writer)
            with suppress(Exception):
                writer.close()

    async def _answer(self, command: Mapping[str, Any]) -> Mapping[str, Any]:
        name = next(iter(command))
        self.commands.append(name)
        if name.lower() in ("hello", "ismaster"):
            if "maxAwaitTimeMS" in command:
                # An awaitable hello: a server answers when its topology changes or the
                # wait is over; this one never changes.
                await asyncio.sleep(min(command["maxAwaitTimeMS"] / 1000, MAX_AWAIT_S))
            return self._hello(name, command)
        if name in ("saslStart", "saslContinue", "authenticate"):
            return AUTH_FAILED
        if name == "endSessions":
            return {"ok": 1.0}
        reply = self.replies.get(name.lower())
        return reply if reply is not None else _not_found(name)

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


@contextmanager
def replaying(replies: Mapping[str, Any] | None = None, **behaviour: Any) -> Iterator[ReplayServer]:
    server = ReplayServer(replies, **behaviour)
    try:
        yield server
    finally:
        server.stop()
