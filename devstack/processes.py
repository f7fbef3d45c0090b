"""Detached server processes tracked by pid files, so any later shell or test can find them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

# Popen objects of the servers this Python process spawned: polling them reaps a dead
# child at once (a killed child otherwise stays a zombie, which still "exists" for
# os.kill), and holding them silences Popen's "still running" warning at exit.
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    argv: Sequence[str | Path],
    *,
    log_file: Path,
    pid_file: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Start argv in its own session (so ^C in the caller's terminal does not reach it),
    appending its output to log_file, and record its pid in pid_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(pid_file)
    return proc.pid


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state (R, S, T for stopped, Z for zombie...), None if gone."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in parentheses may itself contain spaces or parentheses.
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    state = process_state(pid)
    if state == "Z":
        # A JVM's main thread turns zombie first; its other threads still hold the
        # listening sockets for ~20 ms, so a connection then is reset, not refused.
        try:
            return len(list(Path(f"/proc/{pid}/task").iterdir())) > 1
        except FileNotFoundError:
            return False
    return state is not None and state != "X"


def is_paused(pid: int) -> bool:
    return process_state(pid) in ("T", "t")


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The live pid on the first line of pid_file (PostgreSQL's postmaster.pid has more
    lines), or None.

    The process must have `marker` (e.g. its config file path) on its command line: after
    a reboot or a crash the recorded pid may belong to an unrelated process by now.
    """
    try:
        pid = int(pid_file.read_text().partition("\n")[0])
    except (FileNotFoundError, ValueError):
        return None
    if not is_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return pid if marker.encode() in cmdline else None


def send_signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the process outlives `grace` seconds."""
    stop_all([pid], grace)


def stop_all(
    pids: Iterable[int],
    grace: float = 10.0,
    hopeless: Callable[[list[int]], bool] | None = None,
) -> None:
    """SIGTERM every process at once, then SIGKILL those that outlive `grace` seconds, or
    as soon as `hopeless(pids still alive)` says they cannot finish on their own.

    At once, because members of one cluster may wait on each other while they shut down:
    a Kafka broker stopped after the other two waits 5 minutes for a controller quorum.
    """
    pids = list(pids)
    for pid in pids:
        send_signal(pid, signal.SIGTERM)
        # A SIGSTOPped process keeps a SIGTERM pending until it is continued.
        send_signal(pid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    alive = [pid for pid in pids if is_alive(pid)]
    while alive and time.monotonic() < deadline and not (hopeless and hopeless(alive)):
        time.sleep(0.05)
        alive = [pid for pid in alive if is_alive(pid)]
    for pid in alive:
        send_signal(pid, signal.SIGKILL)
    for pid in alive:
        wait_dead(pid, 5.0)
    for pid in pids:
        _children.pop(pid, None)


def stop_recorded(pid_file: Path, marker: str, grace: float = 10.0) -> int | None:
    """Stop the process recorded in pid_file, if it is still running; returns its pid."""
    pid = read_pid(pid_file, marker)
    if pid is not None:
        stop(pid, grace)
    pid_file.unlink(missing_ok=True)
    return pid


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Wait until host:port accepts; give up early once `alive` says the server died."""
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if alive is not None and not alive():
            raise RuntimeError(f"server for {host}:{port} exited before listening")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections in {timeout:.0f} s")
        time.sleep(0.1)


def wait_until_answered(argv: list[str], pid: int, timeout: float, every: float) -> None:
    """Run `argv` every `every` s until it exits 0: RuntimeError if process `pid` exits
    first, TimeoutError with the last attempt's stderr after `timeout` s. For servers whose
    port opens before they serve, asked as a client would ask."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        if done.returncode == 0:
            return
        if not is_alive(pid):
            raise RuntimeError("server exited")
        if time.monotonic() >= deadline:
            raise TimeoutError(done.stderr.strip())
        time.sleep(every)
