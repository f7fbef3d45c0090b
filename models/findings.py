"""Findings: each way in which a view differs from its spec.

Pure functions of (spec, view), so the monitor workflow can compute them
deterministically and an operator can recompute them from any stored view.
"""

from __future__ import annotations

from enum import IntEnum

from pydantic import BaseModel, ConfigDict

from models.spec import ClusterSpec
from models.view import ClusterView, Health, Role


class Severity(IntEnum):
    INFO = 10
    WARNING = 20
    CRITICAL = 30


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    """Stable name, also the remediation key: `node_down`, `quorum_lost`, ..."""
    severity: Severity
    subject: str
    """What the finding is about: a node id, or the cluster id for cluster-wide ones."""
    message: str

    @property
    def key(self) -> str:
        return f"{self.code}/{self.subject}"


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
        findings.append(
            Finding(
                code="no_leader",
                severity=Severity.CRITICAL,
                subject=spec.cluster_id,
                message="a quorum of members is alive but none is the leader",
            )
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
    return findings


def health_of(view: ClusterView | None, findings: list[Finding]) -> Health:
    if view is None:
        return Health.UNKNOWN
    worst = max((f.severity for f in findings), default=None)
    if worst is None:
        return Health.HEALTHY
    if worst >= Severity.CRITICAL:
        return Health.UNAVAILABLE
    return Health.DEGRADED
