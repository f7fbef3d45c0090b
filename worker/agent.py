"""The node agent: a Temporal worker on `node/<cluster_id>/<agent_id>` that runs the host's
service actions (activities/service.py) with the commands of its own config file, for the one
cluster and node that file names."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from activities.service import Ledger, ServiceActivities
from config.settings import Settings
from models import AgentConfig, SpecError, agent_task_queue, load_agent_config
from worker import logs
from worker.connection import connect
from worker.telemetry import Role

log = logging.getLogger("replicante.agent")


@dataclass(frozen=True)
class AgentFiles:
    """Where one agent keeps its things, under $REPLICANTE_HOME/agents/, by its id."""

    config: Path
    ledger: Path
    pid: Path
    log: Path

    @classmethod
    def of(cls, home: Path, agent_id: str) -> AgentFiles:
        base = home / "agents" / agent_id
        return cls(
            config=base.with_suffix(".yaml"),
            ledger=base.with_suffix(".ledger.db"),
            pid=base.with_suffix(".pid"),
            log=base.with_suffix(".log"),
        )


def load_config_for(agent_id: str, path: Path) -> AgentConfig:
    """The config at `path`, which must be the one of agent `agent_id`: an agent started
    with another's file would act on the wrong host's service."""
    config = load_agent_config(path)
    if config.agent_id != agent_id:
        field = "agent" if config.agent else "node_id"
        raise SpecError(
            f"{path}: {field}: {config.agent_id!r}, but this agent was started for {agent_id!r}"
        )
    return config


def queue_of(config: AgentConfig) -> str:
    return agent_task_queue(config.cluster_id, config.agent_id)


def agent_worker(client: Client, config: AgentConfig, ledger: Ledger) -> Worker:
    return Worker(
        client,
        task_queue=queue_of(config),
        activities=[ServiceActivities(config, ledger).service_action],
        interceptors=[logs.ActivityContext(node=config.node_id)],
        # Status checks beside the one state-changing action the agent runs at a time.
        max_concurrent_activities=8,
    )


async def run_agent(settings: Settings, agent_id: str, config_path: Path | None = None) -> None:
    """Until SIGINT/SIGTERM. Raises SpecError for a bad config before connecting, and
    LedgerBusyError when another agent of the same id runs."""
    logs.configure(settings)
    files = AgentFiles.of(settings.home, agent_id)
    config = load_config_for(agent_id, config_path or files.config)
    ledger = Ledger(files.ledger)
    try:
        client = await connect(settings, Role.AGENT)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        log.info(
            "node agent %s on %s, serving cluster %s node %s, task queue %s, actions %s, ledger %s",
            agent_id,
            settings.temporal_address,
            config.cluster_id,
            config.node_id,
            queue_of(config),
            ",".join(config.actions) or "none",
            files.ledger,
        )
        async with agent_worker(client, config, ledger):
            await stop.wait()
    finally:
        ledger.close()
