"""A harness that kills the processes a remediation runs on, at chosen moments, on a real
Temporal server (the dev server, or the production-shape engine on PostgreSQL) and the real
ZooKeeper ensemble; tests/test_remediation_durability.py, tests/test_production_engine.py
and bench/remediation.py use it.

A `Stage` runs one core worker (or more, on one task queue) and one node agent per member,
each a `python -m worker` process of its own. Each agent's commands act on its real
ensemble member and append one line per effect to a counter file (which member's JVM was
stopped or started, by which command), so "exactly once" is read off the file, not
inferred. A restart stops the member, waits GAP_S (the middle of the step), then starts
it; `Stage.drain` makes one member's restart first drain for a while, as a broker's
controlled shutdown does.

`Stage.rolling_restart(positions)` runs one `rolling_restart` under policy auto and, at each
position in turn, SIGKILLs the core worker or an agent and starts it again at once (or
stops the Temporal server, or restarts its PostgreSQL); the remediation has to finish by
itself. With more than one core worker, the one at work on the
remediation is the one killed, and it is not replaced: another has to take over.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import yaml
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowHandle, WorkflowHistory

from config.settings import REPO_ROOT
from devstack.engine import PostgreSQL
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, NodeSpec, Policy, agent_task_queue
from models.monitor import Outcome
from models.remediation import RemediationInput, RemediationStatus
from store import EventQuery, SQLiteEventStore, StoredEvent
from testkit.specs import own_agents, zk_spec
from testkit.workers import Workers, core_pollers, pollers
from worker.agent import AgentFiles
from workflows.remediation import RemediationWorkflow

GAP_S = 2.5
"""Between a restart's stop and its start: the window to kill something mid-step. 1 s was
missed once on a loaded machine (the remediation had finished before the harness, busy
reviving the worker it had just killed, looked again)."""
POLL_S = 0.01
"""How often a position is looked for: a boundary between two steps may last 30 ms."""
TASK_TIMEOUT = timedelta(seconds=3)
"""Workflow task timeout of the remediations started here. A worker killed while it holds
a workflow task makes the server wait this long before another may take it: the default
10 s would make each such kill cost 10 s of test time. Nothing asserted depends on it."""
STARTUP_S = 30.0
DOWNTIME_S = 3.0
REMEDIATION_TIMEOUT_S = 240.0

MEMBER_COMMAND = """\
import os, sys, time
from pathlib import Path
from devstack.temporal import TemporalDevServer
from devstack.zookeeper import ZooKeeperEnsemble

action, n = sys.argv[1], int(sys.argv[2])
home, name, ips, jars, counter, drain, gap_s = sys.argv[3:10]
member = ZooKeeperEnsemble(Path(home), name, tuple(ips.split(",")), jars=Path(jars))


def record(kind, member_pid):
    with open(counter, "a") as out:
        out.write(f"{kind} {n} {member_pid} {os.getpid()} {time.time():.6f}\\n")


if action == "status":
    sys.exit(0 if member.member_running(n) else 3)
if action == "instance":
    pid = member.member_pid(n)
    print(pid or "")
    sys.exit(0 if pid is not None else 3)
if action == "restart" and os.path.exists(drain):
    # A slow graceful stop (a broker's controlled shutdown): nothing has changed yet. Once:
    # a restart run again after a kill stops at once.
    seconds = float(Path(drain).read_text())
    os.unlink(drain)
    record("drain", 0)
    time.sleep(seconds)
if action in ("stop", "restart") and (pid := member.member_pid(n)) is not None:
    member.stop_member(n)
    record("stop", pid)
if action == "restart":
    time.sleep(float(gap_s))
if action in ("start", "restart") and member.member_pid(n) is None:
    record("start", member.start_member(n))
"""


@dataclass(frozen=True)
class Effect:
    """One line of the counter file."""

    kind: str
    """stop | start | drain (a restart began its slow stop: no effect yet)"""
    member: int
    member_pid: int
    """The member's JVM that was stopped or started."""
    command_pid: int
    """The command's process, which leads its process group."""
    at: float

    @classmethod
    def parse(cls, line: str) -> Effect:
        kind, member, member_pid, command_pid, at = line.split()
        return cls(kind, int(member), int(member_pid), int(command_pid), float(at))


class Server(Protocol):
    """A Temporal server the stage may stop and start again on its database: the dev
    server (devstack.temporal) or the production-shape engine's (devstack.engine)."""

    def pid(self) -> int | None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Victim(StrEnum):
    CORE = "core worker"
    AGENT = "agent"
    """The agent of the step's node; its running command survives (a session of its own)."""
    AGENT_AND_COMMAND = "agent and its command"
    """As when a host's supervisor kills the agent's whole cgroup."""
    TEMPORAL = "Temporal server"
    """Stopped, and started again on the same database DOWNTIME_S later."""
    POSTGRESQL = "PostgreSQL"
    """The production-shape engine's, restarted by `pg_ctl restart -m fast`: every session
    of the Temporal server cut off at once."""


class Moment(StrEnum):
    PLANNED = "after remediation.planned is stored"
    STARTED = "after step_started is stored"
    DRAINING = "while the restart drains, before it stopped anything"
    MID = "mid-step"
    """A restart: its member stopped and not started yet. A wait: its activity running."""
    FINISHED = "after step_finished is stored"


@dataclass(frozen=True)
class Position:
    victim: Victim
    moment: Moment
    step: int = 0
    """Index in the plan; a rolling restart's are restart, wait, restart, wait, restart,
    wait (the leader last)."""

    def __str__(self) -> str:
        where = "" if self.moment is Moment.PLANNED else f" of step {self.step}"
        return f"{self.victim} killed {self.moment}{where}"


@dataclass(frozen=True)
class Hit:
    position: Position
    killed: tuple[int, ...]
    """Pids: the process, and for AGENT_AND_COMMAND the command's process group."""
    landed: str
    """Where the kill really landed: the remediation's last stored event and the effects
    on the step's member so far, e.g. `step_started restart-zk1; stop`."""


@dataclass
class Run:
    """One remediation under kills, and what it takes to judge it."""

    workflow_id: str
    status: RemediationStatus
    events: list[StoredEvent]
    effects: list[Effect]
    hits: list[Hit]
    history: WorkflowHistory
    pids_before: dict[int, int]
    """Member -> the pid of its JVM before the remediation."""
    pids_after: dict[int, int]
    elapsed_s: float

    def flaws(self) -> list[str]:
        """How this run differs from one rolling restart whose steps each took effect
        exactly once, in order, none skipped; empty when it does not."""
        flaws: list[str] = []
        if self.status.outcome is not Outcome.HEALED:
            flaws.append(f"outcome {self.status.outcome}: {self.status}")
        undone = [(r.step.name, r.state) for r in self.status.steps if r.state != "done"]
        if undone:
            flaws.append(f"steps not done: {undone}")
        failed = [
            e.event_id
            for e in self.history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        if failed:
            flaws.append(f"workflow tasks failed (nondeterminism?) at history events {failed}")
        return flaws + self._event_flaws() + self._effect_flaws()

    def _event_flaws(self) -> list[str]:
        """Planned, then each step's started and finished once in plan order, then
        finished: a write retried or replayed after a kill never stores an event twice."""
        seen = [(s.event.type, s.event.payload.get("step")) for s in self.events]
        wanted: list[tuple[str, object]] = [("remediation.planned", None)]
        for record in self.status.steps:
            name = record.step.name
            wanted += [("remediation.step_started", name), ("remediation.step_finished", name)]
        wanted.append(("remediation.finished", None))
        flaws = [] if seen == wanted else [f"events {seen}, wanted {wanted}"]
        ids = [s.event.event_id for s in self.events]
        if len(ids) != len(set(ids)):
            flaws.append(f"an event stored twice: {ids}")
        return flaws

    def _effect_flaws(self) -> list[str]:
        """Each member, in plan order, stopped once (the JVM that ran before) and started
        once (the JVM that runs now), the next one only after that: never two down."""
        wanted = []
        for record in self.status.steps:
            if record.step.name.startswith("restart-"):
                n = member_of(record.step.name)
                wanted += [
                    ("stop", n, self.pids_before.get(n)),
                    ("start", n, self.pids_after.get(n)),
                ]
        seen = [(e.kind, e.member, e.member_pid) for e in self.effects if e.kind != "drain"]
        return [] if seen == wanted else [f"effects {seen}, wanted {wanted}"]

    def duplicate_effects(self) -> int:
        """Stops and starts beyond the one of each a member's restart makes."""
        counts = Counter((e.kind, e.member) for e in self.effects if e.kind != "drain")
        return sum(count - 1 for count in counts.values())

    def lost(self) -> bool:
        """Whether it fell short of what it planned: not healed, a step not done, or a
        restart whose stop or start never happened (reported done, but skipped)."""
        done = {(e.kind, e.member) for e in self.effects}
        restarted = [
            member_of(r.step.name) for r in self.status.steps if r.step.name.startswith("restart-")
        ]
        skipped = [n for n in restarted if not {("stop", n), ("start", n)} <= done]
        undone = [r for r in self.status.steps if r.state != "done"]
        return self.status.outcome is not Outcome.HEALED or bool(undone or skipped)

    def detail(self, step: int) -> str:
        """What the step recorded, e.g. `ran=False resumed_after_crash=True`."""
        return self.status.steps[step].detail

    def where_the_kills_landed(self) -> str:
        return "\n".join(f"{h.position} -> {h.landed}" for h in self.hits)


CORE_KILLS = (
    Position(Victim.CORE, Moment.PLANNED),
    *(
        Position(Victim.CORE, moment, step)
        for step in range(6)
        for moment in (Moment.MID, Moment.FINISHED)
    ),
)[:-1]
"""The core worker at 12 positions of a rolling restart: after its plan is stored, in the
middle of every step and after every step but the last (after which only the finished
event is left). Mid-restart the agent runs the command; mid-wait the core worker itself
probes; after an event is stored the kill mostly lands in the workflow task that follows
or in the next activity. No step's start: the revived worker comes up (~2 s) after the
restart's middle (GAP_S) has passed."""

AGENT_KILLS = (
    Position(Victim.AGENT, Moment.DRAINING, 0),
    Position(Victim.AGENT, Moment.FINISHED, 0),
    Position(Victim.AGENT, Moment.STARTED, 2),
    Position(Victim.AGENT, Moment.MID, 2),
    Position(Victim.AGENT_AND_COMMAND, Moment.DRAINING, 4),
    Position(Victim.AGENT_AND_COMMAND, Moment.MID, 4),
)
"""The agents: mid-command (during the first restart's drain, in the second one's middle,
and with its command during the third one's drain, then in its middle), and at boundaries
(right after a restart finished, and right as one started, before the agent picked it
up)."""

DRAIN_S = 14.0
"""Longer than a killed agent's activity takes to be retried on the revived one (a 10 s
heartbeat timeout and a 1 s backoff), so the revived agent finds the command running."""


def member_of(step_name: str) -> int:
    """The member a step of the test cluster acts on: `restart-zk2`, `wait-zk2-serving`
    -> 2."""
    found = re.search(r"-zk(\d+)", step_name)
    assert found is not None, step_name
    return int(found.group(1))


@dataclass
class Stage:
    client: Client
    ensemble: ZooKeeperEnsemble
    spec: ClusterSpec
    store: SQLiteEventStore
    home: Path
    workers: Workers
    server: Server | None = None
    """The server `client` talks to, when the stage may stop it."""
    database: PostgreSQL | None = None
    """That server's PostgreSQL, when the stage may restart it."""
    cores: int = 1
    core_pids: list[int] = field(default_factory=list)
    """The core workers running now."""
    agent_pids: dict[int, int] = field(default_factory=dict)
    """Member -> the pid of its agent."""

    @property
    def queue(self) -> str:
        return self.workers.env["REPLICANTE_TASK_QUEUE"]

    @property
    def counter(self) -> Path:
        return self.home / "effects.log"

    def agent_node(self, n: int) -> str:
        """Member n's agent's id."""
        return self.spec.node(f"zk{n}").agent_id

    def drain(self, n: int, seconds: float | None) -> None:
        """From now on member n's restart drains this long before it stops the member
        (None: not at all)."""
        path = self.home / f"drain-{n}"
        if seconds is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(str(seconds))

    # --- processes ---------------------------------------------------------------------------

    def start_core(self) -> int:
        pid = self.workers.start()
        self.core_pids.append(pid)
        return pid

    def start_agent(self, n: int) -> int:
        self.agent_pids[n] = self.workers.start("--agent", self.agent_node(n))
        return self.agent_pids[n]

    async def start_all(self) -> None:
        """Start every process and wait until each polls its task queue."""
        waits = [self._polling(self.start_core(), self.queue, core=True) for _ in range(self.cores)]
        for n in self.ensemble.members:
            queue = agent_task_queue(self.spec.cluster_id, self.agent_node(n))
            waits.append(self._polling(self.start_agent(n), queue))
        await asyncio.gather(*waits)

    async def _polling(self, pid: int, queue: str, core: bool = False) -> None:
        """Once the server lists the process among the pollers of `queue` (`core`: and of its
        workflow tasks and watch queue). The list lags
        behind a process that already works by seconds: revived ones are not waited for."""
        identity = self.workers.identity(pid)
        deadline = time.monotonic() + STARTUP_S
        while True:
            if core:
                polled = await core_pollers(self.client, queue)
            else:
                polled = (await pollers(self.client, queue))[1:]
            if all(identity in seen for seen in polled):
                return
            assert self.workers.procs[pid].poll() is None, f"exited\n{self.workers.tail()}"
            assert time.monotonic() < deadline, f"never polled {queue}\n{self.workers.tail()}"
            await asyncio.sleep(0.1)

    async def kill(
        self,
        victim: Victim,
        n: int,
        handle: WorkflowHandle[RemediationWorkflow, RemediationStatus],
    ) -> tuple[int, ...]:
        """SIGKILL the victim (for agents, member n's; for the core, the one at work on the
        remediation; the server is stopped, PostgreSQL restarted); the pids killed."""
        if victim is Victim.TEMPORAL:
            assert self.server is not None, "a stage of its own server can stop it"
            pid = self.server.pid()
            await asyncio.to_thread(self.server.stop)
            return () if pid is None else (pid,)
        if victim is Victim.POSTGRESQL:
            assert self.database is not None, "a stage of the engine can restart its database"
            pid = self.database.pid()
            await asyncio.to_thread(self.database.restart)
            return () if pid is None else (pid,)
        if victim is Victim.CORE:
            core = await self._core_at_work(handle)
            self.workers.kill(core)
            self.core_pids.remove(core)
            return (core,)
        agent = self.agent_pids[n]
        self.workers.kill(agent)
        if victim is Victim.AGENT:
            return (agent,)
        command = [e for e in self.effects() if e.member == n][-1].command_pid
        os.killpg(command, signal.SIGKILL)
        return (agent, command)

    async def _core_at_work(
        self, handle: WorkflowHandle[RemediationWorkflow, RemediationStatus]
    ) -> int:
        """The core worker running the remediation's activity, else the one that completed
        its last workflow task (whose cache holds it, so its next task goes there first)."""
        if len(self.core_pids) == 1:
            return self.core_pids[0]
        pending = (await handle.describe()).raw_description.pending_activities
        running = [
            a.last_worker_identity
            for a in pending
            if a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ]
        identities = (
            running
            or [
                e.workflow_task_completed_event_attributes.identity
                for e in (await handle.fetch_history()).events
                if e.HasField("workflow_task_completed_event_attributes")
            ][-1:]
        )
        cores = {self.workers.identity(pid): pid for pid in self.core_pids}
        assert identities and identities[-1] in cores, f"{identities} not among {cores}"
        return cores[identities[-1]]

    async def revive(self, victim: Victim, n: int) -> None:
        """Start the victim again; a process without waiting for it, since whatever comes
        next needs its work. A core worker with another still running is not replaced."""
        if victim is Victim.TEMPORAL:
            assert self.server is not None
            await asyncio.sleep(DOWNTIME_S)
            await asyncio.to_thread(self.server.start)
        elif victim is Victim.CORE:
            if not self.core_pids:
                self.start_core()
        elif victim is not Victim.POSTGRESQL:
            self.start_agent(n)

    # --- what happened -----------------------------------------------------------------------

    def effects(self) -> list[Effect]:
        if not self.counter.exists():
            return []
        return [Effect.parse(line) for line in self.counter.read_text().splitlines()]

    def events(self, workflow_id: str) -> list[StoredEvent]:
        return [
            s
            for s in self.store.query(EventQuery(cluster_id=self.spec.cluster_id))
            if s.event.payload.get("remediation") == workflow_id
        ]

    def logs(self) -> str:
        """Everything the stage's processes logged."""
        return "".join(log.read_text(errors="replace") for log in self.home.glob("worker-*.log"))

    def member_pids(self) -> dict[int, int]:
        zk = self.ensemble
        return {n: pid for n in zk.members if (pid := zk.member_pid(n)) is not None}

    # --- remediations ------------------------------------------------------------------------

    async def start_remediation(
        self, playbook: str, target: str | None = None, workflow_id: str | None = None
    ) -> WorkflowHandle[RemediationWorkflow, RemediationStatus]:
        what = playbook if target is None else f"{playbook}/{target}"
        return await self.client.start_workflow(
            RemediationWorkflow.run,
            RemediationInput(
                spec=self.spec,
                playbook=playbook,
                target=target,
                policy=Policy.AUTO,
                requested_by="durability harness",
            ),
            id=workflow_id or f"remediate/{self.spec.cluster_id}/{what}/{uuid.uuid4().hex[:6]}",
            task_queue=self.queue,
            task_timeout=TASK_TIMEOUT,
        )

    async def rolling_restart(self, positions: Sequence[Position]) -> Run:
        """One rolling restart with a kill at each position, in order. Fails if the
        remediation finishes before a position was reached."""
        started = time.monotonic()
        pids_before = self.member_pids()
        effects_before = len(self.effects())
        handle = await self.start_remediation("rolling_restart")
        hits = []
        for position in positions:
            n = await self._reach(handle, position, effects_before)
            killed = await self.kill(position.victim, n, handle)
            hits.append(Hit(position, killed, self._landed(handle.id, n, effects_before)))
            await self.revive(position.victim, n)
        status = await asyncio.wait_for(handle.result(), REMEDIATION_TIMEOUT_S)
        return Run(
            workflow_id=handle.id,
            status=status,
            events=self.events(handle.id),
            effects=self.effects()[effects_before:],
            hits=hits,
            history=await handle.fetch_history(),
            pids_before=pids_before,
            pids_after=self.member_pids(),
            elapsed_s=time.monotonic() - started,
        )

    def _landed(self, workflow_id: str, n: int, effects_before: int) -> str:
        events = self.events(workflow_id)
        last = events[-1].event if events else None
        event = "nothing stored" if last is None else f"{last.type} {last.payload.get('step', '')}"
        effects = [e.kind for e in self.effects()[effects_before:] if e.member == n]
        return f"{event.removeprefix('remediation.').strip()}; zk{n}: {effects}"

    async def rolling_restart_killing_agents(self) -> Run:
        """AGENT_KILLS, the first and the last member restarted draining DRAIN_S: the
        first follower and the leader, as a rolling restart takes the leader last."""
        leader = self.ensemble.leader()
        assert leader is not None
        first = next(n for n in self.ensemble.members if n != leader)
        self.drain(first, DRAIN_S)
        self.drain(leader, DRAIN_S)
        try:
            return await self.rolling_restart(AGENT_KILLS)
        finally:
            self.drain(first, None)
            self.drain(leader, None)

    async def _reach(
        self,
        handle: WorkflowHandle[RemediationWorkflow, RemediationStatus],
        position: Position,
        effects_before: int,
    ) -> int:
        """Wait until the remediation is at `position`; the member its step acts on."""
        deadline = time.monotonic() + REMEDIATION_TIMEOUT_S
        while True:
            events = self.events(handle.id)
            stored = [(s.event.type, s.event.payload.get("step")) for s in events]
            assert ("remediation.finished", None) not in stored, f"finished before {position}"
            planned = [s.event for s in events if s.event.type == "remediation.planned"]
            if planned:
                name = planned[0].payload["steps"][position.step]
                n = member_of(name)
                effects = [e.kind for e in self.effects()[effects_before:] if e.member == n]
                if await self._at(handle, position.moment, name, stored, effects):
                    return n
            assert time.monotonic() < deadline, f"{position} not reached: {stored}"
            await asyncio.sleep(POLL_S)

    @staticmethod
    async def _at(
        handle: WorkflowHandle[RemediationWorkflow, RemediationStatus],
        moment: Moment,
        step: str,
        stored: list[tuple[str, object]],
        effects: list[str],
    ) -> bool:
        if moment is Moment.PLANNED:
            return True
        if moment is Moment.STARTED:
            return ("remediation.step_started", step) in stored
        if moment is Moment.FINISHED:
            return ("remediation.step_finished", step) in stored
        if moment is Moment.DRAINING:
            return effects == ["drain"]
        if step.startswith("restart-"):
            return "stop" in effects and "start" not in effects
        if ("remediation.step_started", step) not in stored:
            return False
        pending = (await handle.describe()).raw_description.pending_activities
        return any(
            a.activity_type.name == "wait_serving"
            and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            for a in pending
        )


def agent_config(
    zk: ZooKeeperEnsemble, cluster_id: str, node: NodeSpec, n: int, home: Path
) -> dict[str, object]:
    """Member n's agent, of `node` of cluster `cluster_id`: start, stop, restart and status
    run MEMBER_COMMAND on the member."""
    script = home / "member_command.py"
    state = zk.dir.parent.parent
    member = [str(n), str(state), zk.name, ",".join(zk.ips), str(zk.jars)]
    files = [str(home / "effects.log"), str(home / f"drain-{n}")]
    return {
        "cluster_id": cluster_id,
        "node_id": node.node_id,
        "agent": node.agent,
        "actions": {
            action: [sys.executable, str(script), action, *member, *files, str(GAP_S)]
            for action in ("start", "stop", "restart", "status")
        },
        "instance": [sys.executable, str(script), "instance", *member, *files, str(GAP_S)],
        "timeout_s": 120,
        "cwd": str(REPO_ROOT),
    }


@asynccontextmanager
async def open_stage(
    client: Client,
    ensemble: ZooKeeperEnsemble,
    home: Path,
    queue: str | None = None,
    interval_s: float = 0.5,
    server: Server | None = None,
    database: PostgreSQL | None = None,
    cores: int = 1,
) -> AsyncIterator[Stage]:
    """A cluster of `ensemble` with `cores` core workers on `queue` (default: its own) and
    an agent per member, all processes of their own with their state in `home`, stopped at
    the end. The store is `home`/events.db."""
    cluster_id = f"dur-{uuid.uuid4().hex[:6]}"
    spec = own_agents(zk_spec(ensemble, cluster_id, interval_s=interval_s))
    home.mkdir(parents=True, exist_ok=True)
    (home / "member_command.py").write_text(MEMBER_COMMAND)
    for n, node in enumerate(spec.nodes, start=1):
        path = AgentFiles.of(home, node.agent_id).config
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(agent_config(ensemble, cluster_id, node, n, home)))
    env = dict(os.environ)
    env.update(
        REPLICANTE_TEMPORAL_ADDRESS=client.service_client.config.target_host,
        REPLICANTE_NAMESPACE=client.namespace,
        REPLICANTE_TASK_QUEUE=queue or f"q-{cluster_id}",
        REPLICANTE_STORE=str(home / "events.db"),
        REPLICANTE_HOME=str(home),
    )
    store = SQLiteEventStore(home / "events.db")
    workers = Workers(env, home)
    try:
        stage = Stage(client, ensemble, spec, store, home, workers, server, database, cores)
        await stage.start_all()
        yield stage
    finally:
        workers.stop_all()
        store.close()
