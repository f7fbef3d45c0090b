"""What the entry points import: a node agent runs on every datastore host, six of them in
the playground, so it loads neither kafka-python nor the core's workflows and datastore
clients; an operator's CLI call loads kafka-python only to follow the event stream.

Each entry point runs in a fresh interpreter under `-X importtime`, which lists every
module it imports, and stops at a bad input before connecting anywhere: our modules
import what they need at the top, so that is the whole import graph of the command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import REPO_ROOT

DATASTORE_CLIENTS = ("kafka", "kazoo", "pymongo")
CORE = ("worker.core", "workflows.monitor", "workflows.remediation", "workflows.stream")
CLI = "from client.cli import entrypoint; entrypoint()"


def imported_by(*argv: str) -> tuple[int, str, set[str]]:
    """Exit code, stderr without the import lines, and the modules `python ARGV` imported."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = run.stderr.splitlines()
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    rest = "\n".join(line for line in lines if not line.startswith("import time:"))
    return run.returncode, rest, modules


def under(modules: set[str], packages: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages)}


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "worker", "--agent", "zk1"],
        ["-c", CLI, "agent", "--node", "zk1"],
    ],
    ids=["python -m worker --agent", "replicante agent"],
)
def test_the_agent_imports_neither_kafka_python_nor_the_core(
    argv: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "zk1.yaml"
    code, err, modules = imported_by(*argv, "--config", str(missing))
    # It got as far as reading its config: everything it runs with is imported by then.
    assert code == 2 and str(missing) in err, err
    assert {"worker.agent", "activities.service", "temporalio.worker"} <= modules
    assert under(modules, DATASTORE_CLIENTS + CORE) == set()


def test_an_operator_command_does_not_import_kafka_python() -> None:
    code, err, modules = imported_by("-c", CLI, "events", "--since", "yesterday")
    assert code == 2 and "--since" in err, err
    assert "client.api" in modules
    assert under(modules, DATASTORE_CLIENTS + CORE) == set()
