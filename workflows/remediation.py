"""`RemediationWorkflow`: one corrective action, id `remediate/<cluster_id>/<finding>`.

plan → safety gate (a fresh probe) → approval gate when the policy asks → steps →
outcome event. Operators approve or reject with updates (validated: only while it waits),
and pause, resume or abort with signals, honoured between steps and inside them (a long
step heartbeats, so a cancel reaches it). Each step that runs on a node goes to that
node's agent with the idempotency key `<workflow id>/<run id>#<step name>`: a step retried
after a worker or agent crash has its effect once. The run id, because every remediation of
one finding gets the same workflow id: without it, the agent's ledger answers a later one
with the first one's result and nothing runs.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from temporalio.contrib.opentelemetry.workflow import completed_span

    from activities.events import EventActivities
    from activities.monitor import probe_cluster
    from config.metrics import REMEDIATIONS
    from models import (
        ClusterView,
        EventBatch,
        EventDraft,
        Policy,
        RemediationFinished,
        Severity,
        evaluate,
        monitor_workflow_id,
    )
    from models.monitor import Outcome
    from models.plans import Step
    from models.remediation import (
        Decision,
        RemediationInput,
        RemediationStatus,
        State,
        StepRecord,
        StepState,
        check,
        gate,
        plan,
    )
    from models.safety import Verdict
    from workflows.policies import EVENT_WRITE_HEARTBEAT, EVENT_WRITE_TIMEOUT, RETRY_FOREVER
    from workflows.steps import STEPS, StepCall, in_this_run


PAUSE_EVENTS = "pause-events"


@workflow.defn
class RemediationWorkflow:
    @workflow.init
    def __init__(self, input: RemediationInput) -> None:
        self._input = input
        self._state = State.PLANNING
        self._outcome: Outcome | None = None
        self._verdict: Verdict | None = None
        self._steps: list[StepRecord] = []
        self._approved: Decision | None = None
        self._rejected: Decision | None = None
        self._aborted: Decision | None = None
        self._paused = False
        self._cleared = False
        self._deadline: datetime | None = None
        self._why = ""

    @workflow.run
    async def run(self, input: RemediationInput) -> RemediationStatus:
        spec = input.spec
        try:
            check(spec, input.playbook, input.target)
        except ValueError as error:
            return await self._finish(Outcome.FAILED, str(error))
        view = await self._probe()
        try:
            steps = in_this_run(plan(spec, input.playbook, input.target, view))
        except ValueError as error:
            return await self._finish(Outcome.FAILED, str(error))
        self._steps = [StepRecord(step=s) for s in steps]
        self._verdict = gate(spec, view, steps[0])
        await self._event(
            "remediation.planned",
            f"{input.playbook} on {input.target or spec.cluster_id}:"
            f" {', '.join(s.name for s in steps)}; safety: {self._verdict.reason}",
            steps=[s.name for s in steps],
            safe=self._verdict.safe,
            verdict=self._verdict.reason,
        )
        if not self._still_needed(view):
            return await self._finish(Outcome.UNNEEDED, "the finding cleared by itself")
        if not self._verdict.safe:
            return await self._finish(Outcome.REFUSED, self._verdict.reason)
        if input.dry_run:
            return await self._finish(Outcome.DRY_RUN, "dry run: plan and verdict recorded")

        if input.policy is Policy.APPROVE:
            decided = await self._await_approval()
            if decided is not None:
                return decided
            view = await self._probe()
            if not self._still_needed(view):
                return await self._finish(Outcome.UNNEEDED, "the finding cleared by itself")

        self._state = State.RUNNING
        for step in steps:
            await workflow.wait_condition(lambda: not self._paused or self._aborted is not None)
            if self._aborted is not None:
                return await self._finish(Outcome.ABORTED, self._aborted.reason)
            failure = await self._run_step(step)
            if failure is not None:
                outcome, why = failure
                return await self._finish(
                    Outcome.ABORTED if self._aborted is not None else outcome, why
                )
        return await self._finish(Outcome.HEALED, "every step done and verified")

    # --- gates -------------------------------------------------------------------------------

    def _still_needed(self, view: ClusterView) -> bool:
        finding = self._input.finding
        if finding is None:
            return True
        return finding.key in {f.key for f in evaluate(self._input.spec, view)}

    async def _await_approval(self) -> RemediationStatus | None:
        """None once approved; the finished status otherwise."""
        self._state = State.AWAITING_APPROVAL
        timeout = timedelta(seconds=self._input.approval_timeout_s)
        self._deadline = workflow.now() + timeout
        await self._event(
            "remediation.awaiting_approval",
            f"{self._input.playbook} waits for approval until {self._deadline:%Y-%m-%d %H:%M} UTC",
            deadline=self._deadline.isoformat(),
        )
        try:
            await workflow.wait_condition(
                lambda: (
                    self._cleared
                    or any(d is not None for d in (self._approved, self._rejected, self._aborted))
                ),
                timeout=timeout,
            )
        except TimeoutError:
            return await self._finish(Outcome.EXPIRED, "nobody approved before the deadline")
        if self._cleared and self._approved is None:
            return await self._finish(Outcome.UNNEEDED, "the finding cleared before approval")
        if self._rejected is not None:
            return await self._finish(
                Outcome.REJECTED, f"rejected by {self._rejected.by}: {self._rejected.reason}"
            )
        if self._aborted is not None:
            return await self._finish(Outcome.ABORTED, self._aborted.reason)
        assert self._approved is not None
        await self._event(
            "remediation.approved",
            f"approved by {self._approved.by}: {self._approved.reason}",
            by=self._approved.by,
            reason=self._approved.reason,
        )
        return None

    # --- steps -------------------------------------------------------------------------------

    async def _run_step(self, step: Step) -> tuple[Outcome, str] | None:
        """Run one step; None when done, else how the remediation ends and why."""
        if step.stops_service:
            verdict = gate(self._input.spec, await self._probe(), step)
            if not verdict.safe:
                self._set(step, StepState.SKIPPED, verdict.reason)
                return Outcome.FAILED, f"{step.name} refused: {verdict.reason}"
        self._set(step, StepState.RUNNING)
        # Zero-length, as every workflow span of the TracingInterceptor (an open span would not
        # survive a replay on another worker): the step's activity span has its duration.
        spec = self._input.spec
        completed_span(
            f"RemediationStep:{step.name}",
            attributes={
                "replicante.cluster": spec.cluster_id,
                "replicante.kind": spec.kind.value,
                "replicante.node": step.node_id,
                "replicante.playbook": self._input.playbook,
                "replicante.step": step.name,
            },
        )
        await self._event("remediation.step_started", f"step {step.name}", step=step.name)
        entry = STEPS[step.kind]
        info = workflow.info()
        # A reference or a name: the SDK takes both, and the entry's result type decodes it.
        activity: Any = entry.activity
        queue = entry.task_queue(spec, step)
        handle = workflow.start_activity(
            activity,
            entry.input(
                StepCall(
                    spec=spec,
                    playbook=self._input.playbook,
                    step=step,
                    key=f"{info.workflow_id}/{info.run_id}#{step.name}",
                )
            ),
            result_type=entry.result_type,
            task_queue=queue,
            schedule_to_start_timeout=entry.schedule_to_start_timeout(spec),
            start_to_close_timeout=entry.start_to_close,
            heartbeat_timeout=entry.heartbeat_timeout(spec),
            retry_policy=RETRY_FOREVER,
            summary=entry.summary(step),
        )
        await workflow.wait_condition(lambda: handle.done() or self._aborted is not None)
        if not handle.done():
            handle.cancel()
            with contextlib.suppress(ActivityError):
                await handle
            self._set(step, StepState.FAILED, "aborted")
            return Outcome.ABORTED, f"aborted during {step.name}"
        try:
            result = handle.result()
        except ActivityError as error:
            cause = error.cause or error
            outcome, why = Outcome.FAILED, str(cause)
            if (
                isinstance(cause, ActivityTimeoutError)
                and cause.type is TimeoutType.SCHEDULE_TO_START
            ):
                wait = spec.remediate.agent_wait_s
                outcome, why = Outcome.NO_AGENT, f"no agent polled {queue} within {wait:g} s"
            self._set(step, StepState.FAILED, why)
            await self._event(
                "remediation.step_finished", f"step {step.name} failed: {why}", step=step.name
            )
            return outcome, f"{step.name} failed: {why}"
        detail = entry.detail(result)
        self._set(step, StepState.DONE, detail)
        await self._event(
            "remediation.step_finished", f"step {step.name} done ({detail})", step=step.name
        )
        return None

    def _set(self, step: Step, state: StepState, detail: str = "") -> None:
        now = workflow.now()
        index = next(i for i, r in enumerate(self._steps) if r.step.name == step.name)
        record = self._steps[index]
        self._steps[index] = record.model_copy(
            update={
                "state": state,
                "detail": detail,
                "started_at": record.started_at or now,
                "finished_at": now if state.ended else None,
            }
        )

    # --- plumbing ----------------------------------------------------------------------------

    async def _probe(self) -> ClusterView:
        probe = self._input.spec.probe
        return await workflow.execute_activity(
            probe_cluster,
            self._input.spec,
            start_to_close_timeout=timedelta(seconds=4 * probe.timeout_s + 10),
            retry_policy=RETRY_FOREVER,
            summary="fresh probe for the safety gate",
        )

    async def _finish(self, outcome: Outcome, why: str) -> RemediationStatus:
        self._state, self._outcome, self._why = State.FINISHED, outcome, why
        workflow.metric_meter().create_counter(
            REMEDIATIONS, "Remediations ended, by playbook and outcome"
        ).add(
            1,
            {
                "cluster": self._input.spec.cluster_id,
                "playbook": self._input.playbook,
                "outcome": outcome.value,
            },
        )
        severity = (
            Severity.INFO if outcome in (Outcome.HEALED, Outcome.DRY_RUN) else Severity.WARNING
        )
        await self._event(
            "remediation.finished",
            f"{self._input.playbook}: {outcome.value}: {why}",
            severity=severity,
            outcome=outcome.value,
            why=why,
        )
        finding = self._input.finding
        if self._input.notify_monitor:
            monitor = workflow.get_external_workflow_handle(
                monitor_workflow_id(self._input.spec.cluster_id)
            )
            try:
                await monitor.signal(
                    "remediation_finished",
                    RemediationFinished(
                        workflow_id=workflow.info().workflow_id,
                        finding=finding.key if finding is not None else None,
                        outcome=outcome,
                    ),
                )
            except Exception as error:
                # A monitor that is gone (the cluster was removed) has nobody to hold back.
                workflow.logger.warning("could not tell the monitor: %s", error)
        return self.status()

    def _details(self) -> str:
        """Markdown for the Temporal UI's current details: the plan with each step's state,
        so an operator watching the workflow there sees every step as it goes."""
        status = self.status()
        lines = [
            f"**{status.playbook}** on {status.target or status.cluster_id}:"
            f" {status.outcome.value if status.outcome else status.state.value}",
            "",
            f"safety: {status.verdict.reason}" if status.verdict else "safety: not checked yet",
            "",
            "| step | state | detail |",
            "|---|---|---|",
            *(f"| {r.step.name} | {r.state} | {r.detail} |" for r in status.steps),
        ]
        return "\n".join(lines)

    async def _event(
        self, type: str, message: str, severity: Severity = Severity.INFO, **payload: object
    ) -> None:
        # Every change worth an event is worth showing in the UI, and in the worker's log.
        workflow.set_current_details(self._details())
        workflow.logger.info(
            "%s: %s", type, message, extra={"node": self._input.target, "step": payload.get("step")}
        )
        spec = self._input.spec
        draft = EventDraft(
            type=type,
            severity=severity,
            node_id=self._input.target,
            message=message,
            payload={"remediation": workflow.info().workflow_id, **payload},
        )
        event = draft.event(
            spec.cluster_id, f"{spec.cluster_id}/{workflow.uuid4()}", workflow.now()
        )
        await workflow.execute_activity_method(
            EventActivities.record_events,
            EventBatch(events=[event]),
            start_to_close_timeout=EVENT_WRITE_TIMEOUT,
            heartbeat_timeout=EVENT_WRITE_HEARTBEAT,
            retry_policy=RETRY_FOREVER,
            summary=type,
        )

    # --- operators ---------------------------------------------------------------------------

    @workflow.update
    def approve(self, decision: Decision) -> str:
        self._approved = self._stamped(decision)
        return f"approved by {decision.by}"

    @approve.validator
    def _validate_approve(self, decision: Decision) -> None:
        self._must_await_approval("approve")

    @workflow.update
    def reject(self, decision: Decision) -> str:
        self._rejected = self._stamped(decision)
        return f"rejected by {decision.by}"

    @reject.validator
    def _validate_reject(self, decision: Decision) -> None:
        self._must_await_approval("reject")

    @staticmethod
    def _stamped(decision: Decision) -> Decision:
        return decision.model_copy(update={"at": workflow.now()})

    def _must_await_approval(self, what: str) -> None:
        if self._state is not State.AWAITING_APPROVAL:
            raise ValueError(
                f"{workflow.info().workflow_id} is not waiting for approval"
                f" (it is {self._state.value}): nothing to {what}"
            )

    @workflow.signal
    async def pause(self, reason: str = "") -> None:
        await self._hold(True, reason)

    @workflow.signal
    async def resume(self, reason: str = "") -> None:
        await self._hold(False, reason)

    async def _hold(self, paused: bool, reason: str) -> None:
        if paused == self._paused or self._state is State.FINISHED:
            return
        self._paused = paused
        # Remediations paused before these events existed replay without them.
        if workflow.patched(PAUSE_EVENTS):
            what = "paused" if paused else "resumed"
            await self._event(f"remediation.{what}", f"{what}: {reason or 'no reason given'}")

    @workflow.signal
    def finding_cleared(self) -> None:
        """From the monitor: the finding went away. Ends a remediation still waiting for
        approval as unneeded; one already acting carries on (its steps verify). One started
        by hand answers no finding: an operator asked for it, so it stays."""
        if self._input.finding is not None:
            self._cleared = True

    @workflow.signal
    def abort(self, decision: Decision) -> None:
        if self._aborted is None and self._state is not State.FINISHED:
            self._aborted = self._stamped(decision)

    @workflow.query
    def status(self) -> RemediationStatus:
        i = self._input
        return RemediationStatus(
            workflow_id=workflow.info().workflow_id,
            cluster_id=i.spec.cluster_id,
            playbook=i.playbook,
            target=i.target,
            finding=i.finding.key if i.finding is not None else None,
            policy=i.policy,
            dry_run=i.dry_run,
            requested_by=i.requested_by,
            requested_at=workflow.info().workflow_start_time,
            state=State.PAUSED if self._paused and self._state is State.RUNNING else self._state,
            outcome=self._outcome,
            verdict=self._verdict,
            steps=self._steps,
            approved=self._approved,
            rejected=self._rejected,
            aborted=self._aborted,
            approval_deadline=self._deadline,
            paused=self._paused,
            why=self._why,
        )
