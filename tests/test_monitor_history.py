"""The monitor's Temporal history: replay (determinism) and continue-as-new.

Replay: a real monitor against the test ensemble lives through a follower killed and
restarted, a pause and resume, an applied spec update and a rejected one; its history
must replay against the current `ClusterMonitorWorkflow`.

tests/histories/monitor_zookeeper.json is such a history, saved once so that a future
change to the workflow code that breaks determinism for *running* monitors fails the suite
(`test_saved_history_replays`). It was recorded by this module's
`test_live_history_replays` with REPLICANTE_RECORD_HISTORY=1:

    REPLICANTE_RECORD_HISTORY=1 .venv/bin/pytest -q tests/test_monitor_history.py \
        -k test_live_history_replays

Re-record it only on purpose: a workflow change that needs a new recording is a change
that breaks monitors already running in production (use `workflow.patched` instead).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistory,
    WorkflowUpdateFailedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, Event, MonitorInput, MonitorStatus, Role
from store import EventQuery, EventStore, SQLiteEventStore, StoredEvent
from testkit.events import of_type, wait_for_event
from testkit.specs import zk_spec
from tests.helpers import watch_worker
from worker.core import core_worker
from workflows.monitor import ClusterMonitorWorkflow, workflow_id
from workflows.remediation import RemediationWorkflow

SAVED = Path(__file__).parent / "histories" / "monitor_zookeeper.json"
SAVED_WORKFLOW_ID = "monitor/recorded"
RECORD = os.environ.get("REPLICANTE_RECORD_HISTORY") == "1"


class GatedStore(EventStore):
    """The SQLite store, except that a batch holding an armed event type waits for
    `release()`: the test can act while the workflow is inside `record_events`."""

    def __init__(self, inner: SQLiteEventStore) -> None:
        self.inner = inner
        self._armed: str | None = None
        self.held = threading.Event()
        self._release = threading.Event()

    def arm(self, type_: str) -> None:
        self.held.clear()
        self._release.clear()
        self._armed = type_

    def release(self) -> None:
        self._armed = None
        self._release.set()

    def append(self, events: Sequence[Event]) -> int:
        if self._armed is not None and any(e.type == self._armed for e in events):
            self.held.set()
            self._release.wait(20)
        return self.inner.append(events)

    def query(self, query: EventQuery) -> list[StoredEvent]:
        return self.inner.query(query)

    def unpublished(self, limit: int) -> list[Event]:
        return self.inner.unpublished(limit)

    def mark_published(self, event_ids: Sequence[str]) -> int:
        return self.inner.mark_published(event_ids)

    def unpublished_count(self) -> int:
        return self.inner.unpublished_count()

    def close(self) -> None:
        self.inner.close()


class Monitor:
    def __init__(self, client: Client, store: GatedStore, spec: ClusterSpec) -> None:
        self.client, self.store, self.spec = client, store, spec
        self.id = workflow_id(spec.cluster_id)
        self.handle: WorkflowHandle[ClusterMonitorWorkflow, None] = client.get_workflow_handle_for(
            ClusterMonitorWorkflow.run, self.id
        )
        self.mark = 0.0

    def set_mark(self) -> None:
        self.mark = time.time()

    async def until(self, type_: str, node_id: str | None = None, timeout: float = 30) -> Event:
        return await wait_for_event(
            self.store, self.spec.cluster_id, of_type(type_, node_id), timeout, self.mark
        )

    def events(self) -> list[Event]:
        return [s.event for s in self.store.query(EventQuery(cluster_id=self.spec.cluster_id))]

    async def status(self) -> MonitorStatus:
        return await self.handle.query(ClusterMonitorWorkflow.status)

    async def run_id(self) -> str:
        run_id = (await self.handle.describe()).run_id
        assert run_id is not None
        return run_id

    async def wait_for_new_run(self, old: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (new := await self.run_id()) == old:
            assert time.monotonic() < deadline, f"no continue-as-new after run {old}"
            await asyncio.sleep(0.2)
        return new

    async def wait_status(
        self, ok: str, check: Callable[[MonitorStatus], bool], timeout: float = 30
    ) -> MonitorStatus:
        """Poll the status query until `check(status)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status()
            if check(status):
                return status
            assert time.monotonic() < deadline, f"status never {ok}: {status}"
            await asyncio.sleep(0.2)


StartMonitor = Callable[..., Awaitable[Monitor]]


@pytest.fixture
async def start_monitor(
    temporal_env: WorkflowEnvironment, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> AsyncIterator[StartMonitor]:
    """`await start_monitor(changes_per_run=...)` starts one monitor with its own worker."""
    store = GatedStore(SQLiteEventStore(tmp_path / "events.db"))
    spec = zk_spec(zk_healthy, f"h-{uuid.uuid4().hex[:8]}")
    queue = f"q-{spec.cluster_id}"
    monitors: list[Monitor] = []

    async def start(changes_per_run: int = 500) -> Monitor:
        await temporal_env.client.start_workflow(
            ClusterMonitorWorkflow.run,
            MonitorInput(spec=spec, changes_per_run=changes_per_run),
            id=workflow_id(spec.cluster_id),
            task_queue=queue,
        )
        m = Monitor(temporal_env.client, store, spec)
        monitors.append(m)
        await m.until("cluster.health_changed")
        return m

    try:
        async with core_worker(temporal_env.client, queue, store):
            yield start
            for m in monitors:
                store.release()
                if (await m.handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                    await m.handle.terminate("test over")
    finally:
        store.close()


def follower_of(ensemble: ZooKeeperEnsemble) -> int:
    leader = ensemble.leader()
    assert leader is not None
    return next(n for n in ensemble.members if n != leader)


def event_types(history: WorkflowHistory) -> list[int]:
    return [e.event_type for e in history.events]


def replayer(*workflows: type) -> Replayer:
    return Replayer(
        workflows=list(workflows or [ClusterMonitorWorkflow]),
        data_converter=pydantic_data_converter,
    )


# --- replay --------------------------------------------------------------------------------


async def test_live_history_replays(
    start_monitor: StartMonitor, zk_healthy: ZooKeeperEnsemble
) -> None:
    m: Monitor = await start_monitor()
    n = follower_of(zk_healthy)
    m.set_mark()
    zk_healthy.kill_member(n)
    await m.until("node.down", f"zk{n}")
    m.set_mark()
    zk_healthy.start_member(n)
    await m.until("node.up", f"zk{n}", timeout=60)
    await m.wait_status(
        "all serving", lambda s: s.view is not None and all(x.reachable for x in s.view.nodes)
    )

    m.set_mark()
    # The pause, too, must find a watch to cancel, not the write of node.up's events.
    await watch_worker(m.handle)
    await m.handle.signal(ClusterMonitorWorkflow.pause, "maintenance")
    await m.until("monitor.paused")
    await m.handle.signal(ClusterMonitorWorkflow.resume, "done")
    await m.until("monitor.resumed")
    # The update must find a watch to interrupt: one sent while the resumed event is still
    # being written reaches the workflow before the next watch starts.
    await watch_worker(m.handle)

    stricter = m.spec.model_copy(update={"expect": m.spec.expect.model_copy(update={"members": 3})})
    assert await m.handle.execute_update(ClusterMonitorWorkflow.replace_spec, stricter) == 2
    other = m.spec.model_copy(update={"cluster_id": "someone-else"})
    with pytest.raises(WorkflowUpdateFailedError):
        await m.handle.execute_update(ClusterMonitorWorkflow.replace_spec, other)
    await m.until("cluster.spec_replaced")
    await m.handle.terminate("recorded")

    history = await m.handle.fetch_history()
    kinds = event_types(history)
    # What the history should hold, so that the replay below covers it.
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) == 2
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED) == 1
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED) == 1
    assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED) >= 2  # pause, update
    assert kinds.count(EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) >= 3
    assert kinds[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED

    result = await replayer().replay_workflow(history)
    assert result.replay_failure is None

    if RECORD:
        SAVED.parent.mkdir(parents=True, exist_ok=True)
        SAVED.write_text(history.to_json() + "\n")


def saved_history() -> WorkflowHistory:
    assert SAVED.exists(), (
        f"{SAVED} is missing; record it with REPLICANTE_RECORD_HISTORY=1 (see this module's doc)"
    )
    return WorkflowHistory.from_json(SAVED_WORKFLOW_ID, SAVED.read_text())


async def test_saved_history_replays() -> None:
    history = saved_history()
    assert len(history.events) > 30
    result = await replayer().replay_workflow(history)
    assert result.replay_failure is None


PLAYGROUND = sorted(SAVED.parent.glob("playground_*.json"))


@pytest.mark.parametrize("path", PLAYGROUND, ids=[p.stem for p in PLAYGROUND])
async def test_playground_histories_replay(path: Path) -> None:
    """Histories of a real `dev up` playground (tests/histories/README.md): a monitor that
    started remediations, and those remediations, written by earlier code."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer(ClusterMonitorWorkflow, RemediationWorkflow).replay_workflow(history)
    assert result.replay_failure is None


def test_playground_histories_are_there() -> None:
    assert len(PLAYGROUND) == 3, PLAYGROUND


@workflow.defn(name="ClusterMonitorWorkflow")
class ReorderedMonitor(ClusterMonitorWorkflow):
    """The kind of edit the saved history guards against: one timer before the loop."""

    @workflow.run
    async def run(self, input: MonitorInput) -> None:
        await workflow.sleep(timedelta(seconds=1))
        await super().run(input)


async def test_saved_history_catches_a_nondeterministic_change() -> None:
    """The replay test above can fail: a reordered workflow does not replay."""
    altered = Replayer(
        workflows=[ReorderedMonitor],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    with pytest.raises(NondeterminismError):
        await altered.replay_workflow(saved_history())


# --- continue-as-new -----------------------------------------------------------------------


async def test_continue_as_new_keeps_view_pause_and_generation(
    start_monitor: StartMonitor, zk_healthy: ZooKeeperEnsemble
) -> None:
    m: Monitor = await start_monitor(changes_per_run=2)
    first_run = await m.run_id()  # change 1: the first view

    stricter = m.spec.model_copy(update={"expect": m.spec.expect.model_copy(update={"members": 3})})
    assert await m.handle.execute_update(ClusterMonitorWorkflow.replace_spec, stricter) == 2
    assert await m.run_id() == first_run  # a spec update is not a change of the cluster

    # Change 2 (node.down) makes the run continue as new. Hold its events in the store
    # while the pause signal arrives, so the run carries `paused` over: the workflow's
    # write, which has the findings (the watch stores view events only).
    n = follower_of(zk_healthy)
    m.store.arm("finding.opened")
    m.set_mark()
    zk_healthy.kill_member(n)
    assert await asyncio.to_thread(m.store.held.wait, 30), "the workflow never wrote node.down"
    await m.handle.signal(ClusterMonitorWorkflow.pause, "maintenance")
    await m.wait_status("paused", lambda s: s.paused)
    m.store.release()

    second_run = await m.wait_for_new_run(first_run)
    old = await m.client.get_workflow_handle(m.id, run_id=first_run).describe()
    assert old.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    status = await m.status()
    assert status.paused
    assert status.spec_generation == 2
    assert status.view is not None
    assert [(x.node_id, x.reachable) for x in status.view.nodes] == [
        (f"zk{i}", i != n) for i in zk_healthy.members
    ]
    assert status.health == "degraded"
    assert sorted(f.key for f in status.findings) == [
        f"members_missing/{m.spec.cluster_id}",
        f"node_down/zk{n}",
    ]
    assert status.last_change_at == status.view.observed_at
    started = (await m.client.get_workflow_handle(m.id, run_id=second_run).fetch_history()).events[
        0
    ]
    attrs = started.workflow_execution_started_event_attributes
    assert attrs.continued_execution_run_id == first_run

    # Paused in the new run, too: no watch runs, so nothing is probed and nothing changes.
    await m.until("monitor.paused")
    await asyncio.sleep(2)
    description = await m.handle.describe()
    assert description.run_id == second_run
    assert list(description.raw_description.pending_activities) == []

    # Two more changes in the second run: the chain grows to three runs.
    m.set_mark()
    await m.handle.signal(ClusterMonitorWorkflow.resume, "done")
    await m.until("monitor.resumed")
    zk_healthy.start_member(n)
    await m.until("node.up", f"zk{n}", timeout=60)
    await m.wait_status(
        f"zk{n} following",
        lambda s: s.view is not None and s.view.nodes[n - 1].role is Role.FOLLOWER,
        timeout=60,
    )
    m.set_mark()
    zk_healthy.kill_member(n)
    await m.until("node.down", f"zk{n}")
    third_run = await m.wait_for_new_run(second_run)
    status = await m.wait_status("watching", lambda s: not s.paused)
    assert status.spec_generation == 2

    runs = [
        (execution.run_id, execution.status)
        async for execution in m.client.list_workflows(f"WorkflowId = '{m.id}'")
    ]
    assert len(runs) >= 3, runs
    by_run = dict(runs)
    assert by_run[first_run] == WorkflowExecutionStatus.CONTINUED_AS_NEW
    assert by_run[second_run] == WorkflowExecutionStatus.CONTINUED_AS_NEW
    running = [r for r, s in runs if s == WorkflowExecutionStatus.RUNNING]
    assert running == [await m.run_id()]
    assert third_run in by_run

    events = m.events()
    ids = [e.event_id for e in events]
    assert len(ids) == len(set(ids))
    types = [e.type for e in events]
    assert types.count("monitor.paused") == 1
    assert types.count("monitor.resumed") == 1
    assert types.count("cluster.spec_replaced") == 1
    shown = "\n".join(f"{e.event_id} {e.type} {e.node_id}" for e in events)
    assert [e.node_id for e in events if e.type == "node.down"] == [f"zk{n}", f"zk{n}"], shown
    # The view crossed each boundary: no later run started again from "unknown".
    health = [
        (e.payload["from"], e.payload["to"]) for e in events if e.type == "cluster.health_changed"
    ]
    assert health[0] == ("unknown", "healthy")
    assert all(before != "unknown" for before, _ in health[1:]), health
    assert health[-1] == ("healthy", "degraded")
