"""Where a process's traces go, as OpenTelemetry's standard variables say (worker/telemetry.py
sets up the exporter; OpenTelemetry reads the OTLP headers, timeout, sampler and resource
attributes itself)."""

from __future__ import annotations

from collections.abc import Mapping


def traces_exporter(env: Mapping[str, str]) -> str:
    """`otlp`, `console` or `none`, as the environment asks.

    >>> traces_exporter({})
    'none'
    >>> traces_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    'otlp'
    >>> traces_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
    ...                  "OTEL_TRACES_EXPORTER": "none"})
    'none'
    >>> traces_exporter({"OTEL_TRACES_EXPORTER": "Console"})
    'console'
    """
    chosen = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if chosen:
        return chosen
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return "otlp" if any(env.get(name) for name in endpoints) else "none"
