"""ZooKeeperAdapter: the probe and the held links behind the one Adapter contract."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import ClassVar

from activities.adapter import Adapter
from activities.links import NO_LINKS, LinkStates
from activities.telemetry import probe_node, traced_probe
from activities.zookeeper.connection import login_of
from activities.zookeeper.links import hold
from activities.zookeeper.probe import Details, Kept, _read_member, _Reading, describe_error
from activities.zookeeper.replies import SERVING, zxid_lag
from config.secret_scope import SecretUnavailable
from config.zookeeper import ZooKeeperLogin
from models import ClusterSpec, ClusterView, Kind, NodeSpec, Role, ShardStatus

SHARD_ID = "zk"


def _error(read: tuple[_Reading, Details | None]) -> str | None:
    return read[0].status.error


class ZooKeeperAdapter(Adapter[ZooKeeperLogin]):
    kind: ClassVar[Kind] = Kind.ZOOKEEPER
    login_of = staticmethod(login_of)
    describe_error = staticmethod(describe_error)

    def prober(self, spec: ClusterSpec, links: LinkStates) -> Callable[[], Awaitable[ClusterView]]:
        """Rounds that ask a member nothing while its reading holds (`Kept.holds`: its held
        link has served without a break since, for less than READING_MAX_AGE_S), and
        otherwise srvr, with mntr and conf again only when its mode changed, it was
        unreachable, or they are older than DETAILS_MAX_AGE_S. A healthy member then costs
        a ping per interval on its link, and three connections every READING_MAX_AGE_S,
        instead of one to three a round. A spec that bounds lag (`expect.max_lag`) has srvr
        asked every round: its zxids are what it watches. What the rounds keep is this
        watch's alone, keyed by node id, never by address."""
        kept: dict[str, Kept] = {}
        if spec.expect.max_lag is not None:
            links = NO_LINKS
        return partial(self._probe, spec, kept, links)

    async def probe(self, spec: ClusterSpec) -> ClusterView:
        return await self._probe(spec, {}, NO_LINKS)

    @traced_probe
    async def _probe(
        self, spec: ClusterSpec, kept: dict[str, Kept], links: LinkStates
    ) -> ClusterView:
        """`kept`: each node's last reading, which this round may use and updates."""
        observed_at = datetime.now(UTC)
        login: ZooKeeperLogin | SecretUnavailable | None = None
        if spec.auth is not None:
            try:
                login = login_of(spec)
            except SecretUnavailable as error:
                login = error
        now = time.monotonic()

        async def read(node: NodeSpec) -> _Reading:
            stretch, last = links.serving(node.node_id), kept.get(node.node_id)
            if last is not None and last.holds(stretch, login, now):
                return last.reading
            reading, details = await probe_node(
                spec,
                node.node_id,
                partial(
                    _read_member,
                    node,
                    spec.probe.timeout_s,
                    login,
                    last.details if last is not None else None,
                ),
                _error,
            )
            kept[node.node_id] = Kept(reading, details, login, stretch, time.monotonic())
            return reading

        readings = await asyncio.gather(*(read(n) for n in spec.nodes))
        nodes = tuple(r.status for r in readings)
        leaders = [r for r in readings if r.status.role in (Role.LEADER, Role.STANDALONE)]
        leader = leaders[0] if len(leaders) == 1 else None
        # The ensemble's own membership, the leader's first, beats counting the spec's nodes.
        memberships = [r.voting_members for r in [*leaders, *readings] if r.voting_members]
        voting_configured = (
            memberships[0] if memberships else sum(1 for n in nodes if n.role is not Role.OBSERVER)
        )
        # Alive, not necessarily serving: members electing a leader still make up a quorum,
        # so a leader failover reads as `no_leader` for a moment, not as quorum lost.
        voting_alive = sum(1 for n in nodes if n.reachable and n.role is not Role.OBSERVER)
        shards = tuple(
            ShardStatus(
                shard_id=SHARD_ID,
                node_id=r.status.node_id,
                role=r.status.role,
                commit_offset=r.zxid,
                lag=zxid_lag(leader.zxid, r.zxid) if leader and leader.zxid is not None else None,
            )
            for r in readings
            if r.status.role in SERVING and r.zxid is not None
        )
        return ClusterView(
            cluster_id=spec.cluster_id,
            kind=self.kind,
            observed_at=observed_at,
            nodes=nodes,
            shards=shards,
            leader=leader.status.node_id if leader else None,
            quorum=voting_alive > voting_configured // 2,
            voting_alive=voting_alive,
            voting_configured=voting_configured,
        )

    @contextmanager
    def hold_links(self, spec: ClusterSpec, on_change: Callable[[], None]) -> Iterator[LinkStates]:
        login = self.login_for_links(spec)
        if login is None:
            yield NO_LINKS
            return
        # One session per member, pinned to it: a multi-host client would fail over and hide
        # the very crash we hold the link to see. It pings once an interval (zookeeper/links.py):
        # a session as short as the probe's timeout pinged every 0.67 s, 4,500 pings a second
        # for a fleet of 1,000 specs, each woken on the worker and answered by a member.
        states = LinkStates()
        held = [hold(node, spec.probe, login, on_change, states) for node in spec.nodes]
        try:
            yield states
        finally:
            for link in held:
                link.cancel()
