"""Core workers and node agents as `python -m worker` processes, and who polls a queue."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.api.enums.v1 import DescribeTaskQueueMode, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from config.settings import REPO_ROOT
from models import watch_task_queue


class Workers:
    """`python -m worker` processes (core workers, or agents with `--agent`); their logs
    in tmp."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, *args: str) -> int:
        log = self.logs / f"worker-{len(self.procs)}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker", *args],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[proc.pid] = proc
        return proc.pid

    @staticmethod
    def identity(pid: int) -> str:
        """The SDK's default worker identity."""
        return f"{pid}@{socket.gethostname()}"

    def kill(self, pid: int) -> None:
        proc = self.procs[pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def tail(self, lines: int = 15) -> str:
        parts = []
        for log in sorted(self.logs.glob("worker-*.log")):
            last = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(last))
        return "\n".join(parts)


@contextmanager
def worker_processes(env: dict[str, str], logs: Path) -> Iterator[Workers]:
    workers = Workers(env, logs)
    try:
        yield workers
    finally:
        workers.stop_all()


async def pollers(client: Client, queue: str) -> list[set[str]]:
    """Identities polling the workflow and the activity queue, on every partition (the
    legacy describe mode reports the root partition's pollers only)."""
    kinds = [TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY]
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            api_mode=DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED,
            task_queue_types=kinds,
            report_pollers=True,
        )
    )
    found: list[set[str]] = [set(), set()]
    for info in response.versions_info.values():
        for i, kind in enumerate(kinds):
            if kind in info.types_info:
                found[i] |= {p.identity for p in info.types_info[kind].pollers}
    return found


async def core_pollers(client: Client, queue: str) -> list[set[str]]:
    """Identities polling the core `queue` for workflow and activity tasks, and its watch
    queue for watches: a core worker polls all three."""
    core, (_, watches) = await asyncio.gather(
        pollers(client, queue), pollers(client, watch_task_queue(queue))
    )
    return [*core, watches]
