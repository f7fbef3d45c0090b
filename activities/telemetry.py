"""What activities record for traces and metrics: a span per probe and per node probed (with
the node's probe duration), and each stored event (with its detection lag).

Spans go to OpenTelemetry's global tracer provider, which worker/telemetry.py sets only when
tracing is configured: otherwise they are OpenTelemetry's no-op spans. Metrics go to the
running activity's metric meter (the Temporal runtime's, served by its Prometheus endpoint),
a no-op one when the process serves no metrics; outside an activity (the benchmarks call
adapters directly) nothing is measured.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

import structlog
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from temporalio import activity

from config.metrics import DETECTION_LAG, EVENTS, FINDINGS, FINDINGS_SET, PROBE_DURATION
from models import ClusterSpec, ClusterView, Event, Finding, Severity

DETECTIONS = frozenset({"node.down", "finding.opened"})
"""Event types whose detection lag is measured: a fault's own events, which the monitor
dates with the `observed_at` of the view that showed the fault."""

tracer = trace.get_tracer("replicante")
log = logging.getLogger("replicante.probe")

A = TypeVar("A")
R = TypeVar("R")
P = ParamSpec("P")
Probe = Callable[Concatenate[A, ClusterSpec, P], Coroutine[Any, Any, ClusterView]]


def span_attributes(spec: ClusterSpec, node: str | None = None) -> dict[str, str]:
    attributes = {"replicante.cluster": spec.cluster_id, "replicante.kind": spec.kind.value}
    if node is not None:
        attributes["replicante.node"] = node
    return attributes


def traced_probe(probe: Probe[A, P]) -> Probe[A, P]:
    """An adapter's `probe` as one `Probe` span, the parent of its `ProbeNode` spans."""

    @functools.wraps(probe)
    async def traced(
        adapter: A, spec: ClusterSpec, /, *args: P.args, **kwargs: P.kwargs
    ) -> ClusterView:
        with tracer.start_as_current_span("Probe", attributes=span_attributes(spec)):
            return await probe(adapter, spec, *args, **kwargs)

    return traced


async def probe_node(
    spec: ClusterSpec, node: str, read: Callable[[], Awaitable[R]], error: Callable[[R], str | None]
) -> R:
    """Await one node's `read()` as a `ProbeNode` span, and record how long it took in
    `replicante_probe_duration_seconds{cluster,kind,node}` and, at debug level, a log line.

    Adapters report a node that is down, slow or answering garbage as a reading with an
    error (`error(reading)`), never as an exception: that error becomes the span's status.
    """
    with (
        # Every line logged while the node is read names it, a datastore client's included.
        structlog.contextvars.bound_contextvars(cluster_id=spec.cluster_id, node=node),
        tracer.start_as_current_span("ProbeNode", attributes=span_attributes(spec, node)) as span,
    ):
        started = time.perf_counter()
        reading = await read()
        seconds = time.perf_counter() - started
        failure = error(reading)
        if failure is not None:
            span.set_status(StatusCode.ERROR, failure)
        log.debug("%s: %s in %.1f ms", node, failure or "ok", seconds * 1000)
    if activity.in_activity():
        activity.metric_meter().create_histogram_float(
            PROBE_DURATION, "How long one node's probe took", "s"
        ).record(seconds, {"cluster": spec.cluster_id, "kind": spec.kind.value, "node": node})
    return reading


def gauge_findings(spec: ClusterSpec, findings: Sequence[Finding]) -> None:
    """Set by the watch after every probe: `replicante_findings{cluster,severity}`, the
    findings its view opens (the monitor's own: it evaluates the view the same way), and
    `replicante_findings_set_timestamp_seconds{cluster}`, now.

    Gauges of the worker process: one that no longer watches a cluster keeps its last
    value, and the timestamp, which then stops moving, tells it from the current one.
    """
    meter = activity.metric_meter()
    gauge = meter.create_gauge(FINDINGS, "Open findings of a cluster, by severity")
    for severity in Severity:
        gauge.set(
            sum(1 for f in findings if f.severity is severity),
            {"cluster": spec.cluster_id, "severity": severity.name.lower()},
        )
    meter.create_gauge(FINDINGS_SET, "When this process last set replicante_findings", "s").set(
        int(time.time()), {"cluster": spec.cluster_id}
    )


def record_stored(events: Sequence[Event], stored_at: datetime) -> None:
    """Count events just stored in `replicante_events_total{cluster,type}`, and record the
    detection lag of each fault's event in `replicante_detection_lag_seconds{cluster,type}`.

    Detection lag: from the start of the probe that first showed the fault (the view's
    `observed_at`, which dates the event) to the moment the event was stored. It leaves out
    how long the fault went unseen before that probe (at most one probe interval, milliseconds
    with held connections). The two instants may come from two workers' clocks.
    """
    meter = activity.metric_meter()
    stored = meter.create_counter(EVENTS, "Events stored")
    lag = meter.create_histogram_float(
        DETECTION_LAG, "From the probe that saw a fault to its event being stored", "s"
    )
    for event in events:
        labels = {"cluster": event.cluster_id, "type": event.type}
        stored.add(1, labels)
        if event.type in DETECTIONS:
            lag.record(max((stored_at - event.at).total_seconds(), 0.0), labels)
