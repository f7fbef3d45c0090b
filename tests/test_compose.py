"""docker-compose.yml and the Dockerfile, checked statically: no Docker engine runs here."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import yaml

from models import load_spec
from tests.test_mongodb_live import SKIP_REASON as MONGODB_LIVE_SKIP_REASON
from worker.settings import REPO_ROOT
from workflows import search_attributes


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return loaded


def test_services_of_the_walking_skeleton() -> None:
    services = compose()["services"]
    assert {"temporal", "zk1", "zk2", "zk3", "worker", "apply"} <= set(services)
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["depends_on"]["temporal"]["condition"] == "service_healthy"


def test_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        assert re.fullmatch(r"[a-z0-9./-]+:\d+(\.\d+)+", image), f"{name}: {image} is not pinned"


def test_ensemble_and_temporal_match_what_replicante_needs() -> None:
    services = compose()["services"]
    for n in (1, 2, 3):
        env = services[f"zk{n}"]["environment"]
        assert env["ZOO_MY_ID"] == str(n)
        assert set(env["ZOO_SERVERS"].split()) == {
            f"server.{m}=zk{m}:2888:3888;2181" for m in (1, 2, 3)
        }
        assert {"srvr", "mntr", "conf"} <= set(env["ZOO_4LW_COMMANDS_WHITELIST"].split(","))
    flags = [f"--search-attribute={key.name}=" for key in search_attributes.ALL]
    command = services["temporal"]["command"]
    assert all(any(arg.startswith(flag) for arg in command) for flag in flags)


def test_applied_spec_names_the_compose_members() -> None:
    command = compose()["services"]["apply"]["command"]
    spec = load_spec(REPO_ROOT / command[command.index("-f") + 1])
    assert [n.address for n in spec.nodes] == ["zk1:2181", "zk2:2181", "zk3:2181"]


def test_mongodb_replica_set_the_live_test_can_reach_from_the_host() -> None:
    services = compose()["services"]
    ports = []
    for name in ("mongo1", "mongo2", "mongo3"):
        command = services[name]["command"]
        assert command[:3] == ["mongod", "--replSet", "rs0"] and "--bind_ip_all" in command
        ports.append(int(command[command.index("--port") + 1]))
        assert services[name]["image"] == services["mongo-init"]["image"]
    assert len(set(ports)) == 3
    # One network namespace, mongo1's, which publishes every member's port on loopback: the
    # members' names (localhost:port) work inside and from the host alike.
    for name in ("mongo2", "mongo3", "mongo-init"):
        assert services[name]["network_mode"] == "service:mongo1"
    assert sorted(services["mongo1"]["ports"]) == sorted(f"127.0.0.1:{p}:{p}" for p in ports)
    init = services["mongo-init"]
    script = init["entrypoint"][-1]
    assert "rs.initiate({_id: 'rs0'" in script
    assert sorted(re.findall(r"host: 'localhost:(\d+)'", script)) == sorted(map(str, ports))
    # Once: an initiated set answers rs.status() and is left alone; a failed try is retried.
    assert "NotYetInitialized" in script and init["restart"] == "on-failure"
    assert all(dep["condition"] == "service_healthy" for dep in init["depends_on"].values())
    # The URI the file's comment gives is the one that reaches those members, and the live
    # test's skip reason points at this file.
    hosts = ",".join(f"localhost:{p}" for p in sorted(ports))
    uri = f"mongodb://{hosts}/?replicaSet=rs0"
    assert f"REPLICANTE_TEST_MONGODB_URI='{uri}'" in (REPO_ROOT / "docker-compose.yml").read_text()
    assert "docker-compose.yml has a 3-member replica set" in MONGODB_LIVE_SKIP_REASON
    example = load_spec(REPO_ROOT / "examples" / "mongodb-replica-set.yaml")
    assert [n.address for n in example.nodes] == [f"localhost:{p}" for p in ports]


def test_dockerfile_copies_every_package() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    copied = re.findall(r"^COPY (\S+) \1$", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    assert sorted(packages) == sorted(set(copied) - {"playground"})
