"""`replicante codec-server`: Temporal's codec server protocol over our payload codec
(worker/codec.py), so that the Temporal UI, or `temporal workflow show --codec-endpoint`,
shows decrypted payloads to those holding a token.

`POST .../encode` and `POST .../decode` take and return `{"payloads": [...]}` (Payloads in
protobuf's JSON); only the last path segment counts, so `http://HOST:PORT/{namespace}` works
as a templated endpoint too. Every POST needs `Authorization: Bearer TOKEN` with a token of
`REPLICANTE_CODEC_SERVER_TOKENS`: whoever may call it reads every payload. The UI sends the
user's access token when its codec settings pass it. Browsers call it cross-origin, so CORS
answers the origins of `--allow-origin` (the UI's, e.g. http://127.0.0.1:8233) and no other.

A UI without a login (the dev server's) sends no token: a browser becomes allowed instead by
opening `GET /login?token=TOKEN` once, which sets an HttpOnly, SameSite=Lax cookie that the
UI's requests carry when its codec settings include cross-origin credentials (the UI and
this server on one host are one *site*: cookies ignore ports). `GET /logout` clears it. The
cookie holds an HMAC of the token under a key made at each start, not the token: a stolen
cookie does not reveal a token (usable with the CLI, or after a restart), and a restart or
a token removed from the list logs every browser out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from config.codec import load_tokens
from config.settings import Settings
from models import SpecError
from worker.codec import CodecKeyError, EncryptionCodec, load_keys

log = logging.getLogger("replicante.codec_server")

MAX_BODY_BYTES = 64 * 1024 * 1024
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
COOKIE = "replicante_codec"
GRANTED = "codec access granted for this browser"


def parse_origin(url: str) -> str:
    """An `--allow-origin` as browsers send it in `Origin`: scheme://host[:port].

    >>> parse_origin("http://127.0.0.1:8233/")
    'http://127.0.0.1:8233'
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise SpecError(f"--allow-origin {url!r}: give scheme://host[:port], e.g. the UI's")
    return f"{parts.scheme}://{parts.netloc}"


def parse_listen(listen: str) -> tuple[str, int]:
    host, colon, port = listen.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise SpecError(f"--listen {listen!r}: give HOST:PORT, e.g. 127.0.0.1:8081")
    return host, int(port)


class CodecServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        codec: EncryptionCodec,
        tokens: frozenset[str],
        origins: frozenset[str],
    ) -> None:
        self.codec, self.tokens, self.origins = codec, tokens, origins
        self._cookie_key = os.urandom(32)  # per process: a restart logs browsers out
        super().__init__(address, CodecRequest)

    def cookie_of(self, token: str) -> str:
        """The login cookie's value for a token: its HMAC under this process's key."""
        return hmac.new(self._cookie_key, token.encode(), hashlib.sha256).hexdigest()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def accepts(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.holds(token.strip())

    def holds(self, token: str) -> bool:
        given = token.encode()
        # Every token compared, in constant time each: the reply's timing tells nothing.
        return any([hmac.compare_digest(given, t.encode()) for t in self.tokens])

    def accepts_cookie(self, value: str | None) -> bool:
        given = (value or "").encode()
        cookies = [self.cookie_of(t).encode() for t in self.tokens]
        return value is not None and any([hmac.compare_digest(given, c) for c in cookies])


class CodecRequest(BaseHTTPRequestHandler):
    server: CodecServer
    protocol_version = "HTTP/1.1"

    def do_OPTIONS(self) -> None:
        """A browser's preflight: no credentials come with it, so none are asked."""
        if self._refused_origin():
            return
        self.send_response(HTTPStatus.NO_CONTENT)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "POST")
        self.send_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        if self._refused_origin():
            return
        operation = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if operation not in ("encode", "decode"):
            self._reply(HTTPStatus.NOT_FOUND, "POST .../encode or .../decode")
            return
        if not (
            self.server.accepts(self.headers.get("Authorization"))
            or self.server.accepts_cookie(self._cookie())
        ):
            why = "no bearer token" if "Authorization" not in self.headers else "token refused"
            self._reply(
                HTTPStatus.UNAUTHORIZED,
                f"{why}: send Authorization: Bearer TOKEN, or open /login?token=TOKEN",
            )
            return
        declared = self.headers.get("Content-Length", "")
        length = int(declared) if declared.isdigit() else 0
        if not 0 < length <= MAX_BODY_BYTES:
            self._reply(HTTPStatus.BAD_REQUEST, f"a JSON body of 1 to {MAX_BODY_BYTES} bytes")
            return
        try:
            given = json_format.Parse(self.rfile.read(length), Payloads())
            codec = self.server.codec
            apply = codec.encrypt if operation == "encode" else codec.decrypt
            done = Payloads(payloads=[apply(p) for p in given.payloads])
        except json_format.ParseError:
            self._reply(HTTPStatus.BAD_REQUEST, 'want {"payloads": [...]} in protobuf JSON')
            return
        except CodecKeyError as error:
            self._reply(HTTPStatus.UNPROCESSABLE_ENTITY, str(error))
            return
        self._reply(HTTPStatus.OK, json_format.MessageToJson(done), "application/json")

    def do_GET(self) -> None:
        """`/login?token=TOKEN` sets the browser's cookie; `/logout` clears it."""
        if self._refused_origin():
            return
        parts = urlsplit(self.path)
        if parts.path == "/logout":
            self._reply(HTTPStatus.OK, "codec access revoked for this browser", cookie="")
            return
        if parts.path != "/login":
            self._reply(HTTPStatus.NOT_FOUND, "GET /login?token=TOKEN or /logout")
            return
        token = parse_qs(parts.query).get("token", [""])[0]
        if not self.server.holds(token):
            self._reply(HTTPStatus.UNAUTHORIZED, "token refused")
            return
        self._reply(HTTPStatus.OK, GRANTED, cookie=self.server.cookie_of(token))

    def _cookie(self) -> str | None:
        for part in self.headers.get("Cookie", "").split(";"):
            name, equals, value = part.strip().partition("=")
            if equals and name == COOKIE:
                return value
        return None

    def _refused_origin(self) -> bool:
        """Refuse a browser on a page of another origin: only the UI's may use the tokens."""
        origin = self.headers.get("Origin")
        if origin is None or origin in self.server.origins:
            return False
        self._reply(HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed (--allow-origin)")
        return True

    def _cors(self) -> None:
        origin = self.headers.get("Origin")
        if origin in self.server.origins:
            self.send_header("Access-Control-Allow-Origin", origin)
            # The UI's "include cross-origin credentials" needs this to read the reply.
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Vary", "Origin")

    def _reply(
        self,
        status: HTTPStatus,
        body: str,
        content_type: str = "text/plain",
        cookie: str | None = None,
    ) -> None:
        """`cookie` sets the login cookie to that value; "" clears it."""
        data = (body if content_type == "application/json" else f"{body}\n").encode()
        self.send_response(status)
        self._cors()
        if cookie is not None:
            # Path=/: a templated endpoint (/{namespace}/decode) gets it too. No Max-Age:
            # it lasts the browser session (and at most this process's).
            expiry = "; Max-Age=0" if cookie == "" else ""
            self.send_header(
                "Set-Cookie", f"{COOKIE}={cookie}; HttpOnly; SameSite=Lax; Path=/{expiry}"
            )
            self.send_header("Cache-Control", "no-store")
        if status is HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="replicante codec"')
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status >= HTTPStatus.BAD_REQUEST:
            # A refused request's body may be left unread: the connection cannot carry another.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # The request line and status only: headers, tokens among them, are never logged,
        # nor a query string (/login's holds one).
        line = format % args
        path = getattr(self, "path", "")
        if "?" in path:
            line = line.replace(path, path.split("?", 1)[0] + "?...")
        log.info("%s %s", self.address_string(), line)


def codec_server(
    settings: Settings, tokens: str | None, listen: str, origins: list[str]
) -> CodecServer:
    """The server, bound (not yet serving). SpecError for a bad setting or a taken address."""
    keys = load_keys(settings.codec_keys_file, settings.codec_key)
    if keys is None:
        raise SpecError("no codec keys: set REPLICANTE_CODEC_KEYS or REPLICANTE_CODEC_KEY")
    allowed = frozenset(parse_origin(o) for o in origins)
    accepted = load_tokens(tokens)
    try:
        return CodecServer(parse_listen(listen), EncryptionCodec(keys), accepted, allowed)
    except OSError as error:
        raise SpecError(f"--listen {listen}: {error.strerror}") from None


async def serve(server: CodecServer) -> None:
    """Serve until cancelled (Ctrl-C)."""
    # A thread of our own, started before anything can cancel: shutdown() returns only once
    # serve_forever has run, and a cancelled asyncio.to_thread may never run it.
    threading.Thread(target=server.serve_forever, name="codec-server", daemon=True).start()
    try:
        await asyncio.Event().wait()
    finally:
        server.shutdown()
        server.server_close()
