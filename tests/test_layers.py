"""The layers contract (pyproject.toml `[tool.importlinter]`, run by scripts/test) holds on
the tree, and would catch an upward import or a circle: each is planted in a copy of the
tree, and the contract must break naming it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import REPO_ROOT

PACKAGES = (
    "models", "config", "store", "activities", "workflows", "worker", "client",
    "devstack", "testkit", "bench", "tests",
)  # fmt: skip


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(lint), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_the_tree_keeps_the_contracts() -> None:
    run = lint_imports(REPO_ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 2 kept, 0 broken." in run.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        ("store/base.py", "from worker import process", "store.base -> worker.process"),
        ("config/settings.py", "import activities.service", "config.settings -> activities"),
        ("activities/events.py", "import tests.helpers", "activities.events -> tests.helpers"),
        ("models/spec.py", "import models.events", "No cycles are allowed in models."),
    ],
    ids=["store imports worker", "config imports activities", "imports tests", "a circle"],
)
def test_an_upward_import_or_a_circle_breaks_them(
    tmp_path: Path, module: str, planted: str, broken: str
) -> None:
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    for package in PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    with (tmp_path / module).open("a") as source:
        source.write(f"\n{planted}  # planted by the test\n")
    run = lint_imports(tmp_path)
    assert run.returncode == 1, run.stdout
    assert broken in run.stdout, run.stdout
