"""Rules every kind shares (nodes down or not serving, quorum, leader, member count),
then the kind's own rules."""

from __future__ import annotations

from collections.abc import Callable

from models.base import Kind
from models.findings import kafka, mongodb
from models.findings.base import Finding, Severity
from models.spec import ClusterSpec
from models.view import ClusterView, Health, Role

Rules = Callable[[ClusterSpec, ClusterView], list[Finding]]

KIND_RULES: dict[Kind, Rules] = {
    Kind.KAFKA: kafka.evaluate,
    Kind.MONGODB: mongodb.evaluate,
}

# What "a quorum but nobody in charge" is called for each kind.
NO_LEADER = {
    Kind.ZOOKEEPER: ("no_leader", "a quorum of members is alive but none is the leader"),
    Kind.KAFKA: ("no_controller", "a quorum of controllers is alive but none is active"),
    Kind.MONGODB: ("no_primary", "a majority of members is alive but none is primary"),
}


def evaluate(spec: ClusterSpec, view: ClusterView) -> list[Finding]:
    findings: list[Finding] = []
    for node in view.nodes:
        if not node.reachable:
            findings.append(
                Finding(
                    code="node_down",
                    severity=Severity.WARNING,
                    subject=node.node_id,
                    message=f"{node.node_id} ({node.address}) is unreachable: {node.error}",
                )
            )
        elif node.role is Role.LOOKING:
            findings.append(
                Finding(
                    code="node_not_serving",
                    severity=Severity.WARNING,
                    subject=node.node_id,
                    message=f"{node.node_id} answers but does not serve requests",
                )
            )
        if node.reachable and node.error is not None:
            # Alive, and read, but it would not take our login: our secret, not the node,
            # is what to fix, so no playbook answers this.
            findings.append(
                Finding(
                    code="auth_failed",
                    severity=Severity.WARNING,
                    subject=node.node_id,
                    message=f"{node.node_id} ({node.address}) answers, not to us: {node.error}",
                )
            )
    if view.quorum is False:
        findings.append(
            Finding(
                code="quorum_lost",
                severity=Severity.CRITICAL,
                subject=spec.cluster_id,
                message=(
                    f"{view.voting_alive} of {view.voting_configured} voting members alive;"
                    " the cluster cannot accept writes"
                ),
            )
        )
    elif view.quorum and view.leader is None:
        code, message = NO_LEADER[spec.kind]
        findings.append(
            Finding(code=code, severity=Severity.CRITICAL, subject=spec.cluster_id, message=message)
        )
    alive = sum(1 for n in view.nodes if n.reachable and n.role is not Role.LOOKING)
    if spec.expect.members is not None and alive < spec.expect.members:
        findings.append(
            Finding(
                code="members_missing",
                severity=Severity.WARNING,
                subject=spec.cluster_id,
                message=f"{alive} members serving, {spec.expect.members} expected",
            )
        )
    rules = KIND_RULES.get(spec.kind)
    if rules is not None:
        findings.extend(rules(spec, view))
    return findings


def health_of(view: ClusterView | None, findings: list[Finding]) -> Health:
    if view is None:
        return Health.UNKNOWN
    worst = max((f.severity for f in findings), default=Severity.INFO)
    if worst >= Severity.CRITICAL:
        return Health.UNAVAILABLE
    if worst >= Severity.WARNING:
        return Health.DEGRADED
    return Health.HEALTHY
