"""kazoo sessions pinned to one member, logged in as the spec says (`login_of`): the held
links, and the probe's check that a member takes the login."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from functools import partial
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError,
    ConnectionDropped,
    KazooException,
    SessionClosedRequireSaslError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import Connect
from kazoo.protocol.states import KazooState, KeeperState
from kazoo.retry import KazooRetry

from activities.links import stop_all
from config.secrets import read_secrets
from config.zookeeper import ZooKeeperLogin
from models import ClusterSpec

# kazoo logs each reconnect attempt at WARNING, about once a second per link to a dead
# member; the link's state changes already reach the watch through on_change.
_kazoo_log = logging.getLogger(f"{__name__}.kazoo")
_kazoo_log.setLevel(logging.ERROR)


class _LinkLog(logging.LoggerAdapter[logging.Logger]):
    """kazoo's log for the client of one member: each of its lines once until the
    session's state changes, its repeats at DEBUG, each naming the member's address.

    kazoo logs some failures at ERROR at every reconnect attempt, a traceback each: a
    member that answers garbage had one a second or so, for as long as the link was held.
    The member is already reported, in the view and its events; the first line says
    what kazoo saw, and an error kazoo has not logged yet (a bug of its or ours) is
    new, so nothing goes unsaid."""

    def __init__(self, address: str) -> None:
        super().__init__(_kazoo_log, {"address": address})
        self._said: set[object] = set()
        self._lock = threading.Lock()

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level > logging.DEBUG:
            with self._lock:
                if msg in self._said:
                    level = logging.DEBUG
                self._said.add(msg)
        super().log(level, msg, *args, **kwargs)

    def state_changed(self, _: KazooState) -> None:
        with self._lock:
            self._said.clear()


def _stop(client: KazooClient) -> None:
    client.stop()
    client.close()


def login_of(spec: ClusterSpec) -> ZooKeeperLogin:
    """How to log in as the spec says, its secrets read now. Raises SecretUnavailable."""
    if spec.auth is None:
        return ZooKeeperLogin()
    secrets = read_secrets(spec, "username", "password")
    # str(): the mechanism is a StrEnum, or its bare value in a spec copied unvalidated.
    return ZooKeeperLogin(
        str(spec.auth.mechanism), username=secrets["username"], password=secrets["password"]
    )


MAX_PACKET = 0xFFFFF
"""The longest reply a link takes: what ZooKeeper's own client takes (jute.maxbuffer); a
link's replies (its session, pings, a login, `exists`) are a few dozen bytes."""


class _Connection(ConnectionHandler):  # type: ignore[misc]
    """kazoo 2.11's connection, bounded against a member that answers what ZooKeeper
    would not, and with a SASL refusal that ends the session."""

    def _read(self, length: int, timeout: float) -> bytes:
        """`length` bytes within `timeout` in all. kazoo believes any length a reply
        announces and reads all of it (a member that answers 100 MB had a link hold 130 MB
        at each reconnect), and it waits `timeout` per chunk, so a member that trickles a
        byte a second kept a link connecting for ever, beyond any stop. ZooKeeper has no
        TLS here (models/spec.py NO_TLS), so kazoo's SSL cases are not needed."""
        if not 0 <= length <= MAX_PACKET:
            raise ConnectionDropped(f"a reply of {length} bytes announced: not ZooKeeper's")
        deadline = time.monotonic() + timeout
        reply = bytearray()
        with self._socket_error_handling():
            while len(reply) < length:
                wait = deadline - time.monotonic()
                if wait <= 0 or not self.handler.select([self._socket], [], [], wait)[0]:
                    raise self.handler.timeout_exception("socket time-out during read")
                chunk = self._socket.recv(length - len(reply))
                if not chunk:
                    raise ConnectionDropped("socket connection broken")
                reply += chunk
        return bytes(reply)

    def _invoke(self, timeout: float, request: Any, xid: int | None = None) -> Any:
        """A session reply without a password is none: kazoo took garbage that decoded
        for one, and its next connect attempt failed on the missing password, killing
        the link's thread ("Unhandled exception in connection loop"), silently for good."""
        answer = super()._invoke(timeout, request, xid)
        if isinstance(request, Connect) and not isinstance(answer[0].passwd, bytes):
            raise ConnectionDropped("invalid server response")
        return answer

    def _authenticate_with_sasl(self, host: str, timeout: float) -> None:
        """kazoo 2.11 lets a server's refusal of a SASL login (SESSIONCLOSEDREQUIRESASLAUTH,
        what a ZooKeeper that enforces SASL answers a wrong password with) escape its
        connection thread, which dies with a traceback while the client still says
        CONNECTED. As AuthFailedError it ends the session as AUTH_FAILED, as kazoo ends one
        whose member dropped the SASL exchange: pending requests fail with it, listeners
        hear LOST."""
        try:
            super()._authenticate_with_sasl(host, timeout)
        except SessionClosedRequireSaslError as refused:
            raise AuthFailedError("SASL login refused") from refused


def _kazoo(address: str, timeout: float, login: ZooKeeperLogin, retry: KazooRetry) -> KazooClient:
    """A client pinned to one member, logging in as `login` says."""
    options = login.client_options()
    log = _LinkLog(address)
    client = KazooClient(
        hosts=address, timeout=timeout, connection_retry=retry, logger=log, **options
    )
    client._connection = _Connection(
        client, client._conn_retry.copy(), logger=log, sasl_options=options.get("sasl_options")
    )
    client.add_listener(log.state_changed)
    return client


REFUSED = "authentication failed: the member refused the login"
LOGIN_GRACE_S = 0.5


def _log_in(address: str, timeout: float, login: ZooKeeperLogin) -> str | None:
    """None when the member takes the login and answers a request; else why not. Blocking:
    a session of its own, closed before it returns."""
    client = _kazoo(address, timeout, login, KazooRetry(max_tries=0))
    deadline = time.monotonic() + timeout
    settled, refused = threading.Event(), threading.Event()

    def listen(_: KazooState) -> None:
        # A refusal can end the session between kazoo's state checks and its waits: `start`
        # then says "Connection time-out" at once, or a request queued just after is never
        # answered. The session's state says what happened; waiting on it never races.
        if client.client_state == KeeperState.AUTH_FAILED:
            refused.set()
            settled.set()

    client.add_listener(listen)
    try:
        client.start(timeout=timeout)
        # The login completes before the member answers any request: this read tells.
        answer = client.exists_async("/")
        answer.rawlink(lambda _: settled.set())
        settled.wait(max(0.0, deadline - time.monotonic()))
        if refused.is_set():
            return REFUSED
        answer.get(block=False)
    except AuthFailedError:
        return REFUSED
    except SessionClosedRequireSaslError:
        return "authentication failed: the member requires a SASL login (auth: DIGEST-MD5)"
    except (KazooTimeoutError, TimeoutError):
        return REFUSED if refused.is_set() else f"login: no answer within {timeout}s"
    except KazooException as error:
        return f"login: {type(error).__name__}"
    finally:
        stop_all([partial(_stop, client)], 0.0)
    return None


async def _check_login(address: str, timeout: float, login: ZooKeeperLogin) -> str | None:
    try:
        # The thread keeps its own deadline; the grace lets it say why it gave up.
        async with asyncio.timeout(timeout + LOGIN_GRACE_S):
            return await asyncio.to_thread(_log_in, address, timeout, login)
    except TimeoutError:
        # The thread ends on its own, within kazoo's timeouts.
        return f"login: no answer within {timeout}s"
