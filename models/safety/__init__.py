"""Safety verdicts: may this action run now, given a fresh view? Pure functions of
(spec, view), so a remediation records exactly what it decided from and why.

The rule of thumb is Patroni's and Orchestrator's: starting a process that is down never
makes things worse; stopping or demoting a live one must leave the cluster able to take
writes without losing acknowledged data. A verdict that cannot be reached (the view lacks
what the rule needs) is a refusal: unsure means no.

Rules every kind shares are in `base`; each kind adds its own in a module of its name, and
`STOP_RULES` picks the kind's rule on stopping a node.
"""

from __future__ import annotations

from models.base import Kind
from models.safety import kafka, mongodb, zookeeper
from models.safety.base import (
    SERVING,
    StopRule,
    Verdict,
    keeps_quorum,
    ok,
    others_serve,
    refuse,
    start_dead_node,
)
from models.safety.kafka import preferred_leader_election
from models.safety.mongodb import step_down_primary
from models.spec import ClusterSpec
from models.view import ClusterView

STOP_RULES: dict[Kind, StopRule] = {
    Kind.ZOOKEEPER: zookeeper.stop_member,
    Kind.KAFKA: kafka.stop_broker,
    Kind.MONGODB: mongodb.stop_member,
}


def stop_live_node(spec: ClusterSpec, view: ClusterView, node_id: str) -> Verdict:
    """Stopping (or restarting) a node that serves: only if the rest carry on without it."""
    common = others_serve(spec, view, node_id)
    if not common.safe:
        return common
    return STOP_RULES[spec.kind](spec, view, node_id)


__all__ = [
    "SERVING",
    "STOP_RULES",
    "StopRule",
    "Verdict",
    "keeps_quorum",
    "ok",
    "preferred_leader_election",
    "refuse",
    "start_dead_node",
    "step_down_primary",
    "stop_live_node",
]
