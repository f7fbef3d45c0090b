"""Events: the append-only audit log, with stable dotted type names.

`changes()` turns two consecutive views into events. It is pure, so the monitor
workflow runs it deterministically and the watch activity uses the same notion of
"changed" (via `ClusterView.signature`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.findings import Finding, Severity, health_of
from models.view import ClusterView

EVENT_SCHEMA_VERSION = 1


class EventDraft(BaseModel):
    """An event before the workflow gives it an id and a time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    severity: Severity = Severity.INFO
    node_id: str | None = None
    message: str
    payload: dict[str, Any] = Field(default_factory=dict)

    def event(self, cluster_id: str, event_id: str, at: datetime) -> Event:
        """The event this draft becomes, once its emitter gives it an id and a time."""
        return Event(event_id=event_id, cluster_id=cluster_id, at=at, **self.model_dump())


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    """Deterministic in the workflow that emits it: a retried write never duplicates."""
    cluster_id: str
    type: str
    at: datetime
    severity: Severity = Severity.INFO
    node_id: str | None = None
    message: str
    payload: dict[str, Any] = Field(default_factory=dict)
    schema_version: int = EVENT_SCHEMA_VERSION


VIEW_EVENTS = frozenset(
    {
        "node.down",
        "node.up",
        "node.role_changed",
        "cluster.leader_lost",
        "cluster.leader_changed",
        "cluster.quorum_lost",
        "cluster.quorum_regained",
    }
)
"""What `view_changes` emits: events about the views alone, whatever the spec says."""


def change_event_id(change: str, draft: EventDraft) -> str:
    """The id of a `VIEW_EVENTS` draft among the events of one change of the view, `change`
    naming that change. Made from what the event is about, not its place in the list: the
    watch that saw the change and the workflow each turn it into events, and the store
    keeps the first write of each id, so each is stored once whoever writes first. Within
    one change no two such drafts share a type and node (`view_changes` emits at most one of
    each)."""
    about = repr((draft.type, draft.node_id))
    return f"{change}/{hashlib.sha256(about.encode()).hexdigest()[:16]}"


def view_changes(
    before: ClusterView, after: ClusterView, last_leader: str | None = None
) -> list[EventDraft]:
    """The events of `changes` that the views alone make (`VIEW_EVENTS`): nodes, leader and
    quorum. Findings and health depend on the spec too, which a watch may hold an old
    generation of: those only the workflow tells."""
    drafts = _node_changes(before, after, last_leader)
    if before.quorum is not False and after.quorum is False:
        drafts.append(
            EventDraft(
                type="cluster.quorum_lost",
                severity=Severity.CRITICAL,
                message=f"quorum lost: {after.voting_alive} of {after.voting_configured} "
                "voting members alive",
                payload={
                    "voting_alive": after.voting_alive,
                    "voting_configured": after.voting_configured,
                },
            )
        )
    elif before.quorum is False and after.quorum:
        drafts.append(
            EventDraft(
                type="cluster.quorum_regained",
                message=f"quorum regained: {after.voting_alive} of "
                f"{after.voting_configured} voting members alive",
                payload={
                    "voting_alive": after.voting_alive,
                    "voting_configured": after.voting_configured,
                },
            )
        )
    return drafts


def changes(
    before: ClusterView | None,
    after: ClusterView,
    findings_before: list[Finding],
    findings_after: list[Finding],
    last_leader: str | None = None,
    finding_events: bool = True,
) -> list[EventDraft]:
    """Events that tell an operator what changed between two views.

    `last_leader` is the last leader seen before `before`, so that an election that went
    through a leaderless view still reports whom the new leader replaced.

    Each finding that appears or clears is a `finding.opened` / `finding.resolved` event,
    so alerting can follow findings alone. `finding_events=False` gives the events of
    monitors started before those existed (their histories must replay unchanged).

    The first view of a cluster emits only `cluster.health_changed` (from unknown),
    not a `node.up` per node: nothing came up, we merely started looking.
    """
    drafts = view_changes(before, after, last_leader) if before is not None else []
    if finding_events:
        drafts.extend(_finding_changes(after.cluster_id, findings_before, findings_after))
    old_health = health_of(before, findings_before)
    new_health = health_of(after, findings_after)
    if old_health != new_health:
        drafts.append(
            EventDraft(
                type="cluster.health_changed",
                severity=max((f.severity for f in findings_after), default=Severity.INFO),
                message=f"health {old_health} -> {new_health}",
                payload={
                    "from": old_health.value,
                    "to": new_health.value,
                    "findings": [f.key for f in findings_after],
                },
            )
        )
    return drafts


def _node_changes(
    before: ClusterView, after: ClusterView, last_leader: str | None
) -> list[EventDraft]:
    drafts: list[EventDraft] = []
    for node in after.nodes:
        old = before.node(node.node_id)
        if old is None:
            continue
        if old.reachable and not node.reachable:
            drafts.append(
                EventDraft(
                    type="node.down",
                    severity=Severity.WARNING,
                    node_id=node.node_id,
                    message=f"{node.node_id} is down: {node.error}",
                    payload={"address": node.address, "error": node.error, "was": old.role},
                )
            )
        elif not old.reachable and node.reachable:
            drafts.append(
                EventDraft(
                    type="node.up",
                    node_id=node.node_id,
                    message=f"{node.node_id} is up as {node.role}",
                    payload={"address": node.address, "role": node.role},
                )
            )
        elif old.role != node.role:
            drafts.append(
                EventDraft(
                    type="node.role_changed",
                    node_id=node.node_id,
                    message=f"{node.node_id} is now {node.role} (was {old.role})",
                    payload={"from": old.role, "to": node.role},
                )
            )
    if before.leader is not None and after.leader is None:
        drafts.append(
            EventDraft(
                type="cluster.leader_lost",
                severity=Severity.WARNING,
                node_id=before.leader,
                message=f"no leader: {before.leader} no longer leads",
                payload={"was": before.leader},
            )
        )
    elif after.leader is not None and after.leader != before.leader:
        was = before.leader or last_leader
        drafts.append(
            EventDraft(
                type="cluster.leader_changed",
                node_id=after.leader,
                message=f"{after.leader} leads (was {was or 'unknown'})",
                payload={"from": was, "to": after.leader},
            )
        )
    return drafts


def _finding_changes(
    cluster_id: str, before: list[Finding], after: list[Finding]
) -> list[EventDraft]:
    """A finding whose message changes (more partitions under-replicated) stays open: the
    key names it, the message only describes it."""
    old = {f.key: f for f in before}
    new = {f.key: f for f in after}
    drafts = [
        EventDraft(
            type="finding.opened",
            severity=f.severity,
            node_id=f.subject if f.subject != cluster_id else None,
            message=f.message,
            payload={"finding": key, "code": f.code, "subject": f.subject},
        )
        for key, f in new.items()
        if key not in old
    ]
    drafts += [
        EventDraft(
            type="finding.resolved",
            node_id=f.subject if f.subject != cluster_id else None,
            message=f"resolved: {f.message}",
            payload={"finding": key, "code": f.code, "subject": f.subject},
        )
        for key, f in old.items()
        if key not in new
    ]
    return drafts
