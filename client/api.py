"""A small client for operators' scripts; the CLI is a thin layer over it.

Everything here starts, signals, updates or queries a workflow, or reads the event
store: no logic that a plain Temporal client could not reproduce from the README's
interface table.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import QueryRejectCondition, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings
from models import (
    ClusterSpec,
    Health,
    MonitorInput,
    MonitorStatus,
    Policy,
    SpecError,
    monitor_workflow_id,
)
from models import remediation as rem
from models.agent import shared_agent
from models.remediation import Decision, RemediationRequest, RemediationStatus
from models.spec import shown
from store import EventQuery, EventStore, StoredEvent, open_store
from worker.connection import connect
from workflows import search_attributes

# The workflows by the names the README's interface table documents, not by their classes:
# those import their activities and with them every datastore client (kafka-python among
# them), which a CLI call has no use for.
MONITOR_WORKFLOW = "ClusterMonitorWorkflow"
REMEDIATION_WORKFLOW = "RemediationWorkflow"

# Visibility queries over the search attributes the monitor keeps. UNHEALTHY_QUERY is the
# one the README tells operators to paste into the Temporal UI's workflow list, so
# `cluster ls --unhealthy` and the UI always agree on what needs attention.
MONITORS_QUERY = f'WorkflowType = "{MONITOR_WORKFLOW}" AND ExecutionStatus = "Running"'
UNHEALTHY_QUERY = (
    f'{MONITORS_QUERY} AND {search_attributes.HEALTH.name} != "{Health.HEALTHY.value}"'
)


class UnknownClusterError(LookupError):
    def __init__(self, cluster_id: str, why: str = "no such workflow") -> None:
        super().__init__(
            f"unknown cluster {cluster_id!r}: no running monitor workflow "
            f"{monitor_workflow_id(cluster_id)!r}, {why} (see `replicante cluster ls`)"
        )


T = TypeVar("T")


class UnknownRemediationError(LookupError):
    def __init__(self, remediation_id: str) -> None:
        what = (
            "no such workflow"
            if remediation_id.startswith(rem.PREFIX)
            else f"remediation ids start with {rem.PREFIX}"
        )
        super().__init__(
            f"unknown remediation {shown(remediation_id)}: {what} (see `replicante actions ls`)"
        )


class RemediationRefusedError(ValueError):
    """The request cannot be carried out as asked (an unknown playbook or node, a decision
    for a remediation not waiting for it): nothing was started or changed."""


class RemediationRunningError(Exception):
    def __init__(self, why: str) -> None:
        running = why.split(" ", 1)[0]
        super().__init__(f"{why}; nothing started (see `replicante actions show {running}`)")


def operator() -> str:
    """Who asks, as recorded in a remediation: `$USER@host`."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass(frozen=True)
class ClusterSummary:
    cluster_id: str
    kind: str
    health: str
    open_findings: int
    run_started_at: datetime | None
    """Start of the current run: it moves at every continue-as-new."""


@dataclass(frozen=True)
class ApplyResult:
    cluster_id: str
    created: bool
    spec_generation: int
    changed: bool = True
    """False when the spec was the one in force already: nothing happened."""


@dataclass(frozen=True)
class RemediationSummary:
    remediation_id: str
    state: str
    """A `State` value for remediations whose workflow answered; else the workflow's
    execution status (`terminated`, `timed_out`...), for one that ended without a result."""
    outcome: str | None
    playbook: str | None
    target: str | None
    started_at: datetime | None


class ReplicanteClient:
    def __init__(self, client: Client, settings: Settings, store: EventStore | None = None):
        self.temporal = client
        self.settings = settings
        self._store = store

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> ReplicanteClient:
        settings = settings or Settings.from_env()
        return cls(await connect(settings), settings)

    @property
    def store(self) -> EventStore:
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def apply(self, spec: ClusterSpec) -> ApplyResult:
        """Start watching a cluster, or replace the spec of one already watched. SpecError,
        before anything is sent, for nodes sharing an agent and for secrets outside this
        process's secret scope (the worker refuses those too, but only once it probes)."""
        if (why := shared_agent(spec)) is not None:
            raise SpecError(f"{spec.cluster_id}: nodes: {why}")
        self.settings.secret_scope.admit(spec)
        try:
            await self.temporal.start_workflow(
                MONITOR_WORKFLOW,
                MonitorInput(spec=spec),
                id=monitor_workflow_id(spec.cluster_id),
                task_queue=self.settings.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=search_attributes.initial(spec),
                static_summary=f"monitor {spec.kind.value} cluster {spec.cluster_id}",
            )
            return ApplyResult(spec.cluster_id, created=True, spec_generation=1)
        except WorkflowAlreadyStartedError:
            before = await self.status(spec.cluster_id)
            try:
                generation: int = await self._handle(spec.cluster_id).execute_update(
                    "replace_spec", spec, result_type=int
                )
            except WorkflowUpdateFailedError as error:
                # The monitor's validator refused it (another kind, another cluster id).
                cause = error.cause
                why = cause.message if isinstance(cause, ApplicationError) else str(cause)
                raise SpecError(f"{spec.cluster_id}: {why}") from None
            return ApplyResult(
                spec.cluster_id,
                created=False,
                spec_generation=generation,
                changed=generation != before.spec_generation,
            )

    async def clusters(self, *, unhealthy: bool = False) -> list[ClusterSummary]:
        found: list[ClusterSummary] = []
        query = UNHEALTHY_QUERY if unhealthy else MONITORS_QUERY
        async for execution in self.temporal.list_workflows(query):
            attrs = execution.typed_search_attributes
            found.append(
                ClusterSummary(
                    cluster_id=attrs.get(search_attributes.CLUSTER_ID)
                    or execution.id.removeprefix("monitor/"),
                    kind=attrs.get(search_attributes.KIND) or "?",
                    health=attrs.get(search_attributes.HEALTH) or "unknown",
                    open_findings=attrs.get(search_attributes.OPEN_FINDINGS) or 0,
                    run_started_at=execution.start_time,
                )
            )
        return sorted(found, key=lambda c: c.cluster_id)

    async def status(self, cluster_id: str) -> MonitorStatus:
        return await self._query_monitor(cluster_id, "status", MonitorStatus)

    async def spec(self, cluster_id: str) -> ClusterSpec:
        """The spec the cluster's monitor has in force (the latest applied)."""
        return await self._query_monitor(cluster_id, "spec", ClusterSpec)

    async def _query_monitor(self, cluster_id: str, query: str, result_type: type[T]) -> T:
        try:
            # A closed workflow still answers queries, with a view frozen at its end.
            result: T = await self._handle(cluster_id).query(
                query, result_type=result_type, reject_condition=QueryRejectCondition.NOT_OPEN
            )
            return result
        except WorkflowQueryRejectedError as error:
            state = error.status.name.lower() if error.status is not None else "closed"
            raise UnknownClusterError(cluster_id, f"its monitor is {state}") from None
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise UnknownClusterError(cluster_id) from None
            raise

    async def pause(self, cluster_id: str, reason: str = "") -> None:
        await self._signal(cluster_id, "pause", reason)

    async def resume(self, cluster_id: str, reason: str = "") -> None:
        await self._signal(cluster_id, "resume", reason)

    async def events(
        self, cluster_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[StoredEvent]:
        return self.store.query(EventQuery(cluster_id=cluster_id, since=since, limit=limit))

    async def _signal(self, cluster_id: str, signal: str, reason: str) -> None:
        try:
            await self._handle(cluster_id).signal(signal, reason)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise UnknownClusterError(cluster_id) from None
            raise

    def _handle(self, cluster_id: str) -> WorkflowHandle[Any, None]:
        return self.temporal.get_workflow_handle(monitor_workflow_id(cluster_id))

    # --- remediations ------------------------------------------------------------------------

    async def remediate(
        self,
        cluster_id: str,
        playbook: str,
        node: str | None = None,
        *,
        dry_run: bool = False,
        auto: bool = False,
        requested_by: str | None = None,
    ) -> str:
        """Start a remediation by hand on the spec in force; its workflow id.

        Policy `approve` unless `auto`: it then waits for `approve`. Checked before anything
        starts: the playbook is one of the cluster's kind and has steps for `node`.
        """
        spec = await self.spec(cluster_id)
        try:
            if node is not None and node not in {n.node_id for n in spec.nodes}:
                known = ", ".join(n.node_id for n in spec.nodes)
                raise ValueError(f"node {node!r} is not a node of {cluster_id} (nodes: {known})")
            # The same check the workflow makes first: a playbook it could not run (no node
            # given) is refused here rather than started to fail.
            rem.check(spec, playbook, node)
        except ValueError as error:
            raise RemediationRefusedError(f"{error}; nothing started") from None
        request = RemediationRequest(
            playbook=playbook,
            target=node,
            policy=Policy.AUTO if auto else Policy.APPROVE,
            dry_run=dry_run,
            requested_by=requested_by or operator(),
        )
        try:
            # Through the monitor, which runs one remediation per cluster at a time.
            remediation_id: str = await self._handle(cluster_id).execute_update(
                "remediate", request, result_type=str
            )
        except WorkflowUpdateFailedError as error:
            # The monitor refused: another remediation runs (named), the same one does, or
            # the spec changed since it was read here.
            cause = error.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            if message.endswith(("one remediation per cluster at a time", "is already running")):
                raise RemediationRunningError(message) from None
            raise RemediationRefusedError(f"{message}; nothing started") from None
        return remediation_id

    async def actions(
        self, cluster_id: str | None = None, *, finished: int = 20
    ) -> list[RemediationSummary]:
        """Running remediations (oldest first), then the `finished` most recently started of
        the others."""
        query = f"WorkflowType = '{REMEDIATION_WORKFLOW}'"
        if cluster_id is not None:
            query += f" AND WorkflowId STARTS_WITH '{rem.workflow_id(cluster_id, '')}'"
        running: list[RemediationSummary] = []
        closed: list[RemediationSummary] = []
        async for execution in self.temporal.list_workflows(query):
            is_running = execution.status == WorkflowExecutionStatus.RUNNING
            # Visibility lists running ones first, then the most recently closed: reading the
            # result of every old remediation would make `ls` slower with each one.
            if not is_running and len(closed) >= finished:
                continue
            # By run id: a finished run's id may have a newer run, whose result would be
            # waited for.
            handle = self._remediation(execution.id, execution.run_id)
            st = await _remediation_status(handle, execution.status)
            (running if is_running else closed).append(
                RemediationSummary(
                    remediation_id=execution.id,
                    state=st.state.value if st is not None else _status_name(execution.status),
                    outcome=st.outcome.value if st is not None and st.outcome else None,
                    playbook=st.playbook if st is not None else None,
                    target=st.target if st is not None else None,
                    started_at=execution.start_time,
                )
            )
        running.sort(key=_started)
        closed.sort(key=_started, reverse=True)
        return running + closed[:finished]

    async def action(self, remediation_id: str) -> RemediationStatus:
        """The remediation's status: steps, verdict, decisions, deadline."""
        execution = await self._describe_remediation(remediation_id)
        st = await _remediation_status(self._remediation(remediation_id), execution)
        if st is None:
            raise RemediationRefusedError(
                f"{remediation_id} ended without a status ({_status_name(execution)})"
            )
        return st

    async def approve(self, remediation_id: str, decision: Decision) -> str:
        return await self._decide(remediation_id, "approve", decision)

    async def reject(self, remediation_id: str, decision: Decision) -> str:
        return await self._decide(remediation_id, "reject", decision)

    async def abort(self, remediation_id: str, decision: Decision) -> None:
        """Ask a running remediation to stop (between steps, or inside a long one)."""
        await self._signal_remediation(remediation_id, "abort", decision)

    async def pause_remediation(self, remediation_id: str, reason: str = "") -> None:
        """No further step starts until it is resumed; a step already running finishes.
        Paused while it waits for approval, it holds once approved."""
        await self._signal_remediation(remediation_id, "pause", reason)

    async def resume_remediation(self, remediation_id: str, reason: str = "") -> None:
        await self._signal_remediation(remediation_id, "resume", reason)

    async def _signal_remediation(self, remediation_id: str, signal: str, arg: object) -> None:
        try:
            await self._remediation(remediation_id).signal(signal, arg)
        except RPCError as error:
            raise await self._why_not(remediation_id, signal, error) from None

    async def _decide(self, remediation_id: str, what: str, decision: Decision) -> str:
        try:
            result: str = await self._remediation(remediation_id).execute_update(
                what, decision, result_type=str
            )
        except WorkflowUpdateFailedError as error:
            # The validator refused: the message names the id and the state.
            cause = error.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            raise RemediationRefusedError(message) from None
        except RPCError as error:
            raise await self._why_not(remediation_id, what, error) from None
        return result

    async def _why_not(self, remediation_id: str, what: str, error: RPCError) -> Exception:
        """An RPC refusal in operators' words: unknown id, or already finished."""
        if error.status != RPCStatusCode.NOT_FOUND:
            return error
        # The server answers NOT_FOUND for a finished workflow too; describe tells which.
        execution = await self._describe_remediation(remediation_id)
        return RemediationRefusedError(
            f"{remediation_id} has finished ({_status_name(execution)}): nothing to {what}"
        )

    async def _describe_remediation(self, remediation_id: str) -> WorkflowExecutionStatus:
        try:
            description = await self._remediation(remediation_id).describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise UnknownRemediationError(remediation_id) from None
            raise
        if description.workflow_type != REMEDIATION_WORKFLOW:
            raise UnknownRemediationError(remediation_id)
        assert description.status is not None
        return description.status

    def _remediation(
        self, remediation_id: str, run_id: str | None = None
    ) -> WorkflowHandle[Any, RemediationStatus]:
        """The remediation's handle; UnknownRemediationError for an id that names another
        workflow (a monitor, the event stream), which must get none of its signals."""
        if not remediation_id.startswith(rem.PREFIX):
            raise UnknownRemediationError(remediation_id)
        return self.temporal.get_workflow_handle(
            remediation_id, run_id=run_id, result_type=RemediationStatus
        )


async def _remediation_status(
    handle: WorkflowHandle[Any, RemediationStatus],
    execution: WorkflowExecutionStatus | None,
) -> RemediationStatus | None:
    """A running one answers the `status` query; a completed one's result is its final
    status, read from history (no worker needed); None for one that ended otherwise."""
    if execution == WorkflowExecutionStatus.RUNNING:
        status: RemediationStatus = await handle.query("status", result_type=RemediationStatus)
        return status
    if execution == WorkflowExecutionStatus.COMPLETED:
        return await handle.result()
    return None


def _started(summary: RemediationSummary) -> datetime:
    return summary.started_at or datetime.min.replace(tzinfo=UTC)


def _status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "closed"
