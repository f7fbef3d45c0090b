"""Clusters of real JVMs, one member per loopback IP so all use the usual ports.

ZooKeeper and Kafka differ in their config files and in how they tell they are ready; the
rest lives here: member directories, pid files, the signals that break members, and the
machine-wide slots that keep concurrent test sessions apart.
"""

from __future__ import annotations

import shutil
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

from devstack import processes
from devstack.home import jars_dir
from devstack.slots import Slot, claim_slot


def jvm_flags(heap_mb: int) -> list[str]:
    """Flags for a short-lived or small server JVM on a 2-core machine."""
    return [
        f"-Xms{heap_mb}m",
        f"-Xmx{heap_mb}m",
        # A small single-threaded GC and the C1 compiler alone start a member faster and
        # keep three of them light; -XX:-UsePerfData avoids /tmp/hsperfdata files.
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-XX:-UsePerfData",
    ]


class JvmCluster(ABC):
    """Members are numbered 1..N; member n runs on ips[n-1] in <home>/<service>/<name>/<n>/."""

    service: ClassVar[str]
    """Names the state dir, the jars dir, and each member's log and pid files."""
    product: ClassVar[str]
    title: ClassVar[str]
    """What messages call the whole, e.g. "ZooKeeper ensemble"."""
    noun: ClassVar[str] = "member"
    main_class: ClassVar[str]
    config_name: ClassVar[str]
    jar_glob: ClassVar[str]
    """Matches a jar only the installed server has: tells whether install.sh has run."""

    def __init__(
        self,
        home: Path,
        name: str,
        ips: tuple[str, ...],
        heap_mb: int,
        jars: Path | None,
        java: str | None,
    ) -> None:
        self.name = name
        self.ips = ips
        self.heap_mb = heap_mb
        self.jars = jars if jars is not None else jars_dir(self.service)
        self.java = java
        self.dir = home / self.service / name

    @property
    @abstractmethod
    def ports(self) -> tuple[int, ...]:
        """The ports every member listens on, each on its own IP; clients use the first."""

    @property
    def members(self) -> range:
        return range(1, len(self.ips) + 1)

    @property
    def addresses(self) -> list[str]:
        return [f"{ip}:{self.ports[0]}" for ip in self.ips]

    def member_dir(self, n: int) -> Path:
        self._check(n)
        return self.dir / str(n)

    def log_file(self, n: int) -> Path:
        return self.member_dir(n) / f"{self.service}.log"

    def _pid_file(self, n: int) -> Path:
        return self.member_dir(n) / f"{self.service}.pid"

    def _config(self, n: int) -> Path:
        return self.member_dir(n) / self.config_name

    def _check(self, n: int) -> None:
        if n not in self.members:
            raise ValueError(
                f"no {self.noun} {n} in {self.title} {self.name!r} "
                f"({self.noun}s 1..{len(self.ips)})"
            )

    # --- processes -------------------------------------------------------------------------

    def member_pid(self, n: int) -> int | None:
        # Each member's config path is unique, so it identifies its JVM on the command line.
        return processes.read_pid(self._pid_file(n), str(self._config(n)))

    def member_running(self, n: int) -> bool:
        return self.member_pid(n) is not None

    def member_paused(self, n: int) -> bool:
        pid = self.member_pid(n)
        return pid is not None and processes.is_paused(pid)

    def start(self) -> None:
        """Start every member not already running; does not wait for them (wait_ready)."""
        for n in self.members:
            self.start_member(n)

    def start_member(self, n: int) -> int:
        pid = self.member_pid(n)
        if pid is not None:
            return pid
        java = self.check_installed()
        self._write_files(n)
        argv = [
            java,
            *jvm_flags(self.heap_mb),
            *self._jvm_options(n),
            "-cp",
            f"{self.jars}/*",
            self.main_class,
            str(self._config(n)),
        ]
        return processes.spawn(
            argv, log_file=self.log_file(n), pid_file=self._pid_file(n), cwd=self.member_dir(n)
        )

    def check_installed(self) -> str:
        """The java to run, once it is clear the server's jars are installed too; raises
        FileNotFoundError saying which is missing."""
        java = self.java or shutil.which("java")
        if java is None:
            raise FileNotFoundError(
                f"no `java` on PATH: {self.product} needs a JRE (17 works); "
                "scripts/install.sh installs one when run as root"
            )
        if not any(self.jars.glob(self.jar_glob)):
            raise FileNotFoundError(
                f"no {self.product} jars in {self.jars}: run scripts/install.sh from the repo root"
            )
        return java

    @abstractmethod
    def _write_files(self, n: int) -> None:
        """Write member n's config (and anything else it needs) before it starts."""

    @abstractmethod
    def _jvm_options(self, n: int) -> list[str]:
        """Member n's own JVM options, e.g. where its logging config is."""

    def stop(self, grace: float = 10.0) -> None:
        """Graceful stop of every member at once: SIGTERM, then SIGKILL after `grace`
        seconds, or as soon as those left cannot finish (_stop_hopeless)."""
        pids = [pid for n in self.members if (pid := self.member_pid(n)) is not None]
        processes.stop_all(pids, grace, hopeless=self._stop_hopeless)
        for n in self.members:
            self._pid_file(n).unlink(missing_ok=True)

    def _stop_hopeless(self, alive: list[int]) -> bool:
        """Whether the members still shutting down (these pids) cannot finish on their own."""
        return False

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

    # --- health ----------------------------------------------------------------------------

    @abstractmethod
    def ready(self) -> bool:
        """Every running member serves, and the cluster has its leader."""

    @abstractmethod
    def state(self, n: int) -> str | None:
        """What a running member n says it is (e.g. "leader"), None if it does not serve."""

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait until ready(); returns the seconds it took."""
        start = time.monotonic()
        while not self.ready():
            # No member left running means they all crashed: waiting longer cannot help.
            dead = not any(self.member_running(n) for n in self.members)
            if dead or time.monotonic() - start >= timeout:
                states = ", ".join(f"{n}: {self.describe(n)}" for n in self.members)
                raise TimeoutError(
                    f"{self.title} {self.name!r} not ready after "
                    f"{time.monotonic() - start:.0f} s ({states}); "
                    f"see the logs {self.dir}/<n>/{self.service}.log"
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
        return f"{self.state(n) or 'not serving'} (pid {pid})"


C = TypeVar("C", bound=JvmCluster)


def slot_ips(slot: Slot, first: int) -> tuple[str, ...]:
    """Slot n's 3 members run on 127.0.0.(10n+10+first) and the next two, away from a
    developer's playground on 127.0.0.1-6: ZooKeeper takes first=1, Kafka first=4."""
    base = 10 * (slot.index + 1) + first
    return tuple(f"127.0.0.{base + m}" for m in range(3))


def claim_cluster(
    kind: str,
    home: Path,
    name: str,
    make: Callable[[Path, str, tuple[str, ...]], C],
    first_ip: int,
) -> tuple[C, Slot]:
    """A 3-member cluster (not started) on the IPs of the lowest free, usable slot of `kind`.

    `make(home, name, ips)` builds it. Concurrent holders (two test sessions, a test session
    and a benchmark, or one process that claims twice) get disjoint IPs. The caller stops
    the cluster, then releases the slot. A slot whose addresses answer (a server someone
    started by hand) is skipped.
    """

    def usable(slot: Slot) -> bool:
        ips = slot_ips(slot, first_ip)
        if slot.previous_owner:
            # A holder killed before its teardown leaves its members holding the ports.
            # Records written before the cluster name was recorded hold only the home.
            old_home, _, old_name = slot.previous_owner.partition("\n")
            make(Path(old_home), old_name or "test", ips).stop()
        ports = make(home, name, ips).ports
        return not any(processes.port_open(ip, port, timeout=0.2) for ip in ips for port in ports)

    slot = claim_slot(kind, usable)
    slot.record(f"{home}\n{name}")
    return make(home, name, slot_ips(slot, first_ip)), slot
