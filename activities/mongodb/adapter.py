"""MongoDBAdapter: the probe and the held links behind the one Adapter contract."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from activities.adapter import Adapter
from activities.links import NO_LINKS, LinkStates, stop_all
from activities.mongodb.connection import (
    PROBE_HEARTBEAT_MS,
    describe_error,
    login_of,
    pinned_client,
    read_server,
)
from activities.mongodb.links import LINK_HEARTBEAT_MS, LINK_STOP_WAIT_S, LinkWatch
from activities.mongodb.replies import Reading, _key, cluster_routes
from activities.mongodb.view import cluster_view
from activities.telemetry import probe_node, traced_probe
from config.mongodb import MongoDBLogin
from config.secret_scope import SecretUnavailable
from models import ClusterSpec, ClusterView, Kind

# How long past the probe timeout a read may run before it is abandoned. pymongo bounds each
# read itself (pymongo.timeout), but its server selection looks again at an unreachable
# server only every 0.5 s, so a refused connection is reported up to 0.5 s late; this only
# guards against a read that outlives even that.
READ_GRACE_S = 1.0


def _failure(reading: Reading) -> str | None:
    return reading.failure


class MongoDBAdapter(Adapter[MongoDBLogin]):
    kind: ClassVar[Kind] = Kind.MONGODB
    login_of = staticmethod(login_of)

    def describe_error(self, error: BaseException, timeout: float) -> str:
        """pymongo's errors as describe_error reads them; anything else by its message."""
        if isinstance(error, PyMongoError):
            return describe_error(error, timeout)
        return str(error) or type(error).__name__

    def __init__(self) -> None:
        # While links are held, the probe reads through their clients, and keeps the clients
        # it opens for members outside the spec (shards found through a mongos) until the
        # links are closed: the watch probes every interval, and each new client costs a
        # connection and, with credentials, an authentication.
        self._lock = threading.Lock()
        self._clients: dict[str, MongoClient[dict[str, Any]]] | None = None

    @traced_probe
    async def probe(self, spec: ClusterSpec) -> ClusterView:
        observed_at = datetime.now(UTC)
        try:
            login = login_of(spec)
        except SecretUnavailable as error:
            unread = {n.address: Reading(n.address, error=str(error)) for n in spec.nodes}
            return cluster_view(spec, unread, observed_at)
        addresses = [n.address for n in spec.nodes]
        readings = await self._read_all(spec, addresses, login)
        # A mongos among the spec's nodes: its shards' and config servers' members next.
        dialled = {_key(a) for a in readings}
        routes = cluster_routes(readings.values())
        members = list(
            dict.fromkeys(h for route in routes for h in route.hosts if _key(h) not in dialled)
        )
        if members:
            readings |= await self._read_all(spec, members, login)
        return cluster_view(spec, readings, observed_at)

    async def _read_all(
        self, spec: ClusterSpec, addresses: Sequence[str], login: MongoDBLogin
    ) -> dict[str, Reading]:
        # A member found through a mongos is named by its address, as in the view.
        names = {_key(n.address): n.node_id for n in spec.nodes}
        found = await asyncio.gather(
            *(
                probe_node(
                    spec,
                    names.get(_key(a), a),
                    partial(self._read, a, spec.probe.timeout_s, login),
                    _failure,
                )
                for a in addresses
            )
        )
        return dict(zip(addresses, found, strict=True))

    async def _read(self, address: str, timeout: float, login: MongoDBLogin) -> Reading:
        with self._lock:
            cached = self._clients
            client = cached.get(address) if cached is not None else None
            owned = client is None and cached is None
            if client is None:
                client = pinned_client(address, timeout, login, PROBE_HEARTBEAT_MS)
                if cached is not None:
                    cached[address] = client
        try:
            async with asyncio.timeout(timeout + READ_GRACE_S):
                return await asyncio.to_thread(read_server, client, address, timeout)
        except TimeoutError:
            return Reading(address, error=f"timeout after {timeout}s")
        finally:
            if owned:
                # Closing may wait on a dead server; the probe's answer need not.
                stop_all([client.close], 0.0)

    @contextmanager
    def hold_links(self, spec: ClusterSpec, on_change: Callable[[], None]) -> Iterator[LinkStates]:
        login = self.login_for_links(spec)
        if login is None:
            yield NO_LINKS
            return
        watches = {node.address: LinkWatch(on_change) for node in spec.nodes}
        clients = {
            address: pinned_client(address, spec.probe.timeout_s, login, LINK_HEARTBEAT_MS, watch)
            for address, watch in watches.items()
        }
        with self._lock:
            self._clients = dict(clients)
        try:
            yield NO_LINKS
        finally:
            for watch in watches.values():
                watch.closing = True
            with self._lock:
                held, self._clients = self._clients or {}, None
            stop_all([c.close for c in held.values()], LINK_STOP_WAIT_S)
