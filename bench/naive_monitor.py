"""The timer-plus-activity loop the watch activity is measured against (bench/detection.py).

Each cycle runs the `probe_cluster` activity, then sleeps a durable timer of the probe
interval: the obvious way to poll from a workflow. It emits no events, and on the idle
cluster the benchmark points it at the real monitor emits none either, so both
histories hold only what it takes to keep watching.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.monitor import probe_cluster
    from models import ClusterSpec

CYCLES_PER_RUN = 300
"""About 3,300 history events per run: under the server's own continue-as-new
suggestion, which also ends a run."""


def naive_workflow_id(cluster_id: str) -> str:
    return f"naive/{cluster_id}"


@workflow.defn
class NaiveMonitorWorkflow:
    @workflow.run
    async def run(self, spec: ClusterSpec) -> None:
        for _ in range(CYCLES_PER_RUN):
            await workflow.execute_activity(
                probe_cluster,
                spec,
                # Every node is read concurrently, each bounded by timeout_s.
                start_to_close_timeout=timedelta(seconds=spec.probe.timeout_s + 10),
            )
            await workflow.sleep(timedelta(seconds=spec.probe.interval_s))
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(spec)
