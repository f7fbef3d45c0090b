"""Plain-text rendering for the CLI: readable at 3 a.m., greppable, no colours."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from client.api import ClusterSummary
from models import MonitorStatus
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
    lines.append("")
    if st.findings:
        lines.append("FINDINGS")
        lines.extend(f"  {f.severity.name:<8}  {f.code:<18}  {f.message}" for f in st.findings)
    else:
        lines.append("no findings: the cluster matches its spec")
    return "\n".join(lines)


def events(stored: Sequence[StoredEvent]) -> str:
    if not stored:
        return "no events"
    return table(
        ("TIME (UTC)", "TYPE", "SEVERITY", "NODE", "MESSAGE"),
        [
            (
                f"{s.event.at:%Y-%m-%d %H:%M:%S.%f}"[:-3],
                s.event.type,
                s.event.severity.name,
                s.event.node_id,
                s.event.message,
            )
            for s in stored
        ],
    )
