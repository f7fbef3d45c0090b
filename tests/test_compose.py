"""docker-compose.yml, deploy/ and the Dockerfile, checked without Docker: no engine runs
where this is written, so the stack has never been brought up.

The compose file is validated against the compose specification's own JSON schema
(tests/compose_spec/), then for what the schema cannot know: that services, files, ports,
settings, metrics targets, cluster specs and agents refer to one another correctly. Each
check returns the problems it finds; each runs on the real files, and on a copy broken on
purpose, to show it would notice. The shell scripts in deploy/ run here against a real
Temporal dev server or stand-in commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from opentelemetry.sdk import environment_variables as otel_variables
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.testing import WorkflowEnvironment

from config.settings import REPO_ROOT, Settings
from devstack import engine
from devstack.temporal import temporal_binary
from models import (
    ClusterSpec,
    ServiceAction,
    SpecError,
    load_agent_config,
    load_spec,
)
from workflows import search_attributes

SCHEMA = Path(__file__).parent / "compose_spec" / "compose-spec.json"

# Settings the worker and agent read outside `Settings` (issue 6: metrics and logging).
AGREED_VARIABLES = frozenset({"REPLICANTE_METRICS_ADDRESS", "REPLICANTE_LOG_FORMAT"})

INSTALL = "scripts/install.sh"

# The images of the server's release: its server, and its temporal-sql-tool and CLI.
TEMPORAL_IMAGES = ("temporalio/server:", "temporalio/admin-tools:")

# Set for the temporal service only: the engine has no Prometheus to scrape its metrics.
DOCKER_ONLY = frozenset({"PROMETHEUS_ENDPOINT"})

# What the ZooKeeper probe sends (activities/zookeeper/probe.py) and the healthcheck's srvr.
ZOOKEEPER_WORDS = frozenset({"srvr", "mntr", "conf"})

Service = dict[str, Any]


@dataclass(frozen=True)
class Stack:
    """docker-compose.yml and the files beside it, read from `root`."""

    root: Path
    text: str
    compose: dict[str, Any]

    @classmethod
    def load(cls, root: Path) -> Stack:
        text = (root / "docker-compose.yml").read_text()
        return cls(root, text, yaml.safe_load(text))

    @property
    def services(self) -> dict[str, Service]:
        services: dict[str, Service] = self.compose["services"]
        return services

    def mounted(self, service: str, container_path: str) -> Path | None:
        """The repo file that a bind mount of `service` shows at `container_path`."""
        for volume in self.services[service].get("volumes", []):
            source, target = str(volume).split(":")[:2]
            if source.startswith("./") and (
                container_path == target or container_path.startswith(target + "/")
            ):
                return self.root / source / container_path[len(target) :].lstrip("/")
        return None

    def read_mounted(self, service: str, container_path: str) -> str:
        path = self.mounted(service, container_path)
        assert path is not None, f"{service} mounts nothing at {container_path}"
        return path.read_text()


def env(service: Service) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def argument(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# --- the checks -------------------------------------------------------------------------------


def schema_problems(stack: Stack) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(stack.compose)
    ]


def interpolation_problems(stack: Stack) -> list[str]:
    """Compose substitutes `$NAME` and `${NAME}` from the shell running it; this file means
    none, so a single `$` is a mistake (`$$` is a literal one)."""
    return [
        f"compose would substitute {m.group()}"
        for m in re.finditer(r"(?<!\$)\$(?!\$)\S*", stack.text)
    ]


def dependency_problems(stack: Stack) -> list[str]:
    problems = []
    for name, service in stack.services.items():
        for target, dependency in service.get("depends_on", {}).items():
            other = stack.services.get(target)
            condition = dependency["condition"]
            if other is None:
                problems.append(f"{name} depends on {target}, which is no service")
            elif condition == "service_healthy" and "healthcheck" not in other:
                problems.append(f"{name} waits for {target} to be healthy: it has no healthcheck")
            elif condition == "service_completed_successfully" and other.get("restart") not in (
                None,
                "no",
            ):
                problems.append(f"{name} waits for {target} to complete: it restarts instead")
    return problems


def mount_problems(stack: Stack) -> list[str]:
    problems = []
    declared = stack.compose.get("volumes") or {}
    for name, service in stack.services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and not (stack.root / source).exists():
                problems.append(f"{name} mounts {source}, which does not exist")
            elif not source.startswith(("./", "/")) and source not in declared:
                problems.append(f"{name} mounts volume {source}, which is not declared")
    return problems


def socket_problems(stack: Stack) -> list[str]:
    """The Docker socket is root on the Docker host: only the node agents get it."""
    return [
        f"{name} mounts the Docker socket, but is no agent"
        for name, service in stack.services.items()
        if any(str(v).startswith("/var/run/docker.sock:") for v in service.get("volumes", []))
        and (service.get("command") or [None])[0] != "agent"
    ]


def settings_variables() -> set[str]:
    """The variables `Settings.from_env` reads, recorded as it reads them."""
    read: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            read.add(key)
            return default

        def __contains__(self, key: object) -> bool:
            read.add(str(key))
            return False

    with mock.patch.object(os, "environ", Recording()):
        Settings.from_env()
    return read


def setting_problems(stack: Stack) -> list[str]:
    known = settings_variables() | AGREED_VARIABLES
    otel = {name for name in dir(otel_variables) if name.startswith("OTEL_")}
    problems = []
    for name, service in stack.services.items():
        for key in env(service):
            if key.startswith("REPLICANTE_") and key not in known:
                problems.append(f"{name}: {key} is read by no Replicante process")
            if key.startswith("OTEL_") and key not in otel:
                problems.append(f"{name}: {key} is no OpenTelemetry SDK variable")
    return problems


PINNED = re.compile(r"[a-z0-9._/-]+:v?\d+(\.\d+)+(-[a-z0-9.]+)*")


def image_problems(stack: Stack) -> list[str]:
    """Every service names its image with a full version: `latest` or a bare major moves
    under the user between two `docker compose pull`s."""
    return [
        f"{name}: image {service.get('image')!r} is not pinned to a version"
        for name, service in stack.services.items()
        if not PINNED.fullmatch(str(service.get("image")))
    ]


def port_problems(stack: Stack) -> list[str]:
    problems = []
    owners: dict[str, str] = {}
    for name, service in stack.services.items():
        for port in service.get("ports", []):
            host_ip, _, host_port = str(port).rpartition(":")[0].partition(":")
            if host_ip != "127.0.0.1":
                problems.append(f"{name} publishes {port} beyond loopback")
            if host_port in owners:
                problems.append(f"{name} and {owners[host_port]} both publish port {host_port}")
            owners[host_port] = name
    return problems


def metrics_endpoints(stack: Stack) -> set[str]:
    """service:port of every process with a Prometheus endpoint."""
    endpoints = set()
    for name, service in stack.services.items():
        variables = env(service)
        for key in ("REPLICANTE_METRICS_ADDRESS", "PROMETHEUS_ENDPOINT"):
            if key in variables:
                endpoints.add(f"{name}:{variables[key].rpartition(':')[2]}")
    return endpoints


def scrape_problems(stack: Stack) -> list[str]:
    config = yaml.safe_load(stack.read_mounted("prometheus", "/etc/prometheus/prometheus.yml"))
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    endpoints = metrics_endpoints(stack)
    return [f"{t}: scraped, but serves no metrics" for t in targets if t not in endpoints] + [
        f"{e}: serves metrics nobody scrapes" for e in sorted(endpoints - set(targets))
    ]


def serving_address(name: str, service: Service) -> str | None:
    """host:port where a datastore service takes clients, as its peers name it."""
    image = str(service.get("image"))
    variables = env(service)
    if image.startswith("zookeeper:"):
        mine = f"server.{variables['ZOO_MY_ID']}="
        line = next(s for s in variables["ZOO_SERVERS"].split() if s.startswith(mine))
        peer, _, client_port = line.removeprefix(mine).partition(";")
        return f"{peer.split(':')[0]}:{client_port}"
    if image.startswith("apache/kafka:"):
        return variables["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://")
    if image.startswith("mongo:") and service.get("command", [None])[0] == "mongod":
        return f"{name}:{argument(service['command'], '--port')}"
    return None


def datastores(stack: Stack) -> dict[str, str]:
    """Serving address -> service, of every datastore in the file."""
    return {
        address: name
        for name, service in stack.services.items()
        if (address := serving_address(name, service)) is not None
    }


def applied_specs(stack: Stack) -> list[ClusterSpec]:
    """The specs the apply job applies: every file in the directory it is given."""
    directory = stack.mounted("apply", stack.services["apply"]["entrypoint"][-1])
    assert directory is not None and directory.is_dir(), "apply is given no spec directory"
    return [load_spec(path) for path in sorted(directory.glob("*.yaml"))]


def spec_problems(stack: Stack) -> list[str]:
    try:
        specs = applied_specs(stack)
    except SpecError as error:
        return [str(error)]
    served = datastores(stack)
    problems = []
    watched: list[str] = []
    for spec in specs:
        for node in spec.nodes:
            if node.address in served:
                watched.append(served[node.address])
            else:
                problems.append(f"{spec.cluster_id}: no service serves {node.address}")
    problems += [f"{name} is in no applied spec" for name in set(served.values()) - set(watched)]
    problems += [f"{name} is in two specs" for name in {n for n in watched if watched.count(n) > 1}]
    return problems


def agent_problems(stack: Stack) -> list[str]:
    """Every node of every spec has its agent, which serves that cluster and node and whose
    commands act on the container the node runs in; every agent serves a node."""
    try:
        specs = applied_specs(stack)
    except SpecError as error:
        return [str(error)]
    problems = []
    containers: dict[str, set[str]] = {}  # agent id -> the containers it acts on
    serves: dict[str, tuple[str, str]] = {}  # agent id -> the cluster and node in its config
    for name, service in stack.services.items():
        command = service.get("command") or []
        if command[:1] != ["agent"]:
            continue
        node_id = argument(command, "--node")
        path = stack.mounted(name, argument(command, "--config"))
        if path is None or not path.exists():
            problems.append(f"{name}: its config {argument(command, '--config')} is not mounted")
            continue
        try:
            config = load_agent_config(path)
        except SpecError as error:
            problems.append(str(error))
            continue
        if config.agent_id != node_id:
            problems.append(f"{name}: runs for {node_id}, its config is {config.agent_id}'s")
        serves[node_id] = (config.cluster_id, config.node_id)
        if missing := set(ServiceAction) - set(config.actions):
            problems.append(f"{name}: no command for {', '.join(sorted(missing))}")
        if node_id in containers:
            problems.append(f"{name}: a second agent for {node_id}")
        containers[node_id] = {c.argv[-1] for c in config.actions.values() if c.argv[0] == "docker"}
    served = datastores(stack)
    for spec in specs:
        for node in spec.nodes:
            agent = node.agent_id
            runs_in = served.get(node.address)
            wanted = (spec.cluster_id, node.node_id)
            if agent in serves and serves[agent] != wanted:
                problems.append(
                    f"agent {agent} serves {'/'.join(serves[agent])}, not {'/'.join(wanted)}"
                )
            container = stack.services[runs_in].get("container_name") if runs_in else None
            if agent not in containers:
                problems.append(f"{spec.cluster_id}: {node.node_id} has no agent {agent}")
            elif containers.pop(agent) != {container}:
                problems.append(f"agent {agent} does not act on {node.node_id}'s {container}")
    problems += [f"agent {agent} serves no node of any spec" for agent in containers]
    return problems


def zookeeper_problems(stack: Stack) -> list[str]:
    members = {
        n: s for n, s in stack.services.items() if str(s.get("image")).startswith("zookeeper:")
    }
    problems = []
    servers = {env(s)["ZOO_SERVERS"] for s in members.values()}
    if len(servers) != 1:
        problems.append("the members disagree on ZOO_SERVERS")
    for name, service in members.items():
        words = set(env(service)["ZOO_4LW_COMMANDS_WHITELIST"].split(","))
        if missing := ZOOKEEPER_WORDS - words:
            problems.append(f"{name} refuses {', '.join(sorted(missing))}, which the probe sends")
    return problems


def kafka_problems(stack: Stack) -> list[str]:
    brokers = {
        n: env(s)
        for n, s in stack.services.items()
        if str(s.get("image")).startswith("apache/kafka:")
    }
    problems = []
    voters = {f"{e['KAFKA_NODE_ID']}@{name}:9093" for name, e in brokers.items()}
    for name, variables in brokers.items():
        if set(variables["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) != voters:
            problems.append(f"{name}: the controller quorum is not every broker by its node id")
    if len({e["KAFKA_NODE_ID"] for e in brokers.values()}) != len(brokers):
        problems.append("two brokers share a node id")
    if len({e["CLUSTER_ID"] for e in brokers.values()}) != 1:
        problems.append("the brokers disagree on CLUSTER_ID")
    advertised = {
        e["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://") for e in brokers.values()
    }
    for name, service in stack.services.items():
        bootstrap = env(service).get("REPLICANTE_EVENTS_KAFKA")
        if bootstrap is not None and set(bootstrap.split(",")) != advertised:
            problems.append(f"{name}: REPLICANTE_EVENTS_KAFKA is not the brokers' listeners")
    return problems


def mongodb_problems(stack: Stack) -> list[str]:
    """rs0 names its members as they serve; the store, the comment's test URI and the example
    spec reach them; each member publishes its port on the host."""
    members = {a for a in datastores(stack) if a.startswith("mongo")}
    problems = []
    init = stack.services["mongo-init"]["entrypoint"]
    script = stack.read_mounted("mongo-init", init[-1])
    if set(re.findall(r'host: "([^"]+)"', script)) != members:
        problems.append("init-replica-set.js names other members than the mongod services")
    seeds = ",".join(sorted(members))
    uri = f"mongodb://{seeds}/?replicaSet=rs0"
    for name, service in stack.services.items():
        store = env(service).get("REPLICANTE_STORE_MONGODB_URI")
        if store is not None and store != uri:
            problems.append(f"{name}: REPLICANTE_STORE_MONGODB_URI is not {uri}")
    if f"REPLICANTE_TEST_MONGODB_URI='{uri}'" not in stack.text:
        problems.append(f"the comment does not give the live tests' URI {uri}")
    published = set()
    for address in members:
        host, _, port = address.partition(":")
        if f"127.0.0.1:{port}:{port}" not in stack.services[host].get("ports", []):
            problems.append(f"{host} does not publish {port} on the host")
        published.add(f"localhost:{port}")
    example = load_spec(stack.root / "examples" / "mongodb-replica-set.yaml")
    if {n.address for n in example.nodes} != published:
        problems.append("examples/mongodb-replica-set.yaml does not reach the published ports")
    return problems


def temporal_problems(stack: Stack) -> list[str]:
    services = stack.services
    server, setup, database = (
        env(services["temporal"]),
        env(services["temporal-setup"]),
        env(services["postgresql"]),
    )
    problems = []
    for name, service in services.items():
        variables = env(service)
        if (
            variables.get("REPLICANTE_TEMPORAL_ADDRESS", setup["TEMPORAL_ADDRESS"])
            != setup["TEMPORAL_ADDRESS"]
        ):
            problems.append(f"{name}: another Temporal than the one temporal-setup prepares")
        if (
            variables.get("REPLICANTE_NAMESPACE", setup["TEMPORAL_NAMESPACE"])
            != setup["TEMPORAL_NAMESPACE"]
        ):
            problems.append(f"{name}: another namespace than the one temporal-setup registers")
    if (server["POSTGRES_SEEDS"], server["POSTGRES_USER"], server["POSTGRES_PWD"]) != (
        "postgresql",
        database["POSTGRES_USER"],
        database["POSTGRES_PASSWORD"],
    ):
        problems.append("the server does not log in to the postgresql service")
    schema = env(services["temporal-schema"])
    login = (schema["SQL_PLUGIN"], schema["SQL_HOST"], schema["SQL_USER"], schema["SQL_PASSWORD"])
    if login != (
        server["DB"],
        "postgresql",
        database["POSTGRES_USER"],
        database["POSTGRES_PASSWORD"],
    ):
        problems.append("temporal-schema does not log in to the postgresql service")
    dynamic = stack.mounted("temporal", server["DYNAMIC_CONFIG_FILE_PATH"])
    if dynamic is None or not isinstance(yaml.safe_load(dynamic.read_text()), dict):
        problems.append("DYNAMIC_CONFIG_FILE_PATH is no mounted YAML mapping: the server refuses")
    return problems


def engine_problems(stack: Stack) -> list[str]:
    """What Docker users run is what the tests run on the production-shape engine: the
    server release scripts/install.sh builds, the same configuration variables (the engine
    adds only the ports compose leaves at their defaults), the same dynamic config file
    and the same setup scripts."""
    services = stack.services
    release = engine.VERSION.removeprefix("v")
    problems = [
        f"{name} runs {image}, the engine {engine.VERSION}"
        for name, service in services.items()
        if (image := str(service.get("image"))).startswith(TEMPORAL_IMAGES)
        and image.partition(":")[2] != release
    ]
    built = re.search(r"^temporal_version=(\S+)$", (stack.root / INSTALL).read_text(), re.M)
    if built is None or built.group(1) != engine.VERSION:
        problems.append(
            f"{INSTALL} builds {built and built.group(1)}, the engine runs {engine.VERSION}"
        )
    server = env(services["temporal"])
    ours = engine.ProductionEngine(stack.root).server.environment()
    for key in sorted(server.keys() - ours.keys() - DOCKER_ONLY):
        problems.append(f"the temporal service sets {key}, the engine does not")
    if server["DB"] != ours["DB"]:
        problems.append(f"the temporal service's DB is {server['DB']}, the engine's {ours['DB']}")
    mounted = stack.mounted("temporal", server["DYNAMIC_CONFIG_FILE_PATH"])
    wanted = stack.root / engine.DYNAMIC_CONFIG.relative_to(REPO_ROOT)
    if mounted != wanted:
        problems.append(
            f"the temporal service's dynamic config is {mounted}, the engine's {wanted}"
        )
    for name, ours_too in (
        ("temporal-schema", engine.SETUP_SCHEMA),
        ("temporal-setup", engine.SETUP_NAMESPACE),
    ):
        script = stack.mounted(name, services[name]["entrypoint"][1])
        if script != stack.root / ours_too.relative_to(REPO_ROOT):
            problems.append(f"{name} runs {script}, the engine {ours_too.name}")
    return problems


def collector_problems(stack: Stack) -> list[str]:
    """The collector's pipelines use only what it defines, listen where the processes send
    (OTEL_EXPORTER_OTLP_ENDPOINT) and export to a service of the file."""
    config = yaml.safe_load(
        stack.read_mounted("otel-collector", "/etc/otelcol-contrib/config.yaml")
    )
    problems = []
    for pipeline, parts in config["service"]["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            problems += [
                f"pipeline {pipeline}: {part} is not among the {section}"
                for part in parts.get(section, [])
                if part not in config.get(section, {})
            ]
    listens = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    for name, service in stack.services.items():
        endpoint = env(service).get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint is None:
            continue
        url = urlsplit(endpoint)
        if url.hostname != "otel-collector" or f"0.0.0.0:{url.port}" != listens:
            problems.append(f"{name}: sends its traces where the collector does not listen")
    for exporter, settings in config["exporters"].items():
        if settings["endpoint"].partition(":")[0] not in stack.services:
            problems.append(f"exporter {exporter}: {settings['endpoint']} is no service")
    return problems


def dockerfile_problems(stack: Stack) -> list[str]:
    """The image holds every package of ours, each stage compose builds exists, the agents'
    image has the Docker CLI their commands run, what it starts from is pinned, and it
    installs the production lock (tests/test_install.py checks it against pyproject.toml)
    with pip resolving nothing."""
    dockerfile = (stack.root / "Dockerfile").read_text()
    pyproject = tomllib.loads((stack.root / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    problems = [
        f"the image lacks {p}"
        for p in sorted(packages - set(re.findall(r"^COPY (\S+) \1$", dockerfile, re.M)))
    ]
    stages = dict(re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, re.M))
    for name, service in stack.services.items():
        target = (service.get("build") or {}).get("target")
        if target is not None and target not in stages.values():
            problems.append(f"{name} builds target {target}, which the Dockerfile lacks")
    images = re.findall(r"^FROM (\S+)", dockerfile, re.M) + re.findall(r"--from=(\S+)", dockerfile)
    problems += [
        f"the Dockerfile starts from {i}, not pinned"
        for i in images
        if i not in stages.values() and not PINNED.fullmatch(i)
    ]
    installs = re.findall(r"^RUN pip install (.*)$", dockerfile, re.M)
    if not any(
        {"--require-hashes", "--no-deps"} <= set(i.split())
        and "-r requirements/production.txt" in i
        for i in installs
    ):
        problems.append(
            "the image does not install requirements/production.txt with --require-hashes --no-deps"
        )
    problems += [
        f"the image resolves dependencies: `pip install {i}` lacks --no-deps"
        for i in installs
        if "--no-deps" not in i.split()
    ]
    agent_stage = dockerfile.partition("AS agent\n")[2]
    if not re.search(r"^COPY --from=docker:\S+ /usr/local/bin/docker ", agent_stage, re.M):
        problems.append("the agent image has no docker CLI")
    return problems


CHECKS: list[Callable[[Stack], list[str]]] = [
    schema_problems,
    interpolation_problems,
    dependency_problems,
    mount_problems,
    socket_problems,
    setting_problems,
    image_problems,
    port_problems,
    scrape_problems,
    spec_problems,
    agent_problems,
    zookeeper_problems,
    kafka_problems,
    mongodb_problems,
    temporal_problems,
    engine_problems,
    collector_problems,
    dockerfile_problems,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_stack_passes(check: Callable[[Stack], list[str]]) -> None:
    assert check(Stack.load(REPO_ROOT)) == []


class Breakage(NamedTuple):
    """`text` in `file` replaced: `check` must report a problem containing `problem`."""

    check: Callable[[Stack], list[str]]
    file: str
    text: str
    replacement: str
    problem: str


COMPOSE = "docker-compose.yml"
BREAKAGES = [
    Breakage(
        schema_problems,
        COMPOSE,
        "start_period: 60s",
        "start_period: 60",
        "60 is not of type 'string'",
    ),
    Breakage(
        schema_problems,
        COMPOSE,
        "    restart: unless-stopped\n    environment:\n      POSTGRES_USER",
        "    restarts: unless-stopped\n    environment:\n      POSTGRES_USER",
        "'restarts' does not match",
    ),
    Breakage(
        interpolation_problems, COMPOSE, "POSTGRES_USER: temporal", "POSTGRES_USER: $USER", "$USER"
    ),
    Breakage(
        dependency_problems,
        COMPOSE,
        "mongo-init: {condition",
        "mongo-setup: {condition",
        "mongo-setup, which is no service",
    ),
    Breakage(
        dependency_problems,
        COMPOSE,
        "jaeger: {condition: service_started}",
        "jaeger: {condition: service_healthy}",
        "jaeger to be healthy: it has no healthcheck",
    ),
    Breakage(
        dependency_problems,
        COMPOSE,
        "    entrypoint: [sh, /opt/replicante/setup-namespace.sh]",
        "    restart: on-failure\n    entrypoint: [sh, /opt/replicante/setup-namespace.sh]",
        "temporal-setup to complete: it restarts",
    ),
    Breakage(
        mount_problems,
        COMPOSE,
        "./deploy/temporal/dynamicconfig.yaml:",
        "./deploy/temporal/dynamic.yaml:",
        "dynamic.yaml, which does not exist",
    ),
    Breakage(
        mount_problems,
        COMPOSE,
        "[mongo3-data:/data/db]",
        "[mongo4-data:/data/db]",
        "mongo4-data, which is not declared",
    ),
    Breakage(
        socket_problems,
        COMPOSE,
        "  command: [worker]\n",
        "  command: [worker]\n  volumes: [/var/run/docker.sock:/var/run/docker.sock]\n",
        "worker1 mounts the Docker socket, but is no agent",
    ),
    Breakage(
        setting_problems,
        COMPOSE,
        "REPLICANTE_EVENTS_TOPIC:",
        "REPLICANTE_EVENT_TOPIC:",
        "REPLICANTE_EVENT_TOPIC is read by no",
    ),
    Breakage(
        setting_problems,
        COMPOSE,
        "OTEL_SERVICE_NAME: replicante-agent",
        "OTEL_SERVICENAME: replicante-agent",
        "OTEL_SERVICENAME is no OpenTelemetry",
    ),
    Breakage(
        image_problems,
        COMPOSE,
        "jaegertracing/jaeger:2.11.0",
        "jaegertracing/jaeger:latest",
        "'jaegertracing/jaeger:latest' is not pinned",
    ),
    Breakage(
        image_problems, COMPOSE, "postgres:16.4", "postgres:16", "'postgres:16' is not pinned"
    ),
    Breakage(
        port_problems,
        COMPOSE,
        '"127.0.0.1:9090:9090"',
        '"127.0.0.1:8080:9090"',
        "both publish port 8080",
    ),
    Breakage(
        port_problems,
        COMPOSE,
        '"127.0.0.1:7233:7233"',
        '"7233:7233"',
        "publishes 7233:7233 beyond loopback",
    ),
    Breakage(
        scrape_problems,
        "deploy/prometheus/prometheus.yml",
        "worker2:9464",
        "worker3:9464",
        "worker2:9464: serves metrics nobody scrapes",
    ),
    Breakage(
        scrape_problems,
        "deploy/prometheus/prometheus.yml",
        "temporal:8000",
        "temporal:9000",
        "temporal:9000: scraped, but serves no metrics",
    ),
    Breakage(
        spec_problems,
        "deploy/clusters/kafka.yaml",
        "kafka3:9092}",
        "kafka3:9093}",
        "no service serves kafka3:9093",
    ),
    Breakage(
        spec_problems,
        "deploy/clusters/zookeeper.yaml",
        "interval_s: 5",
        "interval_s: -5",
        "probe.interval_s",
    ),
    Breakage(
        spec_problems, COMPOSE, 'ZOO_MY_ID: "3"', 'ZOO_MY_ID: "2"', "no service serves zk3:2181"
    ),
    Breakage(
        agent_problems,
        "deploy/agents/zk2.yaml",
        "[docker, top, replicante-zk2]",
        "[docker, top, replicante-zk3]",
        "agent zk2 does not act on zk2's replicante-zk2",
    ),
    Breakage(
        agent_problems,
        "deploy/agents/zk2.yaml",
        "node_id: zk2",
        "node_id: zk4",
        "runs for zk2, its config is zk4's",
    ),
    Breakage(
        agent_problems,
        "deploy/agents/zk2.yaml",
        "cluster_id: compose-zookeeper",
        "cluster_id: compose-kafka",
        "agent zk2 serves compose-kafka/zk2, not compose-zookeeper/zk2",
    ),
    Breakage(
        agent_problems,
        "deploy/agents/mongo1.yaml",
        "  status: [docker, top, replicante-mongo1]\n",
        "",
        "no command for status",
    ),
    Breakage(
        agent_problems,
        COMPOSE,
        "--node, mongo3, --config, /etc/replicante/agents/mongo3.yaml",
        "--node, mongo2, --config, /etc/replicante/agents/mongo2.yaml",
        "mongo3 has no agent",
    ),
    Breakage(
        zookeeper_problems,
        COMPOSE,
        "WHITELIST: srvr,mntr,conf,ruok",
        "WHITELIST: srvr,ruok",
        "refuses conf, mntr",
    ),
    Breakage(
        kafka_problems,
        COMPOSE,
        'KAFKA_NODE_ID: "3"',
        'KAFKA_NODE_ID: "2"',
        "two brokers share a node id",
    ),
    Breakage(
        kafka_problems,
        COMPOSE,
        "KAFKA: kafka1:9092,kafka2:9092,kafka3:9092",
        "KAFKA: kafka1:9092",
        "REPLICANTE_EVENTS_KAFKA is not the brokers'",
    ),
    Breakage(
        mongodb_problems,
        "deploy/mongodb/init-replica-set.js",
        '"mongo3:27019"',
        '"mongo3:27020"',
        "init-replica-set.js names other members",
    ),
    Breakage(
        mongodb_problems,
        COMPOSE,
        '"127.0.0.1:27019:27019"',
        '"127.0.0.1:27020:27019"',
        "mongo3 does not publish 27019",
    ),
    Breakage(
        temporal_problems,
        COMPOSE,
        "TEMPORAL_NAMESPACE: default",
        "TEMPORAL_NAMESPACE: replicante",
        "another namespace than the one temporal-setup",
    ),
    Breakage(
        temporal_problems,
        COMPOSE,
        "POSTGRES_PWD: temporal",
        "POSTGRES_PWD: secret",
        "the server does not log in",
    ),
    Breakage(
        temporal_problems,
        COMPOSE,
        "SQL_HOST: postgresql",
        "SQL_HOST: temporal",
        "temporal-schema does not log in",
    ),
    Breakage(
        engine_problems,
        COMPOSE,
        "image: temporalio/server:1.32.2",
        "image: temporalio/server:1.32.0",
        "temporal runs temporalio/server:1.32.0, the engine v1.32.2",
    ),
    Breakage(
        engine_problems,
        COMPOSE,
        "image: temporalio/admin-tools:1.32.2\n    environment:\n      SQL_PLUGIN",
        "image: temporalio/admin-tools:1.31.0\n    environment:\n      SQL_PLUGIN",
        "temporal-schema runs temporalio/admin-tools:1.31.0",
    ),
    Breakage(
        engine_problems,
        INSTALL,
        "temporal_version=v1.32.2",
        "temporal_version=v1.33.0",
        "scripts/install.sh builds v1.33.0",
    ),
    Breakage(
        engine_problems,
        COMPOSE,
        "BIND_ON_IP: 0.0.0.0",
        'BIND_ON_IP: 0.0.0.0\n      NUM_HISTORY_SHARDS: "512"',
        "sets NUM_HISTORY_SHARDS, the engine does not",
    ),
    Breakage(
        engine_problems,
        COMPOSE,
        "DB: postgres12\n",
        "DB: postgres12_pgx\n",
        "DB is postgres12_pgx",
    ),
    Breakage(
        engine_problems,
        COMPOSE,
        "./deploy/temporal/dynamicconfig.yaml:",
        "./deploy/prometheus/prometheus.yml:",
        "the temporal service's dynamic config is",
    ),
    Breakage(
        engine_problems,
        COMPOSE,
        "./deploy/temporal/setup-namespace.sh:",
        "./deploy/apply-clusters.sh:",
        "temporal-setup runs",
    ),
    Breakage(
        collector_problems,
        "deploy/otel-collector/config.yaml",
        "endpoint: 0.0.0.0:4318",
        "endpoint: 0.0.0.0:4319",
        "where the collector does not listen",
    ),
    Breakage(
        collector_problems,
        "deploy/otel-collector/config.yaml",
        "exporters: [otlp/jaeger]",
        "exporters: [otlp/tempo]",
        "otlp/tempo is not among the exporters",
    ),
    Breakage(dockerfile_problems, "Dockerfile", "COPY store store\n", "", "the image lacks store"),
    Breakage(
        dockerfile_problems,
        "Dockerfile",
        "COPY --from=docker:28.3.3-cli",
        "COPY --from=docker:cli",
        "starts from docker:cli, not pinned",
    ),
    Breakage(
        dockerfile_problems,
        "Dockerfile",
        "COPY --from=docker:28.3.3-cli /usr/local/bin/docker /usr/local/bin/docker\n",
        "",
        "the agent image has no docker CLI",
    ),
    Breakage(
        dockerfile_problems,
        "Dockerfile",
        "--require-hashes --no-deps -r requirements/production.txt",
        "-r requirements/production.txt",
        "does not install requirements/production.txt with --require-hashes",
    ),
    Breakage(
        dockerfile_problems,
        "Dockerfile",
        "RUN pip install --no-cache-dir --no-deps .\n",
        "RUN pip install --no-cache-dir .\n",
        "`pip install --no-cache-dir .` lacks --no-deps",
    ),
    Breakage(
        dockerfile_problems,
        "Dockerfile",
        "FROM replicante AS agent",
        "FROM replicante AS agents",
        "builds target agent, which the Dockerfile lacks",
    ),
    Breakage(
        spec_problems,
        "deploy/clusters/zookeeper.yaml",
        "  - {node_id: zk3, address: zk3:2181}\nexpect:\n  members: 3",
        "expect:\n  members: 2",
        "zk3 is in no applied spec",
    ),
    Breakage(
        spec_problems,
        "deploy/clusters/kafka.yaml",
        "  - {node_id: kafka3, address: kafka3:9092}\n",
        "  - {node_id: kafka3, address: kafka3:9092}\n  - {node_id: zk3, address: zk3:2181}\n",
        "zk3 is in two specs",
    ),
    Breakage(
        agent_problems,
        "deploy/clusters/zookeeper.yaml",
        "  - {node_id: zk3, address: zk3:2181}\nexpect:\n  members: 3",
        "expect:\n  members: 2",
        "agent zk3 serves no node of any spec",
    ),
    Breakage(
        agent_problems,
        COMPOSE,
        "--node, mongo3, --config, /etc/replicante/agents/mongo3.yaml",
        "--node, mongo2, --config, /etc/replicante/agents/mongo2.yaml",
        "a second agent for mongo2",
    ),
    Breakage(
        agent_problems,
        COMPOSE,
        "--config, /etc/replicante/agents/zk1.yaml",
        "--config, /etc/agents/zk1.yaml",
        "its config /etc/agents/zk1.yaml is not mounted",
    ),
    Breakage(
        agent_problems,
        "deploy/agents/zk1.yaml",
        "start: [docker, start, replicante-zk1]",
        "start: docker start replicante-zk1",
        "a command is an argv list",
    ),
    Breakage(
        zookeeper_problems,
        COMPOSE,
        'ZOO_MY_ID: "3"}',
        'ZOO_MY_ID: "3", ZOO_SERVERS: "server.3=zk3:2888:3888;2181"}',
        "the members disagree on ZOO_SERVERS",
    ),
    Breakage(
        kafka_problems,
        COMPOSE,
        'KAFKA_NODE_ID: "3"\n',
        'KAFKA_NODE_ID: "3"\n      KAFKA_CONTROLLER_QUORUM_VOTERS: 1@kafka1:9093,3@kafka3:9093\n',
        "kafka3: the controller quorum is not every broker",
    ),
    Breakage(
        kafka_problems,
        COMPOSE,
        'KAFKA_NODE_ID: "3"\n',
        'KAFKA_NODE_ID: "3"\n      CLUSTER_ID: MkU3OEVBNTcwNTJENDM2Qg\n',
        "the brokers disagree on CLUSTER_ID",
    ),
    Breakage(
        mongodb_problems,
        COMPOSE,
        "27019/?replicaSet=rs0\n",
        "27019/?replicaSet=rs1\n",
        "REPLICANTE_STORE_MONGODB_URI is not",
    ),
    Breakage(
        mongodb_problems,
        COMPOSE,
        "REPLICANTE_TEST_MONGODB_URI='mongodb://mongo1:27017",
        "REPLICANTE_TEST_MONGODB_URI='mongodb://localhost:27017",
        "the comment does not give the live tests' URI",
    ),
    Breakage(
        mongodb_problems,
        "examples/mongodb-replica-set.yaml",
        "localhost:27019",
        "localhost:27020",
        "does not reach the published ports",
    ),
    Breakage(
        temporal_problems,
        COMPOSE,
        "REPLICANTE_TEMPORAL_ADDRESS: temporal:7233",
        "REPLICANTE_TEMPORAL_ADDRESS: temporal:7234",
        "another Temporal than the one temporal-setup prepares",
    ),
    Breakage(
        temporal_problems,
        COMPOSE,
        "SQL_PASSWORD: temporal",
        "SQL_PASSWORD: secret",
        "temporal-schema does not log in",
    ),
    Breakage(
        temporal_problems,
        "deploy/temporal/dynamicconfig.yaml",
        "\n{}\n",
        "\n[]\n",
        "DYNAMIC_CONFIG_FILE_PATH is no mounted YAML mapping",
    ),
    Breakage(
        collector_problems,
        "deploy/otel-collector/config.yaml",
        "endpoint: jaeger:4317",
        "endpoint: tempo:4317",
        "tempo:4317 is no service",
    ),
]


@pytest.fixture
def stack_copy(tmp_path: Path) -> Path:
    """A copy of the files the checks read, to break."""
    for name in (COMPOSE, "Dockerfile", "pyproject.toml", INSTALL):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    for directory in ("deploy", "examples"):
        shutil.copytree(REPO_ROOT / directory, tmp_path / directory)
    return tmp_path


@pytest.mark.parametrize(
    "breakage", BREAKAGES, ids=[f"{b.check.__name__}-{n}" for n, b in enumerate(BREAKAGES)]
)
def test_each_check_sees_a_broken_copy(stack_copy: Path, breakage: Breakage) -> None:
    path = stack_copy / breakage.file
    original = path.read_text()
    assert breakage.text in original, f"{breakage.file} no longer has {breakage.text!r}"
    path.write_text(original.replace(breakage.text, breakage.replacement))
    problems = breakage.check(Stack.load(stack_copy))
    assert any(breakage.problem in p for p in problems), problems


def test_every_check_is_broken_at_least_once() -> None:
    assert {b.check for b in BREAKAGES} == set(CHECKS)


# --- the scripts in deploy/, run ----------------------------------------------------------------


async def test_setup_namespace_registers_namespace_and_search_attributes(
    temporal_env: WorkflowEnvironment,
) -> None:
    """On the session's dev server, in a namespace of its own: created, given every search
    attribute the monitor sets with its type, and a rerun changes nothing."""
    namespace = "compose-setup"
    script = REPO_ROOT / "deploy" / "temporal" / "setup-namespace.sh"
    environment = {
        **os.environ,
        "PATH": f"{temporal_binary().parent}:{os.environ['PATH']}",
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": namespace,
    }
    for _ in range(2):
        run = await asyncio.to_thread(
            subprocess.run, ["sh", str(script)], env=environment, capture_output=True, timeout=150
        )
        assert run.returncode == 0, run.stderr.decode()
    response = await temporal_env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    registered = {
        name: SearchAttributeIndexedValueType(kind)
        for name, kind in response.custom_attributes.items()
    }
    expected = {key.name: key.indexed_value_type for key in search_attributes.ALL}
    assert {name: registered.get(name) for name in expected} == expected


def stand_in(directory: Path, name: str, body: str) -> None:
    """A command on PATH that logs its arguments to calls.log, then runs `body` (sh)."""
    path = directory / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{directory}/calls.log"\n{body}\n')
    path.chmod(0o755)


def run_with_stand_ins(directory: Path, argv: list[str]) -> tuple[int, list[str]]:
    environment = {**os.environ, "PATH": f"{directory}:{os.environ['PATH']}"}
    code = subprocess.run(argv, env=environment, capture_output=True, timeout=30).returncode
    log = directory / "calls.log"
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return code, calls


def test_apply_clusters_applies_every_spec_and_stops_at_a_refusal(tmp_path: Path) -> None:
    stack = Stack.load(REPO_ROOT)
    entrypoint = stack.services["apply"]["entrypoint"]
    script = stack.mounted("apply", entrypoint[1])
    directory = stack.mounted("apply", entrypoint[2])
    assert script is not None and directory is not None
    specs = sorted(directory.glob("*.yaml"))
    stand_in(tmp_path, "replicante", "")
    code, calls = run_with_stand_ins(tmp_path, ["sh", str(script), str(directory)])
    assert (code, calls) == (0, [f"replicante cluster apply -f {spec}" for spec in specs])
    stand_in(tmp_path, "replicante", f'case "$*" in *{specs[1].name}) exit 2;; esac')
    code, calls = run_with_stand_ins(tmp_path, ["sh", str(script), str(directory)])
    assert (code, len(calls)) == (2, 2)


def test_setup_schema_sets_up_a_new_database_and_only_updates_one_in_use(tmp_path: Path) -> None:
    """temporal-sql-tool stood in for: update-schema fails on a database setup-schema has not
    made yet, as the real one does without its version table."""
    script = REPO_ROOT / "deploy" / "temporal" / "setup-schema.sh"
    stand_in(
        tmp_path,
        "temporal-sql-tool",
        f"""while [ "$1" != --db ]; do shift; done
case "$3" in
  setup-schema) touch "{tmp_path}/$2" ;;
  update-schema) [ -f "{tmp_path}/$2" ] ;;
esac""",
    )
    login = "temporal-sql-tool --db "
    versioned = "/etc/temporal/schema/postgresql/v12"
    code, calls = run_with_stand_ins(tmp_path, ["sh", str(script)])
    assert code == 0
    assert [call.removeprefix(login) for call in calls] == [
        "temporal create",
        f"temporal update-schema -d {versioned}/temporal/versioned",
        "temporal setup-schema -v 0.0",
        f"temporal update-schema -d {versioned}/temporal/versioned",
        "temporal_visibility create",
        f"temporal_visibility update-schema -d {versioned}/visibility/versioned",
        "temporal_visibility setup-schema -v 0.0",
        f"temporal_visibility update-schema -d {versioned}/visibility/versioned",
    ]
    code, calls = run_with_stand_ins(tmp_path, ["sh", str(script)])
    assert code == 0
    assert [call.removeprefix(login).split()[1] for call in calls] == [
        "create",
        "update-schema",
    ] * 2
