"""Held links: one ZooKeeper session per member, all driven by one event loop per worker
process, so that a member's crash is seen in milliseconds rather than at the next probe.

A kazoo client runs three threads of its own (its connection loop and two callback
workers). A fleet of 100 specs held 900 of them in one worker; their pings (every 2/3 s
each, at a 2 s session) convoyed on the GIL and starved the activities' event loop until
the probes' own 2 s timeouts fired on healthy members. Here a link is a coroutine: its
session handshake, login and pings use kazoo's serialization, and nothing of kazoo's
threads. Each spec's links are its own, opened by its watch and closed with it; only the
loop that drives them is shared.

A link tells `on_change` when its session is established, and when it is lost: the
connection closed or reset (a SIGKILLed member's sockets are closed by the kernel at once),
or no reply to a ping within 2/3 of the session timeout (a hung member), as kazoo counts;
the adapter asks for a session as long as the spec's hang bound, so pings stay rare.
A lost link is retried every 0.1 s, doubling to 1 s; a refused login ends it, as kazoo's
AUTH_FAILED does (the probe then reports the refusal every round).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import cache

import puresasl.client
from kazoo.protocol.serialization import (
    SASL,
    Auth,
    Close,
    Connect,
    Ping,
    ReplyHeader,
    int_struct,
)

from config.zookeeper import SASL_DIGEST_MD5, ZooKeeperLogin
from models import NodeSpec

log = logging.getLogger(__name__)

PING_XID = -2
AUTH_XID = -4
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 1.0
# A reply to anything we send is a few dozen bytes; far more is not ZooKeeper talking.
MAX_REPLY = 1 << 16
# ZooKeeper's DIGEST-MD5 realm is fixed, not the member's host (its SecurityUtils).
SASL_DIGEST_HOST = "zk-sasl-md5"


class _Refused(Exception):
    """The member refused the login: the link ends."""


class _Lost(Exception):
    """The link is no longer good: closed, reset, silent, or answering garbage."""


@cache
def links_loop() -> asyncio.AbstractEventLoop:
    """The event loop every held ZooKeeper link of this process runs on, on a daemon thread
    of its own, started on first use. Not the activities' loop: the adapter's contract opens
    and closes links from any thread."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="zookeeper-links", daemon=True).start()
    return loop


def hold(
    node: NodeSpec, session_s: float, login: ZooKeeperLogin, on_change: Callable[[], None]
) -> Future[None]:
    """Hold a link to `node` on the links loop until the returned future is cancelled."""
    return asyncio.run_coroutine_threadsafe(
        _Link(node, session_s, login, on_change).run(), links_loop()
    )


class _Link:
    def __init__(
        self,
        node: NodeSpec,
        session_s: float,
        login: ZooKeeperLogin,
        on_change: Callable[[], None],
    ) -> None:
        self.node, self.session_ms, self.login = node, round(session_s * 1000), login
        self.on_change = on_change
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            up = False
            try:
                read_timeout = await self._connect()
                up = True
                self._tell()
                await self._log_in(read_timeout)
                delay = RETRY_FIRST_S
                await self._ping(read_timeout)
            except asyncio.CancelledError:
                # The watch is done: end the session now rather than at its timeout.
                self._close(polite=True)
                raise
            except _Refused:
                self._close(polite=False)
                self._tell()
                return
            except (OSError, EOFError, TimeoutError, _Lost):
                pass
            self._close(polite=False)
            if up:
                self._tell()
            await asyncio.sleep(delay)
            delay = min(2 * delay, RETRY_MAX_S)

    async def _connect(self) -> float:
        """A new session; how long the member may stay silent before the link counts as
        lost (2/3 of the negotiated session timeout, as kazoo counts)."""
        timeout = self.session_ms / 1000
        async with asyncio.timeout(timeout):
            self.reader, self.writer = await asyncio.open_connection(self.node.host, self.node.port)
            self._send(Connect(0, 0, self.session_ms, 0, b"\x00" * 16, False).serialize())
            reply = await self._frame()
        try:
            connected, _ = Connect.deserialize(reply, 0)
        except Exception as garbage:
            raise _Lost("not a ZooKeeper session reply") from garbage
        if connected.time_out <= 0:
            raise _Lost("session refused")
        read_timeout: float = connected.time_out * 2 / 3 / 1000
        return read_timeout

    async def _log_in(self, timeout: float) -> None:
        if self.login.mechanism is None:
            return
        if self.login.mechanism == SASL_DIGEST_MD5:
            await self._sasl(timeout)
            return
        auth = Auth(0, "digest", f"{self.login.username}:{self.login.password}")
        await self._request(AUTH_XID, auth.type, auth.serialize(), timeout)

    async def _sasl(self, timeout: float) -> None:
        client = puresasl.client.SASLClient(
            host=SASL_DIGEST_HOST,
            service="zookeeper",
            mechanism=SASL_DIGEST_MD5,
            username=self.login.username,
            password=self.login.password,
        )
        challenge: bytes | None = None
        xid = 0
        try:
            while not client.complete:
                try:
                    response = client.process(challenge=challenge)
                except puresasl.SASLError as error:
                    raise _Refused("SASL") from error
                if client.complete and not response:
                    return
                xid += 1
                body = await self._request(
                    xid, SASL.type, SASL(response or b"").serialize(), timeout
                )
                challenge, _ = SASL.deserialize(body, 0)
        finally:
            client.dispose()

    async def _request(self, xid: int, op: int, body: bytes, timeout: float) -> bytes:
        """Send one request and read its reply; what follows the reply's header. A member
        that drops a login, or answers it with an error, refused it."""
        self._send(int_struct.pack(xid) + int_struct.pack(op) + body)
        try:
            async with asyncio.timeout(timeout):
                reply = await self._frame()
        except (OSError, EOFError) as dropped:
            raise _Refused("dropped") from dropped
        header, offset = ReplyHeader.deserialize(reply, 0)
        if header.err:
            raise _Refused(f"error {header.err}")
        if header.xid != xid:
            raise _Lost(f"reply to {header.xid}, not {xid}")
        body_after: bytes = reply[offset:]
        return body_after

    async def _ping(self, read_timeout: float) -> None:
        """Ping at half the read timeout, as kazoo does, until the link breaks: raises. The
        replies are read all the while, so a closed connection is seen the moment it closes."""
        loop = asyncio.get_running_loop()
        heard = loop.time()

        async def listen() -> None:
            nonlocal heard
            while True:
                await self._frame()
                heard = loop.time()

        listening = asyncio.ensure_future(listen())
        ping = int_struct.pack(PING_XID) + int_struct.pack(Ping.type)
        try:
            while True:
                self._send(ping)
                await asyncio.wait([listening], timeout=read_timeout / 2)
                if listening.done():
                    listening.result()  # raises what ended it
                    raise _Lost("stopped reading")
                if loop.time() - heard >= read_timeout:
                    raise _Lost("no reply to a ping")
        finally:
            listening.cancel()

    async def _frame(self) -> bytes:
        assert self.reader is not None
        (length,) = int_struct.unpack(await self.reader.readexactly(4))
        if not 0 <= length <= MAX_REPLY:
            raise _Lost(f"a reply of {length} bytes")
        return await self.reader.readexactly(length)

    def _send(self, request: bytes) -> None:
        assert self.writer is not None
        self.writer.write(int_struct.pack(len(request)) + request)

    def _close(self, polite: bool) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is None:
            return
        if polite and not writer.is_closing():
            # Ends the session now instead of at its timeout; nobody waits for the answer.
            with contextlib.suppress(OSError):
                writer.write(int_struct.pack(8) + int_struct.pack(1) + int_struct.pack(Close.type))
        writer.close()

    def _tell(self) -> None:
        try:
            self.on_change()
        except Exception:
            log.exception("on_change failed")
