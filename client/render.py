"""Plain-text rendering for the CLI: readable at 3 a.m., greppable, no colours."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from client.api import ClusterSummary, RemediationSummary
from models import Event, MonitorStatus, ShardStatus
from models.monitor import Outcome
from models.remediation import RemediationStatus, State
from store.base import StoredEvent


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def clusters(summaries: Sequence[ClusterSummary]) -> str:
    if not summaries:
        return "no clusters are watched; add one with `replicante cluster apply -f SPEC.yaml`"
    return table(
        ("CLUSTER", "KIND", "HEALTH", "FINDINGS", "RUN STARTED"),
        [
            (c.cluster_id, c.kind, c.health, c.open_findings, ago(c.run_started_at))
            for c in summaries
        ],
    )


def status(st: MonitorStatus) -> str:
    lines = [
        f"cluster {st.cluster_id} ({st.kind})  health: {st.health.value}"
        f"  monitor: {'PAUSED' if st.paused else 'watching'}  spec generation {st.spec_generation}"
    ]
    view = st.view
    if view is None:
        lines.append("no probe has returned yet")
        return "\n".join(lines)
    quorum = {True: "yes", False: "NO", None: "n/a"}[view.quorum]
    lines.append(
        f"leader: {view.leader or 'none'}  quorum: {quorum}"
        f" ({view.voting_alive}/{view.voting_configured} voting members alive)"
        f"  as of {view.observed_at:%Y-%m-%d %H:%M:%S} UTC ({ago(view.observed_at)},"
        f" last change {ago(st.last_change_at)})"
    )
    lines.append("")
    lines.append(
        table(
            ("NODE", "ADDRESS", "UP", "ROLE", "VERSION", "LATENCY", "ERROR"),
            [
                (
                    n.node_id,
                    n.address,
                    "yes" if n.reachable else "NO",
                    n.role.value,
                    n.version,
                    f"{n.latency_ms:.1f} ms" if n.latency_ms is not None else None,
                    n.error,
                )
                for n in view.nodes
            ],
        )
    )
    if view.shards:
        lines.append("")
        lines.append(shards(view.shards))
    lines.append("")
    if st.findings:
        lines.append("FINDINGS")
        lines.extend(f"  {f.severity.name:<8}  {f.code:<18}  {f.message}" for f in st.findings)
    else:
        lines.append("no findings: the cluster matches its spec")
    return "\n".join(lines)


def shards(all_shards: Sequence[ShardStatus], most: int = 40) -> str:
    """Kafka partitions with their real leader and ISR, or each member's copy of the data
    (ZooKeeper zxid, MongoDB optime) with its lag.

    A big Kafka cluster has thousands of partitions: the ones with a problem come first,
    then internal topics are left out, and the table stops at `most` rows.
    """
    if any(s.replicas for s in all_shards):
        troubled = [s for s in all_shards if _troubled(s)]
        rest = [s for s in all_shards if not _troubled(s) and not s.shard_id.startswith("__")]
        shown = (troubled + rest)[:most]
        out = table(
            ("PARTITION", "LEADER", "REPLICAS", "ISR", "MIN ISR", "HIGH WATERMARK"),
            [
                (
                    s.shard_id,
                    s.node_id or "NONE",
                    ",".join(s.replicas),
                    ",".join(s.in_sync),
                    s.min_in_sync,
                    s.commit_offset,
                )
                for s in shown
            ],
        )
        left = len(all_shards) - len(shown)
        return out + (
            f"\n... {left} more partitions (internal or healthy; --json has all)" if left else ""
        )
    return table(
        ("SHARD", "NODE", "ROLE", "OFFSET", "LAG"),
        [(s.shard_id, s.node_id, s.role.value, s.commit_offset, s.lag) for s in all_shards],
    )


def _troubled(s: ShardStatus) -> bool:
    return (
        s.node_id is None
        or len(s.in_sync) < len(s.replicas)
        or (bool(s.replicas) and s.node_id != s.replicas[0])
    )


EVENT_COLUMNS = ("TIME (UTC)", "CLUSTER", "TYPE", "SEVERITY", "NODE", "MESSAGE")


def _event_row(e: Event) -> tuple[object, ...]:
    return (
        f"{e.at:%Y-%m-%d %H:%M:%S.%f}"[:-3],
        e.cluster_id,
        e.type,
        e.severity.name,
        e.node_id or "-",
        e.message,
    )


def events(stored: Sequence[StoredEvent]) -> str:
    if not stored:
        return "no events"
    return table(EVENT_COLUMNS, [_event_row(s.event) for s in stored])


def event_line(e: Event) -> str:
    """One event as `events --follow` prints it: no table to align, fields two spaces apart."""
    return "  ".join(str(cell) for cell in _event_row(e))


def actions(found: Sequence[RemediationSummary]) -> str:
    if not found:
        return "no remediations"
    return table(
        ("ID", "STATE", "OUTCOME", "PLAYBOOK", "TARGET", "STARTED"),
        [
            (
                a.remediation_id,
                a.state,
                a.outcome or "-",
                a.playbook or "?",
                a.target or "-",
                ago(a.started_at),
            )
            for a in found
        ],
    )


def _time(when: datetime | None) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S}" if when is not None else "-"


def _at(when: datetime | None) -> str:
    return f" at {_time(when)} UTC" if when is not None else ""


def action(st: RemediationStatus) -> str:
    lines = [
        f"{st.workflow_id}  state: {st.state.value}"
        f"  outcome: {st.outcome.value if st.outcome else '-'}",
        f"cluster {st.cluster_id}  playbook {st.playbook}  target {st.target or '-'}"
        f"  policy {st.policy.value}{'  DRY RUN' if st.dry_run else ''}"
        f"  finding {st.finding or '- (started by hand)'}",
        f"requested by {st.requested_by}{_at(st.requested_at)}",
    ]
    if st.why:
        lines.append(f"why: {st.why}")
    if st.paused and st.state is not State.FINISHED:
        lines.append("PAUSED: no step starts until `replicante resume`")
    if st.verdict is not None:
        lines.append(f"safety: {'safe' if st.verdict.safe else 'UNSAFE'}: {st.verdict.reason}")
    if st.approval_deadline is not None and st.approved is None and st.rejected is None:
        note = ""
        if st.state is State.AWAITING_APPROVAL:
            note = " (waiting)"
        elif st.outcome is Outcome.EXPIRED:
            note = ", passed: nobody approved before it, so nothing was done"
        lines.append(f"approval deadline: {_time(st.approval_deadline)} UTC{note}")
    decisions = [("approved", st.approved), ("rejected", st.rejected), ("aborted", st.aborted)]
    for verb, decision in decisions:
        if decision is not None:
            why = decision.reason or "(no reason given)"
            lines.append(f"{verb} by {decision.by}{_at(decision.at)}: {why}")
    lines.append("")
    lines.append(
        table(
            ("STEP", "STATE", "STARTED (UTC)", "FINISHED (UTC)", "DETAIL"),
            [
                (r.step.name, r.state, _time(r.started_at), _time(r.finished_at), r.detail)
                for r in st.steps
            ],
        )
        if st.steps
        else "no steps"
    )
    return "\n".join(lines)
