"""`replicante dev up|down`: the whole local stack for a new user, one command each."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from client.api import ReplicanteClient
from devstack import processes
from devstack.temporal import TemporalDevServer
from devstack.zookeeper import ZooKeeperEnsemble
from models import load_spec
from worker.settings import REPO_ROOT, Settings

PLAYGROUND_SPEC = REPO_ROOT / "playground" / "zookeeper.yaml"
WORKER_MARKER = "-m worker"


def _temporal(settings: Settings) -> TemporalDevServer:
    ip, port = settings.temporal_address.rsplit(":", 1)
    return TemporalDevServer(settings.home, ip=ip, port=int(port), ui_port=int(port) + 1000)


def _playground(settings: Settings) -> ZooKeeperEnsemble:
    return ZooKeeperEnsemble(settings.home, "playground")


def _worker_files(settings: Settings) -> tuple[Path, Path]:
    return settings.home / "worker" / "worker.pid", settings.home / "worker" / "worker.log"


def _start_worker(settings: Settings) -> int:
    pid_file, log_file = _worker_files(settings)
    pid = processes.read_pid(pid_file, WORKER_MARKER)
    if pid is not None:
        return pid
    env = dict(os.environ)
    env.update(
        REPLICANTE_HOME=str(settings.home),
        REPLICANTE_TEMPORAL_ADDRESS=settings.temporal_address,
        REPLICANTE_NAMESPACE=settings.namespace,
        REPLICANTE_TASK_QUEUE=settings.task_queue,
        REPLICANTE_STORE=str(settings.store_path),
    )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    return processes.spawn(
        [sys.executable, "-m", "worker"],
        log_file=log_file,
        pid_file=pid_file,
        cwd=REPO_ROOT,
        env=env,
    )


async def up(settings: Settings) -> int:
    spec = load_spec(PLAYGROUND_SPEC)
    temporal = _temporal(settings)
    print(f"temporal dev server  {temporal.address}  (log {temporal.log_file})", flush=True)
    await asyncio.to_thread(temporal.start)
    ensemble = _playground(settings)
    print(f"zookeeper playground {', '.join(ensemble.addresses)}", flush=True)
    await asyncio.to_thread(ensemble.start)
    await asyncio.to_thread(ensemble.wait_ready, 60.0)
    pid = _start_worker(settings)
    print(f"core worker          pid {pid}  (log {_worker_files(settings)[1]})", flush=True)
    api = await ReplicanteClient.connect(settings)
    result = await api.apply(spec)
    print(f"watching cluster     {result.cluster_id} (spec generation {result.spec_generation})")
    print(
        f"""
Temporal UI: {temporal.ui_url}/namespaces/{settings.namespace}/workflows

Try:
  replicante status playground
  scripts/stack zookeeper kill 2          # SIGKILL member zk2
  replicante events playground --since 10m
  scripts/stack zookeeper restart 2
  replicante pause playground --reason "maintenance"; replicante resume playground
  replicante dev down                     # stop everything

(`replicante` lives in .venv/bin: `source .venv/bin/activate` first.)"""
    )
    return 0


async def down(settings: Settings) -> int:
    pid_file, _ = _worker_files(settings)
    if processes.stop_recorded(pid_file, WORKER_MARKER) is not None:
        print("core worker stopped")
    await asyncio.to_thread(_playground(settings).stop)
    print("zookeeper playground stopped")
    await asyncio.to_thread(_temporal(settings).stop)
    print("temporal dev server stopped (its history stays in the SQLite file)")
    return 0
