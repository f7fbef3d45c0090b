"""One trace per remediation, rooted at what asked for it.

`temporalio.contrib.opentelemetry.TracingInterceptor` carries a workflow's trace on to
everything it starts: a monitor's spans all belong to the trace of whoever started the
monitor (or to none), for as long as it runs, which is forever. A remediation in there
would be lost among weeks of watches. `RemediationTraces` gives each remediation a workflow
starts a trace of its own instead: its root is a `Finding:<code>` span (or
`RemediationRequest:<playbook>` for one an operator asked for) with the cluster, node,
finding and playbook as attributes, linked to the starting workflow's span; under it come
the SDK's `StartChildWorkflow` span, the remediation's run, and each of its activities on
core workers and node agents.

Listed after the TracingInterceptor, so that its workflow outbound calls run first: the
root must be the current span when the TracingInterceptor makes its `StartChildWorkflow`
span and puts the context in the child's headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import opentelemetry.context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from temporalio import client, workflow
from temporalio import worker as temporal_worker

from models.remediation import RemediationInput

ROOT_SPAN = "replicante_remediation_root_span"
"""The extern function that makes a root span outside the workflow sandbox."""

propagator = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class Root:
    name: str
    attributes: dict[str, str]
    time_ns: int
    """Workflow time: the span is started and ended at once, as the SDK's workflow spans
    (an open span cannot survive a replay on another worker)."""
    link: dict[str, str]
    """The starting workflow's current span, as a W3C trace context carrier."""


def root_of(
    remediation: RemediationInput, workflow_id: str, time_ns: int, link: dict[str, str]
) -> Root:
    spec = remediation.spec
    attributes = {
        "replicante.cluster": spec.cluster_id,
        "replicante.kind": spec.kind.value,
        "replicante.playbook": remediation.playbook,
        "replicante.policy": remediation.policy.value,
        "replicante.remediation": workflow_id,
    }
    if remediation.target is not None:
        attributes["replicante.node"] = remediation.target
    finding = remediation.finding
    if finding is None:
        attributes["replicante.requested_by"] = remediation.requested_by
        return Root(f"RemediationRequest:{remediation.playbook}", attributes, time_ns, link)
    attributes["replicante.finding"] = finding.key
    attributes["replicante.severity"] = finding.severity.name.lower()
    return Root(f"Finding:{finding.code}", attributes, time_ns, link)


class RemediationTraces(client.Interceptor, temporal_worker.Interceptor):
    """A client interceptor only so that `Client.connect` takes it and hands it to workers."""

    def __init__(self, tracer: trace.Tracer | None = None) -> None:
        self.tracer = tracer or trace.get_tracer(__name__)

    def workflow_interceptor_class(
        self, input: temporal_worker.WorkflowInterceptorClassInput
    ) -> type[temporal_worker.WorkflowInboundInterceptor]:
        # The workflow side gets this instance's tracer through an extern function, as the
        # SDK's TracingInterceptor does: the sandbox creates interceptors from their class.
        input.unsafe_extern_functions[ROOT_SPAN] = self.root_span
        return _Inbound

    def root_span(self, root: Root) -> dict[str, str]:
        """Start and end the root span; its context as a carrier."""
        linked = trace.get_current_span(propagator.extract(root.link)).get_span_context()
        span = self.tracer.start_span(
            root.name,
            context=opentelemetry.context.Context(),
            attributes=root.attributes,
            links=[trace.Link(linked)] if linked.is_valid else [],
            start_time=root.time_ns,
        )
        span.end(end_time=root.time_ns)
        carrier: dict[str, str] = {}
        propagator.inject(carrier, trace.set_span_in_context(span))
        return carrier


class _Inbound(temporal_worker.WorkflowInboundInterceptor):
    def init(self, outbound: temporal_worker.WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))


class _Outbound(temporal_worker.WorkflowOutboundInterceptor):
    async def start_child_workflow(
        self, input: temporal_worker.StartChildWorkflowInput
    ) -> workflow.ChildWorkflowHandle[Any, Any]:
        remediation = next((a for a in input.args if isinstance(a, RemediationInput)), None)
        # On replay the span exists already, and the TracingInterceptor makes none either.
        if remediation is None or workflow.unsafe.is_replaying():
            return await super().start_child_workflow(input)
        link: dict[str, str] = {}
        propagator.inject(link)
        carrier = workflow.extern_functions()[ROOT_SPAN](
            root_of(remediation, input.id, workflow.time_ns(), link)
        )
        context = propagator.extract(carrier)
        token = opentelemetry.context.attach(context)
        try:
            return await super().start_child_workflow(input)
        finally:
            # A workflow evicted meanwhile has this coroutine closed from wherever garbage
            # collection runs, where the token means nothing (the SDK's own interceptor
            # checks the same way before it detaches).
            if opentelemetry.context.get_current() is context:
                opentelemetry.context.detach(token)
