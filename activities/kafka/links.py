"""Held links: one TCP connection per broker, all watched by one selector thread, so that
a broker's crash is seen in milliseconds rather than at the next probe."""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kafka.protocol.parser import KafkaProtocol

from activities.kafka.connection import CLIENT_ID, api_versions_request
from models import NodeSpec

log = logging.getLogger(__name__)

# Held links: reconnect to a down broker this often; close everything within this on exit.
LINK_RETRY_S = 0.5
LINK_STOP_WAIT_S = 0.5


@dataclass(eq=False)
class HeldLink:
    node: NodeSpec
    sock: socket.socket | None = None
    parser: KafkaProtocol | None = None
    state: str = "down"
    """down, connecting, tls (its handshake under way), handshake (ApiVersions sent) or
    up."""
    reported_up: bool = False
    """What on_change last told: a drop the link recovers from at once is not news."""
    rechecking: bool = False
    deadline: float = 0.0
    retry_at: float = 0.0
    up_at: float = 0.0


class LinkHolder:
    """One TCP connection per broker, each opened with an ApiVersions exchange (so it is
    a Kafka broker that answers, not just a port), all watched by one selector thread.
    With `tls`, each is a TLS connection, its handshake driven by the selector as well
    (a SASL listener answers ApiVersions before any login: no link logs in).

    A link that drops (EOF or RST: a SIGKILLed broker's sockets are closed by the kernel
    at once) is reconnected on the spot. If that fails, the broker is gone: on_change.
    If it succeeds, the broker only closed an idle connection (connections.max.idle.ms,
    10 minutes by default): nothing to tell. Down brokers are retried every LINK_RETRY_S,
    and on_change tells when one answers again (and when each link first comes up).
    """

    def __init__(
        self,
        nodes: Iterable[NodeSpec],
        on_change: Callable[[], None],
        connect_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.links = [HeldLink(node) for node in nodes]
        self._on_change = on_change
        self._timeout = connect_timeout
        self._tls = tls
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-links", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(LINK_STOP_WAIT_S)

    def _run(self) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                for link in self.links:
                    if link.sock is None and now >= link.retry_at:
                        self._connect(link, now)
                    elif link.sock is not None and link.state != "up" and now >= link.deadline:
                        self._failed(link, now)
                timers = [
                    link.retry_at if link.sock is None else link.deadline
                    for link in self.links
                    if link.sock is None or link.state != "up"
                ]
                wait = min([now + LINK_RETRY_S, *timers]) - now
                for key, mask in self._selector.select(max(wait, 0.0)):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        self._event(key.data, mask, time.monotonic())
        finally:
            for link in self.links:
                self._close(link)
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _connect(self, link: HeldLink, now: float) -> None:
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                link.node.host, link.node.port, type=socket.SOCK_STREAM
            )[0]
            sock = socket.socket(family, kind, proto)
        except OSError:
            self._failed(link, now)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.sock, link.state, link.deadline = sock, "connecting", now + self._timeout
        err = sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS):
            self._failed(link, now)
            return
        self._selector.register(sock, selectors.EVENT_WRITE, link)

    def _event(self, link: HeldLink, mask: int, now: float) -> None:
        sock = link.sock
        assert sock is not None
        if link.state == "connecting":
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._failed(link, now)
                return
            if self._tls is None:
                self._ask_versions(link, now)
                return
            # The TLS socket takes the plain one's descriptor: the selector learns it anew.
            self._selector.unregister(sock)
            try:
                link.sock = self._tls.wrap_socket(
                    sock, server_hostname=link.node.host, do_handshake_on_connect=False
                )
            except OSError:
                self._failed(link, now)
                return
            self._selector.register(link.sock, selectors.EVENT_WRITE, link)
            link.state = "tls"
            self._tls_handshake(link, now)
            return
        if link.state == "tls":
            self._tls_handshake(link, now)
            return
        try:
            data = _recv_all(sock)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            data = b""
        if not data:
            if link.state == "up":
                self._dropped(link, now)
            else:
                self._failed(link, now)
        elif link.state == "handshake":
            assert link.parser is not None
            try:
                replies = link.parser.receive_bytes(data)
            except Exception:
                self._failed(link, now)  # answers, but not Kafka
                return
            if replies:
                self._established(link, now)

    def _tls_handshake(self, link: HeldLink, now: float) -> None:
        sock = link.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._selector.modify(sock, selectors.EVENT_READ, link)
        except ssl.SSLWantWriteError:
            self._selector.modify(sock, selectors.EVENT_WRITE, link)
        except OSError:
            # Refused (a certificate we do not trust, a plaintext listener) or reset.
            self._failed(link, now)
        else:
            self._ask_versions(link, now)

    def _ask_versions(self, link: HeldLink, now: float) -> None:
        sock = link.sock
        assert sock is not None
        link.parser = KafkaProtocol(client_id=CLIENT_ID, receive_message_max_bytes=1 << 20)
        link.parser.send_request(api_versions_request())
        try:
            # ~50 bytes into an empty send buffer: sent whole.
            sock.send(link.parser.send_bytes())
        except OSError:
            self._failed(link, now)
            return
        link.state = "handshake"
        self._selector.modify(sock, selectors.EVENT_READ, link)

    def _established(self, link: HeldLink, now: float) -> None:
        link.state, link.rechecking, link.up_at = "up", False, now
        if not link.reported_up:
            link.reported_up = True
            self._tell()

    def _dropped(self, link: HeldLink, now: float) -> None:
        self._close(link)
        if now - link.up_at < 2 * LINK_RETRY_S:
            # Dropped again right after reconnecting: not an idle close.
            self._failed(link, now)
            return
        link.rechecking = True
        self._connect(link, now)

    def _failed(self, link: HeldLink, now: float) -> None:
        self._close(link)
        link.rechecking = False
        link.retry_at = now + LINK_RETRY_S
        if link.reported_up:
            link.reported_up = False
            self._tell()

    def _close(self, link: HeldLink) -> None:
        sock, link.sock, link.parser, link.state = link.sock, None, None, "down"
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()

    def _tell(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.exception("on_change failed")


def _recv_all(sock: socket.socket) -> bytes:
    """What the socket holds now; with TLS, records already decrypted too, which the
    selector cannot see. Raises as recv does when there is nothing yet."""
    data = sock.recv(1 << 16)
    while data and isinstance(sock, ssl.SSLSocket) and sock.pending():
        data += sock.recv(1 << 16)
    return data
