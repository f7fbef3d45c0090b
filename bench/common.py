"""What the benchmarks share: percentiles, the stack they start, faults injected at random
moments and timed to their stored event, and where that time went.

A fault's latency runs from the signal to the `stored_at` of its `node.down` event. It is
split, with the timestamps of the monitor's history, into: waiting for the probe that saw
it (`observed_at`), that probe plus the end of the watch activity, the wait for the
workflow task that turns the view into events, and that task with the write that stores them.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.adapter import Adapter
from config.temporal import dev_server_flags
from devstack.engine import VERSION as ENGINE_VERSION
from devstack.engine import claim_engine
from devstack.jvm import JvmCluster
from devstack.temporal import temporal_binary
from devstack.zookeeper import ZooKeeperEnsemble, claim_ensemble
from models import ClusterSpec, ClusterView, MonitorInput
from store import EventQuery, SQLiteEventStore
from testkit.events import of_type, wait_for_event
from worker.core import CoreWorker
from workflows import search_attributes
from workflows.monitor import ClusterMonitorWorkflow, workflow_id

CORE_QUEUE = "bench-core"
DETECT_TIMEOUT_S = 30.0
RECOVER_TIMEOUT_S = 90.0
WORKER_STOP_S = 10.0

STAGES = ("wait for probe", "probe + watch end", "to workflow task", "task + event write")


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


def faults_beside_leader(
    cluster: JvmCluster,
    leader: Callable[[], int | None],
    prefix: str,
    whole: Callable[[ClusterView | None], bool],
    inject: Callable[[int], object],
    recover: Callable[[int], object],
) -> Target:
    """Faults on a member of `cluster` other than the one `leader()` names, whose node id
    is `<prefix><n>`."""

    def victim(rng: random.Random) -> tuple[int, str]:
        current = leader()
        n = rng.choice([m for m in cluster.members if m != current])
        return n, f"{prefix}{n}"

    return Target(
        ready=lambda: cluster.wait_ready(RECOVER_TIMEOUT_S),
        whole=whole,
        victim=victim,
        inject=inject,
        recover=recover,
    )


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


ENSEMBLE_START_S = 120.0


async def start_ensembles(
    stack: contextlib.AsyncExitStack, home: Path, names: Sequence[str]
) -> list[ZooKeeperEnsemble]:
    """One real 3-member ensemble per name, on machine-wide slots, started together; the
    stack stops them and frees their slots."""
    started: list[ZooKeeperEnsemble] = []
    for name in names:
        ensemble, slot = await asyncio.to_thread(claim_ensemble, home, name, "zk-test")
        stack.callback(slot.release)
        stack.push_async_callback(asyncio.to_thread, ensemble.stop)
        ensemble.start()
        started.append(ensemble)
    for ensemble in started:
        took = await asyncio.to_thread(ensemble.wait_ready, ENSEMBLE_START_S)
        log(f"ensemble {ensemble.name} ready in {took:.1f} s on {ensemble.connect_string}")
    return started


async def temporal_engine(
    stack: contextlib.AsyncExitStack, engine: str, home: Path
) -> tuple[Client, str]:
    """A client of a Temporal server with our search attributes, and the server's release:
    the dev server (`dev`), or the production-shape engine (`production`: the real server on
    PostgreSQL, devstack/engine.py) on a test slot of its own. The stack stops it."""
    if engine == "dev":
        env = await temporal(stack)
        return env.client, temporal_server_version()
    # PostgreSQL runs as the user postgres under root: its home must be one it may enter.
    engine_home = Path(tempfile.mkdtemp(prefix="replicante-engine-"))
    engine_home.chmod(0o755)
    stack.callback(shutil.rmtree, engine_home, ignore_errors=True)
    production, slot = claim_engine(engine_home)
    stack.callback(slot.release)
    stack.push_async_callback(asyncio.to_thread, production.down)
    await asyncio.to_thread(production.up)
    client = await Client.connect(
        production.address, namespace=production.namespace, data_converter=pydantic_data_converter
    )
    return client, ENGINE_VERSION.removeprefix("v")


async def temporal(stack: contextlib.AsyncExitStack) -> WorkflowEnvironment:
    """A dev server with our search attributes; the stack shuts it down."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_flags(),
    )
    stack.push_async_callback(env.shutdown)
    return env


@contextlib.asynccontextmanager
async def running(worker: Worker | CoreWorker) -> AsyncIterator[None]:
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
    adapter: Adapter[object], spec: ClusterSpec, probes: int
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


def main(
    prog: str,
    doc: str | None,
    bench: Callable[[argparse.Namespace, Path], Awaitable[F]],
    table: Callable[[F], str],
    faults: int,
    kills: int,
    argv: list[str] | None,
    arguments: Callable[[argparse.ArgumentParser], object] = lambda parser: None,
) -> None:
    """A benchmark's command line: --json, the fault counts, its own `arguments` and --seed;
    runs `bench(args, home)` in a fresh temporary home (removed after a run that completes),
    prints `table` of what it returns and, with --json, that as one JSON line. SIGTERM
    unwinds like Ctrl-C does, so the servers stop either way."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--faults", type=int, default=faults, help="SIGKILLs at a 1 s poll")
    parser.add_argument("--kills", type=int, default=kills, help="SIGKILLs at 5 s + held links")
    arguments(parser)
    parser.add_argument("--seed", type=int, default=None, help="for the random fault times")
    args = parser.parse_args(argv)

    async def main_async() -> F:
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

    try:
        with stdout_to_stderr():
            result = asyncio.run(main_async())
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(130) from None
    print(table(result))
    if args.json:
        print(json.dumps(asdict(result)))


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
    the fault's view and of the workflow task that started after it (which writes the events
    as a local activity, or schedules the activity that does)."""

    def at(e: HistoryEvent) -> float:
        return e.event_time.ToMicroseconds() / 1e6

    # (server time, run, event id): event ids restart with each run of a chain.
    watch_done: list[tuple[float, int, int]] = []
    task_started: list[tuple[float, int, int]] = []
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
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                task_started.append((at(e), r, e.event_id))
    split: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for s in samples:
        done = next((w for w in watch_done if w[0] >= s.observed_at), None)
        if done is None:
            continue
        started = next((x for x in task_started if x[1:] > done[1:]), None)
        if started is None:
            continue
        points = (s.injected_at, s.observed_at, done[0], started[0], s.stored_at)
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


# --- report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What every benchmark reports of its poll and crash phases and of its run; each adds
    its own figures in a subclass, and `asdict` of that is the JSON line."""

    detection_p50_s: float
    detection_p95_s: float
    crash_detection_p50_s: float
    crash_detection_p95_s: float
    faults: int
    kills: int
    missed: dict[str, int]
    stages_p50_s: dict[str, dict[str, float]]
    stages_p95_s: dict[str, dict[str, float]]
    slowest: dict[str, str]
    goals: dict[str, bool]
    elapsed_s: float
    temporalio_version: str
    temporal_server_version: str

    def title(self, product: str) -> str:
        return (
            f"{product}, temporalio {self.temporalio_version}, "
            f"Temporal {self.temporal_server_version}; ran {self.elapsed_s:.0f} s"
        )

    def poll_rows(self, goal: float) -> list[tuple[str, str, str]]:
        return latency_rows(
            f"kill -> node.down stored, 1 s poll, n={self.faults}",
            self.detection_p50_s,
            self.detection_p95_s,
            goal,
            self.goals["detection_p95"],
        )

    def crash_rows(self, goal: float) -> list[tuple[str, str, str]]:
        return latency_rows(
            f"kill -> node.down stored, 5 s poll + held links, n={self.kills}",
            self.crash_detection_p50_s,
            self.crash_detection_p95_s,
            goal,
            self.goals["crash_detection_p95"],
        )


def figures(
    poll: Phase,
    crash: Phase,
    phases: Sequence[Phase],
    goals: Mapping[str, float],
    started: float,
    **more_goals: bool,
) -> dict[str, Any]:
    """The fields of Figures; `goals` are the most `detection_p95` and
    `crash_detection_p95` may be, `more_goals` the benchmark's own, met or not."""
    detection_p95, crash_p95 = p95(poll.latencies), p95(crash.latencies)
    return {
        "detection_p50_s": round(p50(poll.latencies), 3),
        "detection_p95_s": round(detection_p95, 3),
        "crash_detection_p50_s": round(p50(crash.latencies), 3),
        "crash_detection_p95_s": round(crash_p95, 3),
        "faults": len(poll.samples) + poll.missed,
        "kills": len(crash.samples) + crash.missed,
        "missed": {p.name: p.missed for p in phases},
        "stages_p50_s": {p.name: p.stage_percentiles(p50) for p in phases},
        "stages_p95_s": {p.name: p.stage_percentiles(p95) for p in phases},
        "slowest": {p.name: slowest for p in phases if (slowest := p.slowest())},
        "goals": {
            # A missed fault has no latency to count: it fails its goal outright.
            "detection_p95": detection_p95 <= goals["detection_p95"] and not poll.missed,
            "crash_detection_p95": crash_p95 <= goals["crash_detection_p95"] and not crash.missed,
            **more_goals,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        "temporalio_version": importlib.metadata.version("temporalio"),
        "temporal_server_version": temporal_server_version(),
    }


F = TypeVar("F", bound=Figures)


def latency_rows(
    name: str, phase_p50: float, phase_p95: float, goal: float | None = None, met: bool = True
) -> list[tuple[str, str, str]]:
    """A phase's two rows of a benchmark's table: p50, and p95 against its goal if any."""
    return [
        (f"{name}: p50", f"{phase_p50:.3f} s", ""),
        ("  p95", f"{phase_p95:.3f} s", "" if goal is None else f"<= {goal} s  {verdict(met)}"),
    ]


def render(
    title: str, rows: Sequence[tuple[str, str, str]], r: Figures, notes: Sequence[str] = ()
) -> str:
    """The table: title, metric rows, `notes`, where the latency went, the slowest faults."""
    width = max(len(name) for name, _, _ in rows)
    lines = [
        title,
        "",
        f"{'metric':<{width}}  {'value':>9}  goal",
        *(f"{name:<{width}}  {value:>9}  {goal}".rstrip() for name, value, goal in rows),
        *notes,
        "",
        *stage_table(r.stages_p50_s, r.stages_p95_s),
        "",
        "slowest fault of each phase:",
        *(f"{name:<6}  {text}" for name, text in r.slowest.items()),
    ]
    if any(r.missed.values()):
        lines += ["", f"MISSED faults, not in the figures above: {r.missed}"]
    return "\n".join(lines)
