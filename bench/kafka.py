"""How fast the monitor notices a Kafka broker's death, and what one probe of a cluster with
many partitions costs.

    .venv/bin/python bench/kafka.py [--json]

Starts everything it needs (a Temporal dev server, a 3-broker KRaft cluster of Kafka 4.3.1
on a free test slot in a temporary home, an in-process core worker) and stops it all at
the end, also on failure, Ctrl-C or SIGTERM.

Phases, one SIGKILL at a time of a broker that is not the active controller, each at a
random moment within the probe interval once the cluster is whole (every broker up and in
every ISR) and the monitor's view says so; the broker is restarted after its node.down:

- poll:  1 s interval, 1 s probe timeout, polling alone (hold_connections false).
- crash: 5 s interval, one held connection per broker.

A fault's latency runs from the signal to the `stored_at` of its `node.down` event, split
into stages as bench/common.py says. Detection runs with one topic of 3 partitions.

Then, with the worker stopped, the CPU time of one probe (all threads of this process,
averaged over --cpu-probes) once the cluster holds --topics topics of --partitions
partitions each, replication factor 3: for a spec without `expect.max_lag`, and for one
with it (the probe then also reads every replica's log end offset, for follower lag).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: sys.path[0] is bench/, where this very file would stand in for
    # kafka-python's `kafka` package. The imports below need the repo root instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from activities.kafka.adapter import KafkaAdapter
from bench.common import (
    CORE_QUEUE,
    Figures,
    Phase,
    faults_beside_leader,
    figures,
    log,
    probe_cpu_ms,
    render,
    run_faults,
    running,
    temporal,
)
from bench.common import (
    main as bench_main,
)
from devstack.kafka import KafkaCluster, claim_kafka
from models import ClusterView, Role
from store import SQLiteEventStore
from testkit.kafka import new_topic
from testkit.specs import kafka_spec
from worker.core import core_worker

START_TIMEOUT_S = 120.0
GOAL_DETECTION_P95_S = 2.0
GOAL_CRASH_P95_S = 0.5


def whole(view: ClusterView | None) -> bool:
    return (
        view is not None
        and view.leader is not None
        and all(n.reachable and n.role in (Role.CONTROLLER, Role.BROKER) for n in view.nodes)
        and all(len(s.in_sync) == len(s.replicas) for s in view.shards)
    )


def create_topics(cluster: KafkaCluster, topics: int, partitions: int) -> None:
    with cluster.admin(timeout=120) as admin:
        admin.create_topics(
            {
                f"bench-{i:04d}": {"num_partitions": partitions, "replication_factor": 3}
                for i in range(topics)
            },
            timeout_ms=120_000,
            wait_for_metadata=True,
        )


@dataclass(frozen=True)
class Report(Figures):
    probe_cpu_ms_per_cluster: float
    probe_cpu_ms_per_cluster_with_lag: float
    probe_wall_ms_p50: float
    probe_partitions: int
    kafka_version: str


def table(r: Report) -> str:
    rows = [
        *r.poll_rows(GOAL_DETECTION_P95_S),
        *r.crash_rows(GOAL_CRASH_P95_S),
        (f"probe CPU, {r.probe_partitions} partitions", f"{r.probe_cpu_ms_per_cluster:.1f} ms", ""),
        ("  with follower lag (max_lag set)", f"{r.probe_cpu_ms_per_cluster_with_lag:.1f} ms", ""),
        ("probe wall time, p50", f"{r.probe_wall_ms_p50:.1f} ms", ""),
    ]
    return render(r.title(f"Kafka {r.kafka_version}"), rows, r)


async def bench(args: argparse.Namespace, home: Path) -> Report:
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        env = await temporal(stack)
        cluster, slot = await asyncio.to_thread(claim_kafka, home, "bench")
        stack.callback(slot.release)
        stack.push_async_callback(asyncio.to_thread, cluster.stop)
        cluster.start()
        took = await asyncio.to_thread(cluster.wait_ready, START_TIMEOUT_S)
        log(f"Kafka cluster ready in {took:.1f} s on {cluster.bootstrap}")
        await asyncio.to_thread(new_topic, cluster, 3)
        store = SQLiteEventStore(home / "events.db")
        stack.callback(store.close)
        client, rng = env.client, random.Random(args.seed)
        kills = faults_beside_leader(
            cluster,
            cluster.active_controller,
            "kafka",
            whole,
            cluster.kill_member,
            cluster.start_member,
        )
        phases = (
            Phase("poll", kafka_spec(cluster, "bench-poll", hold_connections=False)),
            Phase("crash", kafka_spec(cluster, "bench-crash", interval_s=5.0)),
        )
        async with running(core_worker(client, CORE_QUEUE, store)):
            log(f"poll phase: {args.faults} SIGKILLs of a broker, 1 s interval, no held links")
            await run_faults(client, store, rng, phases[0], args.faults, kills)
            log(f"crash phase: {args.kills} SIGKILLs of a broker, 5 s interval, held links")
            await run_faults(client, store, rng, phases[1], args.kills, kills)

        log(f"creating {args.topics} topics of {args.partitions} partitions (RF 3)")
        await asyncio.to_thread(create_topics, cluster, args.topics, args.partitions)
        cpu_spec = kafka_spec(cluster, "bench-cpu")
        adapter = KafkaAdapter()
        cpu_ms, view = await probe_cpu_ms(adapter, cpu_spec, args.cpu_probes)
        # With a max_lag the probe reads every replica's log end offset too.
        lag_spec = cpu_spec.model_copy(
            update={"expect": cpu_spec.expect.model_copy(update={"max_lag": 1000})}
        )
        lag_cpu_ms, _ = await probe_cpu_ms(adapter, lag_spec, args.cpu_probes)
        walls = []
        for _ in range(args.cpu_probes):
            begun = time.perf_counter()
            await adapter.probe(cpu_spec)
            walls.append((time.perf_counter() - begun) * 1000)
        log(
            f"probe: {cpu_ms:.1f} ms CPU over {len(view.shards)} partitions,"
            f" {lag_cpu_ms:.1f} ms with follower lag"
        )
    poll, crash = phases
    return Report(
        **figures(
            poll,
            crash,
            phases,
            {"detection_p95": GOAL_DETECTION_P95_S, "crash_detection_p95": GOAL_CRASH_P95_S},
            started,
        ),
        probe_cpu_ms_per_cluster=round(cpu_ms, 2),
        probe_cpu_ms_per_cluster_with_lag=round(lag_cpu_ms, 2),
        probe_wall_ms_p50=round(statistics.median(walls), 2),
        probe_partitions=len(view.shards),
        kafka_version=",".join(sorted({str(n.version) for n in view.nodes})),
    )


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topics", type=int, default=100, help="topics for the CPU figure")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    parser.add_argument("--cpu-probes", type=int, default=30, help="probes averaged for CPU")


def main(argv: list[str] | None = None) -> None:
    bench_main("bench/kafka.py", __doc__, bench, table, 12, 12, argv, arguments)


if __name__ == "__main__":
    main()
