"""How fast the monitor notices a fault, and how little history it writes meanwhile.

    .venv/bin/python bench/detection.py [--json]

Starts everything it needs (a Temporal dev server, two 3-member ZooKeeper ensembles in a
temporary home, an in-process core worker) and stops it all at the end, also on failure,
Ctrl-C or SIGTERM. Ensemble A takes the faults; ensemble B stays idle and is watched for
the whole run by the real monitor and by the naive loop (bench/naive_monitor.py), whose
histories are compared at the end.

Phases on A, one fault at a time, each injected at a random moment within the probe
interval (so the phase of the probe loop does not bias the figures) once the ensemble is
whole and the monitor's view says so:

- poll:  SIGKILL a follower; 1 s interval, polling alone (hold_connections false).
- hang:  SIGSTOP a follower; 1 s interval, 0.5 s probe timeout; SIGCONT after.
- crash: SIGKILL a follower; 5 s interval, one held kazoo connection per member.

A fault's latency runs from the signal to the `stored_at` of its `node.down` event. It is
split, with the timestamps of the monitor's history, into: waiting for the probe that saw
it (`observed_at`), that probe plus the end of the watch activity, the workflow task that
turns the view into events, and the activity that stores them.

The idle cluster's history is counted over the whole run, at least --min-window seconds
(default 660, just over one watch_max_s): the real monitor's one-off start-up events are
included; a longer window (3600) makes them weigh less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: sys.path[0] is bench/, but the imports below need the repo root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.monitor import probe_cluster
from activities.zookeeper import ZooKeeperAdapter
from bench.naive_monitor import NaiveMonitorWorkflow, naive_workflow_id
from devstack.temporal import temporal_binary
from devstack.zookeeper import ZooKeeperEnsemble, claim_ensemble
from models import ClusterSpec, ClusterView, MonitorInput, Role
from store import EventQuery, SQLiteEventStore
from tests.helpers import of_type, wait_for_event, zk_spec
from worker.core import core_worker
from workflows import search_attributes
from workflows.monitor import ClusterMonitorWorkflow, workflow_id

CORE_QUEUE = "bench-core"
NAIVE_QUEUE = "bench-naive"
CPU_PROBES = 60
DETECT_TIMEOUT_S = 30.0
RECOVER_TIMEOUT_S = 90.0
WORKER_STOP_S = 10.0
# Six JVMs starting at once on two cores elect their leaders slowly.
START_TIMEOUT_S = 120.0

GOAL_DETECTION_P95_S = 1.5
GOAL_CRASH_P95_S = 0.5
GOAL_RATIO = 200.0
GOAL_WATCH_PER_HOUR = 200.0

STAGES = ("wait for probe", "probe + watch end", "workflow task", "event activity")


def log(message: str) -> None:
    """Progress goes to stderr: stdout is the table and the JSON line."""
    print(message, file=sys.stderr, flush=True)


def p95(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def p50(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


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


@dataclass
class Lab:
    client: Client
    store: SQLiteEventStore
    a: ZooKeeperEnsemble
    """The ensemble that takes the faults."""
    rng: random.Random


# --- setup -----------------------------------------------------------------------------------


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever writes to file descriptor 1 meanwhile to stderr: the dev server's
    banner and the SDK core's log lines (Rust, writing to fd 1 itself) would otherwise mix
    with the table and the JSON line, the only things the benchmark puts on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


async def start_ensembles(
    stack: contextlib.AsyncExitStack, home: Path
) -> tuple[ZooKeeperEnsemble, ZooKeeperEnsemble]:
    """Two ensembles on two machine-wide slots, started together; the stack stops them."""
    started: list[ZooKeeperEnsemble] = []
    for name in ("a", "b"):
        ensemble, slot = await asyncio.to_thread(claim_ensemble, home, name, "zk-test")
        stack.callback(slot.release)
        stack.push_async_callback(asyncio.to_thread, ensemble.stop)
        ensemble.start()
        started.append(ensemble)
    for ensemble in started:
        took = await asyncio.to_thread(ensemble.wait_ready, START_TIMEOUT_S)
        log(f"ensemble {ensemble.name} ready in {took:.1f} s on {ensemble.connect_string}")
    return started[0], started[1]


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


async def probe_cpu_ms_per_node(spec: ClusterSpec) -> tuple[float, str]:
    """CPU per node of ZooKeeperAdapter.probe, in-process, before any worker shares the
    process (process_time counts every thread); also the version the members report."""
    adapter = ZooKeeperAdapter()
    view = await adapter.probe(spec)  # warm up: imports, first connections
    cpu = 0.0
    for _ in range(CPU_PROBES):
        started = time.process_time()
        view = await adapter.probe(spec)
        cpu += time.process_time() - started
        if not all(n.reachable for n in view.nodes):
            raise RuntimeError(f"probe of a healthy ensemble saw a node down: {view.nodes}")
    versions = {n.version for n in view.nodes}
    return cpu / CPU_PROBES / len(spec.nodes) * 1000, ",".join(sorted(str(v) for v in versions))


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


# --- faults ----------------------------------------------------------------------------------


def whole(view: ClusterView | None) -> bool:
    return (
        view is not None
        and view.leader is not None
        and all(n.reachable and n.role in (Role.LEADER, Role.FOLLOWER) for n in view.nodes)
    )


async def watch_started_at(handle: WorkflowHandle[ClusterMonitorWorkflow, None]) -> float | None:
    """When the monitor's running watch started (epoch s), None while none runs."""
    for pending in (await handle.describe()).raw_description.pending_activities:
        if (
            pending.activity_type.name == "watch_cluster"
            and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ):
            return pending.last_started_time.ToMicroseconds() / 1e6
    return None


async def settle(
    ensemble: ZooKeeperEnsemble, handle: WorkflowHandle[ClusterMonitorWorkflow, None]
) -> None:
    """Wait until the ensemble is whole, the monitor's view says so, and its next watch
    runs: a fault injected earlier would time the monitor's catching up, not detection."""
    await asyncio.to_thread(ensemble.wait_ready, RECOVER_TIMEOUT_S)
    deadline = time.monotonic() + RECOVER_TIMEOUT_S
    while time.monotonic() < deadline:
        view = await handle.query(ClusterMonitorWorkflow.view)
        if whole(view) and await watch_started_at(handle) is not None:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"monitor {handle.id} did not see ensemble {ensemble.name} whole")


async def detect(
    lab: Lab, cluster_id: str, node_id: str, injected_at: float, watch_started: float | None
) -> Sample | None:
    """The node.down the fault caused, or None if none was stored in time."""
    try:
        down = await wait_for_event(
            lab.store, cluster_id, of_type("node.down", node_id), DETECT_TIMEOUT_S, injected_at
        )
    except AssertionError:
        return None
    stored = lab.store.query(EventQuery(cluster_id=cluster_id, types=("node.down",)))
    stored_at = next(s.stored_at for s in stored if s.event.event_id == down.event_id)
    age = None if watch_started is None else injected_at - watch_started
    return Sample(node_id, injected_at, down.at.timestamp(), stored_at.timestamp(), age)


async def run_faults(
    lab: Lab,
    phase: Phase,
    count: int,
    inject: Callable[[int], None],
    recover: Callable[[int], object],
) -> None:
    """`count` faults on followers of ensemble A under a fresh monitor; the monitor's
    history then apportions each latency to the stages that make it up."""
    ensemble, cluster_id = lab.a, phase.spec.cluster_id
    handle = await start_monitor(lab.client, phase.spec)
    for i in range(count):
        await settle(ensemble, handle)
        leader = await asyncio.to_thread(ensemble.leader)
        n = lab.rng.choice([m for m in ensemble.members if m != leader])
        node_id = f"zk{n}"
        await asyncio.sleep(lab.rng.uniform(0, phase.spec.probe.interval_s))
        watch_started = await watch_started_at(handle)

        def fault(member: int = n) -> float:
            injected_at = time.time()
            inject(member)
            return injected_at

        injected_at = await asyncio.to_thread(fault)
        sample = await detect(lab, cluster_id, node_id, injected_at, watch_started)
        if sample is None:
            phase.missed += 1
            log(f"  {phase.name} {i + 1}/{count}: {node_id} MISSED within {DETECT_TIMEOUT_S} s")
        else:
            phase.samples.append(sample)
            log(
                f"  {phase.name} {i + 1}/{count}: {node_id} down, {sample.latency:.3f} s"
                f" ({watch_note(sample.watch_age_s)})"
            )
        await asyncio.to_thread(recover, n)
        if sample is not None:
            await wait_for_event(
                lab.store, cluster_id, of_type("node.up", node_id), RECOVER_TIMEOUT_S, injected_at
            )
    await settle(ensemble, handle)
    phase.stages = stages(phase.samples, await history(lab.client, handle))
    await stop_monitor(handle)


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


def startup_events(events: list[HistoryEvent]) -> int:
    """How many events the monitor wrote before it settled into watching: its start, the
    first watch (which returns at once with the first view), the event that view makes
    and the search attributes, up to scheduling the second watch. Written once per
    monitor, so a short run's per-hour rate is mostly these."""
    watches = [
        i
        for i, e in enumerate(events)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "watch_cluster"
    ]
    return watches[1] + 1 if len(watches) > 1 else len(events)


# --- report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What the run measured; `asdict` of it is the JSON line."""

    detection_p50_s: float
    detection_p95_s: float
    hang_detection_p50_s: float
    hang_detection_p95_s: float
    crash_detection_p50_s: float
    crash_detection_p95_s: float
    history_events_per_cluster_hour_watch: float
    history_events_per_cluster_hour_naive: float
    history_ratio: float
    history_events_watch: int
    history_events_watch_startup: int
    history_events_naive: int
    naive_runs: int
    history_window_s: float
    watch_max_s: float
    probe_cpu_ms_per_node: float
    faults: int
    hangs: int
    kills: int
    missed: dict[str, int]
    stages_p50_s: dict[str, dict[str, float]]
    stages_p95_s: dict[str, dict[str, float]]
    slowest: dict[str, str]
    goals: dict[str, bool]
    elapsed_s: float
    zookeeper_version: str
    temporalio_version: str
    temporal_server_version: str


def report(
    phases: tuple[Phase, Phase, Phase],
    history_counts: tuple[int, int, int, int],
    window_s: float,
    watch_max_s: float,
    cpu_ms: float,
    zk_version: str,
    elapsed_s: float,
) -> Report:
    poll, hang, crash = phases
    watch_events, watch_startup, naive_events, naive_runs = history_counts
    watch_rate = watch_events * 3600 / window_s
    naive_rate = naive_events * 3600 / window_s
    ratio = naive_rate / watch_rate
    detection_p95, crash_p95 = p95(poll.latencies), p95(crash.latencies)
    return Report(
        detection_p50_s=round(p50(poll.latencies), 3),
        detection_p95_s=round(detection_p95, 3),
        hang_detection_p50_s=round(p50(hang.latencies), 3),
        hang_detection_p95_s=round(p95(hang.latencies), 3),
        crash_detection_p50_s=round(p50(crash.latencies), 3),
        crash_detection_p95_s=round(crash_p95, 3),
        history_events_per_cluster_hour_watch=round(watch_rate, 1),
        history_events_per_cluster_hour_naive=round(naive_rate, 1),
        history_ratio=round(ratio, 1),
        history_events_watch=watch_events,
        history_events_watch_startup=watch_startup,
        history_events_naive=naive_events,
        naive_runs=naive_runs,
        history_window_s=round(window_s, 1),
        watch_max_s=watch_max_s,
        probe_cpu_ms_per_node=round(cpu_ms, 3),
        faults=len(poll.samples) + poll.missed,
        hangs=len(hang.samples) + hang.missed,
        kills=len(crash.samples) + crash.missed,
        missed={p.name: p.missed for p in phases},
        stages_p50_s={p.name: {k: round(p50(v), 3) for k, v in p.stages.items()} for p in phases},
        stages_p95_s={p.name: {k: round(p95(v), 3) for k, v in p.stages.items()} for p in phases},
        slowest={
            p.name: f"{worst.latency:.3f} s, {worst.node_id}, {watch_note(worst.watch_age_s)}"
            for p in phases
            if (worst := max(p.samples, key=lambda s: s.latency, default=None))
        },
        goals={
            # A missed fault has no latency to count: it fails its goal outright.
            "detection_p95": detection_p95 <= GOAL_DETECTION_P95_S and not poll.missed,
            "crash_detection_p95": crash_p95 <= GOAL_CRASH_P95_S and not crash.missed,
            "history_ratio": ratio >= GOAL_RATIO,
            "history_watch_per_hour": watch_rate < GOAL_WATCH_PER_HOUR,
        },
        elapsed_s=round(elapsed_s, 1),
        zookeeper_version=zk_version,
        temporalio_version=importlib.metadata.version("temporalio"),
        temporal_server_version=temporal_server_version(),
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(r: Report) -> str:
    g = r.goals
    rows = [
        (
            f"kill -> node.down stored, 1 s poll, n={r.faults}: p50",
            f"{r.detection_p50_s:.3f} s",
            "",
        ),
        (
            "  p95",
            f"{r.detection_p95_s:.3f} s",
            f"<= {GOAL_DETECTION_P95_S} s  {verdict(g['detection_p95'])}",
        ),
        (
            f"SIGSTOP -> node.down stored, 1 s poll, n={r.hangs}: p50",
            f"{r.hang_detection_p50_s:.3f} s",
            "",
        ),
        ("  p95", f"{r.hang_detection_p95_s:.3f} s", ""),
        (
            f"kill -> node.down stored, 5 s poll + held links, n={r.kills}: p50",
            f"{r.crash_detection_p50_s:.3f} s",
            "",
        ),
        (
            "  p95",
            f"{r.crash_detection_p95_s:.3f} s",
            f"<= {GOAL_CRASH_P95_S} s  {verdict(g['crash_detection_p95'])}",
        ),
        (
            "history events per cluster-hour, watch",
            f"{r.history_events_per_cluster_hour_watch:.0f}",
            f"< {GOAL_WATCH_PER_HOUR:.0f}  {verdict(g['history_watch_per_hour'])}",
        ),
        (
            "history events per cluster-hour, naive loop",
            f"{r.history_events_per_cluster_hour_naive:.0f}",
            "",
        ),
        (
            "history ratio naive / watch",
            f"{r.history_ratio:.0f}",
            f">= {GOAL_RATIO:.0f}  {verdict(g['history_ratio'])}",
        ),
        ("probe CPU per node", f"{r.probe_cpu_ms_per_node:.2f} ms", ""),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [
        f"ZooKeeper {r.zookeeper_version}, temporalio {r.temporalio_version}, "
        f"Temporal {r.temporal_server_version}; ran {r.elapsed_s:.0f} s",
        "",
        f"{'metric':<{width}}  {'value':>9}  goal",
        *(f"{name:<{width}}  {value:>9}  {goal}".rstrip() for name, value, goal in rows),
        "",
        f"idle cluster over {r.history_window_s:.0f} s: watch {r.history_events_watch} history"
        f" events ({r.history_events_watch_startup} of them written once, at its start),"
        f" naive loop {r.history_events_naive} in {r.naive_runs} runs",
    ]
    if r.history_window_s < r.watch_max_s:
        lines.append(
            f"note: a window shorter than watch_max_s ({r.watch_max_s:.0f} s) sees none of an"
            " idle watch's own returns, only its start-up spread over the window;"
            " --min-window 3600 measures a whole hour"
        )
    lines += [
        "",
        "where the latency goes, p50 / p95 in s:",
        f"{'phase':<6}" + "".join(f"  {stage:>17}" for stage in STAGES),
    ]
    for name in r.stages_p50_s:
        lines.append(
            f"{name:<6}"
            + "".join(
                f"  {r.stages_p50_s[name][s]:>8.3f} /{r.stages_p95_s[name][s]:>6.3f}"
                for s in STAGES
            )
        )
    lines += ["", "slowest fault of each phase:"]
    lines += [f"{name:<6}  {text}" for name, text in r.slowest.items()]
    if any(r.missed.values()):
        lines += ["", f"MISSED faults, not in the figures above: {r.missed}"]
    return "\n".join(lines)


def temporal_server_version() -> str:
    out = subprocess.run(
        [str(temporal_binary()), "--version"], capture_output=True, text=True, check=False
    ).stdout
    # "temporal version 1.9.1 (Server 1.32.0, UI 2.54.1)"
    return out.partition("(Server ")[2].partition(",")[0] or "unknown"


# --- main ------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, home: Path) -> Report:
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_binary()),
            data_converter=pydantic_data_converter,
            dev_server_extra_args=search_attributes.dev_server_flags(),
        )
        stack.push_async_callback(env.shutdown)
        a, b = await start_ensembles(stack, home)
        store = SQLiteEventStore(home / "events.db")
        stack.callback(store.close)
        lab = Lab(env.client, store, a, random.Random(args.seed))

        cpu_ms, zk_version = await probe_cpu_ms_per_node(zk_spec(a, "bench-cpu"))
        log(f"probe CPU {cpu_ms:.2f} ms per node over {CPU_PROBES} probes")

        await stack.enter_async_context(running(core_worker(lab.client, CORE_QUEUE, store)))
        # core_worker takes no extra workflows, so the naive loop gets a worker of its own
        # in this same process; which worker runs a workflow does not change its history.
        naive_worker = Worker(
            lab.client,
            task_queue=NAIVE_QUEUE,
            workflows=[NaiveMonitorWorkflow],
            activities=[probe_cluster],
        )
        await stack.enter_async_context(running(naive_worker))
        # Stop the members again before the workers: should a worker's shutdown hang, the
        # members must not be left running. Stopping a stopped member does nothing.
        for ensemble in (a, b):
            stack.push_async_callback(asyncio.to_thread, ensemble.stop)

        idle = zk_spec(b, "bench-idle", interval_s=1.0)
        window_start = time.monotonic()
        watch = await start_monitor(lab.client, idle)
        naive = await lab.client.start_workflow(
            NaiveMonitorWorkflow.run,
            idle,
            id=naive_workflow_id(idle.cluster_id),
            task_queue=NAIVE_QUEUE,
        )

        polling = {"interval_s": 1.0, "timeout_s": 0.5, "hold_connections": False}
        phases = (
            Phase("poll", zk_spec(a, "bench-poll", **polling)),
            Phase("hang", zk_spec(a, "bench-hang", **polling)),
            Phase("crash", zk_spec(a, "bench-crash", interval_s=5.0, hold_connections=True)),
        )
        log(f"poll phase: {args.faults} SIGKILLs of a follower, 1 s interval, no held links")
        await run_faults(lab, phases[0], args.faults, a.kill_member, a.start_member)
        log(f"hang phase: {args.hangs} SIGSTOPs of a follower, 1 s interval, 0.5 s timeout")
        await run_faults(lab, phases[1], args.hangs, a.pause_member, a.resume_member)
        log(f"crash phase: {args.kills} SIGKILLs of a follower, 5 s interval, held links")
        await run_faults(lab, phases[2], args.kills, a.kill_member, a.start_member)

        idle_left = args.min_window - (time.monotonic() - window_start)
        if idle_left > 0:
            log(f"idle cluster: watching {idle_left:.0f} s more (--min-window {args.min_window})")
            await asyncio.sleep(idle_left)
        # Counted before the terminations, which would add events of their own.
        window_s = time.monotonic() - window_start
        watch_runs = await history(lab.client, watch)
        naive_runs = await history(lab.client, naive)
        await stop_monitor(watch)
        await naive.terminate("benchmark over")
    return report(
        phases,
        (
            sum(map(len, watch_runs)),
            startup_events(watch_runs[0]),
            sum(map(len, naive_runs)),
            len(naive_runs),
        ),
        window_s,
        idle.probe.watch_max_s,
        cpu_ms,
        zk_version,
        time.monotonic() - started,
    )


async def main_async(args: argparse.Namespace) -> Report:
    # SIGTERM unwinds like Ctrl-C does, so the servers stop either way.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    home = Path(tempfile.mkdtemp(prefix="replicante-bench-"))
    try:
        result = await bench(args, home)
    except BaseException:
        log(f"benchmark did not complete; the servers' logs are kept in {home}")
        raise
    shutil.rmtree(home, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bench/detection.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--faults", type=int, default=20, help="SIGKILLs at a 1 s poll")
    parser.add_argument("--hangs", type=int, default=10, help="SIGSTOPs at a 1 s poll")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs at 5 s + held links")
    parser.add_argument(
        "--min-window",
        type=float,
        # Just over one watch_max_s (600 s): the window then holds an idle watch's own
        # bounded return as well as its start-up, not the start-up alone.
        default=660.0,
        metavar="S",
        help="keep watching the idle cluster until S seconds have passed (default 660; 3600"
        " for a whole hour)",
    )
    parser.add_argument("--seed", type=int, default=None, help="for the random fault times")
    args = parser.parse_args(argv)
    try:
        with stdout_to_stderr():
            result = asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(130) from None
    print(table(result))
    if args.json:
        print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
