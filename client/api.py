"""A small client for operators' scripts; the CLI is a thin layer over it.

Everything here starts, signals, updates or queries a workflow, or reads the event
store: no logic that a plain Temporal client could not reproduce from the README's
interface table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio.client import Client, WorkflowHandle, WorkflowQueryRejectedError
from temporalio.common import QueryRejectCondition, WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from models import ClusterSpec, MonitorInput, MonitorStatus
from store import EventQuery, EventStore, StoredEvent, open_store
from worker.core import connect
from worker.settings import Settings
from workflows import search_attributes
from workflows.monitor import ClusterMonitorWorkflow, workflow_id


class UnknownClusterError(LookupError):
    def __init__(self, cluster_id: str, why: str = "no such workflow") -> None:
        super().__init__(
            f"unknown cluster {cluster_id!r}: no running monitor workflow "
            f"{workflow_id(cluster_id)!r}, {why} (see `replicante cluster ls`)"
        )


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
        """Start watching a cluster, or replace the spec of one already watched."""
        try:
            await self.temporal.start_workflow(
                ClusterMonitorWorkflow.run,
                MonitorInput(spec=spec),
                id=workflow_id(spec.cluster_id),
                task_queue=self.settings.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=search_attributes.initial(spec),
                static_summary=f"monitor {spec.kind.value} cluster {spec.cluster_id}",
            )
            return ApplyResult(spec.cluster_id, created=True, spec_generation=1)
        except WorkflowAlreadyStartedError:
            generation = await self._handle(spec.cluster_id).execute_update(
                ClusterMonitorWorkflow.replace_spec, spec
            )
            return ApplyResult(spec.cluster_id, created=False, spec_generation=generation)

    async def clusters(self, *, unhealthy: bool = False) -> list[ClusterSummary]:
        query = "WorkflowType = 'ClusterMonitorWorkflow' AND ExecutionStatus = 'Running'"
        if unhealthy:
            query += f" AND {search_attributes.HEALTH.name} != 'healthy'"
        found: list[ClusterSummary] = []
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
        try:
            # A closed workflow still answers queries, with a view frozen at its end.
            return await self._handle(cluster_id).query(
                ClusterMonitorWorkflow.status, reject_condition=QueryRejectCondition.NOT_OPEN
            )
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

    def _handle(self, cluster_id: str) -> WorkflowHandle[ClusterMonitorWorkflow, None]:
        return self.temporal.get_workflow_handle_for(
            ClusterMonitorWorkflow.run, workflow_id(cluster_id)
        )
