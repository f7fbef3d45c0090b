"""Kafka actions that go through the cluster's own API rather than a node agent."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kafka.adapter import KafkaAdapter
from models import ClusterSpec
from models.findings.kafka import movable_to_preferred

PREFERRED = 0
"""ElectLeaders' election type for the preferred replica (1 would be unclean)."""


@activity.defn
async def elect_preferred_leaders(spec: ClusterSpec) -> int:
    """Ask for a preferred election of every partition whose in-sync preferred replica
    does not lead; returns how many were asked for. Asking again is harmless: Kafka skips
    partitions already led by their preferred replica."""
    adapter = KafkaAdapter()
    view = await adapter.probe(spec)
    wanted: dict[str, list[int]] = defaultdict(list)
    for shard in movable_to_preferred(view.shards):
        topic, _, partition = shard.shard_id.rpartition("/")
        wanted[topic].append(int(partition))
    if not wanted:
        return 0
    # The probe read the same secrets: had they been unreadable, it would have seen no
    # partitions to move.
    login = adapter.login_of(spec)

    def elect() -> None:
        admin = KafkaAdminClient(
            bootstrap_servers=[n.address for n in spec.nodes],
            request_timeout_ms=int(spec.probe.timeout_s * 5000),
            client_id="replicante-remediation",
            **login.client_options(),
        )
        try:
            admin.elect_leaders(PREFERRED, dict(wanted), timeout_ms=30_000)
        finally:
            admin.close()

    try:
        await asyncio.to_thread(elect)
    except KafkaError as error:
        raise ApplicationError(f"preferred leader election failed: {error}") from error
    return sum(len(p) for p in wanted.values())
