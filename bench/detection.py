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
it (`observed_at`), that probe plus the end of the watch activity, the wait for the
workflow task that turns the view into events, and that task with the write that stores them.

The idle cluster's history is counted over the whole run, at least --min-window seconds
(default 660, just over one watch_max_s): the real monitor's one-off start-up events are
included; a longer window (3600) makes them weigh less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: sys.path[0] is bench/, where bench/kafka.py would stand in for
    # kafka-python's `kafka` package. The imports below need the repo root instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.worker import Worker

from activities.monitor import probe_cluster
from activities.zookeeper.adapter import ZooKeeperAdapter
from bench.common import (
    CORE_QUEUE,
    Figures,
    Phase,
    faults_beside_leader,
    figures,
    history,
    latency_rows,
    log,
    p50,
    p95,
    probe_cpu_ms,
    render,
    run_faults,
    running,
    start_ensembles,
    start_monitor,
    stop_monitor,
    temporal,
    verdict,
)
from bench.common import (
    main as bench_main,
)
from bench.naive_monitor import NaiveMonitorWorkflow, naive_workflow_id
from models import ClusterSpec, ClusterView, Role
from store import SQLiteEventStore
from testkit.specs import zk_spec
from worker.core import core_worker

NAIVE_QUEUE = "bench-naive"
CPU_PROBES = 60
# Six JVMs starting at once on two cores elect their leaders slowly.

GOAL_DETECTION_P95_S = 1.5
GOAL_CRASH_P95_S = 0.5
GOAL_RATIO = 200.0
GOAL_WATCH_PER_HOUR = 200.0

# --- setup -----------------------------------------------------------------------------------


async def probe_cpu_ms_per_node(spec: ClusterSpec) -> tuple[float, str]:
    """CPU per node of ZooKeeperAdapter.probe; also the version the members report."""
    cpu_ms, view = await probe_cpu_ms(ZooKeeperAdapter(), spec, CPU_PROBES)
    versions = {n.version for n in view.nodes}
    return cpu_ms / len(spec.nodes), ",".join(sorted(str(v) for v in versions))


# --- faults ----------------------------------------------------------------------------------


def whole(view: ClusterView | None) -> bool:
    return (
        view is not None
        and view.leader is not None
        and all(n.reachable and n.role in (Role.LEADER, Role.FOLLOWER) for n in view.nodes)
    )


# --- history ---------------------------------------------------------------------------------


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
class Report(Figures):
    hang_detection_p50_s: float
    hang_detection_p95_s: float
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
    hangs: int
    zookeeper_version: str


def report(
    phases: tuple[Phase, Phase, Phase],
    history_counts: tuple[int, int, int, int],
    window_s: float,
    watch_max_s: float,
    cpu_ms: float,
    zk_version: str,
    started: float,
) -> Report:
    poll, hang, crash = phases
    watch_events, watch_startup, naive_events, naive_runs = history_counts
    watch_rate = watch_events * 3600 / window_s
    naive_rate = naive_events * 3600 / window_s
    ratio = naive_rate / watch_rate
    return Report(
        **figures(
            poll,
            crash,
            phases,
            {"detection_p95": GOAL_DETECTION_P95_S, "crash_detection_p95": GOAL_CRASH_P95_S},
            started,
            history_ratio=ratio >= GOAL_RATIO,
            history_watch_per_hour=watch_rate < GOAL_WATCH_PER_HOUR,
        ),
        hang_detection_p50_s=round(p50(hang.latencies), 3),
        hang_detection_p95_s=round(p95(hang.latencies), 3),
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
        hangs=len(hang.samples) + hang.missed,
        zookeeper_version=zk_version,
    )


def table(r: Report) -> str:
    g = r.goals
    rows = [
        *r.poll_rows(GOAL_DETECTION_P95_S),
        *latency_rows(
            f"SIGSTOP -> node.down stored, 1 s poll, n={r.hangs}",
            r.hang_detection_p50_s,
            r.hang_detection_p95_s,
        ),
        *r.crash_rows(GOAL_CRASH_P95_S),
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
    notes = [
        "",
        f"idle cluster over {r.history_window_s:.0f} s: watch {r.history_events_watch} history"
        f" events ({r.history_events_watch_startup} of them written once, at its start),"
        f" naive loop {r.history_events_naive} in {r.naive_runs} runs",
    ]
    if r.history_window_s < r.watch_max_s:
        notes.append(
            f"note: a window shorter than watch_max_s ({r.watch_max_s:.0f} s) sees none of an"
            " idle watch's own returns, only its start-up spread over the window;"
            " --min-window 3600 measures a whole hour"
        )
    return render(r.title(f"ZooKeeper {r.zookeeper_version}"), rows, r, notes)


# --- main ------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, home: Path) -> Report:
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        env = await temporal(stack)
        a, b = await start_ensembles(stack, home, ("a", "b"))
        store = SQLiteEventStore(home / "events.db")
        stack.callback(store.close)
        client, rng = env.client, random.Random(args.seed)

        cpu_ms, zk_version = await probe_cpu_ms_per_node(zk_spec(a, "bench-cpu"))
        log(f"probe CPU {cpu_ms:.2f} ms per node over {CPU_PROBES} probes")

        await stack.enter_async_context(running(core_worker(client, CORE_QUEUE, store)))
        # core_worker takes no extra workflows, so the naive loop gets a worker of its own
        # in this same process; which worker runs a workflow does not change its history.
        naive_worker = Worker(
            client,
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
        watch = await start_monitor(client, idle)
        naive = await client.start_workflow(
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
        kills = faults_beside_leader(a, a.leader, "zk", whole, a.kill_member, a.start_member)
        hangs = faults_beside_leader(a, a.leader, "zk", whole, a.pause_member, a.resume_member)
        await run_faults(client, store, rng, phases[0], args.faults, kills)
        log(f"hang phase: {args.hangs} SIGSTOPs of a follower, 1 s interval, 0.5 s timeout")
        await run_faults(client, store, rng, phases[1], args.hangs, hangs)
        log(f"crash phase: {args.kills} SIGKILLs of a follower, 5 s interval, held links")
        await run_faults(client, store, rng, phases[2], args.kills, kills)

        idle_left = args.min_window - (time.monotonic() - window_start)
        if idle_left > 0:
            log(f"idle cluster: watching {idle_left:.0f} s more (--min-window {args.min_window})")
            await asyncio.sleep(idle_left)
        # Counted before the terminations, which would add events of their own.
        window_s = time.monotonic() - window_start
        watch_runs = await history(client, watch)
        naive_runs = await history(client, naive)
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
        started,
    )


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hangs", type=int, default=10, help="SIGSTOPs at a 1 s poll")
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


def main(argv: list[str] | None = None) -> None:
    bench_main("bench/detection.py", __doc__, bench, table, 20, 20, argv, arguments)


if __name__ == "__main__":
    main()
