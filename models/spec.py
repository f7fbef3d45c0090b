"""The desired state of a cluster, as the operator writes it (YAML).

A spec names secrets by reference only (an env var or a file path): the value never
enters a model, so it never reaches Temporal history, events or logs.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

IDENTIFIER = r"^[a-z0-9][a-z0-9._-]{0,62}$"


class Kind(StrEnum):
    ZOOKEEPER = "zookeeper"
    KAFKA = "kafka"
    MONGODB = "mongodb"


class Policy(StrEnum):
    """What a playbook may do when its finding appears."""

    OFF = "off"
    APPROVE = "approve"
    AUTO = "auto"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeSpec(Frozen):
    node_id: Annotated[str, Field(pattern=IDENTIFIER)]
    address: Annotated[str, Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")]
    agent: Annotated[str | None, Field(pattern=IDENTIFIER)] = None
    """Node id of the agent that runs host-local actions for this node, if any."""

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @model_validator(mode="after")
    def _port_in_range(self) -> Self:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range 1-65535")
        return self


class ProbeSettings(Frozen):
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    watch_max_s: Annotated[float, Field(ge=10, le=3600)] = 600.0
    """Longest a watch runs without a change before it reports anyway; bounds how stale
    the workflow's copy of the view may grow while keeping history small."""
    hold_connections: bool = True
    """Keep one live connection per member so a crashed process is seen at once."""

    @model_validator(mode="after")
    def _timeout_fits_interval(self) -> Self:
        if self.timeout_s > self.watch_max_s:
            raise ValueError("timeout_s must not exceed watch_max_s")
        return self


class Expectations(Frozen):
    """What the operator expects beyond 'every listed node is up'."""

    members: Annotated[int | None, Field(ge=1)] = None
    replication_factor: Annotated[int | None, Field(ge=1)] = None
    max_lag: Annotated[int | None, Field(ge=0)] = None


class SecretRef(Frozen):
    """Where a secret lives; exactly one of env or file."""

    env: Annotated[str | None, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = None
    file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self


class ClusterSpec(Frozen):
    cluster_id: Annotated[str, Field(pattern=IDENTIFIER)]
    kind: Kind
    nodes: Annotated[tuple[NodeSpec, ...], Field(min_length=1)]
    expect: Expectations = Expectations()
    probe: ProbeSettings = ProbeSettings()
    remediation: dict[str, Policy] = Field(default_factory=dict)
    secrets: dict[str, SecretRef] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _nodes_unique(self) -> Self:
        for attr in ("node_id", "address"):
            seen: set[str] = set()
            for node in self.nodes:
                value = getattr(node, attr)
                if value in seen:
                    raise ValueError(f"duplicate {attr} {value!r} in nodes")
                seen.add(value)
        if self.expect.members is not None and self.expect.members > len(self.nodes):
            raise ValueError(
                f"expect.members is {self.expect.members}"
                f" but only {len(self.nodes)} nodes are listed"
            )
        return self

    def node(self, node_id: str) -> NodeSpec:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)


class SpecError(ValueError):
    """A spec that cannot be used; the message is one line naming source, field and reason."""


def describe_validation_error(source: str, error: ValidationError) -> str:
    """One line per problem, the first one leading: `source: field.path: reason`.

    >>> try:
    ...     ClusterSpec.model_validate({"cluster_id": "a", "kind": "redis", "nodes": []})
    ... except ValidationError as e:
    ...     print(describe_validation_error("x.yaml", e).splitlines()[0])
    x.yaml: kind: Input should be 'zookeeper', 'kafka' or 'mongodb'
    """
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        reason = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {where}: {reason}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "<spec>") -> ClusterSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: (top level): expected a mapping, got {type(data).__name__}")
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(describe_validation_error(source, error)) from None


def load_spec(path: str | Path) -> ClusterSpec:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"{source}: cannot read: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(yaml)"
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise SpecError(f"{source}: {where}: {problem}") from None
    return parse_spec(data, source)
