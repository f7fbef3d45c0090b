"""The node agent: what a workflow may ask of it, what it answers, and its own config.

A workflow names an action and an idempotency key, nothing more: the command that runs
comes from the agent's config file on the host, so no input can become a command or an
argument.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from models.base import ServiceAction
from models.spec import (
    Frozen,
    Identifier,
    Seconds,
    read_yaml,
    validate_file,
)

SERVICE_ACTIVITY = "service_action"
"""The agent's one activity, by name: workflows call it on `agent_task_queue(node_id)`."""


def agent_task_queue(node_id: str) -> str:
    return f"node/{node_id}"


class ServiceRequest(Frozen):
    action: ServiceAction
    key: Annotated[str, Field(min_length=1, max_length=512)]
    """Idempotency key: the calling workflow's id and run id and the step name, e.g.
    `remediate/c1/node_down/zk2/<run id>#start-zk2` (the run id: a finding remediated
    again later reuses the workflow id). One key has its effect at most once."""
    reason: Annotated[str, Field(max_length=1000)] = ""
    """For the agent's log only."""


class ServiceResult(Frozen):
    action: ServiceAction
    key: str
    ok: bool
    """start/stop/restart: the command succeeded (a failure raises instead, so Temporal
    retries it). status: the service runs."""
    exit_code: int | None
    """Of the command this call ran or, after a crash, of the status check; None when
    nothing ran (a recorded result) or it was killed."""
    output_tail: str
    ran: bool
    """Whether this call ran the action's command (False: a recorded result, or a crash
    whose effect the status check showed was already there)."""
    resumed_after_crash: bool
    """The key's run was interrupted (the agent died, or it was cancelled) and this call
    decided from a status check."""
    started_at: datetime
    finished_at: datetime


def _argv_only(value: Any) -> Any:
    """An action is an argv list, or a mapping with `argv` and its own `timeout_s`; never
    a string, which only a shell would split."""
    if isinstance(value, str):
        raise ValueError("a command is an argv list, not a string")
    return {"argv": value} if isinstance(value, list | tuple) else value


class ActionCommand(Frozen):
    argv: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]
    timeout_s: Annotated[Seconds | None, Field(gt=0, le=86400)] = None


class AgentConfig(Frozen):
    """The agent's own file, e.g. `$REPLICANTE_HOME/agents/zk2.yaml`."""

    node_id: Identifier
    actions: dict[ServiceAction, Annotated[ActionCommand, BeforeValidator(_argv_only)]] = Field(
        default_factory=dict
    )
    """A missing action is refused when asked for, not when the agent starts."""
    instance: Annotated[ActionCommand | None, BeforeValidator(_argv_only)] = None
    """Prints what tells one run of the service from the next (its pid, systemd's
    `InvocationID`). With it, a restart killed together with the agent before it stopped
    anything (a host's supervisor killing the agent's cgroup) runs again; without it,
    `status` alone cannot tell that restart from one that happened, and takes it as done."""
    timeout_s: Annotated[Seconds, Field(gt=0, le=86400)] = 120.0
    """Default for actions without their own; the command's process group is killed then."""
    cwd: str | None = None
    """Working directory of the commands (default: the agent's)."""

    def timeout_of(self, action: ServiceAction) -> float:
        return self.timeout_for(self.actions[action])

    def timeout_for(self, command: ActionCommand) -> float:
        return command.timeout_s if command.timeout_s is not None else self.timeout_s


def parse_agent_config(data: Any, source: str = "<agent config>") -> AgentConfig:
    """
    >>> parse_agent_config({"node_id": "zk2", "actions": {"start": "systemctl start zk"}})
    Traceback (most recent call last):
    ...
    models.spec.SpecError: <agent config>: actions.start: a command is an argv list, not a string
    """
    return validate_file(AgentConfig, data, source)


def load_agent_config(path: str | Path) -> AgentConfig:
    return parse_agent_config(read_yaml(path), str(path))
