"""The node agent's activity: run one service action (start, stop, restart, status) of the
host's datastore, with the command from the agent's config, at most once per key.

Exactly once, across retries and agent crashes, rests on a small durable ledger (SQLite)
of the keys this node has run:

- `done`: the result is returned again, without running anything (`ran` False).
- `failed` (the command exited non-zero or timed out): it said it did not do it, so the
  next attempt runs it again; the activity raises, and Temporal's retry policy decides.
- `running` (the agent died mid-command) or `cancelled` (killed on request): whether the
  effect happened is unknown. What is left of the old command's process group is killed,
  then `status` decides: after start/restart, a running service is success without
  running the command again; after stop, a stopped one is. Otherwise the command runs
  once more. Either way the result says `resumed_after_crash`. Without a `status` action
  the agent cannot tell, so it refuses rather than guess.
- A restart is let finish first: a service that runs says nothing of a restart killed
  before it stopped anything (a slow graceful stop, a broker's controlled shutdown), and
  killing it there would skip the restart while reporting it done. The old command keeps
  its own timeout, counted from when it started.
- A restart killed together with the agent (its command too) cannot be let finish. With
  the config's `instance` command, printed before the restart and again now, the same
  instance still running means it stopped nothing: it runs once more. Without it, a
  running service is taken as restarted.

`status` changes nothing: it always runs and is never recorded.

A request for another cluster or node than the config's is refused before anything runs,
logged at WARNING and kept in the ledger's `refused` table: whoever may schedule an activity
can put one on this agent's queue, and the host keeps its own evidence of it (its log level
and rotation are the operator's, and the caller's history is the caller's).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO

from temporalio import activity
from temporalio.exceptions import ApplicationError

from models import SERVICE_ACTIVITY, AgentConfig, ServiceAction, ServiceRequest, ServiceResult

log = logging.getLogger("replicante.agent")

OUTPUT_TAIL_BYTES = 2000
HEARTBEAT_S = 1.0
KEPT_REFUSALS = 1000
"""The ledger keeps the latest refusals only: a flood of them cannot fill the host's disk."""
# Actions whose wanted end state is "running"; STOP wants it stopped.
BRINGS_UP = (ServiceAction.START, ServiceAction.RESTART)


class LedgerBusyError(RuntimeError):
    """Another agent process holds this node's ledger."""


class RunState(StrEnum):
    """Where a key's run stands in the ledger; the value is what its row holds."""

    RUNNING = "running"
    """Begun, not finished: the agent died mid-command, or it runs now."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """Its process group was killed on request."""


@dataclass(frozen=True)
class Entry:
    action: ServiceAction
    state: RunState
    pgid: int | None
    result: ServiceResult | None
    started_at: datetime
    instance: str | None = None
    """A restart's: what the `instance` command printed before it ran."""


class Ledger:
    """Keys this node has run and how each ended, durable across agent crashes.

    One agent per node: the ledger is held with an flock (it dies with its process), so a
    second agent for the same node cannot take a key the first is running.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock: IO[str] = path.with_suffix(".lock").open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise LedgerBusyError(f"another agent holds {path}") from None
        self._db = sqlite3.connect(path, isolation_level=None)
        # synchronous=FULL: a row written before the command starts survives a power cut.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS runs (key TEXT PRIMARY KEY, action TEXT NOT NULL,"
            " state TEXT NOT NULL, pgid INTEGER, result TEXT, started_at TEXT NOT NULL,"
            " updated_at TEXT NOT NULL)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "instance" not in columns:  # a ledger from before `instance`
            self._db.execute("ALTER TABLE runs ADD COLUMN instance TEXT")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS refused (id INTEGER PRIMARY KEY, at TEXT NOT NULL,"
            " key TEXT NOT NULL, action TEXT NOT NULL, why TEXT NOT NULL)"
        )

    def get(self, key: str) -> Entry | None:
        row = self._db.execute(
            "SELECT action, state, pgid, result, started_at, instance FROM runs WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        result = ServiceResult.model_validate_json(row[3]) if row[3] else None
        started_at = datetime.fromisoformat(row[4])
        return Entry(ServiceAction(row[0]), RunState(row[1]), row[2], result, started_at, row[5])

    def begin(self, key: str, action: ServiceAction, instance: str | None = None) -> None:
        now = _now().isoformat()
        self._db.execute(
            "INSERT OR REPLACE INTO runs (key, action, state, pgid, result, started_at,"
            " updated_at, instance) VALUES (?, ?, ?, NULL, NULL, ?, ?, ?)",
            (key, action.value, RunState.RUNNING.value, now, now, instance),
        )

    def started(self, key: str, pgid: int) -> None:
        self._db.execute(
            "UPDATE runs SET pgid = ?, updated_at = ? WHERE key = ?",
            (pgid, _now().isoformat(), key),
        )

    def finish(self, key: str, state: RunState, result: ServiceResult | None) -> None:
        self._db.execute(
            "UPDATE runs SET state = ?, result = ?, updated_at = ? WHERE key = ?",
            (state.value, result.model_dump_json() if result else None, _now().isoformat(), key),
        )

    def refuse(self, request: ServiceRequest, why: str) -> None:
        self._db.execute(
            "INSERT INTO refused (at, key, action, why) VALUES (?, ?, ?, ?)",
            (_now().isoformat(), request.key, request.action.value, why),
        )
        self._db.execute(
            "DELETE FROM refused WHERE id <= (SELECT max(id) FROM refused) - ?", (KEPT_REFUSALS,)
        )

    def close(self) -> None:
        self._db.close()
        self._lock.close()


def _now() -> datetime:
    return datetime.now(UTC)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: a dead agent's
    commands are reparented to an init that may never reap them (a container's often
    does not), and `killpg(pgid, 0)` would find their corpses forever."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # The command name, in parentheses, may itself hold spaces or parentheses.
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None
    """None when the process group was killed at the timeout."""
    output_tail: str

    def result(
        self, action: ServiceAction, key: str, started_at: datetime, ran: bool, resumed: bool
    ) -> ServiceResult:
        return ServiceResult(
            action=action,
            key=key,
            ok=self.exit_code == 0,
            exit_code=self.exit_code,
            output_tail=self.output_tail,
            ran=ran,
            resumed_after_crash=resumed,
            started_at=started_at,
            finished_at=_now(),
        )


async def run_command(
    argv: tuple[str, ...],
    timeout: float,
    cwd: str | None,
    started: Callable[[int], None] = lambda pgid: None,
) -> Outcome:
    """Run argv without a shell in a process group of its own, heartbeating every second.

    The timeout and a cancellation kill the whole group (a command's children too);
    `started(pgid)` is told the group before anything else can happen. Output (stdout and
    stderr together) keeps only its last OUTPUT_TAIL_BYTES.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
        start_new_session=True,
    )
    started(proc.pid)
    tail = bytearray()

    async def read() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            tail.extend(chunk)
            del tail[:-OUTPUT_TAIL_BYTES]

    reader = asyncio.create_task(read())
    exited = asyncio.create_task(proc.wait())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    timed_out = False
    try:
        while not exited.done():
            await asyncio.wait({exited}, timeout=min(HEARTBEAT_S, deadline - loop.time()))
            if exited.done():
                break
            if loop.time() >= deadline:
                timed_out = True
                kill_group(proc.pid)
                await exited
                break
            activity.heartbeat()
    except BaseException:
        kill_group(proc.pid)
        await asyncio.shield(exited)
        reader.cancel()
        raise
    # A child that left the group (daemonized) may still hold the pipe: do not wait on it.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await reader
    text = tail.decode(errors="replace")
    if timed_out:
        return Outcome(None, f"{text}\n[killed after {timeout:g} s]".lstrip())
    return Outcome(exited.result(), text)


class ServiceActivities:
    """The agent's activity, bound to its config and ledger."""

    def __init__(self, config: AgentConfig, ledger: Ledger) -> None:
        self.config = config
        self.ledger = ledger
        # One state-changing action at a time on a host: a stop and a start racing each
        # other would leave the service in either state.
        self._changing = asyncio.Lock()
        self._active: set[str] = set()

    @activity.defn(name=SERVICE_ACTIVITY)
    async def service_action(self, request: ServiceRequest) -> ServiceResult:
        if (why := self.config.refusal(request)) is not None:
            log.warning("%s (key %s) refused: %s", request.action, request.key, why)
            self.ledger.refuse(request, why)
            raise ApplicationError(why, type="ServiceRequestRefused", non_retryable=True)
        self._check_configured(request.action)
        log.info(
            "%s requested (key %s)%s",
            request.action,
            request.key,
            f": {request.reason}" if request.reason else "",
        )
        if request.action is ServiceAction.STATUS:
            return await self._status(request, resumed=False)
        if request.key in self._active:
            # The same key again while its command still runs here (the caller gave up on
            # the first attempt): let Temporal retry, by then it has a result.
            raise ApplicationError(
                f"{request.action} with key {request.key} is still running on this agent",
                type="ServiceActionInProgress",
            )
        self._active.add(request.key)
        try:
            async with self._changing:
                return await self._at_most_once(request)
        finally:
            self._active.discard(request.key)

    def _check_configured(self, action: ServiceAction) -> None:
        if action not in self.config.actions:
            raise ApplicationError(
                f"node {self.config.node_id}: no {action.value!r} action in the agent's config",
                type="ServiceActionNotConfigured",
                non_retryable=True,
            )

    async def _at_most_once(self, request: ServiceRequest) -> ServiceResult:
        entry = self.ledger.get(request.key)
        if entry is not None and entry.action is not request.action:
            raise ApplicationError(
                f"key {request.key} was used for {entry.action}, not {request.action}",
                type="ServiceKeyReused",
                non_retryable=True,
            )
        if entry is not None and entry.state is RunState.DONE and entry.result is not None:
            log.info("%s (key %s) already done: recorded result", request.action, request.key)
            return entry.result.model_copy(update={"ran": False})
        if entry is not None and entry.state in (RunState.RUNNING, RunState.CANCELLED):
            return await self._resume(request, entry)
        return await self._run(request, resumed=False)

    async def _resume(self, request: ServiceRequest, entry: Entry) -> ServiceResult:
        """The key's earlier run was interrupted: decide from `status` (module docstring)."""
        if entry.pgid is not None:
            if request.action is ServiceAction.RESTART:
                await self._let_finish(entry)
            kill_group(entry.pgid)  # what is left of the dead agent's command
        if ServiceAction.STATUS not in self.config.actions:
            raise ApplicationError(
                f"node {self.config.node_id}: {request.action} (key {request.key}) was "
                "interrupted and no 'status' action is configured to tell whether it took "
                "effect; not running it again blindly",
                type="ServiceActionUndecidable",
                non_retryable=True,
            )
        status = await self._status(request, resumed=True)
        if status.ok and entry.instance is not None:
            now = await self._instance()
            if now == entry.instance:
                log.info(
                    "%s (key %s) was interrupted before it stopped anything (instance %s still"
                    " runs): once more",
                    request.action,
                    request.key,
                    now,
                )
                return await self._run(request, resumed=True)
        if status.ok == (request.action in BRINGS_UP):
            log.info(
                "%s (key %s) was interrupted; status shows it took effect",
                request.action,
                request.key,
            )
            result = status.model_copy(update={"action": request.action, "ok": True})
            self.ledger.finish(request.key, RunState.DONE, result)
            return result
        log.info(
            "%s (key %s) was interrupted before its effect: once more", request.action, request.key
        )
        return await self._run(request, resumed=True)

    async def _let_finish(self, entry: Entry) -> None:
        """Wait, heartbeating, until the interrupted command's process group is gone or
        its timeout (from its own start) has passed."""
        assert entry.pgid is not None
        deadline = entry.started_at.timestamp() + self.config.timeout_of(entry.action)
        waited = False
        while await asyncio.to_thread(group_alive, entry.pgid) and _now().timestamp() < deadline:
            if not waited:
                log.info("%s (pgid %d) still runs: letting it finish", entry.action, entry.pgid)
                waited = True
            activity.heartbeat()
            await asyncio.sleep(0.2)

    async def _instance(self) -> str | None:
        """What the `instance` command prints, stripped; None without one, or when it
        fails or prints nothing (then `status` alone decides)."""
        command = self.config.instance
        if command is None:
            return None
        outcome = await run_command(command.argv, self.config.timeout_for(command), self.config.cwd)
        return (outcome.output_tail.strip() or None) if outcome.exit_code == 0 else None

    async def _status(self, request: ServiceRequest, resumed: bool) -> ServiceResult:
        started_at = _now()
        command = self.config.actions[ServiceAction.STATUS]
        outcome = await run_command(
            command.argv, self.config.timeout_of(ServiceAction.STATUS), self.config.cwd
        )
        return outcome.result(ServiceAction.STATUS, request.key, started_at, False, resumed)

    async def _run(self, request: ServiceRequest, resumed: bool) -> ServiceResult:
        key, action = request.key, request.action
        command = self.config.actions[action]
        started_at = _now()
        instance = await self._instance() if action is ServiceAction.RESTART else None
        # Recorded before the command starts: a crash from here on leaves `running`.
        self.ledger.begin(key, action, instance)
        try:
            outcome = await run_command(
                command.argv,
                self.config.timeout_of(action),
                self.config.cwd,
                lambda pgid: self.ledger.started(key, pgid),
            )
        except asyncio.CancelledError:
            self.ledger.finish(key, RunState.CANCELLED, None)
            log.info("%s (key %s) cancelled: its process group was killed", action, key)
            raise
        result = outcome.result(action, key, started_at, True, resumed)
        if not result.ok:
            self.ledger.finish(key, RunState.FAILED, result)
            why = "timed out" if outcome.exit_code is None else f"exited {outcome.exit_code}"
            raise ApplicationError(
                f"node {self.config.node_id}: {action} {why}: {outcome.output_tail[-300:]}",
                result,
                type="ServiceActionFailed",
            )
        self.ledger.finish(key, RunState.DONE, result)
        log.info("%s (key %s) done in %.1f s", action, key, _seconds(result))
        return result


def _seconds(result: ServiceResult) -> float:
    return (result.finished_at - result.started_at).total_seconds()
