"""An event write heartbeats while the store works: a slow store is waited for, and a
worker that dies mid-write is noticed within EVENT_WRITE_HEARTBEAT (Temporal's heartbeat
timeout), not at the end of EVENT_WRITE_TIMEOUT. On the real dev server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from activities.events import EventActivities
    from models import Event, EventBatch
    from store import EventQuery, SQLiteEventStore
    from workflows.policies import EVENT_WRITE_HEARTBEAT, EVENT_WRITE_TIMEOUT, RETRY_FOREVER


@workflow.defn(sandboxed=False)
class WriteOnce:
    """The options the monitor and the remediation write their events with."""

    @workflow.run
    async def run(self, batch: EventBatch) -> int:
        return await workflow.execute_activity_method(
            EventActivities.record_events,
            batch,
            start_to_close_timeout=EVENT_WRITE_TIMEOUT,
            heartbeat_timeout=EVENT_WRITE_HEARTBEAT,
            retry_policy=RETRY_FOREVER,
        )


class SlowStore(SQLiteEventStore):
    """A store under load: each write takes longer than the heartbeat timeout."""

    delay_s = EVENT_WRITE_HEARTBEAT.total_seconds() + 2

    def append(self, events: Sequence[Event]) -> int:
        time.sleep(self.delay_s)
        return super().append(events)


async def test_a_write_slower_than_the_heartbeat_timeout_completes_at_its_first_attempt(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    store = SlowStore(tmp_path / "events.db")
    queue = f"q-writes-{uuid.uuid4().hex[:6]}"
    event = Event(
        event_id="c1/1", cluster_id="c1", type="test.slow", at=datetime.now(UTC), message="slow"
    )
    async with Worker(
        temporal_env.client,
        task_queue=queue,
        workflows=[WriteOnce],
        activities=[EventActivities(store).record_events],
    ):
        handle = await temporal_env.client.start_workflow(
            WriteOnce.run, EventBatch(events=[event]), id=f"write-{queue}", task_queue=queue
        )
        # Without heartbeats every attempt times out and is retried, forever.
        assert await asyncio.wait_for(handle.result(), timeout=30) == 1
    started = [
        e
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert [e.activity_task_started_event_attributes.attempt for e in started] == [1]
    assert [s.event.event_id for s in store.query(EventQuery(cluster_id="c1"))] == ["c1/1"]
