"""A fleet: N ZooKeeper cluster specs watched by W core workers, and what each costs.

    .venv/bin/python bench/fleet.py [--clusters N] [--workers W] [--engine production|dev]
                                    [--ensembles E] [--json] [--sweep]

Starts everything it needs and stops it all at the end, also on failure, Ctrl-C or SIGTERM:
a Temporal server, E real 3-member ZooKeeper ensembles (`maxClientCnxns=0`: every
connection here comes from one loopback address), and W core workers as `python -m worker`
processes, whose CPU, memory and threads are read from /proc. `--engine production` (the
default) is the real Temporal server on PostgreSQL (devstack/engine.py, on a slot of its
own, 127.0.1.x); `--engine dev` the Temporal dev server.

Spec i names the members of ensemble i mod E, as `replicante apply` would apply it: many
specs over few ensembles only because we lack machines. Each spec holds its own links and
runs its own probes, as if its members were its own; every figure holds for distinct
members. Interval 5 s, timeout 2 s, held connections on (the defaults).

Phases, one after the other:

- apply: every spec applied (`apply_s`), then each one's first `cluster.health_changed`
  stored (`first_view_p95_s`, from its own apply).
- idle: 60 s (--idle-s) with nothing happening: each worker's CPU (% of one core), RSS and
  threads (`idle_worker_cpu_pct` and the rest are the busiest worker's), the history events
  every cluster's history gained meanwhile, and the heartbeats that reached the server
  (sampled on a few watches). A window shorter than `watch_max_s` (600 s) sees none of an
  idle watch's bounded returns, so a few calibration specs with the lowest `watch_max_s`
  (10 s) run beside the fleet, and what one return writes is added at the fleet's rate of
  one per `watch_max_s` (`history_events_per_cluster_hour`). Temporal Cloud bills actions:
  activities scheduled, markers, signals, timers, upserts, starts, and heartbeats
  (`temporal_actions_per_cluster_hour`).
- crash: SIGKILL a follower of ensemble 0; for every spec naming it, the time until its
  `node.down` is stored (`crash_fanout_*`; missed: none within 45 s), and the time until the
  view that told it was taken (`crash_detected_*`): the rest is the view's way through
  Temporal to the store.
- hang: the same for a SIGSTOPped follower (`hang_fanout_p95_s`).
- takeover (W >= 2): SIGKILL the worker that watches most; the time until every cluster it
  watched has a watch running elsewhere and a view newer than the kill (`takeover_p95_s`);
  a member killed just after the worker gives each of its specs exactly one `node.down`
  (`takeover_lost_events`, `takeover_duplicate_events`).

The machine's load average is recorded beside each figure: CPU figures from a shared
machine are only as good as the load next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

if __package__ in (None, ""):
    # Run as a script: sys.path[0] is bench/, where bench/kafka.py would stand in for
    # kafka-python's `kafka` package. The imports below need the repo root instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from bench.common import log, p50, p95, start_ensembles, stdout_to_stderr, temporal_engine
from client.api import ReplicanteClient
from config.settings import Settings
from devstack.home import jars_dir
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec
from store import EventQuery, SQLiteEventStore
from testkit.specs import zk_spec
from testkit.workers import Workers, core_pollers
from workflows.monitor import ClusterMonitorWorkflow, workflow_id

QUEUE = "fleet"
ENGINES = ("dev", "production")
DEFAULT_ENGINE = "production"
SWEEP = (100, 300, 1000)
INTERVAL_S = 5.0
TIMEOUT_S = 2.0
FANOUT_TIMEOUT_S = 45.0
RECOVER_TIMEOUT_S = 180.0
START_TIMEOUT_S = 120.0
CALIBRATION_SPECS = 3
CALIBRATION_WATCH_MAX_S = 10.0
HEARTBEAT_SAMPLE = 5
HISTORY_CONCURRENCY = 32
# What Temporal Cloud bills as an action, of the events a monitor's history holds; an
# activity's retries are billed too, but a watch that completes is scheduled once.
BILLED = frozenset(
    {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
        EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
        EventType.EVENT_TYPE_MARKER_RECORDED,
        EventType.EVENT_TYPE_TIMER_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
        EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
        EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    }
)

GOALS = {
    "crash_fanout_p95_s": 2.0,
    "hang_fanout_p95_s": 2 * INTERVAL_S + TIMEOUT_S,
    "first_view_p95_s": 60.0,
    "idle_worker_cpu_pct": 25.0,
    "worker_rss_mb": 1024.0,
    "history_events_per_cluster_hour": 100.0,
    "takeover_p95_s": 30.0,
}

T = TypeVar("T")
A = TypeVar("A")


def load() -> str:
    """The machine's 1, 5 and 15 minute load averages, as `uptime` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


async def bounded(call: Callable[[A], Awaitable[T]], items: Iterable[A], limit: int) -> list[T]:
    """`call` of every item, at most `limit` running at once."""
    gate = asyncio.Semaphore(limit)

    async def one(item: A) -> T:
        async with gate:
            return await call(item)

    return await asyncio.gather(*(one(i) for i in items))


# --- the workers as processes ------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float
    rss_mb: float
    threads: int


def proc_sample(pid: int) -> ProcSample:
    """CPU seconds (user + system) so far, resident memory and threads of a process."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces: fields count from after its closing ')'.
        fields = f.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return ProcSample(cpu_s, int(status["VmRSS"].split()[0]) / 1024, int(status["Threads"].strip()))


async def wait_for_workers(client: Client, workers: Workers) -> None:
    want = {workers.identity(pid) for pid in workers.procs}
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all(want <= seen for seen in await core_pollers(client, QUEUE)):
        dead = [pid for pid, proc in workers.procs.items() if proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"workers did not start polling {QUEUE}\n{workers.tail()}")
        await asyncio.sleep(0.5)


# --- specs and events --------------------------------------------------------------------------


def fleet_specs(ensembles: Sequence[ZooKeeperEnsemble], count: int) -> list[ClusterSpec]:
    return [
        zk_spec(
            ensembles[i % len(ensembles)],
            f"fleet-{i:04d}",
            interval_s=INTERVAL_S,
            timeout_s=TIMEOUT_S,
        )
        for i in range(count)
    ]


def calibration_specs(ensemble: ZooKeeperEnsemble) -> list[ClusterSpec]:
    return [
        zk_spec(
            ensemble,
            f"calibrate-{i}",
            interval_s=INTERVAL_S,
            timeout_s=TIMEOUT_S,
            watch_max_s=CALIBRATION_WATCH_MAX_S,
        )
        for i in range(CALIBRATION_SPECS)
    ]


class Seen(NamedTuple):
    event_id: str
    stored_at: float
    observed_at: float
    """When the watch took the view the event came from: the part of a delay that is
    detection; the rest is the view's way through Temporal to the store."""


def stored_since(
    store: SQLiteEventStore, type_: str, since: float, node_id: str | None = None
) -> dict[str, list[Seen]]:
    """Per cluster, each `type_` event stored since `since`."""
    found: dict[str, list[Seen]] = {}
    query = EventQuery(types=(type_,), since=datetime.fromtimestamp(since, UTC), limit=1_000_000)
    for stored in store.query(query):
        if node_id is None or stored.event.node_id == node_id:
            found.setdefault(stored.event.cluster_id, []).append(
                Seen(
                    stored.event.event_id,
                    stored.stored_at.timestamp(),
                    stored.event.at.timestamp(),
                )
            )
    return found


async def fanout(
    store: SQLiteEventStore,
    specs: Sequence[ClusterSpec],
    type_: str,
    node_id: str,
    since: float,
    timeout: float,
) -> tuple[list[Seen], list[str]]:
    """Each spec's first `type_` of `node_id` stored since `since`; the specs without one
    within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        seen = stored_since(store, type_, since, node_id)
        missing = [s.cluster_id for s in specs if s.cluster_id not in seen]
        if not missing or time.monotonic() > deadline:
            firsts = [
                min(seen[s.cluster_id], key=lambda e: e.stored_at)
                for s in specs
                if s.cluster_id in seen
            ]
            return firsts, missing
        await asyncio.sleep(0.2)


# --- histories ---------------------------------------------------------------------------------


async def chain_events(client: Client, cluster_id: str) -> list[HistoryEvent]:
    """Every event of the monitor's continue-as-new chain."""
    events: list[HistoryEvent] = []
    handle = client.get_workflow_handle(workflow_id(cluster_id))
    run_id = (await handle.describe()).raw_description.workflow_execution_info.first_run_id
    while run_id:
        run = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        events += run.events
        last = run.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else ""
        )
    return events


def within(events: Iterable[HistoryEvent], start: float, end: float) -> list[HistoryEvent]:
    return [e for e in events if start <= e.event_time.ToMicroseconds() / 1e6 < end]


async def heartbeats(client: Client, cluster_ids: Sequence[str], until: float) -> float:
    """Heartbeats per watch-hour that reached the server, from the watches' last heartbeat
    times sampled every second until `until`."""
    seen: dict[str, set[int]] = {c: set() for c in cluster_ids}
    started = time.monotonic()
    while time.monotonic() < until:
        for cluster_id in cluster_ids:
            described = await client.get_workflow_handle(workflow_id(cluster_id)).describe()
            for pending in described.raw_description.pending_activities:
                if pending.activity_type.name == "watch_cluster":
                    seen[cluster_id].add(pending.last_heartbeat_time.ToMicroseconds())
        await asyncio.sleep(1.0)
    # The first time seen may predate the window; each later change is one heartbeat.
    beats = sum(max(len(times) - 1, 0) for times in seen.values())
    return beats * 3600 / ((time.monotonic() - started) * len(cluster_ids))


# --- the report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    clusters: int
    workers: int
    engine: str
    ensembles: int
    interval_s: float
    timeout_s: float
    apply_s: float
    first_view_p50_s: float
    first_view_p95_s: float
    first_view_missed: int
    idle_worker_cpu_pct: float
    worker_rss_mb: float
    worker_threads: int
    idle_load: str
    history_events_per_cluster_hour: float
    history_events_idle_window_per_cluster_hour: float
    history_events_per_bounded_return: float
    heartbeats_per_cluster_hour: float
    temporal_actions_per_cluster_hour: float
    crash_fanout_p50_s: float
    crash_fanout_p95_s: float
    crash_fanout_max_s: float
    crash_fanout_missed: int
    crash_detected_p50_s: float
    crash_detected_p95_s: float
    crash_load: str
    hang_fanout_p50_s: float
    hang_fanout_p95_s: float
    hang_fanout_missed: int
    hang_detected_p50_s: float
    hang_detected_p95_s: float
    takeover_p95_s: float | None
    takeover_lost_events: int | None
    takeover_duplicate_events: int | None
    goals: dict[str, bool]
    elapsed_s: float
    temporalio_version: str
    temporal_server_version: str


def goals_met(figures: dict[str, Any]) -> dict[str, bool]:
    met = {key: figures[key] is not None and figures[key] <= limit for key, limit in GOALS.items()}
    met["crash_fanout_p95_s"] &= figures["crash_fanout_missed"] == 0
    met["hang_fanout_p95_s"] &= figures["hang_fanout_missed"] == 0
    if figures["takeover_p95_s"] is None:
        del met["takeover_p95_s"]
    else:
        met["takeover_p95_s"] &= (
            figures["takeover_lost_events"] == 0 and figures["takeover_duplicate_events"] == 0
        )
    return met


def table(reports: Sequence[Report]) -> str:
    rows: list[tuple[str, Callable[[Report], object], str]] = [
        ("apply_s", lambda r: r.apply_s, ""),
        ("first_view_p95_s", lambda r: r.first_view_p95_s, "<= 60"),
        ("first views missed", lambda r: r.first_view_missed, "0"),
        ("idle_worker_cpu_pct (of a core)", lambda r: r.idle_worker_cpu_pct, "<= 25"),
        ("  load average then", lambda r: r.idle_load, ""),
        ("worker_rss_mb", lambda r: r.worker_rss_mb, "<= 1024"),
        ("worker_threads", lambda r: r.worker_threads, ""),
        ("history_events_per_cluster_hour", lambda r: r.history_events_per_cluster_hour, "<= 100"),
        ("temporal_actions_per_cluster_hour", lambda r: r.temporal_actions_per_cluster_hour, ""),
        ("  of them heartbeats", lambda r: r.heartbeats_per_cluster_hour, ""),
        ("crash_fanout_p50_s", lambda r: r.crash_fanout_p50_s, ""),
        ("crash_fanout_p95_s", lambda r: r.crash_fanout_p95_s, "<= 2"),
        ("crash_fanout_max_s", lambda r: r.crash_fanout_max_s, ""),
        ("crash_fanout_missed (45 s)", lambda r: r.crash_fanout_missed, "0"),
        ("  load average then", lambda r: r.crash_load, ""),
        ("hang_fanout_p95_s", lambda r: r.hang_fanout_p95_s, f"<= {GOALS['hang_fanout_p95_s']:g}"),
        ("hang_fanout_missed (45 s)", lambda r: r.hang_fanout_missed, "0"),
        ("takeover_p95_s", lambda r: r.takeover_p95_s, "<= 30"),
        (
            "takeover lost / duplicated",
            lambda r: (r.takeover_lost_events, r.takeover_duplicate_events),
            "0 / 0",
        ),
    ]
    first = reports[0]
    header = [
        f"fleet: ZooKeeper specs over {first.ensembles} ensemble(s), {first.workers} worker(s),"
        f" engine {first.engine} (Temporal {first.temporal_server_version}), temporalio"
        f" {first.temporalio_version}, interval {first.interval_s:g} s,"
        f" timeout {first.timeout_s:g} s",
        "",
    ]
    width = max(len(name) for name, _, _ in rows)

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if value < 100 else f"{value:.0f}"
        if isinstance(value, tuple):
            return " / ".join(cell(v) for v in value)
        return "-" if value is None else str(value)

    lines = [
        f"{'N':<{width}}" + "".join(f"  {r.clusters:>16}" for r in reports) + "  goal",
        *(
            f"{name:<{width}}" + "".join(f"  {cell(pick(r)):>16}" for r in reports) + f"  {goal}"
            for name, pick, goal in rows
        ),
        "",
        *(
            f"N={r.clusters}: ran {r.elapsed_s:.0f} s; goals not met:"
            f" {', '.join(k for k, ok in r.goals.items() if not ok) or 'none'}"
            for r in reports
        ),
    ]
    return "\n".join(header + [line.rstrip() for line in lines])


# --- the phases --------------------------------------------------------------------------------


@dataclass
class Fleet:
    client: Client
    store: SQLiteEventStore
    workers: Workers
    ensembles: list[ZooKeeperEnsemble]
    specs: list[ClusterSpec]

    def on(self, ensemble: ZooKeeperEnsemble) -> list[ClusterSpec]:
        addresses = set(ensemble.addresses)
        return [s for s in self.specs if {n.address for n in s.nodes} <= addresses]

    def follower(self, ensemble: ZooKeeperEnsemble) -> int:
        leader = ensemble.leader()
        return next(n for n in ensemble.members if n != leader)

    async def recover(
        self,
        ensemble: ZooKeeperEnsemble,
        member: int,
        since: float,
        saw_down: Sequence[ClusterSpec],
    ) -> None:
        """Wait until every spec that stored `member`'s `node.down` has its `node.up` too: one
        that never saw it down has nothing to tell."""
        await asyncio.to_thread(ensemble.wait_ready, RECOVER_TIMEOUT_S)
        _, missing = await fanout(
            self.store, saw_down, "node.up", f"zk{member}", since, RECOVER_TIMEOUT_S
        )
        if missing:
            raise RuntimeError(f"{len(missing)} specs never saw zk{member} up again")
        # Every watch returned with the member up; let the next ones open their links.
        await asyncio.sleep(INTERVAL_S)


async def apply_all(
    settings: Settings, client: Client, specs: Sequence[ClusterSpec]
) -> tuple[float, dict[str, float]]:
    api = ReplicanteClient(client, settings)
    applied: dict[str, float] = {}

    async def apply(spec: ClusterSpec) -> None:
        await api.apply(spec)
        applied[spec.cluster_id] = time.time()

    started = time.monotonic()
    await bounded(apply, specs, 50)
    return time.monotonic() - started, applied


async def first_views(
    store: SQLiteEventStore, applied: dict[str, float], since: float, timeout: float
) -> tuple[list[float], int]:
    deadline = time.monotonic() + timeout
    while True:
        seen = stored_since(store, "cluster.health_changed", since)
        done = [c for c in applied if c in seen]
        if len(done) == len(applied) or time.monotonic() > deadline:
            delays = [min(e.stored_at for e in seen[c]) - applied[c] for c in done]
            return delays, len(applied) - len(done)
        await asyncio.sleep(0.5)


async def idle(fleet: Fleet, calibration: Sequence[ClusterSpec], window_s: float) -> dict[str, Any]:
    pids = list(fleet.workers.procs)
    rng = random.Random(0)
    sample = rng.sample(fleet.specs, min(HEARTBEAT_SAMPLE, len(fleet.specs)))
    before = {pid: proc_sample(pid) for pid in pids}
    start = time.time()
    started = time.monotonic()
    beats = await heartbeats(fleet.client, [s.cluster_id for s in sample], started + window_s)
    elapsed = time.monotonic() - started
    end = time.time()
    after = {pid: proc_sample(pid) for pid in pids}
    idle_load = load()
    cpu = max((after[p].cpu_s - before[p].cpu_s) / elapsed * 100 for p in pids)
    histories = await bounded(
        partial(chain_events, fleet.client),
        [s.cluster_id for s in [*fleet.specs, *calibration]],
        HISTORY_CONCURRENCY,
    )
    fleet_windows = [within(h, start, end) for h in histories[: len(fleet.specs)]]
    calibration_windows = [within(h, start, end) for h in histories[len(fleet.specs) :]]
    hour = 3600 / (end - start)
    window_rate = sum(map(len, fleet_windows)) / len(fleet_windows) * hour
    returns = sum(
        1
        for w in calibration_windows
        for e in w
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "watch_cluster"
    )
    per_return = sum(map(len, calibration_windows)) / returns if returns else float("nan")
    billed_per_return = (
        sum(1 for w in calibration_windows for e in w if e.event_type in BILLED) / returns
        if returns
        else float("nan")
    )
    returns_per_hour = 3600 / fleet.specs[0].probe.watch_max_s
    billed_window = sum(1 for w in fleet_windows for e in w if e.event_type in BILLED)
    return {
        "idle_worker_cpu_pct": round(cpu, 1),
        "worker_rss_mb": round(max(a.rss_mb for a in after.values()), 1),
        "worker_threads": max(a.threads for a in after.values()),
        "idle_load": idle_load,
        "history_events_per_cluster_hour": round(window_rate + per_return * returns_per_hour, 1),
        "history_events_idle_window_per_cluster_hour": round(window_rate, 1),
        "history_events_per_bounded_return": round(per_return, 1),
        "heartbeats_per_cluster_hour": round(beats, 1),
        "temporal_actions_per_cluster_hour": round(
            billed_window / len(fleet_windows) * hour
            + billed_per_return * returns_per_hour
            + beats,
            1,
        ),
    }


async def fault(
    fleet: Fleet,
    name: str,
    inject: Callable[[int], object],
    recover: Callable[[int], object],
) -> dict[str, Any]:
    ensemble = fleet.ensembles[0]
    member = fleet.follower(ensemble)
    targets = fleet.on(ensemble)
    injected_at = time.time()
    await asyncio.to_thread(inject, member)
    try:
        firsts, missing = await fanout(
            fleet.store, targets, "node.down", f"zk{member}", injected_at, FANOUT_TIMEOUT_S
        )
        fault_load = load()
    finally:
        await asyncio.to_thread(recover, member)
    delays = [e.stored_at - injected_at for e in firsts]
    detected = [e.observed_at - injected_at for e in firsts]
    log(
        f"{name}: zk{member} seen by {len(delays)} of {len(targets)} specs, p50"
        f" {p50(delays):.3f} s, p95 {p95(delays):.3f} s (in the view: p50 {p50(detected):.3f} s,"
        f" p95 {p95(detected):.3f} s); load {fault_load}"
    )
    await fleet.recover(
        ensemble, member, injected_at, [s for s in targets if s.cluster_id not in missing]
    )
    return {
        f"{name}_fanout_p50_s": round(p50(delays), 3),
        f"{name}_fanout_p95_s": round(p95(delays), 3),
        f"{name}_fanout_max_s": round(max(delays, default=float("nan")), 3),
        f"{name}_fanout_missed": len(missing),
        # How much of the delay is the watch's, and how much the view's way to the store.
        f"{name}_detected_p50_s": round(p50(detected), 3),
        f"{name}_detected_p95_s": round(p95(detected), 3),
        f"{name}_load": fault_load,
    }


async def watcher(client: Client, cluster_id: str) -> tuple[str, float] | None:
    """Who runs the monitor's watch, and since when (epoch s); None while none runs."""
    described = await client.get_workflow_handle(workflow_id(cluster_id)).describe()
    for pending in described.raw_description.pending_activities:
        if (
            pending.activity_type.name == "watch_cluster"
            and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ):
            return pending.last_worker_identity, pending.last_started_time.ToMicroseconds() / 1e6
    return None


async def takeover(fleet: Fleet) -> dict[str, Any]:
    who = await bounded(
        partial(watcher, fleet.client), [s.cluster_id for s in fleet.specs], HISTORY_CONCURRENCY
    )
    counts = Counter(w[0] for w in who if w is not None)
    victim_identity, _ = counts.most_common(1)[0]
    victim = next(
        pid for pid in fleet.workers.procs if fleet.workers.identity(pid) == victim_identity
    )
    orphans = [s for s, w in zip(fleet.specs, who, strict=True) if w and w[0] == victim_identity]
    ensemble = fleet.ensembles[0]
    member = fleet.follower(ensemble)
    killed_at = time.time()
    await asyncio.to_thread(fleet.workers.kill, victim)
    # The member dies while the dead worker's clusters are being taken over.
    await asyncio.sleep(1.0)
    member_killed_at = time.time()
    await asyncio.to_thread(ensemble.kill_member, member)
    log(f"takeover: killed worker {victim_identity} ({len(orphans)} clusters), then zk{member}")
    taken: dict[str, float] = {}
    deadline = time.monotonic() + RECOVER_TIMEOUT_S

    async def check(spec: ClusterSpec) -> None:
        running = await watcher(fleet.client, spec.cluster_id)
        if running is None or running[0] == victim_identity or running[1] < killed_at:
            return
        view = await fleet.client.get_workflow_handle(workflow_id(spec.cluster_id)).query(
            ClusterMonitorWorkflow.view
        )
        if view is not None and view.observed_at.timestamp() > killed_at:
            taken[spec.cluster_id] = time.time() - killed_at

    while len(taken) < len(orphans) and time.monotonic() < deadline:
        await bounded(check, [s for s in orphans if s.cluster_id not in taken], HISTORY_CONCURRENCY)
        await asyncio.sleep(0.5)
    targets = fleet.on(ensemble)
    await fanout(
        fleet.store, targets, "node.down", f"zk{member}", member_killed_at, FANOUT_TIMEOUT_S
    )
    # Late duplicates would come from a retried write or a second watch: give them time.
    await asyncio.sleep(2 * INTERVAL_S)
    downs = stored_since(fleet.store, "node.down", member_killed_at, f"zk{member}")
    lost = sum(1 for s in targets if s.cluster_id not in downs)
    duplicated = sum(
        len({e.event_id for e in downs[s.cluster_id]}) - 1 for s in targets if s.cluster_id in downs
    )
    await asyncio.to_thread(ensemble.start_member, member)
    times = list(taken.values())
    log(
        f"takeover: {len(times)} of {len(orphans)} clusters watched again, p95"
        f" {p95(times):.3f} s; zk{member}: {lost} lost, {duplicated} duplicated"
    )
    return {
        "takeover_p95_s": round(p95(times), 3) if len(times) == len(orphans) else None,
        "takeover_lost_events": lost,
        "takeover_duplicate_events": duplicated,
    }


# --- main --------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, clusters: int, home: Path) -> Report:
    began = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        client, server_version = await temporal_engine(stack, args.engine, home)
        ensembles = await start_ensembles(stack, home, [f"fleet{i}" for i in range(args.ensembles)])
        store_path = home / "events.db"
        settings = dataclasses.replace(
            Settings.from_env(),
            temporal_address=client.service_client.config.target_host,
            namespace=client.namespace,
            task_queue=QUEUE,
            home=home / "home",
            store_path=store_path,
        )
        process_env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICANTE_")}
        process_env.update(
            REPLICANTE_TEMPORAL_ADDRESS=settings.temporal_address,
            REPLICANTE_NAMESPACE=settings.namespace,
            REPLICANTE_TASK_QUEUE=QUEUE,
            REPLICANTE_HOME=str(settings.home),
            REPLICANTE_STORE=str(store_path),
            REPLICANTE_JARS=str(jars_dir().parent),
        )
        logs = home / "logs"
        logs.mkdir()
        workers = Workers(process_env, logs)
        stack.callback(workers.stop_all)
        for _ in range(args.workers):
            workers.start()
        await wait_for_workers(client, workers)
        store = SQLiteEventStore(store_path)
        stack.callback(store.close)
        fleet = Fleet(client, store, workers, ensembles, fleet_specs(ensembles, clusters))

        log(f"applying {clusters} specs; load {load()}")
        since = time.time()
        apply_s, applied = await apply_all(settings, client, fleet.specs)
        calibration = calibration_specs(ensembles[-1])
        await apply_all(settings, client, calibration)
        views, missed = await first_views(store, applied, since, args.first_view_timeout)
        log(
            f"applied in {apply_s:.1f} s; first views p95 {p95(views):.1f} s, {missed} missed;"
            f" load {load()}"
        )
        # The first watch returns with the first view; let the second one open its links.
        await asyncio.sleep(2 * INTERVAL_S)
        figures: dict[str, Any] = {
            "apply_s": round(apply_s, 3),
            "first_view_p50_s": round(p50(views), 3),
            "first_view_p95_s": round(p95(views), 3),
            "first_view_missed": missed,
        }
        log(f"idle for {args.idle_s:.0f} s")
        figures |= await idle(fleet, calibration, args.idle_s)
        log(
            f"idle: worker CPU {figures['idle_worker_cpu_pct']}% of a core,"
            f" {figures['worker_rss_mb']} MB, {figures['worker_threads']} threads;"
            f" load {figures['idle_load']}"
        )
        ensemble = ensembles[0]
        figures |= await fault(fleet, "crash", ensemble.kill_member, ensemble.start_member)
        hang = await fault(fleet, "hang", ensemble.pause_member, ensemble.resume_member)
        figures |= {k: v for k, v in hang.items() if not k.endswith(("_max_s", "_load"))}
        if args.workers >= 2:
            figures |= await takeover(fleet)
        else:
            figures |= dict.fromkeys(
                ("takeover_p95_s", "takeover_lost_events", "takeover_duplicate_events")
            )
        for ensemble in ensembles:
            # Stop the members before the workers: a worker's slow shutdown must not leave
            # them running.
            stack.push_async_callback(asyncio.to_thread, ensemble.stop)
    return Report(
        clusters=clusters,
        workers=args.workers,
        engine=args.engine,
        ensembles=args.ensembles,
        interval_s=INTERVAL_S,
        timeout_s=TIMEOUT_S,
        **figures,
        goals=goals_met(figures),
        elapsed_s=round(time.monotonic() - began, 1),
        temporalio_version=importlib.metadata.version("temporalio"),
        temporal_server_version=server_version,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bench/fleet.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clusters", type=int, default=1000, metavar="N")
    parser.add_argument("--workers", type=int, default=1, metavar="W")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help=f"Temporal to run on (default {DEFAULT_ENGINE})",
    )
    parser.add_argument("--ensembles", type=int, default=1, metavar="E")
    parser.add_argument("--idle-s", type=float, default=60.0, metavar="S")
    parser.add_argument("--first-view-timeout", type=float, default=600.0, metavar="S")
    parser.add_argument("--sweep", action="store_true", help=f"N = {SWEEP}, one run each")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    log(f"engine: {args.engine}")

    async def main_async() -> list[Report]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        reports = []
        for clusters in SWEEP if args.sweep else (args.clusters,):
            home = Path(tempfile.mkdtemp(prefix="replicante-fleet-"))
            try:
                reports.append(await bench(args, clusters, home))
            except BaseException:
                log(f"benchmark did not complete; the servers' logs are kept in {home}")
                raise
            shutil.rmtree(home, ignore_errors=True)
        return reports

    try:
        with stdout_to_stderr():
            reports = asyncio.run(main_async())
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(130) from None
    print(table(reports))
    if args.json:
        last = asdict(reports[-1])
        if args.sweep:
            last["sweep"] = {str(r.clusters): asdict(r) for r in reports}
        print(json.dumps(last))


if __name__ == "__main__":
    main()
