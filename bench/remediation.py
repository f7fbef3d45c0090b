"""How long a SIGKILLed ZooKeeper member takes to come back by itself, and whether SIGKILLs
of the processes a remediation runs on change what it does.

    .venv/bin/python bench/remediation.py [--runs N] [--kill-runs N] [--json]

Starts everything it needs in a temporary home and stops it all at the end, also on
failure, Ctrl-C or SIGTERM: a Temporal dev server, a 3-member ensemble on a free test slot,
and, as processes of their own (tests/durability.py), the core worker and one node agent
per member whose commands start and stop the real member and count what they did.

Heal runs (--runs, default 12): a cluster monitor (1 s poll, held connections) whose spec
says `remediation: {restart_dead_member: auto}` and `remediate.blocking_s: 1`, so that one
run's remediation holds the next back only for a second (0 would let the monitor ask for
the same finding again while the remediation that just told it of its end is still open:
the start is refused as a duplicate and the monitor waits forever for an end already
told). Once the ensemble is whole, the monitor's view says so, no remediation runs and the
block is over, a random member is SIGKILLed at a random moment within the poll interval.
Healed is the monitor's `cluster.health_changed` to healthy stored: what an operator sees.
Its parts, from the same run:

- detection:      kill -> `node.down` stored
- orchestration:  `node.down` stored -> the remediation's `step_started` of start-zkN
                  stored (the monitor starts it; it probes, plans, records its verdict)
- restart:        that `step_started` -> the agent's command started the member
- rejoin:         the member started -> `cluster.health_changed` to healthy stored

Goal: heal p95 <= detection p95 + restart p95 + rejoin p95 + 2 s.

Kill runs (--kill-runs, default 1, with the monitor stopped): rolling restarts with the
core worker SIGKILLed at 12 positions, and with agents SIGKILLed at 6 (tests/durability.py
CORE_KILLS and AGENT_KILLS). `duplicate_effects` counts member stops and starts beyond one
each per restart; `lost_remediations` those that did not heal, left a step undone, or
reported a restart done that never happened. Goal: 0 and 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: sys.path[0] is bench/, where bench/kafka.py would stand in for
    # kafka-python's `kafka` package. The imports below need the repo root instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from temporalio.client import WorkflowHandle

from activities.zookeeper.adapter import ZooKeeperAdapter
from bench.common import (
    CORE_QUEUE,
    RECOVER_TIMEOUT_S,
    latency_rows,
    log,
    p50,
    p95,
    start_monitor,
    stdout_to_stderr,
    stop_monitor,
    temporal,
    temporal_server_version,
    verdict,
    watch_started_at,
)
from bench.detection import whole
from devstack.zookeeper import ZooKeeperEnsemble, claim_ensemble
from models import Event, Health, Policy
from models.spec import RemediationSettings
from store import EventQuery
from testkit.durability import CORE_KILLS, Run, Stage, open_stage
from workflows.monitor import ClusterMonitorWorkflow

HEAL_TIMEOUT_S = 90.0
GOAL_SLACK_S = 2.0
START_TIMEOUT_S = 60.0
POLL_S = 0.02
BLOCKING_S = 1.0

PARTS = ("detection", "orchestration", "restart", "rejoin")


@dataclass(frozen=True)
class Heal:
    """One member's SIGKILL and its way back, as epoch seconds."""

    node_id: str
    killed_at: float
    detected_at: float
    step_started_at: float
    started_at: float
    """When the agent's command had started the member again."""
    healthy_at: float

    @property
    def heal(self) -> float:
        return self.healthy_at - self.killed_at

    def parts(self) -> dict[str, float]:
        points = (
            self.killed_at,
            self.detected_at,
            self.step_started_at,
            self.started_at,
            self.healthy_at,
        )
        return {
            part: end - start
            for part, start, end in zip(PARTS, points[:-1], points[1:], strict=True)
        }


@dataclass(frozen=True)
class Report:
    heal_p50_s: float
    heal_p95_s: float
    parts_p50_s: dict[str, float]
    parts_p95_s: dict[str, float]
    goal_heal_p95_s: float
    """detection + restart + rejoin p95s, plus GOAL_SLACK_S."""
    runs: int
    missed: int
    """Kills the cluster did not heal from within HEAL_TIMEOUT_S: in no figure."""
    slowest: str
    duplicate_effects: int
    lost_remediations: int
    kill_runs: int
    kill_positions: int
    kills_where: list[str]
    """Where each kill of the kill runs landed."""
    goals: dict[str, bool]
    elapsed_s: float
    temporalio_version: str
    temporal_server_version: str
    zookeeper_version: str


# --- heal runs -------------------------------------------------------------------------------


async def settle(stage: Stage, monitor: WorkflowHandle[ClusterMonitorWorkflow, None]) -> None:
    """Until the ensemble is whole, the monitor sees it so with no remediation running, and
    its next watch runs: a kill earlier would time the end of the last run."""
    await asyncio.to_thread(stage.ensemble.wait_ready, RECOVER_TIMEOUT_S)
    deadline = time.monotonic() + RECOVER_TIMEOUT_S
    while time.monotonic() < deadline:
        status = await monitor.query(ClusterMonitorWorkflow.status)
        calm = status.health is Health.HEALTHY and status.remediating is None
        if calm and whole(status.view) and await watch_started_at(monitor) is not None:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"monitor {monitor.id} did not settle")


async def first_stored(
    stage: Stage, wanted: dict[str, Callable[[Event], bool]], after: float
) -> dict[str, float]:
    """When the first event stored after `after` that matches each of `wanted` was
    stored; those missing after HEAL_TIMEOUT_S are left out."""
    found: dict[str, float] = {}
    deadline = time.monotonic() + HEAL_TIMEOUT_S
    while len(found) < len(wanted) and time.monotonic() < deadline:
        # `since` filters on when an event happened, which is after the kill for all wanted.
        query = EventQuery(
            cluster_id=stage.spec.cluster_id, since=datetime.fromtimestamp(after, UTC)
        )
        for stored in stage.store.query(query):
            for name, match in wanted.items():
                if (
                    name not in found
                    and stored.stored_at.timestamp() >= after
                    and match(stored.event)
                ):
                    found[name] = stored.stored_at.timestamp()
        await asyncio.sleep(POLL_S)
    return found


async def heal_once(
    stage: Stage, monitor: WorkflowHandle[ClusterMonitorWorkflow, None], rng: random.Random
) -> Heal | None:
    await settle(stage, monitor)
    # The member killed may be the last one healed: its finding must not be blocked.
    await asyncio.sleep(BLOCKING_S)
    n = rng.choice(list(stage.ensemble.members))
    node_id = f"zk{n}"
    await asyncio.sleep(rng.uniform(0, stage.spec.probe.interval_s))
    killed_at = time.time()
    await asyncio.to_thread(stage.ensemble.kill_member, n)
    found = await first_stored(
        stage,
        {
            "down": lambda e: e.type == "node.down" and e.node_id == node_id,
            "step": lambda e: (
                e.type == "remediation.step_started" and e.payload["step"] == f"start-{node_id}"
            ),
            "healthy": lambda e: (
                e.type == "cluster.health_changed" and e.payload["to"] == Health.HEALTHY.value
            ),
        },
        killed_at,
    )
    starts = [e.at for e in stage.effects() if (e.kind, e.member) == ("start", n)]
    if len(found) < 3 or not starts or starts[-1] < killed_at:
        log(f"  {node_id}: not healed within {HEAL_TIMEOUT_S:.0f} s (saw {sorted(found)})")
        return None
    return Heal(node_id, killed_at, found["down"], found["step"], starts[-1], found["healthy"])


async def heal_runs(stage: Stage, runs: int, rng: random.Random) -> list[Heal | None]:
    spec = stage.spec.model_copy(
        update={
            "remediation": {"restart_dead_member": Policy.AUTO},
            "remediate": RemediationSettings(blocking_s=BLOCKING_S),
        }
    )
    monitor = await start_monitor(stage.client, spec)
    heals: list[Heal | None] = []
    try:
        for i in range(runs):
            heal = await heal_once(stage, monitor, rng)
            heals.append(heal)
            if heal is not None:
                log(f"  heal {i + 1}/{runs}: {summary(heal)}")
        await settle(stage, monitor)
    finally:
        await stop_monitor(monitor)
    return heals


# --- kill runs -------------------------------------------------------------------------------


async def kill_runs(stage: Stage, count: int) -> tuple[list[Run], int]:
    """Rolling restarts under CORE_KILLS and under AGENT_KILLS, `count` of each; and how
    many did not finish within the harness's timeout (lost as well)."""
    runs: list[Run] = []
    timed_out = 0
    kinds: list[tuple[str, Callable[[], Awaitable[Run]]]] = [
        ("core worker", functools.partial(stage.rolling_restart, CORE_KILLS)),
        ("agents", stage.rolling_restart_killing_agents),
    ]
    for i in range(count):
        for name, rolling in kinds:
            await asyncio.to_thread(stage.ensemble.wait_ready, RECOVER_TIMEOUT_S)
            try:
                run = await rolling()
            except TimeoutError:
                timed_out += 1
                log(f"  kill run {i + 1}/{count}, {name}: did not finish")
                continue
            runs.append(run)
            log(
                f"  kill run {i + 1}/{count}, {name} killed {len(run.hits)} times:"
                f" {run.status.outcome}, {run.elapsed_s:.0f} s, duplicate effects"
                f" {run.duplicate_effects()}, lost {run.lost()}"
            )
    return runs, timed_out


# --- report ----------------------------------------------------------------------------------


def report(
    heals: Sequence[Heal | None],
    runs: Sequence[Run],
    timed_out: int,
    zk_version: str,
    started: float,
) -> Report:
    done = [h for h in heals if h is not None]
    times = [h.heal for h in done]
    parts = {part: [h.parts()[part] for h in done] for part in PARTS}
    parts95 = {part: round(p95(values), 3) for part, values in parts.items()}
    goal = parts95["detection"] + parts95["restart"] + parts95["rejoin"] + GOAL_SLACK_S
    missed = len(heals) - len(done)
    duplicates = sum(run.duplicate_effects() for run in runs)
    lost = sum(run.lost() for run in runs) + timed_out
    worst = max(done, key=lambda h: h.heal, default=None)
    return Report(
        heal_p50_s=round(p50(times), 3),
        heal_p95_s=round(p95(times), 3),
        parts_p50_s={part: round(p50(values), 3) for part, values in parts.items()},
        parts_p95_s=parts95,
        goal_heal_p95_s=round(goal, 3),
        runs=len(heals),
        missed=missed,
        slowest="" if worst is None else summary(worst),
        duplicate_effects=duplicates,
        lost_remediations=lost,
        kill_runs=len(runs) + timed_out,
        kill_positions=sum(len(run.hits) for run in runs),
        kills_where=[f"{h.position} -> {h.landed}" for run in runs for h in run.hits],
        goals={
            "heal_p95": p95(times) <= goal and not missed,
            # No kill run proves nothing.
            "duplicate_effects": bool(runs) and duplicates == 0,
            "lost_remediations": bool(runs) and lost == 0,
        },
        elapsed_s=round(time.monotonic() - started, 1),
        temporalio_version=importlib.metadata.version("temporalio"),
        temporal_server_version=temporal_server_version(),
        zookeeper_version=zk_version,
    )


def summary(heal: Heal) -> str:
    parts = ", ".join(f"{part} {seconds:.3f}" for part, seconds in heal.parts().items())
    return f"{heal.heal:.3f} s, {heal.node_id} ({parts})"


def table(r: Report) -> str:
    rows = [
        *latency_rows(
            f"SIGKILL -> healthy again, auto, n={r.runs - r.missed}",
            r.heal_p50_s,
            r.heal_p95_s,
            r.goal_heal_p95_s,
            r.goals["heal_p95"],
        ),
        *(
            (f"  {part}: p50 / p95", f"{r.parts_p50_s[part]:.3f} / {r.parts_p95_s[part]:.3f} s", "")
            for part in PARTS
        ),
        (
            f"duplicate effects, {r.kill_runs} kill runs, {r.kill_positions} kills",
            str(r.duplicate_effects),
            f"0  {verdict(r.goals['duplicate_effects'])}",
        ),
        (
            "lost remediations",
            str(r.lost_remediations),
            f"0  {verdict(r.goals['lost_remediations'])}",
        ),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [
        f"ZooKeeper {r.zookeeper_version}, temporalio {r.temporalio_version}, "
        f"Temporal {r.temporal_server_version}; ran {r.elapsed_s:.0f} s",
        "",
        f"{'metric':<{width}}  {'value':>17}  goal",
        *(f"{name:<{width}}  {value:>17}  {goal}".rstrip() for name, value, goal in rows),
        "",
        f"goal: heal p95 <= detection + restart + rejoin p95 + {GOAL_SLACK_S:g} s"
        f" = {r.goal_heal_p95_s:.3f} s",
        f"slowest heal: {r.slowest}",
    ]
    if r.missed:
        lines.append(f"NOT HEALED within {HEAL_TIMEOUT_S:.0f} s, not in the figures: {r.missed}")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


async def start_ensemble(stack: contextlib.AsyncExitStack, home: Path) -> ZooKeeperEnsemble:
    ensemble, slot = await asyncio.to_thread(claim_ensemble, home, "bench", "zk-test")
    stack.callback(slot.release)
    stack.push_async_callback(asyncio.to_thread, ensemble.stop)
    ensemble.start()
    took = await asyncio.to_thread(ensemble.wait_ready, START_TIMEOUT_S)
    log(f"ensemble ready in {took:.1f} s on {ensemble.connect_string}")
    return ensemble


async def bench(args: argparse.Namespace, home: Path) -> Report:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = time.monotonic()
    rng = random.Random(args.seed)
    async with contextlib.AsyncExitStack() as stack:
        env = await temporal(stack)
        ensemble = await start_ensemble(stack, home)
        stage = await stack.enter_async_context(
            open_stage(env.client, ensemble, home / "stage", queue=CORE_QUEUE, interval_s=1.0)
        )
        log(f"heal runs: {args.runs} SIGKILLs of a random member, monitor under auto")
        heals = await heal_runs(stage, args.runs, rng)
        view = await ZooKeeperAdapter().probe(stage.spec)
        zk_version = ",".join(sorted({str(n.version) for n in view.nodes}))
        log(f"kill runs: {args.kill_runs} rolling restart(s) under each kill list")
        runs, timed_out = await kill_runs(stage, args.kill_runs)
    return report(heals, runs, timed_out, zk_version, started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bench/remediation.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=12, help="heal runs (default 12)")
    parser.add_argument(
        "--kill-runs", type=int, default=1, help="rolling restarts under each kill list"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--seed", type=int, default=None, help="for the victims and moments")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="replicante-bench-"))
    try:
        with stdout_to_stderr():
            result = asyncio.run(bench(args, home))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log(f"interrupted; the logs are kept in {home}")
        raise SystemExit(130) from None
    except BaseException:
        log(f"benchmark did not complete; the logs are kept in {home}")
        raise
    shutil.rmtree(home, ignore_errors=True)
    print(table(result))
    if args.json:
        print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
