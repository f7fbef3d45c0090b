"""The metrics our processes record, by name, and their histograms' buckets: activities and
the remediation workflow record them, the worker's Temporal runtime (worker/telemetry.py)
serves them with these buckets at REPLICANTE_METRICS_ADDRESS."""

from __future__ import annotations

PROBE_DURATION = "replicante_probe_duration_seconds"
FINDINGS = "replicante_findings"
FINDINGS_SET = "replicante_findings_set_timestamp_seconds"
EVENTS = "replicante_events_total"
DETECTION_LAG = "replicante_detection_lag_seconds"
REMEDIATIONS = "replicante_remediations_total"
BUCKETS: dict[str, tuple[float, ...]] = {
    # A healthy member answers in milliseconds; a dead or hung one takes up to its timeout.
    PROBE_DURATION: (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    DETECTION_LAG: (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
}
"""Histogram buckets in seconds: the Temporal runtime's defaults suit milliseconds."""
