"""The core worker: monitor and remediation workflows, the probe/watch/event activities,
and the activities of the steps a core worker runs (workflows/steps.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from activities.events import EventActivities
from activities.monitor import WatchActivities, probe_cluster
from activities.stream import StreamActivities
from config.settings import Settings
from config.stream import StreamSettings
from models import RelayRequest, watch_task_queue
from store import EventStore, open_store
from worker import logs
from worker.connection import connect
from worker.telemetry import Role
from workflows.guards import SignalGuard
from workflows.monitor import ClusterMonitorWorkflow
from workflows.remediation import RemediationWorkflow
from workflows.steps import core_step_activities
from workflows.stream import WORKFLOW_ID as EVENT_STREAM_ID
from workflows.stream import EventStreamWorkflow

log = logging.getLogger("replicante.worker")


class CoreWorker:
    """Two workers on one client: monitors, remediations and their steps on the core task
    queue, and the watches on the watch queue (`models.watch_task_queue`) with
    `max_watches` slots, so a full worker takes no further watch and the queue hands it to
    a worker with room, while its steps and event writes keep slots of their own."""

    def __init__(self, core: Worker, watches: Worker) -> None:
        self.core, self.watches = core, watches

    @property
    def task_queue(self) -> str:
        return self.core.task_queue

    async def __aenter__(self) -> CoreWorker:
        await self.watches.__aenter__()
        try:
            await self.core.__aenter__()
        except BaseException:
            await self.watches.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Both stop together: a watch waits for its cancel while the core worker drains.
        await asyncio.gather(
            self.core.__aexit__(None, None, None), self.watches.__aexit__(None, None, None)
        )


def cached_workflows(max_watches: int) -> int:
    """Room for the monitors of as many clusters again as this worker watches (a monitor's
    tasks may run here while its watch runs elsewhere) and their remediations."""
    return 2 * max_watches + 100


def core_worker(
    client: Client,
    task_queue: str,
    store: EventStore,
    stream: StreamSettings | None = None,
    max_watches: int = Settings.max_watches,
) -> CoreWorker:
    """Monitors, remediations, and the event stream relay when a stream is configured;
    at most `max_watches` clusters watched at once."""
    events = EventActivities(store)
    workflows: list[type] = [ClusterMonitorWorkflow, RemediationWorkflow]
    activities: list[Callable[..., Any]] = [
        probe_cluster,
        # The steps' activities, from the registry the workflow runs them by.
        *core_step_activities(),
        events.record_events,
    ]
    if stream is not None:
        workflows.append(EventStreamWorkflow)
        activities.append(StreamActivities(store, stream).relay_events)
    interceptors = [logs.ActivityContext(), SignalGuard()]
    core = Worker(
        client,
        task_queue=task_queue,
        workflows=workflows,
        activities=activities,
        interceptors=interceptors,
        # A monitor's workflow task waits this long on the sticky queue of a worker that
        # died before it moves on; the SDK's 10 s default doubled failover detection.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=2),
        # Every monitor this worker runs a task for stays cached: at the SDK's default of
        # 1,000, a fleet of 1,000 evicted a monitor at each change and replayed its whole
        # history at the next, in the process whose event loop the watches' probes wait on.
        max_cached_workflows=cached_workflows(max_watches),
    )
    watches = Worker(
        client,
        task_queue=watch_task_queue(task_queue),
        activities=[WatchActivities(store).watch_cluster],
        interceptors=interceptors,
        # Each watched cluster holds one slot for as long as it is watched.
        max_concurrent_activities=max_watches,
    )
    return CoreWorker(core, watches)


async def start_event_stream(
    client: Client, task_queue: str, workflow_id: str = EVENT_STREAM_ID
) -> None:
    """Start the one relay, unless a worker already did: every core worker tries."""
    await client.start_workflow(
        EventStreamWorkflow.run,
        RelayRequest(),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


GC_THRESHOLDS = (50_000, 20, 100)
"""Python's default (700, 10, 10) ran a full collection about once a second in a process
running 1,000 specs' watch rounds and held links (measured without Temporal), each taking
0.2 to 0.7 s of the event loop the probes' timeouts count on: 47% of a core, 120 of the due
200 rounds a second, a false `node.down` in most of them. At these: no full collection in
a minute, 11% of a core, all 200 rounds. Cycles are still collected, only less often."""


def tune_gc() -> None:
    """Collect cycles rarely, and never walk what was loaded before the first watch."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run_core_worker(settings: Settings) -> None:
    logs.configure(settings)
    tune_gc()
    client = await connect(settings, Role.WORKER)
    store = open_store(settings)
    worker = core_worker(
        client, settings.task_queue, store, settings.stream, max_watches=settings.max_watches
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "core worker on %s, task queue %s, up to %d watches, store %s",
        settings.temporal_address,
        settings.task_queue,
        settings.max_watches,
        store,  # its str names hosts and files, never a connection string's password
    )
    async with worker:
        if settings.stream is not None:
            await start_event_stream(client, settings.task_queue)
            log.info("event stream to topic %s at %s", settings.events_topic, settings.events_kafka)
        await stop.wait()
    store.close()
