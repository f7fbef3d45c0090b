"""Kafka's safety rules, from the partitions (shards) of a view: a broker stops only if no
partition is under-replicated already and none drops below its min.insync.replicas, and
leadership moves back to preferred replicas only where they are in sync."""

from __future__ import annotations

from models.findings.kafka import movable_to_preferred
from models.safety.base import Verdict, keeps_quorum, ok, refuse
from models.spec import ClusterSpec
from models.view import ClusterView


def stop_broker(spec: ClusterSpec, view: ClusterView, node_id: str) -> Verdict:
    """Stopping (or restarting) a broker: the controller quorum holds, every partition is
    fully in sync first, and none falls below min.insync.replicas without it (producers
    with acks=all would be refused)."""
    quorum = keeps_quorum(view, node_id)
    if not quorum.safe:
        return quorum
    under = [s.shard_id for s in view.shards if len(s.in_sync) < len(s.replicas)]
    if under:
        return refuse(f"{len(under)} partition(s) under-replicated: wait for them first")
    would_drop = [
        s.shard_id
        for s in view.shards
        if node_id in s.in_sync and s.min_in_sync is not None and len(s.in_sync) - 1 < s.min_in_sync
    ]
    if would_drop:
        return refuse(
            f"stopping {node_id} drops {len(would_drop)} partition(s) below"
            f" min.insync.replicas, e.g. {would_drop[0]}"
        )
    return ok(f"every partition keeps min.insync.replicas without {node_id}; {quorum.reason}")


def preferred_leader_election(spec: ClusterSpec, view: ClusterView) -> Verdict:
    """Move leadership back to preferred replicas, only where they are in sync."""
    offline = [s.shard_id for s in view.shards if s.node_id is None]
    if offline:
        return refuse(f"{len(offline)} partition(s) offline: fix those first")
    moved = [
        s
        for s in view.shards
        if s.node_id is not None and s.replicas and s.node_id != s.replicas[0]
    ]
    if not moved:
        return refuse("every partition is led by its preferred replica: nothing to elect")
    eligible = movable_to_preferred(moved)
    if not eligible:
        return refuse("no preferred replica is in sync: an election would fail")
    return ok(f"{len(eligible)} partition(s) can move back to an in-sync preferred replica")
