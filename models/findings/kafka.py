"""Kafka's own findings, read from the partitions (shards) of a view.

Each is one cluster-wide finding listing the partitions it concerns: a dead broker makes
hundreds of partitions under-replicated at once, and an operator wants one line saying so,
not hundreds.
"""

from __future__ import annotations

from collections.abc import Iterable

from models.findings.base import Finding, Severity, listing
from models.spec import ClusterSpec
from models.view import ClusterView, ShardStatus


def evaluate(spec: ClusterSpec, view: ClusterView) -> list[Finding]:
    partitions = view.shards
    findings: list[Finding] = []

    def add(code: str, severity: Severity, hit: list[ShardStatus], what: str) -> None:
        if hit:
            ids = [s.shard_id for s in hit]
            findings.append(
                Finding(
                    code=code,
                    severity=severity,
                    subject=spec.cluster_id,
                    message=f"{len(ids)} partition(s) {what}: {listing(ids)}",
                )
            )

    offline = [s for s in partitions if s.node_id is None]
    add("offline_partitions", Severity.CRITICAL, offline, "have no leader")
    # Producers with acks=all are refused on these: the data written before is at risk,
    # and new writes stop.
    add(
        "below_min_isr",
        Severity.CRITICAL,
        [
            s
            for s in partitions
            if s.node_id is not None
            and s.min_in_sync is not None
            and len(s.in_sync) < s.min_in_sync
        ],
        "below min.insync.replicas (data at risk)",
    )
    add(
        "under_replicated",
        Severity.WARNING,
        [s for s in partitions if s.node_id is not None and len(s.in_sync) < len(s.replicas)],
        "under-replicated",
    )
    max_lag = spec.expect.max_lag
    if max_lag is not None:
        add(
            "replica_lagging",
            Severity.WARNING,
            [s for s in partitions if s.lag is not None and s.lag > max_lag],
            f"with a follower more than {max_lag} messages behind its leader",
        )
    wanted_rf = spec.expect.replication_factor
    if wanted_rf is not None:
        add(
            "replication_factor_low",
            Severity.WARNING,
            [s for s in partitions if len(s.replicas) < wanted_rf],
            f"with fewer than {wanted_rf} replicas",
        )
    # Only where the preferred replica could lead (it is in sync): otherwise the election
    # that would fix the imbalance cannot run, and the under-replication says why.
    add(
        "leader_not_preferred",
        Severity.INFO,
        movable_to_preferred(partitions),
        "led by a broker other than the preferred replica",
    )
    return findings


def movable_to_preferred(partitions: Iterable[ShardStatus]) -> list[ShardStatus]:
    """Partitions led by another broker although their preferred replica is in sync: the
    ones a preferred leader election can move back."""
    return [
        s
        for s in partitions
        if s.node_id is not None
        and s.replicas
        and s.node_id != s.replicas[0]
        and s.replicas[0] in s.in_sync
    ]
