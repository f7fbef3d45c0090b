"""A small fleet on every run (issue 14, item 6): 50 specs over the session's ensemble, one
core worker, and a member's SIGKILL stored as `node.down` by every one of them within 2 s.

Each spec holds its own links and runs its own probes, as if the members were its own; they
share the ensemble only because the suite has one. The interval is the default 5 s, so it is
the held links, not a probe's luck, that carry the crash to every spec in time. What a
fleet of 100 to 1000 costs is bench/fleet.py's to say.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, MonitorInput
from store import EventQuery, SQLiteEventStore
from testkit.specs import zk_spec
from worker.core import core_worker
from workflows.monitor import ClusterMonitorWorkflow, workflow_id

FLEET = 50
WITHIN_S = 2.0
START_S = 60.0


def stored(
    store: SQLiteEventStore, type_: str, since: float, node_id: str | None = None
) -> dict[str, float]:
    """Per cluster, when its first `type_` event (of `node_id`) since `since` was stored."""
    first: dict[str, float] = {}
    query = EventQuery(types=(type_,), since=datetime.fromtimestamp(since, UTC), limit=10_000)
    for s in store.query(query):
        if node_id is None or s.event.node_id == node_id:
            at = s.stored_at.timestamp()
            first[s.event.cluster_id] = min(at, first.get(s.event.cluster_id, at))
    return first


async def until_all(
    store: SQLiteEventStore,
    specs: Sequence[ClusterSpec],
    type_: str,
    since: float,
    timeout: float,
    node_id: str | None = None,
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        seen = stored(store, type_, since, node_id)
        if all(s.cluster_id in seen for s in specs) or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.1)


async def watching_since(client: Client, spec: ClusterSpec) -> float | None:
    """When the monitor's running watch started (epoch s); None while none runs."""
    described = await client.get_workflow_handle(workflow_id(spec.cluster_id)).describe()
    for pending in described.raw_description.pending_activities:
        if (
            pending.activity_type.name == "watch_cluster"
            and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ):
            return float(pending.last_started_time.ToMicroseconds() / 1e6)
    return None


async def start_monitors(
    client: Client, specs: Sequence[ClusterSpec], queue: str
) -> list[WorkflowHandle[ClusterMonitorWorkflow, None]]:
    return await asyncio.gather(
        *(
            client.start_workflow(
                ClusterMonitorWorkflow.run,
                MonitorInput(spec=spec),
                id=workflow_id(spec.cluster_id),
                task_queue=queue,
            )
            for spec in specs
        )
    )


async def test_a_members_crash_reaches_every_spec_of_a_fleet_within_2_s(
    temporal_env: WorkflowEnvironment, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> None:
    client = temporal_env.client
    tag = uuid.uuid4().hex[:6]
    specs = [zk_spec(zk_healthy, f"fleet-{tag}-{i:02d}", interval_s=5.0) for i in range(FLEET)]
    queue = f"q-fleet-{tag}"
    store = SQLiteEventStore(tmp_path / "events.db")
    leader = zk_healthy.leader()
    victim = next(n for n in zk_healthy.members if n != leader)
    try:
        async with core_worker(client, queue, store):
            started = time.time()
            handles = await start_monitors(client, specs, queue)
            try:
                first = await until_all(store, specs, "cluster.health_changed", started, START_S)
                assert len(first) == FLEET, f"{FLEET - len(first)} specs saw no first view"
                # The first watch returns with the first view; the next one holds the links.
                deadline = time.monotonic() + START_S
                while True:
                    since = await asyncio.gather(*(watching_since(client, s) for s in specs))
                    if all(
                        at is not None and at > first[s.cluster_id]
                        for s, at in zip(specs, since, strict=True)
                    ):
                        break
                    assert time.monotonic() < deadline, "not every spec's watch came back"
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.0)  # its links connect within milliseconds of it

                killed_at = time.time()
                zk_healthy.kill_member(victim)
                down = await until_all(
                    store, specs, "node.down", killed_at, WITHIN_S + 3, f"zk{victim}"
                )
                late = {
                    s.cluster_id: round(down[s.cluster_id] - killed_at, 3)
                    if s.cluster_id in down
                    else None
                    for s in specs
                    if s.cluster_id not in down or down[s.cluster_id] - killed_at > WITHIN_S
                }
                assert not late, f"{len(late)} of {FLEET} specs late or missing: {late}"
            finally:
                await asyncio.gather(*(h.terminate("test over") for h in handles))
    finally:
        store.close()
        zk_healthy.start_member(victim)


async def test_a_worker_with_no_free_watch_slot_leaves_the_next_watch_to_one_with_room(
    temporal_env: WorkflowEnvironment, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> None:
    """REPLICANTE_MAX_WATCHES=1: the second cluster's watch waits on the watch queue, not in
    the full worker, and a second worker started later takes it."""
    tag = uuid.uuid4().hex[:6]
    specs = [zk_spec(zk_healthy, f"full-{tag}-{i}", interval_s=1.0) for i in range(2)]
    queue = f"q-full-{tag}"
    target = temporal_env.client.service_client.config.target_host

    async def client_of(identity: str) -> Client:
        return await Client.connect(
            target,
            namespace=temporal_env.client.namespace,
            data_converter=temporal_env.client.data_converter,
            identity=identity,
        )

    first_worker, second_worker = await client_of("first"), await client_of("second")
    store = SQLiteEventStore(tmp_path / "events.db")
    try:
        async with core_worker(first_worker, queue, store, max_watches=1):
            handles = await start_monitors(temporal_env.client, specs, queue)
            try:
                seen = await until_all(store, specs[:1], "cluster.health_changed", 0, START_S)
                assert specs[0].cluster_id in seen, "the first cluster was never watched"
                # The slot passes between the two while each first watch returns its first
                # view; after that one cluster holds it and the other's watch waits.
                await asyncio.sleep(3.0)
                watched = await asyncio.gather(*(watch_worker_of(h) for h in handles))
                assert sorted(w or "" for w in watched) == ["", "first"], watched
                async with core_worker(second_worker, queue, store, max_watches=1):
                    deadline = time.monotonic() + START_S
                    while sorted(w or "" for w in watched) != ["first", "second"]:
                        assert time.monotonic() < deadline, f"one watch still waits: {watched}"
                        await asyncio.sleep(0.2)
                        watched = await asyncio.gather(*(watch_worker_of(h) for h in handles))
                    both = await until_all(store, specs, "cluster.health_changed", 0, START_S)
                    assert len(both) == 2, f"a cluster was watched but never seen: {both}"
            finally:
                await asyncio.gather(*(h.terminate("test over") for h in handles))
    finally:
        store.close()


async def watch_worker_of(handle: WorkflowHandle[ClusterMonitorWorkflow, None]) -> str | None:
    """The identity of the worker running the monitor's watch; None while none runs."""
    for pending in (await handle.describe()).raw_description.pending_activities:
        if (
            pending.activity_type.name == "watch_cluster"
            and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ):
            return str(pending.last_worker_identity)
    return None
