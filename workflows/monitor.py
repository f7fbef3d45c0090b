"""`ClusterMonitorWorkflow`: one per cluster, id `monitor/<cluster_id>`, runs forever.

It waits on the watch activity, turns each change into events, keeps the latest view
and its findings, and continues-as-new before history grows large. The names of its
signals, update and queries are a documented interface (README), used by the CLI and
by anyone with a plain Temporal client.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.events import EventActivities
    from activities.monitor import WatchActivities
    from models import (
        VIEW_EVENTS,
        ClusterSpec,
        ClusterView,
        Event,
        EventBatch,
        EventDraft,
        Finding,
        MonitorInput,
        MonitorStatus,
        Policy,
        RemediationFinished,
        WatchRequest,
        change_event_id,
        changes,
        evaluate,
        health_of,
        monitor_workflow_id,
        watch_key,
        watch_task_queue,
    )
    from models.playbooks import PLAYBOOKS
    from models.remediation import RemediationInput, RemediationRequest, check
    from models.remediation import workflow_id as remediation_workflow_id
    from workflows import search_attributes
    from workflows.policies import EVENT_WRITE_HEARTBEAT, EVENT_WRITE_TIMEOUT, RETRY_FOREVER
    from workflows.remediation import RemediationWorkflow


# Monitors started before finding events existed replay without them.
FINDING_EVENTS = "finding-events"
REMEDIATIONS = "remediations"
TELL_CLEARED = "tell-cleared"
FINISHED_IS_FINISHED = "finished-is-finished"
UNCHANGED_SPEC = "unchanged-spec"
LOCAL_EVENT_WRITES = "local-event-writes"
WATCH_WRITES = "watch-writes-events"
FLUSH_WHILE_WATCHING = "flush-while-watching"


def workflow_id(cluster_id: str) -> str:
    return monitor_workflow_id(cluster_id)


@workflow.defn
class ClusterMonitorWorkflow:
    @workflow.init
    def __init__(self, input: MonitorInput) -> None:
        self._spec = input.spec
        self._state = input.state
        """Handed over whole at continue-as-new: changed in place, never rebuilt."""
        view = self._state.view
        self._findings = evaluate(input.spec, view) if view is not None else []
        self._queued: list[Event] = []
        self._interrupted = False
        self._changes = 0
        self._last_change_at = view.observed_at if view is not None else None
        # Starts empty, so every run upserts once. Seeding it from the attributes set at
        # start would save that event, but monitors started before would then replay
        # without it: a nondeterminism error (seen on a CLI-started monitor).
        self._indexed: tuple[object, ...] = ()
        self._change: str | None = None
        """The name of the next change of the view, which watches store its view events
        under (`WatchRequest.change`): the same for every watch until one returns a view,
        so a watch cancelled (a pause, a new spec) after it stored them and the one after it
        store them under the same ids."""
        self._told_cleared: str | None = None
        self._finished: str | None = None
        """The last remediation that told this run it finished: it may still be closing."""

    @workflow.run
    async def run(self, input: MonitorInput) -> None:
        while True:
            self._index()
            self._show_details()
            await self._flush()
            if self._state.paused:
                await workflow.wait_condition(lambda: not self._state.paused or bool(self._queued))
                continue
            if self._change is None and workflow.patched(WATCH_WRITES):
                self._change = f"{self._spec.cluster_id}/{workflow.uuid4()}"
            view = await self._watch(self._change)
            if view is not None:
                self._observe(view, self._change)
                self._change = None
            await self._flush()
            await self._tell_cleared()
            await self._remediate()
            if (
                workflow.info().is_continue_as_new_suggested()
                or self._changes >= input.changes_per_run
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._flush()
                workflow.continue_as_new(
                    MonitorInput(
                        spec=self._spec, state=self._state, changes_per_run=input.changes_per_run
                    )
                )

    async def _watch(self, change: str | None) -> ClusterView | None:
        """Run one watch; None if a pause or a new spec interrupted it. `change`: the name
        of the change it may see, which the watch stores itself (`WatchRequest.change`)."""
        probe, view = self._spec.probe, self._state.view
        self._interrupted = False
        handle = workflow.start_activity_method(
            WatchActivities.watch_cluster,
            WatchRequest(
                spec=self._spec,
                last_key=None if view is None else watch_key(self._spec, view),
                change=change,
                last_leader=self._state.last_leader,
            ),
            # No patch: on replay the SDK matches a scheduled activity by its id and type, not
            # its task queue, so watches scheduled on the monitor's own queue replay as well.
            task_queue=watch_task_queue(workflow.info().task_queue),
            start_to_close_timeout=timedelta(seconds=probe.watch_max_s + 4 * probe.timeout_s + 60),
            # A dead worker is noticed after this long, and the watch resumes elsewhere.
            heartbeat_timeout=timedelta(seconds=max(5.0, 2 * probe.interval_s + probe.timeout_s)),
            retry_policy=RETRY_FOREVER,
            summary=f"watch {self._spec.cluster_id}",
        )
        while True:
            await workflow.wait_condition(
                lambda: handle.done() or self._interrupted or bool(self._queued)
            )
            if handle.done() or self._interrupted:
                break
            # A handler's event (a remediation requested when the one before it finished)
            # goes out now, not when the watch next returns: the store would show a
            # remediation finished before it was requested. Monitors that ran before replay
            # without these writes.
            if not workflow.patched(FLUSH_WHILE_WATCHING):
                await workflow.wait_condition(lambda: handle.done() or self._interrupted)
                break
            await self._flush()
        if handle.done():
            return handle.result()
        handle.cancel()
        with contextlib.suppress(ActivityError):
            await handle
        return None

    def _observe(self, view: ClusterView, change: str | None) -> None:
        findings = evaluate(self._spec, view)
        drafts = changes(
            self._state.view,
            view,
            self._findings,
            findings,
            self._state.last_leader,
            finding_events=workflow.patched(FINDING_EVENTS),
        )
        if self._state.view is not None and self._state.view.leader is not None:
            self._state.last_leader = self._state.view.leader
        self._state.view, self._findings = view, findings
        if drafts:
            self._changes += 1
            self._last_change_at = view.observed_at
            self._queue(drafts, at=view.observed_at, change=change)

    def _queue(self, drafts: list[EventDraft], at: datetime, change: str | None = None) -> None:
        """`change`: the watch's, which may have stored the view events already, under the
        same ids."""
        for draft in drafts:
            # The SDK's logger: it skips the lines a replay would log again.
            workflow.logger.info("%s: %s", draft.type, draft.message, extra={"node": draft.node_id})
            # The id is deterministic on replay, and the same on a retried write.
            cluster_id = self._spec.cluster_id
            event_id = (
                f"{cluster_id}/{workflow.uuid4()}"
                if change is None or draft.type not in VIEW_EVENTS
                else change_event_id(change, draft)
            )
            self._queued.append(draft.event(cluster_id, event_id, at))

    async def _flush(self) -> None:
        if not self._queued:
            return
        batch, self._queued = self._queued, []
        summary = ", ".join(sorted({e.type for e in batch}))
        # A local activity: the write runs inside the workflow task that turned the view into
        # events, with no activity task to dispatch and no second workflow task after it. A
        # member's crash seen by 100 specs at once was 100 activity tasks queued behind 100
        # workflow tasks; a change now costs 7 history events instead of 13.
        if workflow.patched(LOCAL_EVENT_WRITES):
            await workflow.execute_local_activity_method(
                EventActivities.record_events,
                EventBatch(events=batch),
                start_to_close_timeout=EVENT_WRITE_TIMEOUT,
                retry_policy=RETRY_FOREVER,
                summary=summary,
            )
            return
        await workflow.execute_activity_method(
            EventActivities.record_events,
            EventBatch(events=batch),
            start_to_close_timeout=EVENT_WRITE_TIMEOUT,
            heartbeat_timeout=EVENT_WRITE_HEARTBEAT,
            retry_policy=RETRY_FOREVER,
            summary=summary,
        )

    async def _remediate(self) -> None:
        """Start the remediation an open finding's playbook policy asks for: one per cluster
        at a time, none for a finding inside its blocking period. Others wait their turn:
        this runs again when the current one reports its end."""
        if self._state.remediating is not None or self._state.paused or self._state.view is None:
            return
        now = workflow.now()
        self._state.blocked_until = {
            k: until for k, until in self._state.blocked_until.items() if until > now
        }
        for finding in self._findings:
            chosen = self._playbook_for(finding)
            if chosen is None or finding.key in self._state.blocked_until:
                continue
            playbook, policy = chosen
            # Monitors started before remediations existed never get here (no policies).
            if not workflow.patched(REMEDIATIONS):
                return
            wid = remediation_workflow_id(self._spec.cluster_id, finding.key)
            target = finding.subject if finding.subject != self._spec.cluster_id else None
            # Already started (by this monitor's previous run): that one it is.
            try:
                await self._start_remediation(
                    wid,
                    RemediationInput(
                        spec=self._spec,
                        playbook=playbook,
                        target=target,
                        finding=finding,
                        policy=policy,
                        approval_timeout_s=self._spec.remediate.approval_timeout_s,
                        notify_monitor=True,
                    ),
                    f"{playbook} for {finding.key}",
                )
            except WorkflowAlreadyStartedError:
                # Unless it is the one that just said it finished and is still closing (a
                # blocking period of 0): its end will not be told again, so holding the
                # cluster for it would hold it forever. The next round tries again.
                if wid == self._finished and workflow.patched(FINISHED_IS_FINISHED):
                    self._state.remediating = None
                    return
            self._control_event(
                "remediation.requested",
                f"{playbook} ({policy.value}) for {finding.key}",
                remediation=wid,
                playbook=playbook,
                policy=policy.value,
                finding=finding.key,
            )
            return

    async def _start_remediation(self, wid: str, input: RemediationInput, summary: str) -> None:
        """Start it as this cluster's one running remediation; WorkflowAlreadyStartedError
        when one with its id runs already."""
        self._state.remediating = wid  # before the await: a signal may call this meanwhile
        await workflow.start_child_workflow(
            RemediationWorkflow.run,
            input,
            id=wid,
            task_queue=workflow.info().task_queue,
            # It outlives this run: the monitor continues as new while it heals.
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary=summary,
        )

    @workflow.update
    async def remediate(self, request: RemediationRequest) -> str:
        """Start a remediation an operator asked for; its workflow id. Through the monitor,
        so it and the monitor's own hold each other back: one per cluster at a time."""
        target = request.target
        what = f"{request.playbook}/{target}" if target else request.playbook
        wid = remediation_workflow_id(self._spec.cluster_id, what)
        try:
            await self._start_remediation(
                wid,
                RemediationInput(
                    spec=self._spec,
                    playbook=request.playbook,
                    target=target,
                    policy=request.policy,
                    dry_run=request.dry_run,
                    approval_timeout_s=self._spec.remediate.approval_timeout_s,
                    requested_by=request.requested_by,
                    notify_monitor=True,
                ),
                f"{request.playbook} on {target or self._spec.cluster_id}"
                f" (by {request.requested_by})",
            )
        except WorkflowAlreadyStartedError:
            # Started outside this monitor (before remediations by hand went through it):
            # it would never report its end here, so it holds nothing back.
            self._state.remediating = None
            raise ApplicationError(f"{wid} is already running", non_retryable=True) from None
        self._control_event(
            "remediation.requested",
            f"{request.playbook} ({request.policy.value}) by {request.requested_by}",
            remediation=wid,
            playbook=request.playbook,
            policy=request.policy.value,
            by=request.requested_by,
        )
        return wid

    @remediate.validator
    def _validate_remediate(self, request: RemediationRequest) -> None:
        if self._state.remediating is not None:
            raise ValueError(
                f"{self._state.remediating} is running on {self._spec.cluster_id}:"
                " one remediation per cluster at a time"
            )
        check(self._spec, request.playbook, request.target)

    async def _tell_cleared(self) -> None:
        """Tell the running remediation once that its finding went away: one still waiting
        for approval then ends as unneeded."""
        wid = self._state.remediating
        if wid is None or wid == self._told_cleared:
            return
        key = wid.removeprefix(remediation_workflow_id(self._spec.cluster_id, ""))
        if key in {f.key for f in self._findings}:
            return
        # Monitors that ran before this signal existed replay without it.
        if not workflow.patched(TELL_CLEARED):
            return
        self._told_cleared = wid
        try:
            await workflow.get_external_workflow_handle(wid).signal("finding_cleared")
        except Exception as error:
            # It ended meanwhile; its own remediation_finished signal is on the way.
            workflow.logger.info("could not tell %s its finding cleared: %s", wid, error)

    def _playbook_for(self, finding: Finding) -> tuple[str, Policy] | None:
        for name, playbook in PLAYBOOKS.get(self._spec.kind, {}).items():
            policy = self._spec.remediation.get(name, Policy.OFF)
            if finding.code in playbook.answers and policy is not Policy.OFF:
                return name, policy
        return None

    @workflow.signal
    async def remediation_finished(self, done: RemediationFinished) -> None:
        if done.workflow_id == self._state.remediating:
            self._state.remediating = None
        self._finished = done.workflow_id
        if done.finding is not None:
            block = timedelta(seconds=self._spec.remediate.blocking_s)
            self._state.blocked_until[done.finding] = workflow.now() + block
        await self._remediate()

    def _index(self) -> None:
        """Keep the search attributes current; upsert only on change (each is an event)."""
        health = health_of(self._state.view, self._findings)
        wanted = (self._spec.cluster_id, self._spec.kind.value, health.value, len(self._findings))
        if wanted == self._indexed:
            return
        self._indexed = wanted
        workflow.upsert_search_attributes(
            [
                search_attributes.CLUSTER_ID.value_set(self._spec.cluster_id),
                search_attributes.KIND.value_set(self._spec.kind.value),
                search_attributes.HEALTH.value_set(health.value),
                search_attributes.OPEN_FINDINGS.value_set(len(self._findings)),
            ]
        )

    def _show_details(self) -> None:
        """Markdown for the Temporal UI's current details: health, leader and open findings
        on the workflow's page. Set every round: it is no command, so it adds no history and
        replays the same."""
        status = self.status()
        leader = "unknown" if status.view is None else status.view.leader or "none"
        lines = [
            f"**{status.health.value}**{' (paused)' if status.paused else ''}"
            f" · leader: {leader} · spec generation {status.spec_generation}",
            "",
        ]
        if status.findings:
            lines += ["| finding | severity | message |", "|---|---|---|"]
            for f in status.findings:
                message = f.message.replace("|", r"\|")  # a bare | would end the cell
                lines.append(f"| {f.key} | {f.severity.name.lower()} | {message} |")
        else:
            lines.append("no open findings")
        workflow.set_current_details("\n".join(lines))

    def _control_event(self, type: str, message: str, **payload: object) -> None:
        self._queue([EventDraft(type=type, message=message, payload=payload)], workflow.now())

    @workflow.signal
    def pause(self, reason: str = "") -> None:
        """Stop probing (maintenance). Events already stored stay; no new ones until resume."""
        if self._state.paused:
            return
        self._state.paused = True
        self._interrupted = True
        self._control_event(
            "monitor.paused", f"monitoring paused: {reason or 'no reason given'}", reason=reason
        )

    @workflow.signal
    def resume(self, reason: str = "") -> None:
        if not self._state.paused:
            return
        self._state.paused = False
        self._control_event(
            "monitor.resumed", f"monitoring resumed: {reason or 'no reason given'}", reason=reason
        )

    @workflow.update
    def replace_spec(self, spec: ClusterSpec) -> int:
        """Replace the desired state; returns the new spec generation. The spec in force
        again changes nothing: no new generation, no event."""
        # Monitors that applied an unchanged spec before this replay with its generation.
        if spec == self._spec and workflow.patched(UNCHANGED_SPEC):
            return self._state.spec_generation
        previous = self._findings
        self._spec = spec
        self._state.spec_generation += 1
        self._interrupted = True
        if self._state.view is not None:
            self._findings = evaluate(spec, self._state.view)
            drafts = changes(
                self._state.view,
                self._state.view,
                previous,
                self._findings,
                finding_events=workflow.patched(FINDING_EVENTS),
            )
            self._queue(drafts, workflow.now())
        self._control_event(
            "cluster.spec_replaced",
            f"spec generation {self._state.spec_generation} applied",
            generation=self._state.spec_generation,
        )
        return self._state.spec_generation

    @replace_spec.validator
    def _validate_spec(self, spec: ClusterSpec) -> None:
        if spec.cluster_id != self._spec.cluster_id:
            raise ValueError(
                f"cluster_id: {spec.cluster_id!r} does not match this monitor's "
                f"{self._spec.cluster_id!r}"
            )
        if spec.kind != self._spec.kind:
            raise ValueError(f"kind: cannot change {self._spec.kind.value} to {spec.kind.value}")

    @workflow.query
    def spec(self) -> ClusterSpec:
        """The spec in force (the latest applied), for remediations started by hand."""
        return self._spec

    @workflow.query
    def view(self) -> ClusterView | None:
        return self._state.view

    @workflow.query
    def findings(self) -> list[Finding]:
        return self._findings

    @workflow.query
    def status(self) -> MonitorStatus:
        return MonitorStatus(
            cluster_id=self._spec.cluster_id,
            kind=self._spec.kind,
            paused=self._state.paused,
            health=health_of(self._state.view, self._findings),
            spec_generation=self._state.spec_generation,
            view=self._state.view,
            findings=self._findings,
            last_change_at=self._last_change_at,
            remediating=self._state.remediating,
        )
