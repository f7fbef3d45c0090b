"""ZooKeeper's safety rules: the ensemble answers while a majority of its voting members
does, so stopping one is safe exactly when the rest stay a majority."""

from __future__ import annotations

from models.safety.base import Verdict, keeps_quorum
from models.spec import ClusterSpec
from models.view import ClusterView


def stop_member(spec: ClusterSpec, view: ClusterView, node_id: str) -> Verdict:
    """Stopping (or restarting) a serving member: only if the quorum holds without it."""
    return keeps_quorum(view, node_id)
