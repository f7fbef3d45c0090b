"""MongoDB's own findings, read from the members (shards) of a view and the per replica set
facts the adapter keeps under `<shard id>.<name>` (`set_fact`).

The common rules already speak for a replica set's nodes, its quorum and its primary
(`no_primary`); a sharded cluster has one replica set per shard and one for its config
servers, so for it the same questions are asked here, once per set.
"""

from __future__ import annotations

from collections.abc import Iterable

from models.findings.base import Finding, Severity, listing
from models.spec import ClusterSpec
from models.view import ClusterView, FactValue, Role, ShardStatus

REFUSABLE = (("replSetGetStatus", "status_error"), ("serverStatus", "server_status_error"))
"""The probe's commands a server may refuse without a login, and the node fact of each."""


def set_fact(shard_id: str, name: str) -> str:
    """The view fact key of one replica set's figure.

    >>> set_fact("rs0", "write_majority_count")
    'rs0.write_majority_count'
    """
    return f"{shard_id}.{name}"


def _sets(shards: Iterable[ShardStatus]) -> dict[str, list[ShardStatus]]:
    sets: dict[str, list[ShardStatus]] = {}
    for shard in shards:
        sets.setdefault(shard.shard_id, []).append(shard)
    return sets


def evaluate(spec: ClusterSpec, view: ClusterView) -> list[Finding]:
    findings: list[Finding] = []

    def add(code: str, severity: Severity, subject: str, message: str) -> None:
        findings.append(Finding(code=code, severity=severity, subject=subject, message=message))

    sharded = view.facts.get("topology") == "sharded"
    max_lag = spec.expect.max_lag
    for shard_id, members in _sets(view.shards).items():

        def fact(name: str, shard_id: str = shard_id) -> FactValue | None:
            return view.facts.get(set_fact(shard_id, name))

        # A finding about a whole set is filed under the shard, or the cluster it makes up.
        subject = shard_id if sharded else spec.cluster_id
        where = f"shard {shard_id}" if sharded else f"replica set {shard_id}"
        has_primary = any(m.role is Role.PRIMARY for m in members)
        quorum = fact("quorum")
        if sharded and quorum is False:
            add(
                "shard_quorum_lost",
                Severity.CRITICAL,
                subject,
                f"{where}: {fact('voting_alive')} of {fact('voting_configured')} voting members"
                " alive; it cannot elect a primary or accept writes",
            )
        elif sharded and quorum is True and not has_primary:
            add(
                "shard_no_primary",
                Severity.CRITICAL,
                subject,
                f"{where}: a majority of members is alive but none is primary",
            )
        # Every member's entry carries the set's data-bearing voting members (`replicas`),
        # those able to acknowledge a write now (`in_sync`) and the write majority count.
        # Without a quorum, or without knowing (no member's status readable), the quorum
        # findings say more, or nothing can be said.
        first = members[0]
        if (
            quorum is True
            and first.min_in_sync is not None
            and len(first.in_sync) < first.min_in_sync
        ):
            add(
                "majority_writes_at_risk",
                Severity.CRITICAL,
                subject,
                f"{where}: {len(first.in_sync)} of {len(first.replicas)} data-bearing voting"
                f" members can acknowledge writes, w:majority needs {first.min_in_sync}"
                f" (arbiters do not count); down or not serving: {listing(_missing(first))}",
            )
        reference = "the primary" if has_primary else "the freshest member"
        for m in members:
            if max_lag is not None and m.role is Role.SECONDARY and (m.lag or 0) > max_lag:
                add(
                    "secondary_lagging",
                    Severity.WARNING,
                    m.node_id or shard_id,
                    f"{m.node_id} is {m.lag} s behind {reference} of {shard_id}"
                    f" (max_lag {max_lag} s)",
                )
    for node in view.nodes:
        refused = [
            command
            for command, fact in REFUSABLE
            if str(node.facts.get(fact, "")).startswith("Unauthorized")
        ]
        if refused:
            add(
                "status_not_authorized",
                Severity.WARNING,
                node.node_id,
                f"{node.node_id} refuses {' and '.join(refused)} to the probe: give the spec"
                " secrets username/password of a user with the clusterMonitor role",
            )
        if node.facts.get("in_set_config") is False:
            add(
                "not_in_replica_set",
                Severity.WARNING,
                node.node_id,
                f"{node.node_id} ({node.address}) answers but is not a member of replica set"
                f" {view.facts.get('set_name')}",
            )
    return findings


def _missing(shard: ShardStatus) -> list[str]:
    return [r for r in shard.replicas if r not in shard.in_sync]
