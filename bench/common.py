"""What the benchmarks share: percentiles, the stack they start, faults injected at random
moments and timed to their stored event, and where that time went.

A fault's latency runs from the signal to the `stored_at` of its `node.down` event. It is
split, with the timestamps of the monitor's history, into: waiting for the probe that saw
it (`observed_at`), that probe plus the end of the watch activity, the workflow task that
turns the view into events, and the activity that stores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.adapter import Adapter
from devstack.temporal import temporal_binary
from models import ClusterSpec, ClusterView, MonitorInput
from store import EventQuery, SQLiteEventStore
from tests.helpers import of_type, wait_for_event
from workflows import search_attributes
from workflows.monitor import ClusterMonitorWorkflow, workflow_id

CORE_QUEUE = "bench-core"
DETECT_TIMEOUT_S = 30.0
RECOVER_TIMEOUT_S = 90.0
WORKER_STOP_S = 10.0

STAGES = ("wait for probe", "probe + watch end", "workflow task", "event activity")

R = TypeVar("R")


def log(message: str) -> None:
    """Progress goes to stderr: stdout is the table and the JSON line."""
    print(message, file=sys.stderr, flush=True)


def p95(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def p50(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def watch_note(age: float | None) -> str:
    return "no watch running" if age is None else f"its watch had run {age:.3f} s"


@dataclass(frozen=True)
class Sample:
    node_id: str
    injected_at: float
    observed_at: float
    stored_at: float
    watch_age_s: float | None
    """How long the monitor's current watch had run when the fault came; None if none ran.
    A watch opens its held links as it starts, so a young one may not hold them yet."""

    @property
    def latency(self) -> float:
        return self.stored_at - self.injected_at


@dataclass
class Phase:
    name: str
    spec: ClusterSpec
    samples: list[Sample] = field(default_factory=list)
    missed: int = 0
    stages: dict[str, list[float]] = field(default_factory=dict)

    @property
    def latencies(self) -> list[float]:
        return [s.latency for s in self.samples]

    def slowest(self) -> str | None:
        worst = max(self.samples, key=lambda s: s.latency, default=None)
        if worst is None:
            return None
        return f"{worst.latency:.3f} s, {worst.node_id}, {watch_note(worst.watch_age_s)}"

    def stage_percentiles(self, pick: Callable[[Sequence[float]], float]) -> dict[str, float]:
        return {k: round(pick(v), 3) for k, v in self.stages.items()}


@dataclass
class Target:
    """The cluster that takes the faults, as run_faults needs to know it."""

    ready: Callable[[], object]
    """Blocks until the cluster is whole (every member up, a leader); raises if it is not
    within RECOVER_TIMEOUT_S."""
    whole: Callable[[ClusterView | None], bool]
    """Whether the monitor's view shows the cluster whole."""
    victim: Callable[[random.Random], tuple[int, str]]
    """The member to fault next and its node id."""
    inject: Callable[[int], object]
    recover: Callable[[int], object]


# --- the stack -------------------------------------------------------------------------------


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever writes to file descriptor 1 meanwhile to stderr: the dev server's
    banner and the SDK core's log lines (Rust, writing to fd 1 itself) would otherwise mix
    with the table and the JSON line, the only things a benchmark puts on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


async def temporal(stack: contextlib.AsyncExitStack) -> WorkflowEnvironment:
    """A dev server with our search attributes; the stack shuts it down."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=search_attributes.dev_server_flags(),
    )
    stack.push_async_callback(env.shutdown)
    return env


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    """`async with worker`, but its shutdown may take at most WORKER_STOP_S: with the dev
    server gone (a ^C in the terminal reaches it too) the SDK retries its calls for long."""
    await worker.__aenter__()
    try:
        yield
    finally:
        try:
            await asyncio.wait_for(worker.__aexit__(None, None, None), WORKER_STOP_S)
        except TimeoutError:
            log(f"worker on {worker.task_queue} did not stop within {WORKER_STOP_S} s")


def temporal_server_version() -> str:
    out = subprocess.run(
        [str(temporal_binary()), "--version"], capture_output=True, text=True, check=False
    ).stdout
    # "temporal version 1.9.1 (Server 1.32.0, UI 2.54.1)"
    return out.partition("(Server ")[2].partition(",")[0] or "unknown"


async def probe_cpu_ms(
    adapter: Adapter, spec: ClusterSpec, probes: int
) -> tuple[float, ClusterView]:
    """CPU time of one probe, averaged over `probes` after a warm-up, in-process and before
    any worker shares the process (process_time counts every thread); and the last view."""
    view = await adapter.probe(spec)  # warm up: imports, first connections
    cpu = 0.0
    for _ in range(probes):
        started = time.process_time()
        view = await adapter.probe(spec)
        cpu += time.process_time() - started
        if not all(n.reachable for n in view.nodes):
            raise RuntimeError(f"probe of a healthy cluster saw a node down: {view.nodes}")
    return cpu / probes * 1000, view


def run_main(bench: Callable[[Path], Awaitable[R]]) -> R:
    """Run `bench(home)` with a fresh temporary home, removed after a run that completes;
    SIGTERM unwinds like Ctrl-C does, so the servers stop either way."""

    async def main_async() -> R:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        home = Path(tempfile.mkdtemp(prefix="replicante-bench-"))
        try:
            result = await bench(home)
        except BaseException:
            log(f"benchmark did not complete; the servers' logs are kept in {home}")
            raise
        shutil.rmtree(home, ignore_errors=True)
        return result

    try:
        with stdout_to_stderr():
            return asyncio.run(main_async())
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(130) from None


# --- the monitor -----------------------------------------------------------------------------


async def start_monitor(
    client: Client, spec: ClusterSpec
) -> WorkflowHandle[ClusterMonitorWorkflow, None]:
    return await client.start_workflow(
        ClusterMonitorWorkflow.run,
        MonitorInput(spec=spec),
        id=workflow_id(spec.cluster_id),
        task_queue=CORE_QUEUE,
        search_attributes=search_attributes.initial(spec),
    )


async def stop_monitor(handle: WorkflowHandle[ClusterMonitorWorkflow, None]) -> None:
    """Pause, then terminate: paused, the workflow cancels its own watch. A watch left
    running under a terminated workflow learns of it only at its next heartbeat, and the
    SDK logs that as a failed activity."""
    await handle.signal(ClusterMonitorWorkflow.pause, "benchmark over")
    deadline = time.monotonic() + RECOVER_TIMEOUT_S
    while (await handle.describe()).raw_description.pending_activities:
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    await handle.terminate("benchmark over")


async def watch_started_at(handle: WorkflowHandle[ClusterMonitorWorkflow, None]) -> float | None:
    """When the monitor's running watch started (epoch s), None while none runs."""
    for pending in (await handle.describe()).raw_description.pending_activities:
        if (
            pending.activity_type.name == "watch_cluster"
            and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ):
            return pending.last_started_time.ToMicroseconds() / 1e6
    return None


async def settle(target: Target, handle: WorkflowHandle[ClusterMonitorWorkflow, None]) -> None:
    """Wait until the cluster is whole, the monitor's view says so, and its next watch
    runs: a fault injected earlier would time the monitor's catching up, not detection."""
    await asyncio.to_thread(target.ready)
    deadline = time.monotonic() + RECOVER_TIMEOUT_S
    while time.monotonic() < deadline:
        view = await handle.query(ClusterMonitorWorkflow.view)
        if target.whole(view) and await watch_started_at(handle) is not None:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"monitor {handle.id} did not see its cluster whole")


async def detect(
    store: SQLiteEventStore,
    cluster_id: str,
    node_id: str,
    injected_at: float,
    watch_started: float | None,
) -> Sample | None:
    """The node.down the fault caused, or None if none was stored in time."""
    try:
        down = await wait_for_event(
            store, cluster_id, of_type("node.down", node_id), DETECT_TIMEOUT_S, injected_at
        )
    except AssertionError:
        return None
    stored = store.query(EventQuery(cluster_id=cluster_id, types=("node.down",)))
    stored_at = next(s.stored_at for s in stored if s.event.event_id == down.event_id)
    age = None if watch_started is None else injected_at - watch_started
    return Sample(node_id, injected_at, down.at.timestamp(), stored_at.timestamp(), age)


async def run_faults(
    client: Client,
    store: SQLiteEventStore,
    rng: random.Random,
    phase: Phase,
    count: int,
    target: Target,
) -> None:
    """`count` faults under a fresh monitor, each at a random moment within the probe
    interval once the cluster is whole; the monitor's history then apportions each
    latency to the stages that make it up."""
    cluster_id = phase.spec.cluster_id
    handle = await start_monitor(client, phase.spec)
    for i in range(count):
        await settle(target, handle)
        member, node_id = target.victim(rng)
        await asyncio.sleep(rng.uniform(0, phase.spec.probe.interval_s))
        watch_started = await watch_started_at(handle)

        def fault(n: int = member) -> float:
            injected_at = time.time()
            target.inject(n)
            return injected_at

        injected_at = await asyncio.to_thread(fault)
        sample = await detect(store, cluster_id, node_id, injected_at, watch_started)
        if sample is None:
            phase.missed += 1
            log(f"  {phase.name} {i + 1}/{count}: {node_id} MISSED within {DETECT_TIMEOUT_S} s")
        else:
            phase.samples.append(sample)
            log(
                f"  {phase.name} {i + 1}/{count}: {node_id} down, {sample.latency:.3f} s"
                f" ({watch_note(sample.watch_age_s)})"
            )
        await asyncio.to_thread(target.recover, member)
        if sample is not None:
            await wait_for_event(
                store, cluster_id, of_type("node.up", node_id), RECOVER_TIMEOUT_S, injected_at
            )
    await settle(target, handle)
    phase.stages = stages(phase.samples, await history(client, handle))
    await stop_monitor(handle)


# --- history ---------------------------------------------------------------------------------


async def history(client: Client, handle: WorkflowHandle[Any, Any]) -> list[list[HistoryEvent]]:
    """The events of every run of the handle's continue-as-new chain, first run first."""
    runs: list[list[HistoryEvent]] = []
    run_id = handle.first_execution_run_id
    while run_id:
        run = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        runs.append(list(run.events))
        last = run.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else None
        )
    return runs


def stages(samples: list[Sample], runs: list[list[HistoryEvent]]) -> dict[str, list[float]]:
    """Each sample's latency, split at the server's timestamps of the watch that returned
    the fault's view and of the record_events activity scheduled after it."""

    def at(e: HistoryEvent) -> float:
        return e.event_time.ToMicroseconds() / 1e6

    # (server time, run, event id): event ids restart with each run of a chain.
    watch_done: list[tuple[float, int, int]] = []
    record_scheduled: list[tuple[float, int, int]] = []
    for r, events in enumerate(runs):
        activity = {
            e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        }
        for e in events:
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                if activity[e.activity_task_completed_event_attributes.scheduled_event_id] == (
                    "watch_cluster"
                ):
                    watch_done.append((at(e), r, e.event_id))
            elif activity.get(e.event_id) == "record_events":
                record_scheduled.append((at(e), r, e.event_id))
    split: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for s in samples:
        done = next((w for w in watch_done if w[0] >= s.observed_at), None)
        if done is None:
            continue
        scheduled = next((x for x in record_scheduled if x[1:] > done[1:]), None)
        if scheduled is None:
            continue
        points = (s.injected_at, s.observed_at, done[0], scheduled[0], s.stored_at)
        for stage, start, end in zip(STAGES, points, points[1:], strict=False):
            split[stage].append(end - start)
    return split


def stage_table(
    p50s: Mapping[str, Mapping[str, float]], p95s: Mapping[str, Mapping[str, float]]
) -> list[str]:
    """Lines of where each phase's latency went, p50 / p95 in s."""
    lines = [
        "where the latency goes, p50 / p95 in s:",
        f"{'phase':<6}" + "".join(f"  {stage:>17}" for stage in STAGES),
    ]
    for name in p50s:
        lines.append(
            f"{name:<6}"
            + "".join(f"  {p50s[name][s]:>8.3f} /{p95s[name][s]:>6.3f}" for s in STAGES)
        )
    return lines
