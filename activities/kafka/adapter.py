"""KafkaAdapter: the probe and the held links behind the one Adapter contract."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import ClassVar

from activities.adapter import Adapter
from activities.kafka.connection import client_for, describe_error, login_of
from activities.kafka.links import LinkHolder
from activities.kafka.probe import check_answers, check_node, first_to_describe
from activities.kafka.replies import NodeReading, address, assemble
from activities.links import NO_LINKS, LinkStates
from activities.telemetry import probe_node, traced_probe
from config.kafka import KafkaLogin
from config.secret_scope import SecretUnavailable
from models import ClusterSpec, ClusterView, Kind

log = logging.getLogger(__name__)


def _error(reading: NodeReading) -> str | None:
    return reading.error


class KafkaAdapter(Adapter[KafkaLogin]):
    kind: ClassVar[Kind] = Kind.KAFKA
    login_of = staticmethod(login_of)
    describe_error = staticmethod(describe_error)

    @traced_probe
    async def probe(self, spec: ClusterSpec) -> ClusterView:
        observed_at = datetime.now(UTC)
        timeout = spec.probe.timeout_s
        try:
            login = login_of(spec)
        except SecretUnavailable as error:
            return await self._answers_only(spec, observed_at, f"authentication failed: {error}")
        client = client_for(spec.cluster_id, login)
        deadline = asyncio.get_running_loop().time() + timeout
        checks = [
            asyncio.create_task(
                probe_node(spec, n.node_id, partial(check_node, client, n, timeout), _error)
            )
            for n in spec.nodes
        ]
        try:
            cluster = await first_to_describe(client, spec, checks, deadline)
            readings = [await check for check in checks]
        finally:
            for check in checks:
                check.cancel()  # when the probe itself is cancelled
        for r in readings:
            if r.described is not None:
                client.addresses |= {b.broker_id: b.address for b in r.described.brokers}
        client.retain({address(n.host, n.port) for n in spec.nodes})
        return assemble(
            spec, observed_at, readings, cluster, client.addresses, last_voters=client.voters
        )

    async def _answers_only(
        self, spec: ClusterSpec, observed_at: datetime, unread: str
    ) -> ClusterView:
        """Without the secrets to log in, whether each broker answers ApiVersions (which
        Kafka takes before any login) is still worth knowing: a missing password must not
        read as brokers down."""
        timeout = spec.probe.timeout_s
        try:
            login = login_of(spec, sasl=False)
        except SecretUnavailable:
            # Not even TLS: nothing can be asked.
            readings = [NodeReading(n, error=unread) for n in spec.nodes]
        else:
            client = client_for(spec.cluster_id, login)
            readings = await asyncio.gather(
                *(
                    probe_node(
                        spec, n.node_id, partial(check_answers, client, n, timeout, unread), _error
                    )
                    for n in spec.nodes
                )
            )
        return assemble(spec, observed_at, readings, None, {})

    @contextlib.contextmanager
    def hold_links(self, spec: ClusterSpec, on_change: Callable[[], None]) -> Iterator[LinkStates]:
        try:
            tls = login_of(spec, sasl=False).ssl_context()
        except (SecretUnavailable, OSError, ssl.SSLError) as error:
            # The probe says so each round; crashes are then seen by the probe alone.
            log.info("no held links for %s: %s", spec.cluster_id, error)
            yield NO_LINKS
            return
        holder = LinkHolder(spec.nodes, on_change, connect_timeout=spec.probe.timeout_s, tls=tls)
        holder.start()
        try:
            yield NO_LINKS
        finally:
            holder.stop()
