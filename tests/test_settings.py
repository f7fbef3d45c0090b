"""Settings read from the environment (config/settings.py): a bad value stops the process
in one line naming the variable, before it connects to anything."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import pytest

from config import settings
from config.settings import REPO_ROOT, Settings


def test_doctests() -> None:
    result = doctest.testmod(settings)
    assert result.attempted > 0 and result.failed == 0


def test_max_watches_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICANTE_MAX_WATCHES", "250")
    assert Settings.from_env().max_watches == 250
    monkeypatch.setenv("REPLICANTE_MAX_WATCHES", "")
    assert Settings.from_env().max_watches == Settings.max_watches


@pytest.mark.parametrize("value", ["0", "-3", "many", "1.5", "9" * 80])
def test_a_bad_max_watches_stops_the_worker_in_one_line(value: str) -> None:
    env = dict(os.environ, REPLICANTE_MAX_WATCHES=value)
    # Nothing listens here: the worker must stop before it tries to connect.
    env["REPLICANTE_TEMPORAL_ADDRESS"] = "127.0.0.1:9"
    run = subprocess.run(
        [sys.executable, "-m", "worker"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "REPLICANTE_MAX_WATCHES" in lines[0], run.stderr
