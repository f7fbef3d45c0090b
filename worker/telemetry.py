"""Traces and metrics of the processes that talk to Temporal, wired into their connection
(worker/connection.py `connect`).

Traces: OpenTelemetry, through the SDK's `TracingInterceptor` on the client, which workers
take from it, plus `worker.tracing.RemediationTraces`. Configured by the standard variables:
`OTEL_TRACES_EXPORTER=console` prints spans; `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) sends them by OTLP over HTTP; neither, or
`OTEL_TRACES_EXPORTER=none`, leaves tracing off: no exporter, no provider, OpenTelemetry's
no-op spans. `OTEL_SERVICE_NAME` defaults to the process's role; the OTLP headers, timeout,
sampler and resource attributes are read by OpenTelemetry itself.

Metrics: `REPLICANTE_METRICS_ADDRESS=HOST:PORT` makes a worker or agent serve Prometheus at
`http://HOST:PORT/metrics` from its Temporal runtime: the SDK's own metrics and ours, which
activities and workflows record through the runtime's metric meter. A CLI call serves none,
so that it can share the environment of a worker that holds the address.
"""

from __future__ import annotations

import functools
import logging
import os
from enum import StrEnum
from typing import TYPE_CHECKING

from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from config.metrics import BUCKETS
from config.traces import traces_exporter
from models import SpecError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from temporalio.client import Interceptor

log = logging.getLogger("replicante.telemetry")


class Role(StrEnum):
    """What a process is, and its default OpenTelemetry service name."""

    WORKER = "replicante-worker"
    AGENT = "replicante-agent"
    CLI = "replicante-cli"


def interceptors(role: Role) -> list[Interceptor]:
    """The client interceptors of a process of `role`: tracing ones, except for a CLI call
    when tracing is off.

    Workers always get them, tracing or not: the remediation's step spans
    (`completed_span`) want the TracingInterceptor there, and with tracing off its spans
    are no-ops. A CLI call without tracing skips them and the ~0.2 s of imports they take.
    """
    tracing = _configure_tracing(role)
    if role is Role.CLI and not tracing:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    from worker.tracing import RemediationTraces

    # In this order: see worker/tracing.py.
    return [TracingInterceptor(), RemediationTraces()]


@functools.cache
def _configure_tracing(role: Role) -> bool:
    """Set the process's tracer provider from the environment, once; whether tracing is on."""
    name = traces_exporter(os.environ)
    exporter = _exporter(name)
    if exporter is None:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    service = os.environ.get("OTEL_SERVICE_NAME") or role.value
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    # The console shows each span as it ends. A CLI call ends in os._exit
    # (client/script.py), which skips a batch processor's final flush.
    batch = name == "otlp" and role is not Role.CLI
    provider.add_span_processor(
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    trace.set_tracer_provider(provider)
    log.info("traces of %s: %s", service, name)
    return True


def _exporter(name: str) -> SpanExporter | None:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "none":
        log.warning("OTEL_TRACES_EXPORTER=%s: not one of otlp, console, none; no traces", name)
    return None


CORE_LOGS = LoggingConfig(
    # The core's INFO is a line per worker start and shutdown; Python's level filters on.
    filter=TelemetryFilter(core_level="INFO", other_level="ERROR"),
    forwarding=LogForwardingConfig(
        logger=logging.getLogger("temporalio.core"),
        # Its target and fields become keys of the line (worker/logs.py).
        append_target_to_name=False,
        prepend_target_on_message=False,
        append_log_fields_to_message=False,
    ),
)


def runtime(role: Role, metrics_address: str | None) -> Runtime:
    """The Temporal runtime of a process of `role`: the Rust core's log lines go to Python's
    logger `temporalio.core` (worker/logs.py formats them), and a worker or agent with
    `metrics_address` serves Prometheus metrics there."""
    return _runtime(None if role is Role.CLI else metrics_address)


@functools.cache
def _runtime(address: str | None) -> Runtime:
    # One per process and address: it holds the address for as long as the process lives.
    metrics = None
    if address is not None:
        metrics = PrometheusConfig(
            bind_address=address,
            durations_as_seconds=True,
            histogram_bucket_overrides=BUCKETS,
        )
    try:
        served = Runtime(telemetry=TelemetryConfig(logging=CORE_LOGS, metrics=metrics))
    except ValueError as error:  # a bad address, or one in use
        raise SpecError(f"REPLICANTE_METRICS_ADDRESS={address}: {error}") from None
    if address is not None:
        log.info("Prometheus metrics on http://%s/metrics", address)
    return served
