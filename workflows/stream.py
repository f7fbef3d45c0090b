"""`EventStreamWorkflow`: the one relay from the store's outbox to the Kafka topic.

A workflow, not a task in each worker, so that with several core workers exactly one
relay runs (its activity), and a dead worker's relay resumes on another after the
heartbeat timeout. Id `events/stream`; the core worker starts it when a stream is
configured.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.stream import StreamActivities
    from models import RelayReport, RelayRequest
    from workflows.policies import RETRY_FOREVER

WORKFLOW_ID = "events/stream"


@workflow.defn
class EventStreamWorkflow:
    def __init__(self) -> None:
        self._last = RelayReport()

    @workflow.run
    async def run(self, request: RelayRequest) -> None:
        while not workflow.info().is_continue_as_new_suggested():
            self._last = await workflow.execute_activity_method(
                StreamActivities.relay_events,
                request,
                start_to_close_timeout=timedelta(seconds=request.run_for_s + 120),
                # Longer than one publish may block waiting for acks.
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RETRY_FOREVER,
                summary="relay events to Kafka",
            )
        workflow.continue_as_new(request)

    @workflow.query
    def last_run(self) -> RelayReport:
        return self._last
