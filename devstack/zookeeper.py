"""A ZooKeeper ensemble of real JVMs, one member per loopback IP so all use the usual ports."""

from __future__ import annotations

import shutil
import signal
import socket
import time
from pathlib import Path

from devstack import processes
from devstack.home import jars_dir
from devstack.slots import Slot, claim_slot

SERVER_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
FOUR_LETTER_WORDS = "srvr,mntr,conf,ruok,stat,cons,envi"

# Logs go to stdout, which the member's log file captures along with JVM crash output.
LOGBACK_XML = """\
<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{ISO8601} %-5level [%thread] %logger{36} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="out"/></root>
</configuration>
"""


def srvr(host: str, port: int, timeout: float = 1.0) -> dict[str, str] | None:
    """The member's `srvr` reply as a dict ("Mode" -> "leader"), None if it does not answer.

    A member outside a quorum replies without a Mode; a SIGSTOPped one accepts the connection
    (the kernel does that) but never replies, hence the timeout.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"srvr")
            chunks: list[bytes] = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return None
    reply: dict[str, str] = {}
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            reply[key.strip()] = value.strip()
    return reply


class ZooKeeperEnsemble:
    """Members are numbered 1..N; member n runs on ips[n-1] in <home>/zookeeper/<name>/<n>/."""

    def __init__(
        self,
        home: Path,
        name: str,
        ips: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3"),
        client_port: int = 2181,
        peer_port: int = 2888,
        election_port: int = 3888,
        tick_ms: int = 500,
        heap_mb: int = 128,
        jars: Path | None = None,
        java: str | None = None,
    ) -> None:
        self.name = name
        self.ips = ips
        self.client_port = client_port
        self.peer_port = peer_port
        self.election_port = election_port
        self.tick_ms = tick_ms
        self.heap_mb = heap_mb
        self.jars = jars if jars is not None else jars_dir("zookeeper")
        self.java = java
        self.dir = home / "zookeeper" / name

    @property
    def members(self) -> range:
        return range(1, len(self.ips) + 1)

    @property
    def addresses(self) -> list[str]:
        return [f"{ip}:{self.client_port}" for ip in self.ips]

    @property
    def connect_string(self) -> str:
        """All members, comma-separated, as kazoo's `hosts` wants them."""
        return ",".join(self.addresses)

    def member_dir(self, n: int) -> Path:
        self._check(n)
        return self.dir / str(n)

    def log_file(self, n: int) -> Path:
        return self.member_dir(n) / "zookeeper.log"

    def _pid_file(self, n: int) -> Path:
        return self.member_dir(n) / "zookeeper.pid"

    def _config(self, n: int) -> Path:
        return self.member_dir(n) / "zoo.cfg"

    def _check(self, n: int) -> None:
        if n not in self.members:
            raise ValueError(
                f"no member {n} in ensemble {self.name!r} (members 1..{len(self.ips)})"
            )

    # --- processes -------------------------------------------------------------------------

    def member_pid(self, n: int) -> int | None:
        # Each member's zoo.cfg path is unique, so it identifies its JVM on the command line.
        return processes.read_pid(self._pid_file(n), str(self._config(n)))

    def member_running(self, n: int) -> bool:
        return self.member_pid(n) is not None

    def member_paused(self, n: int) -> bool:
        pid = self.member_pid(n)
        return pid is not None and processes.is_paused(pid)

    def start(self) -> None:
        """Start every member not already running; does not wait for the quorum (wait_ready)."""
        for n in self.members:
            self.start_member(n)

    def start_member(self, n: int) -> int:
        pid = self.member_pid(n)
        if pid is not None:
            return pid
        java = self.java or shutil.which("java")
        if java is None:
            raise FileNotFoundError("no `java` on PATH: ZooKeeper needs a JRE (17 works)")
        if not any(self.jars.glob("zookeeper-*.jar")):
            raise FileNotFoundError(f"no ZooKeeper jars in {self.jars}: run scripts/install.sh")
        self._write_files(n)
        argv = [
            java,
            f"-Xms{self.heap_mb}m",
            f"-Xmx{self.heap_mb}m",
            # A small single-threaded GC and the C1 compiler alone start a member faster
            # and keep three of them light; -XX:-UsePerfData avoids /tmp/hsperfdata files.
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData",
            f"-Dlogback.configurationFile={self.member_dir(n) / 'logback.xml'}",
            "-cp",
            f"{self.jars}/*",
            SERVER_CLASS,
            str(self._config(n)),
        ]
        return processes.spawn(
            argv, log_file=self.log_file(n), pid_file=self._pid_file(n), cwd=self.member_dir(n)
        )

    def _write_files(self, n: int) -> None:
        member = self.member_dir(n)
        (member / "data").mkdir(parents=True, exist_ok=True)
        (member / "data" / "myid").write_text(f"{n}\n")
        (member / "logback.xml").write_text(LOGBACK_XML)
        lines = [
            f"tickTime={self.tick_ms}",
            # Followers get 10 ticks to sync on joining and may lag 5 ticks behind after:
            # with 500 ms ticks a member's death or pause is noticed within seconds.
            "initLimit=10",
            "syncLimit=5",
            f"dataDir={member / 'data'}",
            f"clientPort={self.client_port}",
            f"clientPortAddress={self.ips[n - 1]}",
            f"4lw.commands.whitelist={FOUR_LETTER_WORDS}",
            # The AdminServer would bind 8080 on all addresses, once per member.
            "admin.enableServer=false",
        ]
        lines += [
            f"server.{m}={ip}:{self.peer_port}:{self.election_port}"
            for m, ip in zip(self.members, self.ips, strict=True)
        ]
        self._config(n).write_text("\n".join(lines) + "\n")

    def stop(self, grace: float = 10.0) -> None:
        for n in self.members:
            self.stop_member(n, grace)

    def stop_member(self, n: int, grace: float = 10.0) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after `grace` seconds); no-op if not running."""
        processes.stop_recorded(self._pid_file(n), str(self._config(n)), grace)

    def kill_member(self, n: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` and, for a fatal one, wait until the member is gone."""
        pid = self.member_pid(n)
        if pid is None:
            return
        processes.send_signal(pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            processes.send_signal(pid, signal.SIGCONT)
            processes.wait_dead(pid, 10.0)

    def pause_member(self, n: int) -> None:
        """SIGSTOP member n and wait until the kernel shows it stopped (every thread is)."""
        self.kill_member(n, signal.SIGSTOP)
        pid = self.member_pid(n)
        deadline = time.monotonic() + 5.0
        while pid is not None and not processes.is_paused(pid) and time.monotonic() < deadline:
            time.sleep(0.005)

    def resume_member(self, n: int) -> None:
        self.kill_member(n, signal.SIGCONT)

    # --- quorum ----------------------------------------------------------------------------

    def srvr(self, n: int, timeout: float = 1.0) -> dict[str, str] | None:
        self._check(n)
        return srvr(self.ips[n - 1], self.client_port, timeout)

    def mode(self, n: int, timeout: float = 1.0) -> str | None:
        """ "leader", "follower", "standalone", or None when the member does not serve."""
        reply = self.srvr(n, timeout)
        return None if reply is None else reply.get("Mode")

    def leader(self) -> int | None:
        leaders = [n for n in self.members if self.member_running(n) and self.mode(n) == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def ready(self) -> bool:
        """Every running member serves, and exactly one of them leads."""
        running = [n for n in self.members if self.member_running(n)]
        modes = [self.mode(n) for n in running]
        if len(self.ips) == 1:
            return modes == ["standalone"]
        ok = bool(running) and all(m in ("leader", "follower") for m in modes)
        return ok and modes.count("leader") == 1

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait until ready(); returns the seconds it took."""
        start = time.monotonic()
        while not self.ready():
            # No member left running means they all crashed: waiting longer cannot help.
            dead = not any(self.member_running(n) for n in self.members)
            if dead or time.monotonic() - start >= timeout:
                states = ", ".join(f"{n}: {self.describe(n)}" for n in self.members)
                raise TimeoutError(
                    f"ZooKeeper ensemble {self.name!r} not ready after "
                    f"{time.monotonic() - start:.0f} s ({states}); "
                    f"see the logs {self.dir}/<n>/zookeeper.log"
                )
            time.sleep(0.2)
        return time.monotonic() - start

    def describe(self, n: int) -> str:
        """One-word-ish state of member n for status lines."""
        pid = self.member_pid(n)
        if pid is None:
            return "stopped"
        if processes.is_paused(pid):
            return f"paused (pid {pid})"
        return f"{self.mode(n) or 'not serving'} (pid {pid})"


def slot_ips(slot: Slot) -> tuple[str, ...]:
    """Slot n's members run on 127.0.0.(10n+11)-(10n+13), away from a developer's
    playground on 127.0.0.1-3."""
    return tuple(f"127.0.0.{10 * (slot.index + 1) + m}" for m in (1, 2, 3))


def claim_ensemble(
    home: Path, name: str, kind: str = "zk-test", jars: Path | None = None
) -> tuple[ZooKeeperEnsemble, Slot]:
    """A 3-member ensemble (not started) on the IPs of the lowest free, usable slot of `kind`.

    Concurrent holders (two test sessions, a test session and a benchmark, or one process
    that claims twice) get disjoint IPs. The caller stops the ensemble, then releases the
    slot. A slot whose addresses answer (a server someone started by hand) is skipped.
    """

    def usable(slot: Slot) -> bool:
        if slot.previous_owner:
            # A holder killed before its teardown leaves its members holding the ports.
            # Records written before the ensemble name was recorded hold only the home.
            old_home, _, old_name = slot.previous_owner.partition("\n")
            stale = ZooKeeperEnsemble(Path(old_home), old_name or "test", slot_ips(slot), jars=jars)
            stale.stop()
        return not any(
            processes.port_open(ip, port, timeout=0.2)
            for ip in slot_ips(slot)
            for port in (2181, 2888, 3888)
        )

    slot = claim_slot(kind, usable)
    slot.record(f"{home}\n{name}")
    return ZooKeeperEnsemble(home, name, slot_ips(slot), jars=jars), slot
