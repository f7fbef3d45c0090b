"""Shared test helpers: specs for the test clusters, monitors under test, waiting on
stored events, and worker processes."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle

from activities.stream import KafkaPublisher
from client.cli import main
from config.stream import StreamSettings
from devstack.home import jars_dir
from models import ClusterSpec, Event, MonitorInput
from store import EventStore, SQLiteEventStore
from testkit.events import of_type, wait_for_event
from worker.core import core_worker
from workflows.monitor import ClusterMonitorWorkflow, workflow_id


class Monitor:
    """One monitor workflow under test, and the store its worker writes events to."""

    def __init__(self, client: Client, store: EventStore, spec: ClusterSpec) -> None:
        self.client, self.store, self.spec = client, store, spec
        self.handle = client.get_workflow_handle_for(
            ClusterMonitorWorkflow.run, workflow_id(spec.cluster_id)
        )

    async def until(self, type_: str, node_id: str | None = None, timeout: float = 30.0) -> Event:
        return await self.first(of_type(type_, node_id), timeout)

    async def first(self, match: Callable[[Event], bool], timeout: float = 30.0) -> Event:
        """The first event stored since the mark that matches."""
        return await wait_for_event(self.store, self.spec.cluster_id, match, timeout, self.mark)

    def set_mark(self) -> None:
        """Only events stored from now on count for `until`."""
        self.mark = time.time()

    mark = 0.0


async def start_monitor(
    client: Client, store: EventStore, spec: ClusterSpec, task_queue: str
) -> Monitor:
    """Start the cluster's monitor on `task_queue` and wait for its first view's event."""
    await client.start_workflow(
        ClusterMonitorWorkflow.run,
        MonitorInput(spec=spec),
        id=workflow_id(spec.cluster_id),
        task_queue=task_queue,
    )
    monitor = Monitor(client, store, spec)
    await monitor.until("cluster.health_changed")
    return monitor


@asynccontextmanager
async def monitoring(client: Client, spec: ClusterSpec, home: Path) -> AsyncIterator[Monitor]:
    """The cluster's monitor on a worker and task queue of its own, storing events in an
    SQLite file in `home`; terminated at the end."""
    store = SQLiteEventStore(home / "events.db")
    queue = f"q-{spec.cluster_id}"
    try:
        async with core_worker(client, queue, store):
            monitor = await start_monitor(client, store, spec, queue)
            yield monitor
            await monitor.handle.terminate("test over")
    finally:
        store.close()


class Changes:
    """Records the moments a held link's on_change was called (from the link's threads)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._arrived = threading.Condition()

    def __call__(self) -> None:
        with self._arrived:
            self.times.append(time.monotonic())
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.times) >= count, timeout)

    def first_after(self, moment: float, timeout: float) -> float | None:
        """Seconds from `moment` to the first change after it, waiting up to `timeout`."""
        with self._arrived:
            self._arrived.wait_for(lambda: any(t > moment for t in self.times), timeout)
            later = [t for t in self.times if t > moment]
        return min(later) - moment if later else None


def closed_port_address() -> str:
    """127.0.0.1 and a port nothing listens on (a dead server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def watch_worker(handle: WorkflowHandle[ClusterMonitorWorkflow, None]) -> str:
    """Identity ("pid@host") of the worker running the pending watch activity.

    A watch the workflow cancelled (a pause) stays pending until its worker hears of the
    cancel at its next heartbeat, beside the watch that replaced it: that one is skipped.
    """
    deadline = time.monotonic() + 15
    while True:
        description = await handle.describe()
        watches = [
            a
            for a in description.raw_description.pending_activities
            if a.activity_type.name == "watch_cluster"
            and a.last_worker_identity
            and a.state != PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED
        ]
        if watches:
            assert len(watches) == 1, watches
            return watches[0].last_worker_identity
        assert time.monotonic() < deadline, "no watch activity started"
        await asyncio.sleep(0.1)


def publish(stream: StreamSettings, events: list[Event]) -> None:
    """Publish as the relay does (creating the topic if needed), without marking a store."""
    publisher = KafkaPublisher(stream)
    try:
        publisher.ensure_topic()
        publisher.publish(events)
    finally:
        publisher.close()


@dataclass
class Run:
    code: int
    out: str
    err: str


def point_cli_at(monkeypatch: pytest.MonkeyPatch, client: Client, queue: str, store: Path) -> None:
    """The environment the CLI reads its settings from: this Temporal server, the task
    queue of the test's worker, its event store. (Not REPLICANTE_HOME: the agents' start
    commands, run with this environment, find the ZooKeeper jars there.)"""
    monkeypatch.setenv("REPLICANTE_TEMPORAL_ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("REPLICANTE_NAMESPACE", client.namespace)
    monkeypatch.setenv("REPLICANTE_TASK_QUEUE", queue)
    monkeypatch.setenv("REPLICANTE_STORE", str(store))


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    """`replicante ARGV` through the CLI's `main`, in a thread: its `asyncio.run` cannot nest
    in the session loop the async fixtures and in-process workers use."""
    capsys.readouterr()  # drop whatever came before
    try:
        code = await asyncio.to_thread(main, list(argv))
    except SystemExit as exit:  # argparse refusing the command line
        code = exit.code if isinstance(exit.code, int) else 2
    out, err = capsys.readouterr()
    return Run(code, out, err)


def process_env(client: Client, tmp_path: Path, **extra: str) -> dict[str, str]:
    """What a `python -m worker` or CLI process of a test reads: this Temporal server, its
    own home and store, the ZooKeeper jars (an agent's start command needs them), and no log
    setting from the caller's environment; `extra` on top (a task queue, a secret, ...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICANTE_LOG_")}
    env.update(
        REPLICANTE_TEMPORAL_ADDRESS=client.service_client.config.target_host,
        REPLICANTE_NAMESPACE=client.namespace,
        REPLICANTE_HOME=str(tmp_path / "home"),
        REPLICANTE_STORE=str(tmp_path / "events.db"),
        REPLICANTE_JARS=str(jars_dir().parent),
        **extra,
    )
    return env
