"""Held links: one ZooKeeper session per member, all driven by one event loop per worker
process, so that a member's crash is seen in milliseconds rather than at the next probe.

A kazoo client runs three threads of its own (its connection loop and two callback
workers). A fleet of 100 specs held 900 of them in one worker; their pings (every 2/3 s
each, at a 2 s session) convoyed on the GIL and starved the activities' event loop until
the probes' own 2 s timeouts fired on healthy members. Here a link is a coroutine: its
session handshake, login and pings use kazoo's serialization, and nothing of kazoo's
threads. Each spec's links are its own, opened by its watch and closed with it; only the
loop that drives them is shared.

A link pings its member every probe interval and wants each answer within the probe's
timeout: what a probe asks of a member, for a few bytes on a connection already open
instead of a connection of its own. While that holds, after the login, the link serves
(`LinkStates`), and the watch's rounds may keep what they read of the member. It tells
`on_change` when its session is established, and when it is lost: the
connection closed or reset (a SIGKILLed member's sockets are closed by the kernel at once),
or a ping unanswered (a hung member). The session is as long as the spec's hang bound, so
that a ping or two lost in a busy worker does not end it on the member's side.
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

from activities.links import LinkStates
from config.zookeeper import SASL_DIGEST_MD5, ZooKeeperLogin
from models import NodeSpec, ProbeSettings

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
    node: NodeSpec,
    probe: ProbeSettings,
    login: ZooKeeperLogin,
    on_change: Callable[[], None],
    states: LinkStates,
) -> Future[None]:
    """Hold a link to `node` on the links loop until the returned future is cancelled; it
    tells `states` while it serves."""
    return asyncio.run_coroutine_threadsafe(
        _Link(node, probe, login, on_change, states).run(), links_loop()
    )


class _Link:
    def __init__(
        self,
        node: NodeSpec,
        probe: ProbeSettings,
        login: ZooKeeperLogin,
        on_change: Callable[[], None],
        states: LinkStates,
    ) -> None:
        self.node, self.login = node, login
        self.session_ms = round((2 * probe.interval_s + probe.timeout_s) * 1000)
        self.ping_s, self.answer_s = probe.interval_s, probe.timeout_s
        self.on_change, self.states = on_change, states
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            up = False
            try:
                session_s = await self._connect()
                up = True
                self._tell()
                await self._log_in(self.answer_s)
                delay = RETRY_FIRST_S
                await self._ping(session_s)
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
        """A new session; its timeout as the member negotiated it (s). A hung member's kernel
        still accepts: waiting a whole session for its answer keeps the retries rare."""
        async with asyncio.timeout(self.session_ms / 1000):
            self.reader, self.writer = await asyncio.open_connection(self.node.host, self.node.port)
            self._send(Connect(0, 0, self.session_ms, 0, b"\x00" * 16, False).serialize())
            reply = await self._frame()
        try:
            connected, _ = Connect.deserialize(reply, 0)
        except Exception as garbage:
            raise _Lost("not a ZooKeeper session reply") from garbage
        if connected.time_out <= 0:
            raise _Lost("session refused")
        session_s: float = connected.time_out / 1000
        return session_s

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

    async def _ping(self, session_s: float) -> None:
        """Ping every interval, each answered within the timeout, until the link breaks:
        raises. The link serves meanwhile. The replies are read all the while, so a closed
        connection is seen the moment it closes. A member that negotiated a session shorter
        than the interval is pinged at a third of it, as kazoo would, lest it end the session."""
        loop = asyncio.get_running_loop()
        every = min(self.ping_s, session_s / 3)
        answer = min(self.answer_s, every)
        heard = loop.time()

        async def listen() -> None:
            nonlocal heard
            while True:
                await self._frame()
                heard = loop.time()

        async def until(seconds: float) -> None:
            await asyncio.wait([listening], timeout=seconds)
            if listening.done():
                listening.result()  # raises what ended it
                raise _Lost("stopped reading")

        listening = asyncio.ensure_future(listen())
        ping = int_struct.pack(PING_XID) + int_struct.pack(Ping.type)
        self.states.began(self.node.node_id)
        try:
            while True:
                sent = loop.time()
                self._send(ping)
                await until(answer)
                if heard < sent:
                    raise _Lost(f"no reply to a ping within {answer}s")
                await until(every - answer)
        finally:
            self.states.ended(self.node.node_id)
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
