"""The production-shape engine: the real Temporal server on PostgreSQL 15, both on loopback,
as background processes (`python -m devstack engine up|down|status`).

It is docker-compose.yml's `temporal` service without Docker: the same server release
(VERSION, which scripts/install.sh builds from the Go module once per machine), configured
as that image is, by the configuration template the server embeds (the image mounts no
config file: temporalio/temporal#10410), filled in from the same environment variables (DB,
POSTGRES_SEEDS, ..., and DYNAMIC_CONFIG_FILE_PATH naming the same file,
deploy/temporal/dynamicconfig.yaml). Its schema is made and moved forward by
deploy/temporal/setup-schema.sh, its namespace and search attributes registered by
deploy/temporal/setup-namespace.sh: the scripts compose runs.

State, under <home>/engine:
  postgresql/data            the database cluster (PostgreSQL refuses to run as root: under
                             root it runs as Debian's `postgres` user and owns postgresql/)
  postgresql/postgresql.log
  temporal/temporal.log, temporal/temporal.pid

Ports, laid out from the frontend's port P as the server's own defaults are from 7233:
history P+1, matching P+2, worker P+6, the frontend's HTTP API P+10, each service's
membership port 300 below its gRPC port (6933...), and PostgreSQL P+199 (7432: beside them,
away from a PostgreSQL of the machine's own on 5432). All on one loopback address.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
from pathlib import Path

from devstack import processes
from devstack.home import REPO_ROOT, build_dir
from devstack.slots import Slot, claim_slot
from devstack.temporal import temporal_binary

VERSION = "v1.32.2"
"""What scripts/install.sh builds and docker-compose.yml's images are tagged with."""
DEPLOY = REPO_ROOT / "deploy" / "temporal"
DYNAMIC_CONFIG = DEPLOY / "dynamicconfig.yaml"
SETUP_SCHEMA = DEPLOY / "setup-schema.sh"
SETUP_NAMESPACE = DEPLOY / "setup-namespace.sh"
DATABASE_USER = "temporal"
"""The only role: initdb makes it the superuser, and loopback logins are trusted."""
SERVICE_OFFSETS = {"FRONTEND": 0, "HISTORY": 1, "MATCHING": 2, "WORKER": 6}
HTTP_OFFSET = 10
MEMBERSHIP_OFFSET = -300
POSTGRESQL_OFFSET = 199


def engine_build() -> Path:
    """The directory scripts/install.sh built the server, temporal-sql-tool and the schema
    into, for VERSION."""
    built = build_dir("temporal")
    stamp = built / ".installed"
    if not stamp.exists() or stamp.read_text().split()[:1] != [VERSION]:
        raise FileNotFoundError(
            f"no Temporal server {VERSION} at {built}: scripts/install.sh builds it (needs Go"
            " and the Go module proxy; about 5 minutes the first time)"
        )
    return built


def postgresql_bindir() -> Path:
    """Where Debian's PostgreSQL keeps initdb, pg_ctl and postgres: not on PATH."""
    try:
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found = ""
    if not found or not (Path(found) / "initdb").exists():
        raise FileNotFoundError(
            "no PostgreSQL server (initdb in `pg_config --bindir`): scripts/install.sh installs"
            " Debian's postgresql-15 when run as root"
        )
    return Path(found)


class PostgreSQL:
    """One database cluster in `dir`/data, run by pg_ctl on ip:port."""

    def __init__(self, dir: Path, ip: str, port: int) -> None:
        self.dir = dir
        self.ip = ip
        self.port = port
        self.data = dir / "data"
        self.log_file = dir / "postgresql.log"

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def owner(self) -> pwd.struct_passwd | None:
        """Who runs it: PostgreSQL refuses root, so under root Debian's `postgres` user."""
        return pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def pid(self) -> int | None:
        """The postmaster's pid, from the first line of its postmaster.pid."""
        return processes.read_pid(self.data / "postmaster.pid", str(self.data))

    def _run(self, tool: str, *args: str | Path, timeout: float = 90.0) -> None:
        owner = self.owner
        done = subprocess.run(
            [str(postgresql_bindir() / tool), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
            user=None if owner is None else owner.pw_uid,
            group=None if owner is None else owner.pw_gid,
            extra_groups=None if owner is None else [],
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(map(str, args))} failed: {done.stderr.strip()}"
                f" (log {self.log_file})"
            )

    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.owner is None:
            return
        # Checked here: initdb's own message names a directory but not the user it ran as.
        closed = [p for p in self.dir.parents if not p.stat().st_mode & 0o001]
        if closed:
            raise RuntimeError(
                f"{closed[0]} is closed to the user postgres, which PostgreSQL runs as under"
                " root: give the engine a home it can reach (chmod o+x, or another home)"
            )
        os.chown(self.dir, self.owner.pw_uid, self.owner.pw_gid)

    def start(self, timeout: float = 60.0) -> None:
        """initdb on first use, then start and wait until it takes connections; no-op if
        running."""
        if self.pid() is not None:
            return
        if processes.port_open(self.ip, self.port):
            raise RuntimeError(f"{self.address} is taken by a process this home did not start")
        self._prepare()
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb",
                f"--pgdata={self.data}",
                f"--username={DATABASE_USER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            )
        # Recorded in postmaster.opts, which a restart reuses: `pg_ctl -D DATA restart` by
        # hand comes back on the same address. Its socket stays in the data dir, not in
        # /run/postgresql, which only Debian's own clusters may use.
        options = f"-c listen_addresses={self.ip} -p {self.port} -k {shlex.quote(str(self.data))}"
        self._run(
            "pg_ctl",
            f"--pgdata={self.data}",
            f"--log={self.log_file}",
            f"--options={options}",
            "--wait",
            f"--timeout={int(timeout)}",
            "start",
            timeout=timeout + 10,
        )

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session cut off, the server back on its data."""
        self._run(
            "pg_ctl",
            f"--pgdata={self.data}",
            f"--log={self.log_file}",
            "--mode=fast",
            "--wait",
            "restart",
        )

    def stop(self) -> None:
        if self.pid() is not None:
            self._run("pg_ctl", f"--pgdata={self.data}", "--mode=fast", "--wait", "stop")


class TemporalServer:
    """The server's four services in one process, on `database`, with its log and pid file
    in `dir`."""

    def __init__(self, dir: Path, ip: str, port: int, database: PostgreSQL) -> None:
        self.dir = dir
        self.ip = ip
        self.port = port
        self.database = database
        self.log_file = dir / "temporal.log"
        self.pid_file = dir / "temporal.pid"

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def ports(self) -> list[int]:
        grpc = [self.port + offset for offset in SERVICE_OFFSETS.values()]
        return [*grpc, *(p + MEMBERSHIP_OFFSET for p in grpc), self.port + HTTP_OFFSET]

    def environment(self) -> dict[str, str]:
        """What the embedded configuration template reads: docker-compose.yml's variables
        for its `temporal` service, pointed at this machine, and the ports compose leaves at
        their defaults because each service there has an address of its own."""
        variables = {
            "DB": "postgres12",
            "POSTGRES_SEEDS": self.database.ip,
            "DB_PORT": str(self.database.port),
            "POSTGRES_USER": DATABASE_USER,
            "POSTGRES_PWD": "",
            "BIND_ON_IP": self.ip,
            "DYNAMIC_CONFIG_FILE_PATH": str(DYNAMIC_CONFIG),
            "TEMPORAL_BROADCAST_ADDRESS": self.ip,
            "FRONTEND_HTTP_PORT": str(self.port + HTTP_OFFSET),
        }
        for service, offset in SERVICE_OFFSETS.items():
            variables[f"{service}_GRPC_PORT"] = str(self.port + offset)
            variables[f"{service}_MEMBERSHIP_PORT"] = str(self.port + offset + MEMBERSHIP_OFFSET)
        return variables

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, str(self.dir))

    def start(self, timeout: float = 90.0) -> None:
        """Start the server and wait until its cluster reports healthy; no-op if running."""
        if self.pid() is not None:
            return
        taken = [p for p in self.ports() if processes.port_open(self.ip, p, timeout=0.2)]
        if taken:
            raise RuntimeError(
                f"{self.ip}: ports {taken} are taken by a process this home did not start"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        # No config file: the template the server embeds, as the image's entrypoint runs it.
        # --root (deprecated, ignored by that template) puts this engine's dir on the
        # command line, which tells its server apart from any other that got the pid.
        argv: list[str | Path] = [engine_build() / "temporal-server", "--root", self.dir]
        argv += ["--allow-no-auth", "start"]
        env = {**os.environ, **self.environment()}
        pid = processes.spawn(argv, log_file=self.log_file, pid_file=self.pid_file, env=env)
        try:
            self._wait_healthy(pid, timeout)
        except (RuntimeError, TimeoutError) as e:
            processes.stop(pid)
            self.pid_file.unlink(missing_ok=True)
            raise RuntimeError(
                f"the Temporal server failed to start: {e}; see {self.log_file}"
            ) from e

    def _wait_healthy(self, pid: int, timeout: float) -> None:
        # The frontend's port opens before history and matching have joined the ring.
        argv = [str(temporal_binary()), "operator", "cluster", "health", "--address", self.address]
        try:
            processes.wait_until_answered(argv, pid, timeout, every=0.5)
        except TimeoutError as e:
            raise TimeoutError(f"not healthy within {timeout:.0f} s: {e}") from None

    def stop(self, grace: float = 20.0) -> None:
        """Stop the server if it runs; the workflows stay in PostgreSQL."""
        processes.stop_recorded(self.pid_file, str(self.dir), grace)


class ProductionEngine:
    """PostgreSQL and the Temporal server on it, with the namespace and our search
    attributes, in <home>/engine."""

    def __init__(
        self, home: Path, ip: str = "127.0.0.1", port: int = 7233, namespace: str = "default"
    ) -> None:
        self.dir = home / "engine"
        self.namespace = namespace
        self.postgresql = PostgreSQL(self.dir / "postgresql", ip, port + POSTGRESQL_OFFSET)
        self.server = TemporalServer(self.dir / "temporal", ip, port, self.postgresql)

    @property
    def address(self) -> str:
        return self.server.address

    def up(self) -> None:
        """Start what is not running; every step looks before it acts, so a second `up`
        changes nothing."""
        engine_build()
        self.postgresql.start()
        if self.server.pid() is None:
            # A running server's schema is the one it started on.
            self._setup(SETUP_SCHEMA, self._schema_env())
            self.server.start()
        self._setup(SETUP_NAMESPACE, self._namespace_env())

    def down(self) -> None:
        """Stop both; PostgreSQL keeps the workflows for the next `up`."""
        self.server.stop()
        self.postgresql.stop()

    def status(self) -> list[str]:
        server, database = self.server.pid(), self.postgresql.pid()
        return [
            f"temporal server {self.address}: "
            + ("stopped" if server is None else f"pid {server}, log {self.server.log_file}"),
            f"postgresql {self.postgresql.address}: "
            + ("stopped" if database is None else f"pid {database}, data {self.postgresql.data}"),
        ]

    def _schema_env(self) -> dict[str, str]:
        # temporal-sql-tool's own variables, as docker-compose.yml sets them for the script.
        return {
            "SQL_PLUGIN": "postgres12",
            "SQL_HOST": self.postgresql.ip,
            "SQL_PORT": str(self.postgresql.port),
            "SQL_USER": DATABASE_USER,
            "SQL_PASSWORD": "",
            "TEMPORAL_SCHEMA_DIR": str(engine_build() / "schema" / "postgresql" / "v12"),
            "PATH": f"{engine_build()}:{os.environ['PATH']}",
        }

    def _namespace_env(self) -> dict[str, str]:
        return {
            "TEMPORAL_ADDRESS": self.address,
            "TEMPORAL_NAMESPACE": self.namespace,
            "PATH": f"{temporal_binary().parent}:{os.environ['PATH']}",
        }

    def _setup(self, script: Path, env: dict[str, str]) -> None:
        done = subprocess.run(
            ["sh", str(script)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{script.relative_to(REPO_ROOT)} failed: {done.stderr.strip()}")


def claim_engine(home: Path) -> tuple[ProductionEngine, Slot]:
    """An engine (not started) on 127.0.1.(n+1), default ports, for the lowest free
    "engine-test" slot n: away from the playground's 127.0.0.1 and every other test slot."""

    def make(slot: Slot, at: Path) -> ProductionEngine:
        return ProductionEngine(at, ip=f"127.0.1.{slot.index + 1}")

    def usable(slot: Slot) -> bool:
        if slot.previous_owner:
            # A holder killed before its teardown leaves its servers holding the ports.
            make(slot, Path(slot.previous_owner)).down()
        engine = make(slot, home)
        ports = [*engine.server.ports(), engine.postgresql.port]
        return not any(processes.port_open(engine.server.ip, p, timeout=0.2) for p in ports)

    slot = claim_slot("engine-test", usable)
    slot.record(str(home))
    return make(slot, home), slot
