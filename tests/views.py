"""Spec and view builders for tests of pure rules (safety verdicts, plans): views as the
probes return them, without servers."""

from __future__ import annotations

from datetime import UTC, datetime

from models import ClusterSpec, ClusterView, Kind, NodeStatus, Role, ShardStatus, parse_spec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def spec(kind: str, nodes: tuple[str, ...], max_lag: int | None = None) -> ClusterSpec:
    return parse_spec(
        {
            "cluster_id": "c1",
            "kind": kind,
            "nodes": [{"node_id": n, "address": f"10.0.0.{i}:1"} for i, n in enumerate(nodes)],
            "expect": {"max_lag": max_lag},
        }
    )


def view(
    kind: Kind,
    roles: dict[str, Role | None],
    shards: tuple[ShardStatus, ...] = (),
    facts: dict[str, dict[str, int | bool]] | None = None,
    cluster_facts: dict[str, int] | None = None,
) -> ClusterView:
    """`None` as a role means unreachable; leader and quorum as the probes derive them."""
    nodes = tuple(
        NodeStatus(
            node_id=n,
            address=f"10.0.0.{i}:1",
            reachable=r is not None,
            role=r or Role.UNKNOWN,
            error=None if r else "connection refused",
            facts=(facts or {}).get(n, {}),
        )
        for i, (n, r) in enumerate(roles.items())
    )
    leaders = [n for n, r in roles.items() if r in (Role.LEADER, Role.PRIMARY, Role.CONTROLLER)]
    alive = sum(1 for r in roles.values() if r is not None)
    return ClusterView(
        cluster_id="c1",
        kind=kind,
        observed_at=T0,
        nodes=nodes,
        shards=shards,
        leader=leaders[0] if leaders else None,
        quorum=alive > len(roles) // 2,
        voting_alive=alive,
        voting_configured=len(roles),
        facts=cluster_facts or {},
    )
