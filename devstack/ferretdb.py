"""FerretDB on SQLite as a background process: a real MongoDB wire-protocol server (its own
implementation of the protocol, the commands and SCRAM), not MongoDB. It answers `hello`
as a writable primary (with `setName` when given one) and has no replica set behind it:
no replSetGetStatus, replSetGetConfig, replSetStepDown.

scripts/install.sh builds the binary from its Go module once per machine
(devstack.home.build_dir).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from devstack import processes
from devstack.home import build_dir
from devstack.slots import Slot, claim_slot

VERSION = "v1.24.2"
"""What scripts/install.sh builds."""
SET_NAME = "rs0"
"""What its hello names as `setName`: FerretDB's only sign of a replica set."""
PORT = 27017
DEBUG_PORT = 8088
"""FerretDB's HTTP handlers (metrics, pprof): on by default, so each server needs its own."""


def ferretdb_binary() -> Path:
    built = build_dir("ferretdb") / "ferretdb"
    if not built.exists():
        raise FileNotFoundError(
            f"no FerretDB at {built}: scripts/install.sh builds it (needs Go and the Go"
            " module proxy)"
        )
    return built


class FerretDB:
    """One server whose SQLite files, state, log and pid file live in <home>/ferretdb, with
    one login (`username`, `password` in the `admin` database) required by every command
    but hello and buildInfo."""

    def __init__(self, home: Path, ip: str, username: str, password: str) -> None:
        self.ip = ip
        self.port = PORT
        self.username = username
        self.password = password
        self.dir = home / "ferretdb"
        self.log_file = self.dir / "ferretdb.log"
        self.pid_file = self.dir / "ferretdb.pid"

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def uri(self) -> str:
        """A URI logging in as the server's user, as REPLICANTE_STORE_MONGODB_URI takes it."""
        return f"mongodb://{self.username}:{self.password}@{self.address}/?authSource=admin"

    def pid(self) -> int | None:
        # The state dir tells our server apart from any other process that got the pid.
        return processes.read_pid(self.pid_file, str(self.dir))

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it takes the login; no-op if already running."""
        if self.pid() is not None:
            return
        if processes.port_open(self.ip, self.port):
            raise RuntimeError(f"{self.address} is taken by a process this home did not start")
        self.dir.mkdir(parents=True, exist_ok=True)
        argv: list[str | Path] = [
            ferretdb_binary(),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.dir}/",
            f"--state-dir={self.dir}",
            f"--listen-addr={self.address}",
            f"--debug-addr={self.ip}:{DEBUG_PORT}",
            "--telemetry=disable",
            "--test-enable-new-auth",
            "--setup-database=admin",
            f"--setup-username={self.username}",
            f"--setup-password={self.password}",
            f"--repl-set-name={SET_NAME}",
        ]
        pid = processes.spawn(argv, log_file=self.log_file, pid_file=self.pid_file)
        try:
            self._wait_login(pid, timeout)
        except (RuntimeError, TimeoutError) as e:
            processes.stop(pid)
            self.pid_file.unlink(missing_ok=True)
            raise RuntimeError(f"FerretDB failed to start: {e}; see {self.log_file}") from e

    def _wait_login(self, pid: int, timeout: float) -> None:
        # The port opens before the setup user exists; a login that works is the sign.
        deadline = time.monotonic() + timeout
        while True:
            client: MongoClient[dict[str, Any]] = MongoClient(
                self.uri(), directConnection=True, serverSelectionTimeoutMS=500
            )
            try:
                client.admin.command("connectionStatus")
                return
            except PyMongoError as error:
                if not processes.is_alive(pid):
                    raise RuntimeError("server exited") from error
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no login within {timeout:.0f} s: {error}") from error
            finally:
                client.close()
            time.sleep(0.1)

    def stop(self, grace: float = 10.0) -> None:
        processes.stop_recorded(self.pid_file, str(self.dir), grace)


def claim_ferretdb(home: Path, username: str, password: str) -> tuple[FerretDB, Slot]:
    """A server (not started) on 127.0.0.(10n+20):27017 for the lowest free "ferretdb-test"
    slot n: the one address of each ten the ZooKeeper and Kafka test slots leave free."""

    def make(slot: Slot, at: Path) -> FerretDB:
        return FerretDB(at, f"127.0.0.{10 * slot.index + 20}", username, password)

    def usable(slot: Slot) -> bool:
        if slot.previous_owner:
            # A holder killed before its teardown leaves its server holding the port.
            make(slot, Path(slot.previous_owner)).stop()
        server = make(slot, home)
        return not any(
            processes.port_open(server.ip, port, timeout=0.2) for port in (PORT, DEBUG_PORT)
        )

    slot = claim_slot("ferretdb-test", usable)
    slot.record(str(home))
    return make(slot, home), slot
