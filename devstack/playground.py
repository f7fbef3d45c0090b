"""`scripts/dev-up` and `scripts/stack down` (`python -m devstack up|down`): the whole local
stack for a new user, one command each."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import sys
from pathlib import Path

import yaml

from client import doctor
from client.api import ReplicanteClient
from config.settings import REPO_ROOT, Settings
from devstack import processes
from devstack.engine import ProductionEngine
from devstack.kafka import KafkaCluster
from devstack.temporal import TemporalDevServer
from devstack.zookeeper import ZooKeeperEnsemble
from models import agent_task_queue, load_spec
from worker.agent import AgentFiles

PLAYGROUND_SPECS = (
    REPO_ROOT / "playground" / "zookeeper.yaml",
    REPO_ROOT / "playground" / "kafka.yaml",
)
# A topic with some partitions, so the Kafka playground shows leaders and ISRs to watch.
PLAYGROUND_TOPIC = "playground.orders"
WORKER_MARKER = "-m worker"
# With codec keys set, the UI decodes through `replicante codec-server` there.
CODEC_LISTEN = "127.0.0.1:8081"
CODEC_MARKER = "codec-server --listen"
READY_WITHIN_S = 60.0
"""The core worker and the agents need seconds to poll, each monitor a first probe and the
Kafka playground a leader per partition; more than this, something is wrong."""
# One node agent per playground member, named as playground/*.yaml name the nodes, each
# serving its spec's cluster and controlling its member through `python -m devstack SERVICE
# ACTION N`.
PLAYGROUND_AGENTS = {
    **{f"zk{n}": ("zookeeper", n) for n in (1, 2, 3)},
    **{f"kafka{n}": ("kafka", n) for n in (1, 2, 3)},
}


def _encrypted(settings: Settings) -> bool:
    return settings.codec_keys_file is not None or settings.codec_key is not None


def _temporal(settings: Settings) -> TemporalDevServer:
    ip, port = settings.temporal_address.rsplit(":", 1)
    codec = ["--ui-codec-endpoint", f"http://{CODEC_LISTEN}"] if _encrypted(settings) else []
    return TemporalDevServer(
        settings.home, ip=ip, port=int(port), ui_port=int(port) + 1000, extra_args=codec
    )


class AddressTaken(Exception):
    """The other Temporal of this home (dev server or production engine) runs there."""


def _engine(settings: Settings) -> ProductionEngine:
    ip, port = settings.temporal_address.rsplit(":", 1)
    return ProductionEngine(settings.home, ip=ip, port=int(port), namespace=settings.namespace)


async def _start_temporal(settings: Settings, engine: str) -> str | None:
    """The dev server, or the production-shape engine, at the settings' address; its UI's
    URL (the engine has none: docker-compose.yml runs temporalio/ui beside its server)."""
    dev, production = _temporal(settings), _engine(settings)
    if engine == "production":
        if dev.running():
            raise AddressTaken(f"the dev server runs at {dev.address}: `scripts/stack down` first")
        print(
            f"temporal server      {production.address} on postgresql"
            f" {production.postgresql.address}  (log {production.server.log_file})",
            flush=True,
        )
        await asyncio.to_thread(production.up)
        return None
    if production.server.pid() is not None:
        raise AddressTaken(
            f"the production engine runs at {production.address}: `scripts/stack down` first"
        )
    print(f"temporal dev server  {dev.address}  (log {dev.log_file})", flush=True)
    await asyncio.to_thread(dev.start)
    return dev.ui_url


def _codec_files(settings: Settings) -> tuple[Path, Path, Path]:
    """The codec server's tokens file, pid file and log."""
    folder = settings.home / "codec-server"
    return folder / "tokens", folder / "codec-server.pid", folder / "codec-server.log"


def _start_codec_server(settings: Settings, ui_url: str) -> tuple[int, Path]:
    """`replicante codec-server` for the UI, with a tokens file made on first use."""
    tokens, pid_file, log_file = _codec_files(settings)
    if not tokens.exists():
        tokens.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"{secrets.token_urlsafe(32)}\n")
    pid = processes.read_pid(pid_file, CODEC_MARKER)
    if pid is None:
        env = {**os.environ, "REPLICANTE_CODEC_SERVER_TOKENS": str(tokens)}
        cli = "from client.cli import entrypoint; entrypoint()"
        argv = ["-c", cli, "codec-server", "--listen", CODEC_LISTEN]
        argv += ["--allow-origin", ui_url]
        pid = processes.spawn(
            [sys.executable, *argv], log_file=log_file, pid_file=pid_file, cwd=REPO_ROOT, env=env
        )
    return pid, tokens


def _playground(settings: Settings) -> ZooKeeperEnsemble:
    return ZooKeeperEnsemble(settings.home, "playground")


def _kafka_playground(settings: Settings) -> KafkaCluster:
    return KafkaCluster(settings.home, "playground")


def _worker_files(settings: Settings) -> tuple[Path, Path]:
    return settings.home / "worker" / "worker.pid", settings.home / "worker" / "worker.log"


def _with_stream(settings: Settings, kafka: KafkaCluster) -> Settings:
    """The playground streams its events to the Kafka playground, unless the operator
    named another stream."""
    if settings.events_kafka is not None:
        return settings
    return dataclasses.replace(settings, events_kafka=kafka.bootstrap)


def _start_worker(settings: Settings) -> int:
    pid_file, log_file = _worker_files(settings)
    return _spawn_worker(settings, [], pid_file, log_file, WORKER_MARKER)


def _agent_marker(node_id: str) -> str:
    return f"--agent {node_id} "


def _start_agent(settings: Settings, cluster_id: str, node_id: str, service: str, n: int) -> int:
    """Write the agent's config (every dev up: the python and home may have moved), then
    start it unless it runs."""
    files = AgentFiles.of(settings.home, node_id)
    command = [sys.executable, "-m", "devstack", service]
    config = {
        "cluster_id": cluster_id,
        "node_id": node_id,
        "actions": {
            action: [*command, action, str(n), "--name", "playground"]
            for action in ("start", "stop", "restart", "status")
        },
        "instance": [*command, "pid", str(n), "--name", "playground"],
        "timeout_s": 120,
        "cwd": str(REPO_ROOT),
    }
    files.config.parent.mkdir(parents=True, exist_ok=True)
    files.config.write_text(yaml.safe_dump(config, sort_keys=False))
    # The trailing --config keeps the marker from matching a longer node id's agent.
    argv = ["--agent", node_id, "--config", str(files.config)]
    return _spawn_worker(settings, argv, files.pid, files.log, _agent_marker(node_id))


def _spawn_worker(
    settings: Settings, args: list[str], pid_file: Path, log_file: Path, marker: str
) -> int:
    """`python -m worker ARGS` with the stack's settings, unless it already runs."""
    pid = processes.read_pid(pid_file, marker)
    if pid is not None:
        return pid
    env = dict(os.environ)
    env.update(
        REPLICANTE_HOME=str(settings.home),
        REPLICANTE_TEMPORAL_ADDRESS=settings.temporal_address,
        REPLICANTE_NAMESPACE=settings.namespace,
        REPLICANTE_TASK_QUEUE=settings.task_queue,
        REPLICANTE_STORE=str(settings.store_path),
        REPLICANTE_EVENTS_KAFKA=settings.events_kafka or "",
        REPLICANTE_EVENTS_TOPIC=settings.events_topic,
    )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    return processes.spawn(
        [sys.executable, "-m", "worker", *args],
        log_file=log_file,
        pid_file=pid_file,
        cwd=REPO_ROOT,
        env=env,
    )


async def up(settings: Settings, engine: str = "dev") -> int:
    """The playground on Temporal's dev server (`engine="dev"`) or on the production-shape
    engine (`"production"`)."""
    specs = [load_spec(path) for path in PLAYGROUND_SPECS]
    ui_url = await _start_temporal(settings, engine)
    ensemble, kafka = _playground(settings), _kafka_playground(settings)
    print(f"zookeeper playground {', '.join(ensemble.addresses)}", flush=True)
    print(f"kafka playground     {kafka.bootstrap}", flush=True)
    # Both JVM clusters start at once; each takes some seconds to elect.
    await asyncio.gather(asyncio.to_thread(ensemble.start), asyncio.to_thread(kafka.start))
    await asyncio.gather(
        asyncio.to_thread(ensemble.wait_ready, 60.0), asyncio.to_thread(kafka.wait_ready, 90.0)
    )
    await asyncio.to_thread(kafka.create_topic, PLAYGROUND_TOPIC, 6, 3)
    settings = _with_stream(settings, kafka)
    pid = _start_worker(settings)
    print(f"core worker          pid {pid}  (log {_worker_files(settings)[1]})", flush=True)
    print(f"event stream         topic {settings.events_topic} at {settings.events_kafka}")
    if _encrypted(settings) and ui_url is not None:
        pid, tokens = _start_codec_server(settings, ui_url)
        print(f"codec server         http://{CODEC_LISTEN} pid {pid}  (tokens {tokens})")
        print(f"  to decode in the UI open http://{CODEC_LISTEN}/login?token=$(cat {tokens})")
        print(
            "  and in the UI's Codec Server settings choose your browser's setting, endpoint"
            f" http://{CODEC_LISTEN}, with cross-origin credentials",
            flush=True,
        )
    for spec in specs:
        for node in spec.nodes:
            service, n = PLAYGROUND_AGENTS[node.agent_id]
            pid = _start_agent(settings, spec.cluster_id, node.agent_id, service, n)
            queue = agent_task_queue(spec.cluster_id, node.agent_id)
            print(f"node agent {node.agent_id:<9} pid {pid}  (queue {queue})", flush=True)
    api = await ReplicanteClient.connect(settings)
    for spec in specs:
        result = await api.apply(spec)
        print(
            f"watching cluster     {result.cluster_id} (spec generation {result.spec_generation})"
        )
    print(f"waiting up to {READY_WITHIN_S:g} s for `replicante doctor` to pass", flush=True)
    problems = await doctor.problems_after(settings, READY_WITHIN_S)
    for check in problems:
        print(doctor.line(check))
    if problems:
        print(
            f"the stack is up, but doctor still finds {len(problems)} problem(s) after"
            f" {READY_WITHIN_S:g} s: fix them as above, or `scripts/stack down`"
        )
        return 1
    ui = (
        "none on the production engine (`scripts/dev-up` has the dev server's)"
        if ui_url is None
        else f"{ui_url}/namespaces/{settings.namespace}/workflows"
    )
    print(
        f"""
Temporal UI: {ui}

Try:
  replicante status playground
  replicante status playground-kafka
  scripts/stack zookeeper kill 2          # SIGKILL member zk2
  scripts/stack kafka kill 3              # SIGKILL broker kafka3
  replicante events playground --since 10m
  REPLICANTE_EVENTS_KAFKA={settings.events_kafka} replicante events --follow
  scripts/stack zookeeper restart 2; scripts/stack kafka restart 3
  replicante pause playground --reason "maintenance"; replicante resume playground
  scripts/stack down                      # stop everything

(`replicante` lives in .venv/bin: `source .venv/bin/activate` first.)"""
    )
    return 0


async def down(settings: Settings) -> int:
    pid_file, _ = _worker_files(settings)
    if processes.stop_recorded(pid_file, WORKER_MARKER) is not None:
        print("core worker stopped")
    stopped = [
        node_id
        for node_id in PLAYGROUND_AGENTS
        if processes.stop_recorded(
            AgentFiles.of(settings.home, node_id).pid, _agent_marker(node_id)
        )
        is not None
    ]
    if stopped:
        print(f"node agents stopped: {', '.join(stopped)}")
    if processes.stop_recorded(_codec_files(settings)[1], CODEC_MARKER) is not None:
        print("codec server stopped")
    await asyncio.gather(
        asyncio.to_thread(_playground(settings).stop),
        asyncio.to_thread(_kafka_playground(settings).stop),
    )
    print("zookeeper and kafka playgrounds stopped")
    await asyncio.to_thread(_temporal(settings).stop)
    print("temporal dev server stopped (its history stays in the SQLite file)")
    await asyncio.to_thread(_engine(settings).down)
    print("production engine stopped (its history stays in PostgreSQL)")
    return 0
