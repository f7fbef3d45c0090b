"""The desired state of a cluster, as the operator writes it (YAML).

A spec names secrets by reference only (an env var or a file path): the value never
enters a model, so it never reaches Temporal history, events or logs.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.base import Kind
from models.playbooks import check_playbooks

IDENTIFIER = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\]")


SHOWN = 64
"""The most of a refused value an error quotes: it names the value, a megabyte of it would
only bury the line."""


def shown(value: str) -> str:
    """`value` quoted for an error line, cut to `SHOWN` characters.

    >>> shown("a" * 1_000_000)
    "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' (1000000 characters)"
    """
    if len(value) <= SHOWN:
        return repr(value)
    return f"{value[:SHOWN]!r}"[:-1] + f"...' ({len(value)} characters)"


def _identifier(value: str) -> str:
    """
    >>> _identifier("Kafka Prod")
    Traceback (most recent call last):
    ...
    ValueError: 'Kafka Prod' is not an id: use 1-63 of a-z 0-9 . _ -, starting with a-z or 0-9
    """
    if not IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not an id: use 1-63 of a-z 0-9 . _ -, starting with a-z or 0-9"
        )
    return value


MAX_HOST = 253
"""The longest name DNS resolves."""


def _address(value: str) -> str:
    """HOST:PORT with a hostname, an IPv4 address or a bracketed IPv6 address, the port in
    ASCII digits.

    >>> _address("[::1]:2181")
    '[::1]:2181'
    >>> _address("::::2181")
    Traceback (most recent call last):
    ...
    ValueError: expected HOST:PORT with a port 1-65535, got '::::2181'
    >>> _address("[:]:2181")
    Traceback (most recent call last):
    ...
    ValueError: expected HOST:PORT with a port 1-65535, got '[:]:2181'
    """
    host, colon, port = value.rpartition(":")
    valid = (
        colon
        and len(host) <= MAX_HOST
        and HOST.fullmatch(host) is not None
        and (not host.startswith("[") or _ipv6(host[1:-1]))
        and port.isascii()
        and port.isdigit()
        and 0 < int(port) < 65536
    )
    if not valid:
        raise ValueError(f"expected HOST:PORT with a port 1-65535, got {shown(value)}")
    return value


def _ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


Identifier = Annotated[str, AfterValidator(_identifier)]
Address = Annotated[str, AfterValidator(_address)]


class Policy(StrEnum):
    """What a playbook may do when its finding appears."""

    OFF = "off"
    APPROVE = "approve"
    AUTO = "auto"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeSpec(Frozen):
    node_id: Identifier
    address: Address
    agent: Identifier | None = None
    """Id of the agent that runs host-local actions for this node, when not the node's own
    (`agent_id`): an agent of this spec's cluster, whose config names this node."""

    @property
    def agent_id(self) -> str:
        return self.agent or self.node_id

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def endpoint(self) -> tuple[str, int]:
        """Where the node is, as a connection sees it: names are case-blind, and
        `host:02181` is `host:2181`."""
        return self.host.lower(), self.port


# Strict: YAML's `true` or "5" must not quietly become a number; NaN compares false to
# every bound.
Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True)]


class ProbeSettings(Frozen):
    # Floors: below them a probe burns a core, and a live member cannot answer in time.
    interval_s: Annotated[Seconds, Field(ge=0.1, le=3600)] = 5.0
    timeout_s: Annotated[Seconds, Field(ge=0.1, le=60)] = 2.0
    watch_max_s: Annotated[Seconds, Field(ge=10, le=3600)] = 600.0
    """Longest a watch runs without a change before it reports anyway; bounds how stale
    the workflow's copy of the view may grow while keeping history small."""
    hold_connections: Annotated[bool, Field(strict=True)] = True
    """Keep one live connection per member so a crashed process is seen at once."""

    @model_validator(mode="after")
    def _fits_watch_max(self) -> Self:
        for name in ("interval_s", "timeout_s"):
            if getattr(self, name) > self.watch_max_s:
                raise ValueError(f"{name} must not exceed watch_max_s")
        return self


class Expectations(Frozen):
    """What the operator expects beyond 'every listed node is up'."""

    members: Annotated[Count | None, Field(ge=1)] = None
    replication_factor: Annotated[Count | None, Field(ge=1)] = None
    max_lag: Annotated[Count | None, Field(ge=0)] = None


class RemediationSettings(Frozen):
    blocking_s: Annotated[Seconds, Field(ge=0, le=7 * 86400)] = 3600.0
    """After a remediation of a finding ends, the same finding does not start another for
    this long (Orchestrator's RecoveryPeriodBlockSeconds): no flapping restarts."""
    approval_timeout_s: Annotated[Seconds, Field(gt=0, le=7 * 86400)] = 3600.0
    """A remediation under `approve` expires when nobody decides within this."""
    agent_wait_s: Annotated[Seconds, Field(ge=5, le=86400)] = 60.0
    """A step on a node's agent that no agent takes within this ends the remediation as
    `no_agent`, instead of holding every other remediation of the cluster back for good.
    Per attempt: a step retried after its agent died waits as long again for it to come
    back. At least 5 s: a polling agent takes a step in milliseconds, a restarting one in
    seconds."""


class SecretRef(Frozen):
    """Where a secret lives; exactly one of env or file."""

    env: Annotated[str | None, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = None
    """Name of an environment variable of the worker that holds the secret."""
    file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self


class AuthMechanism(StrEnum):
    DIGEST = "digest"
    """ZooKeeper's digest scheme (`addauth digest`): the server takes any password at login
    and checks it only against znode ACLs, so a wrong one is not seen by a probe."""
    DIGEST_MD5 = "DIGEST-MD5"
    """SASL DIGEST-MD5, ZooKeeper's JAAS DigestLoginModule: the server checks the password."""
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    SCRAM_SHA_1 = "SCRAM-SHA-1"
    MONGODB_X509 = "MONGODB-X509"
    """MongoDB's login by the client certificate of `tls.client_cert`."""


MECHANISMS: dict[Kind, tuple[AuthMechanism, ...]] = {
    Kind.ZOOKEEPER: (AuthMechanism.DIGEST_MD5, AuthMechanism.DIGEST),
    Kind.KAFKA: (AuthMechanism.PLAIN, AuthMechanism.SCRAM_SHA_256, AuthMechanism.SCRAM_SHA_512),
    Kind.MONGODB: (
        AuthMechanism.SCRAM_SHA_256,
        AuthMechanism.SCRAM_SHA_1,
        AuthMechanism.MONGODB_X509,
    ),
}


NO_TLS: dict[Kind, str] = {
    Kind.ZOOKEEPER: "its probe reads the four-letter words in plaintext",
}
"""The kinds whose probe cannot speak TLS, and why: a spec of theirs with `tls` is refused."""


class AuthSettings(Frozen):
    """How to log in to every node: with the secrets `username` and `password`, or for
    MONGODB-X509 with the client certificate of `tls.client_cert`. (A MongoDB spec without
    `auth` logs in with `username` and `password` when it names them, as it always did.)"""

    mechanism: AuthMechanism


class TlsSettings(Frozen):
    """TLS to every node (Kafka: SSL, or SASL_SSL with `auth`). Paths are the worker's."""

    ca_file: str | None = None
    """PEM file of the CA(s) that signed the servers' certificates; default: the system's."""
    client_cert: str | None = None
    """Name of a secret, a `file` reference to one PEM file holding the client certificate
    and its private key: for servers that require client certificates, and MONGODB-X509."""


MAX_NODES = 256
"""More nodes than any ZooKeeper ensemble, MongoDB replica set (50) or Kafka cluster we
watch as one; a spec of 10,000 made workflow payloads too large to be written."""


class ClusterSpec(Frozen):
    cluster_id: Identifier
    kind: Kind
    nodes: Annotated[tuple[NodeSpec, ...], Field(min_length=1, max_length=MAX_NODES)]
    expect: Expectations = Expectations()
    probe: ProbeSettings = ProbeSettings()
    remediation: dict[str, Policy] = Field(default_factory=dict)
    remediate: RemediationSettings = RemediationSettings()
    secrets: dict[str, SecretRef] = Field(default_factory=dict)
    tls: TlsSettings | None = None
    auth: AuthSettings | None = None

    @field_validator("nodes")
    @classmethod
    def _nodes_unique(cls, nodes: tuple[NodeSpec, ...]) -> tuple[NodeSpec, ...]:
        for attr, key in (("node_id", "node_id"), ("address", "endpoint")):
            first: dict[object, int] = {}
            for index, node in enumerate(nodes):
                value = getattr(node, key)
                if value in first:
                    raise ValueError(
                        f"{attr} {shown(getattr(node, attr))} appears twice:"
                        f" nodes.{first[value]} and nodes.{index}"
                    )
                first[value] = index
        return nodes

    @field_validator("remediation")
    @classmethod
    def _known_playbooks(
        cls, policies: dict[str, Policy], info: ValidationInfo
    ) -> dict[str, Policy]:
        kind = info.data.get("kind")
        if isinstance(kind, Kind):
            check_playbooks(kind, list(policies))
        return policies

    @model_validator(mode="after")
    def _members_listed(self) -> Self:
        if self.expect.members is not None and self.expect.members > len(self.nodes):
            raise ValueError(
                f"expect.members is {self.expect.members}"
                f" but only {len(self.nodes)} nodes are listed"
            )
        return self

    @model_validator(mode="after")
    def _security_fits(self) -> Self:
        if self.tls is not None and self.kind in NO_TLS:
            raise ValueError(f"tls: not for {self.kind.value}: {NO_TLS[self.kind]}")
        if self.tls is not None and self.tls.client_cert is not None:
            ref = self.secrets.get(self.tls.client_cert)
            if ref is None or ref.file is None:
                raise ValueError(
                    f"tls.client_cert: {self.tls.client_cert!r} must name a secret with a"
                    " `file` reference (the PEM file of certificate and key)"
                )
        if self.auth is None:
            return self
        mechanism = self.auth.mechanism
        if mechanism not in MECHANISMS[self.kind]:
            allowed = ", ".join(m.value for m in MECHANISMS[self.kind])
            raise ValueError(f"auth.mechanism: {self.kind.value} takes {allowed}, not {mechanism}")
        if mechanism is AuthMechanism.MONGODB_X509:
            if self.tls is None or self.tls.client_cert is None:
                raise ValueError("auth.mechanism: MONGODB-X509 needs tls.client_cert")
        elif missing := [name for name in ("username", "password") if name not in self.secrets]:
            raise ValueError(f"auth: {mechanism} needs the secrets {' and '.join(missing)}")
        return self

    def node(self, node_id: str) -> NodeSpec:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)


MAX_PROBLEM_LINES = 10


class SpecError(ValueError):
    """A spec that cannot be used; the message is one line naming source, field and reason."""


def describe_validation_error(source: str, error: ValidationError) -> str:
    """One line per problem, the first one leading: `source: field.path: reason`; past
    MAX_PROBLEM_LINES, one line more says how many others there are (a spec of 1,000 bad
    addresses printed 1,000 lines).

    >>> try:
    ...     ClusterSpec.model_validate({"cluster_id": "a", "kind": "redis", "nodes": []})
    ... except ValidationError as e:
    ...     print(describe_validation_error("x.yaml", e).splitlines()[0])
    x.yaml: kind: Input should be 'zookeeper', 'kafka' or 'mongodb'
    """
    problems = error.errors()
    # A list whose one item failed is also "too short": that line would only mislead.
    inner = {p["loc"][:depth] for p in problems for depth in range(len(p["loc"]))}
    lines = []
    for problem in problems:
        if problem["type"] == "too_short" and problem["loc"] in inner:
            continue
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        reason = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {where}: {reason}")
    if len(lines) > MAX_PROBLEM_LINES:
        more = len(lines) - MAX_PROBLEM_LINES
        lines[MAX_PROBLEM_LINES:] = [f"{source}: and {more} more problem(s) of the same file"]
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "<spec>") -> ClusterSpec:
    return validate_file(ClusterSpec, data, source)


M = TypeVar("M", bound=BaseModel)


def validate_file(model: type[M], data: Any, source: str) -> M:
    """A file's document as `model`, or SpecError with one line per problem."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: (top level): expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise SpecError(describe_validation_error(source, error)) from None


class _UniqueKeyLoader(yaml.CSafeLoader):
    """A safe loader that refuses duplicate keys: plain YAML keeps the last silently, so a
    second `cluster_id:` would quietly watch another cluster. libyaml's parser (C): the
    pure-Python one took 9 s for a spec of 10,000 nodes and ran out of stack on deep
    nesting, which libyaml refuses past 1,000 levels."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | Path) -> ClusterSpec:
    return parse_spec(read_yaml(path), str(path))


def read_yaml(path: str | Path) -> Any:
    """The YAML document in the file; SpecError (one line: file, line, problem) when it
    cannot be read or parsed. Duplicate keys are refused."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"{source}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise SpecError(f"{source}: byte {error.start}: not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(yaml)"
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise SpecError(f"{source}: {where}: {problem}") from None
    except ValueError:
        # int() of a number longer than Python converts (sys.get_int_max_str_digits()).
        raise SpecError(f"{source}: (yaml): a number too long to read") from None
    return data
