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
    ClusterSpec,
    Frozen,
    Identifier,
    Seconds,
    read_yaml,
    validate_file,
)

SERVICE_ACTIVITY = "service_action"
"""The agent's one activity, by name: workflows call it on `agent_task_queue(...)`."""


def agent_task_queue(cluster_id: str, agent_id: str) -> str:
    """`node/<cluster_id>/<agent_id>`. Ids hold no `/`, so a name reads back one way only,
    and a spec reaches only the agents that serve its own cluster id: naming `zk1` in
    another cluster's spec points at a queue that cluster's agent zk1 never polls.

    >>> agent_task_queue("playground", "zk1")
    'node/playground/zk1'
    """
    return f"node/{cluster_id}/{agent_id}"


def shared_agent(spec: ClusterSpec) -> str | None:
    """Why no set of agents can serve `spec`: two of its nodes name one agent, which serves
    one node and would refuse the other's steps. None when each node has its own.

    >>> spec = ClusterSpec.model_validate({"cluster_id": "c1", "kind": "zookeeper", "nodes": [
    ...     {"node_id": "zk1", "address": "a:1", "agent": "zk2"},
    ...     {"node_id": "zk2", "address": "b:1"}]})
    >>> shared_agent(spec)
    'zk1 and zk2 name one agent, zk2: an agent serves one node'
    """
    named: dict[str, str] = {}
    for node in spec.nodes:
        first = named.setdefault(node.agent_id, node.node_id)
        if first != node.node_id:
            agent = node.agent_id
            return f"{first} and {node.node_id} name one agent, {agent}: an agent serves one node"
    return None


class ServiceRequest(Frozen):
    action: ServiceAction
    cluster_id: Identifier
    node_id: Identifier
    """The spec's node the step is for: the agent acts only when it serves this cluster and
    node (a request can reach its queue without a spec: any client may schedule one)."""
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

    cluster_id: Identifier
    """The cluster it serves: with `node_id`, the only requests it acts on."""
    node_id: Identifier
    """The node of that cluster's spec it serves."""
    agent: Identifier | None = None
    """Its own id, when the spec's node names its agent (`agent:`) other than by the node's
    id: its task queue and files go by that id."""
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

    @property
    def agent_id(self) -> str:
        return self.agent or self.node_id

    def refusal(self, request: ServiceRequest) -> str | None:
        """Why this agent must not act on `request`; None when it serves its node.

        >>> config = AgentConfig(cluster_id="playground", node_id="zk1")
        >>> asked = {"action": "start", "node_id": "zk1", "key": "k"}
        >>> config.refusal(ServiceRequest(cluster_id="rt-b13", **asked))
        'agent zk1 serves cluster playground node zk1, not cluster rt-b13 node zk1'
        >>> config.refusal(ServiceRequest(cluster_id="playground", **asked)) is None
        True
        """
        if (request.cluster_id, request.node_id) == (self.cluster_id, self.node_id):
            return None
        return (
            f"agent {self.agent_id} serves cluster {self.cluster_id} node {self.node_id},"
            f" not cluster {request.cluster_id} node {request.node_id}"
        )

    def timeout_of(self, action: ServiceAction) -> float:
        return self.timeout_for(self.actions[action])

    def timeout_for(self, command: ActionCommand) -> float:
        return command.timeout_s if command.timeout_s is not None else self.timeout_s


def parse_agent_config(data: Any, source: str = "<agent config>") -> AgentConfig:
    """
    >>> parse_agent_config(
    ...     {"cluster_id": "c1", "node_id": "zk2", "actions": {"start": "systemctl start zk"}}
    ... )
    Traceback (most recent call last):
    ...
    models.spec.SpecError: <agent config>: actions.start: a command is an argv list, not a string
    """
    return validate_file(AgentConfig, data, source)


def load_agent_config(path: str | Path) -> AgentConfig:
    return parse_agent_config(read_yaml(path), str(path))
