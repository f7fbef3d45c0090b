"""`replicante doctor`: every part Replicante depends on, checked from where the operator
stands, each problem printed with the command or setting that fixes it.

One `Check` per line: `ok`, `WARN`, `FAIL`, or `skip` (a check that needs a part that
failed). Every check is bounded in time and turns any error into its own line: a hung node
or a dead server makes a FAIL, never a hang or a traceback. Exit 1 when anything FAILs.

Imported only by `replicante doctor` and the playground's `up` (devstack/playground.py,
which waits for it to pass): it loads every datastore client (the probes), which no other
operator command needs (tests/test_imports.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from enum import StrEnum

from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from temporalio.api.enums.v1 import DescribeTaskQueueMode, EventType, TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    DescribeTaskQueueRequest,
    GetSystemInfoRequest,
    GetWorkflowExecutionHistoryReverseRequest,
)
from temporalio.client import WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.kinds import adapter_for
from client.api import ClusterSummary, ReplicanteClient
from client.render import ago
from config.settings import Settings
from config.temporal import SEARCH_ATTRIBUTES
from models import (
    ClusterSpec,
    ClusterView,
    MonitorStatus,
    Policy,
    agent_task_queue,
    monitor_workflow_id,
    watch_task_queue,
)
from models import remediation as rem
from models.playbooks import PLAYBOOKS
from store import EventQuery, open_store
from workflows import search_attributes
from workflows.stream import WORKFLOW_ID as RELAY_WORKFLOW_ID

CONNECT_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 10.0
"""One Temporal call; a server that takes longer is as good as down at 3 a.m."""
STORE_TIMEOUT_S = 15.0
"""Opening MongoDB gives up at its 5 s server selection; then an index check and a read."""
STREAM_TIMEOUT_S = 5.0
POLLER_FRESH_S = 90.0
"""A worker that polls is listed with the time its current long poll began, which the
server ends after a minute (measured on the dev server: at most ~60 s old); a worker that
died stays listed for five minutes. Older than this, it is gone."""


class Status(StrEnum):
    OK = "ok"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    name: str
    """What was checked: `temporal`, `core worker`, `node playground/zk2`, ..."""
    status: Status
    detail: str
    fix: str = ""
    """For WARN and FAIL: a concrete command or setting."""


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


def skipped(name: str, why: str) -> Check:
    return Check(name, Status.SKIP, why)


async def bounded(
    name: str, check: Awaitable[list[Check]], seconds: float, fix: str
) -> list[Check]:
    """The check's lines, or one FAIL when it takes longer than `seconds` or raises: one
    broken part must cost its own line, never the rest of the report."""
    try:
        return await asyncio.wait_for(check, seconds)
    except TimeoutError:
        return [fail(name, f"no answer within {seconds:g} s", fix)]
    except Exception as error:
        return [fail(name, f"{type(error).__name__}: {error}", fix)]


# --- Temporal ------------------------------------------------------------------------------


async def connect(settings: Settings) -> tuple[Check, ReplicanteClient | None]:
    name = "temporal"
    fix = (
        "start it: `scripts/dev-up` (the local stack), or set REPLICANTE_TEMPORAL_ADDRESS"
        " to your Temporal frontend"
    )
    where = settings.temporal_address
    try:
        api = await asyncio.wait_for(ReplicanteClient.connect(settings), CONNECT_TIMEOUT_S)
        info = await api.temporal.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=timedelta(seconds=RPC_TIMEOUT_S)
        )
    except TimeoutError:
        return fail(name, f"{where} does not answer within {CONNECT_TIMEOUT_S:g} s", fix), None
    except (RuntimeError, RPCError) as error:
        return fail(name, f"{where} unreachable: {transport_reason(error)}", fix), None
    return ok(name, f"{where} answers (server {info.server_version or '?'})"), api


def transport_reason(error: Exception) -> str:
    """The OS's words from temporalio's connect error, which nests them in Rust debug
    output (`... Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }`).

    >>> transport_reason(RuntimeError('... ConnectionRefused, message: "Connection refused" })'))
    'Connection refused'
    """
    found = re.search(r'message: "([^"]+)"', str(error))
    return found[1] if found else str(error)


async def namespace(api: ReplicanteClient) -> list[Check]:
    settings = api.settings
    try:
        await api.temporal.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=settings.namespace),
            timeout=timedelta(seconds=RPC_TIMEOUT_S),
        )
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return [
            fail(
                "namespace",
                f"{settings.namespace} does not exist on {settings.temporal_address}",
                "set REPLICANTE_NAMESPACE to the namespace your workers use, or create it:"
                f" `temporal operator namespace create --namespace {settings.namespace}"
                f" --address {settings.temporal_address}`",
            )
        ]
    return [ok("namespace", settings.namespace)]


async def registered_search_attributes(api: ReplicanteClient) -> list[Check]:
    settings = api.settings
    response = await api.temporal.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=settings.namespace),
        timeout=timedelta(seconds=RPC_TIMEOUT_S),
    )
    registered = response.custom_attributes
    missing = [
        key
        for key in search_attributes.ALL
        if registered.get(key.name) != int(key.indexed_value_type)
    ]
    if not missing:
        return [ok("search attributes", ", ".join(key.name for key in search_attributes.ALL))]
    cli_type = SEARCH_ATTRIBUTES
    # One command each: temporal CLI 1.9 takes `--name` more than once and creates the first.
    commands = [
        f"`temporal operator search-attribute create --namespace {settings.namespace}"
        f" --address {settings.temporal_address} --name {key.name} --type {cli_type[key.name]}`"
        for key in missing
    ]
    return [
        fail(
            "search attributes",
            "not registered (or of another type): "
            + ", ".join(f"{key.name} ({cli_type[key.name]})" for key in missing)
            + "; monitors cannot start without them",
            "; ".join(commands),
        )
    ]


async def pollers(api: ReplicanteClient, queue: str, kind: TaskQueueType.ValueType) -> list[str]:
    """Identities polling `queue` for `kind` tasks now, on every partition (the legacy
    describe mode reports the root partition's pollers only)."""
    response = await api.temporal.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=api.settings.namespace,
            task_queue=TaskQueue(name=queue),
            api_mode=DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED,
            task_queue_types=[kind],
            report_pollers=True,
        ),
        timeout=timedelta(seconds=RPC_TIMEOUT_S),
    )
    now = time.time()
    live = {
        poller.identity
        for info in response.versions_info.values()
        if kind in info.types_info
        for poller in info.types_info[kind].pollers
        if now - poller.last_access_time.ToSeconds() < POLLER_FRESH_S
    }
    return sorted(live)


async def core_worker(api: ReplicanteClient) -> list[Check]:
    queue = api.settings.task_queue
    watches = watch_task_queue(queue)
    workflows, activities, watchers = await asyncio.gather(
        pollers(api, queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        pollers(api, queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
        pollers(api, watches, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    )
    # A core worker polls all three: monitors are workflow tasks, their steps activity
    # tasks, their watches activity tasks of the watch queue.
    if workflows and activities and watchers:
        workers = sorted(set(workflows) | set(activities) | set(watchers))
        return [ok("core worker", f"task queue {queue} polled by {', '.join(workers)}")]
    if workflows and activities:
        # A worker whose watch slots are all taken stops polling for more.
        return [
            fail(
                "core worker",
                f"nothing polls the watch queue {watches}: a cluster applied now is not"
                " watched until a core worker has a free watch slot",
                "start another `replicante worker` on this task queue, or raise"
                " REPLICANTE_MAX_WATCHES (each watched cluster holds one slot)",
            )
        ]
    missing = " and ".join(
        kind for kind, seen in (("workflow", workflows), ("activity", activities)) if not seen
    )
    return [
        fail(
            "core worker",
            f"nothing polls task queue {queue} (REPLICANTE_TASK_QUEUE) for {missing} tasks:"
            " no monitor or probe runs",
            "start one: `replicante worker` (with this REPLICANTE_NAMESPACE and"
            " REPLICANTE_TASK_QUEUE); the local stack: `scripts/dev-up`",
        )
    ]


async def describe(api: ReplicanteClient, workflow_id: str) -> WorkflowExecutionDescription:
    handle = api.temporal.get_workflow_handle(workflow_id)
    return await handle.describe(rpc_timeout=timedelta(seconds=RPC_TIMEOUT_S))


async def workflow_task_failure(
    api: ReplicanteClient, description: WorkflowExecutionDescription
) -> str | None:
    """Why the workflow is stuck, if its workflow task keeps failing (a nondeterminism
    error, a bug in workflow code): it then makes no progress and answers no query."""
    task = description.raw_description.pending_workflow_task
    if task.attempt <= 1:
        return None
    # Only the first failure of a run of them is in the history: read it from the end.
    history = await api.temporal.workflow_service.get_workflow_execution_history_reverse(
        GetWorkflowExecutionHistoryReverseRequest(
            namespace=api.settings.namespace,
            execution=description.raw_description.workflow_execution_info.execution,
            maximum_page_size=200,
        ),
        timeout=timedelta(seconds=RPC_TIMEOUT_S),
    )
    why = "see the worker's log"
    for event in history.history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            why = event.workflow_task_failed_event_attributes.failure.message or why
            break
    return f"its workflow task fails (attempt {task.attempt}): {why.splitlines()[0]}"


def stuck_fix(api: ReplicanteClient, workflow_id: str) -> str:
    log = api.settings.home / "worker" / "worker.log"
    return (
        f"the core worker's log has the traceback (under `dev up`: {log}); run a worker whose"
        " workflow code replays this history (a nondeterminism error: the code changed under"
        f" it), or `temporal workflow reset --workflow-id {workflow_id} --type LastWorkflowTask"
        f" --namespace {api.settings.namespace} --address {api.settings.temporal_address}`"
    )


# --- Store and event stream ----------------------------------------------------------------


def store(settings: Settings) -> list[Check]:
    """Opens the store the worker writes to and reads its newest event. Blocking: run in a
    thread, bounded by the driver's own timeouts (MongoDB's server selection)."""
    fix = (
        "start MongoDB, or fix REPLICANTE_STORE_MONGODB_URI (hosts, credentials)"
        if settings.store_mongodb_uri
        else "set REPLICANTE_STORE to the file the worker writes (writable), or"
        " REPLICANTE_STORE_MONGODB_URI"
    )
    if not settings.store_mongodb_uri and not settings.store_path.exists():
        # Opening would create it: an empty store that looks fine, beside the worker's.
        return [
            warn(
                "store",
                f"SQLite {settings.store_path} does not exist: no worker with these settings"
                " has written an event yet, or the worker writes elsewhere",
                "set REPLICANTE_STORE (or REPLICANTE_HOME) to what the worker uses; a core"
                " worker creates it when it starts",
            )
        ]
    try:
        opened = open_store(settings)
    except Exception as error:
        # pymongo appends its whole topology to a timeout; the reason comes before it.
        return [fail("store", str(error).split(", Topology Description:")[0], fix)]
    try:
        newest = opened.query(EventQuery(limit=1))
        detail = f"{opened}: " + (
            f"newest event {ago(newest[-1].stored_at)}" if newest else "no event yet"
        )
        if settings.stream is not None:
            detail += f", {opened.unpublished_count()} waiting for the event stream"
        return [ok("store", detail)]
    except Exception as error:
        return [fail("store", f"{opened} cannot be read: {error}", fix)]
    finally:
        opened.close()


def event_stream(settings: Settings) -> list[Check]:
    """The topic on the stream's brokers. Blocking: run in a thread, bounded by
    kafka-python's own bootstrap and request timeouts."""
    stream = settings.stream
    if stream is None:
        return [ok("event stream", "none configured (REPLICANTE_EVENTS_KAFKA unset)")]
    ms = int(STREAM_TIMEOUT_S * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=stream.bootstrap.split(","),
            client_id="replicante-doctor",
            bootstrap_timeout_ms=ms,
            request_timeout_ms=ms,
            **stream.login.client_options(),
        )
    except KafkaError as error:
        return [
            fail(
                "event stream",
                f"no broker of {stream.bootstrap} answers: {error}; events wait in the store",
                "start Kafka, or fix REPLICANTE_EVENTS_KAFKA (unset it to keep events in the"
                " store only)",
            )
        ]
    try:
        brokers = len(admin.describe_cluster()["brokers"])
        if stream.topic not in admin.list_topics():
            return [
                fail(
                    "event stream",
                    f"topic {stream.topic} does not exist on {stream.bootstrap}",
                    "set REPLICANTE_EVENTS_TOPIC to the topic in use, or create the topic"
                    " (a core worker's relay creates it: `replicante worker`)",
                )
            ]
        return [ok("event stream", f"topic {stream.topic} on {brokers} broker(s)")]
    finally:
        admin.close()


async def relay(api: ReplicanteClient) -> list[Check]:
    name = "event relay"
    fix = (
        "start a core worker with REPLICANTE_EVENTS_KAFKA set: `replicante worker` starts"
        f" the relay workflow {RELAY_WORKFLOW_ID}"
    )
    try:
        description = await describe(api, RELAY_WORKFLOW_ID)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return [fail(name, f"{RELAY_WORKFLOW_ID} was never started: nothing publishes", fix)]
    if description.status != WorkflowExecutionStatus.RUNNING:
        state = description.status.name.lower() if description.status else "closed"
        return [fail(name, f"{RELAY_WORKFLOW_ID} is {state}: nothing publishes", fix)]
    stuck = await workflow_task_failure(api, description)
    if stuck is not None:
        return [fail(name, f"{RELAY_WORKFLOW_ID}: {stuck}", stuck_fix(api, RELAY_WORKFLOW_ID))]
    for activity in description.raw_description.pending_activities:
        if activity.attempt > 1:
            return [
                fail(
                    name,
                    f"{RELAY_WORKFLOW_ID} retries (attempt {activity.attempt}):"
                    f" {activity.last_failure.message}; events wait in the store",
                    "fix what the failure names (the event stream line above: Kafka, topic)",
                )
            ]
    return [ok(name, f"{RELAY_WORKFLOW_ID} running")]


# --- Watched clusters ----------------------------------------------------------------------


async def cluster(api: ReplicanteClient, summary: ClusterSummary) -> list[Check]:
    """The monitor, then a fresh probe of every node, its agents and its open findings."""
    cid = summary.cluster_id
    name = f"cluster {cid}"
    workflow_id = monitor_workflow_id(cid)
    stuck = await workflow_task_failure(api, await describe(api, workflow_id))
    if stuck is not None:
        return [
            fail(name, f"{workflow_id}: {stuck}", stuck_fix(api, workflow_id)),
            skipped(f"nodes {cid}", "need the monitor's spec, which it cannot answer"),
        ]
    try:
        # A query waits for a worker to answer it: with none, until the RPC gives up.
        async with asyncio.timeout(RPC_TIMEOUT_S):
            status, spec = await asyncio.gather(api.status(cid), api.spec(cid))
    except TimeoutError:
        return [
            fail(
                name,
                f"{workflow_id} answers no query within {RPC_TIMEOUT_S:g} s",
                "is a core worker polling its task queue? (the core worker line above)",
            ),
            skipped(f"nodes {cid}", "need the monitor's spec, which it does not answer"),
        ]
    checks = [monitor(status)]
    if status.remediating:
        checks += await bounded(
            f"remediation {cid}",
            remediation(api, status.remediating),
            RPC_TIMEOUT_S,
            f"`replicante actions ls {cid}`",
        )
    checks += await bounded(
        f"nodes {cid}",
        probe_nodes(spec, status.remediating),
        probe_bound(spec.probe.timeout_s),
        f"`replicante status {cid}` shows what the monitor sees",
    )
    checks += await agents(api, spec, status.view)
    checks += [
        warn(
            f"finding {cid}",
            f"{finding.key} ({finding.severity.name}): {finding.message}",
            f"`replicante status {cid}`; `replicante actions ls {cid}` for its remediation",
        )
        for finding in status.findings
    ]
    return checks


def probe_bound(timeout_s: float) -> float:
    """The bound the remediation workflow gives a probe: the adapter bounds each node by
    the spec's timeout already, this catches one that would not return."""
    return 4 * timeout_s + 10


CLUSTER_BACKSTOP_S = 4 * RPC_TIMEOUT_S + probe_bound(60)
"""A cluster's describe, history read, queries and agents' pollers, and a probe at the
longest timeout a spec may set; each is bounded on its own, this catches what is not."""
CLUSTERS_BACKSTOP_S = RPC_TIMEOUT_S + CLUSTER_BACKSTOP_S
"""Listing the monitors, then every cluster at once."""


def monitor(status: MonitorStatus) -> Check:
    cid = status.cluster_id
    name = f"cluster {cid}"
    if status.paused:
        return warn(
            name,
            f"monitor paused: no probes, events or remediation for {cid}",
            f"when the maintenance is over: `replicante resume {cid}`",
        )
    detail = (
        f"monitor running: {status.kind}, health {status.health.value},"
        f" {len(status.findings)} open finding(s), spec generation {status.spec_generation}"
    )
    if status.remediating:
        detail += f", remediating ({status.remediating})"
    return ok(name, detail)


async def remediation(api: ReplicanteClient, remediation_id: str) -> list[Check]:
    """The cluster's running remediation: one waiting for an operator is what to do next."""
    st = await api.action(remediation_id)
    name = f"remediation {st.cluster_id}"
    what = f"{remediation_id} ({st.playbook}{f' on {st.target}' if st.target else ''})"
    if st.state is rem.State.AWAITING_APPROVAL:
        until = (
            f" until {st.approval_deadline:%Y-%m-%d %H:%M:%S} UTC" if st.approval_deadline else ""
        )
        return [
            warn(
                name,
                f"{what} awaits approval{until}",
                f"`replicante actions show {remediation_id}`, then `replicante approve"
                f" {remediation_id} --reason TEXT` (or `reject`)",
            )
        ]
    if st.paused:
        return [warn(name, f"{what} is paused", f"`replicante resume {remediation_id}`")]
    return [ok(name, f"{what} {st.state.value}")]


async def probe_nodes(spec: ClusterSpec, remediating: str | None) -> list[Check]:
    """A fresh probe from this process: what the monitor would see, right now."""
    view = await adapter_for(spec.kind).probe(spec)
    node_down = next(p.name for p in PLAYBOOKS[spec.kind].values() if "node_down" in p.answers)
    checks = []
    for node in view.nodes:
        name = f"node {spec.cluster_id}/{node.node_id}"
        if node.reachable and node.error is not None:
            # Alive, but blind to us: the probe reads nothing past its hello, so the
            # monitor cannot tell what the node does (finding auth_failed).
            checks.append(
                fail(
                    name,
                    f"{node.address} answers as {node.role.value}, not to us: {node.error}",
                    f"the login {spec.cluster_id}'s spec names (its username and password"
                    f" secrets, auth.mechanism), or the user on {node.node_id}",
                )
            )
        elif node.reachable:
            version = f" {node.version}" if node.version else ""
            checks.append(ok(name, f"{node.address} answers as {node.role.value}{version}"))
        else:
            # One remediation per cluster at a time: while one runs, it is the way in.
            fix = (
                f"a remediation runs on {spec.cluster_id}: `replicante actions show {remediating}`"
                if remediating
                else f"start {node.node_id} on its host, or through its agent: `replicante"
                f" remediate {spec.cluster_id} {node_down} --node {node.node_id}`"
            )
            checks.append(
                fail(name, f"{node.address} unreachable: {node.error or 'no reason given'}", fix)
            )
    return checks


def needed_agents(spec: ClusterSpec, view: ClusterView) -> dict[str, tuple[str, str]]:
    """node_id -> (its agent's id, the playbook that would call it), for the nodes a
    playbook the spec allows (policy approve or auto) acts on through their agent."""
    needed: dict[str, tuple[str, str]] = {}
    for playbook, policy in spec.remediation.items():
        if policy is Policy.OFF:
            continue
        needs_target = PLAYBOOKS[spec.kind][playbook].needs_target
        targets = [n.node_id for n in spec.nodes] if needs_target else [None]
        for target in targets:
            # The plan says which nodes the playbook touches through an agent; one it could
            # not plan now (no primary to step down) needs none.
            with suppress(ValueError):
                for step in rem.plan(spec, playbook, target, view):
                    if step.kind is rem.StepKind.SERVICE:
                        agent_id = spec.node(step.node_id).agent_id
                        needed.setdefault(step.node_id, (agent_id, playbook))
    return needed


async def agents(api: ReplicanteClient, spec: ClusterSpec, view: ClusterView | None) -> list[Check]:
    """The agents the monitor's remediations would call. Their plans are made on the
    monitor's view, as the monitor makes them."""
    if view is None:
        if any(policy is not Policy.OFF for policy in spec.remediation.values()):
            return [skipped(f"agents {spec.cluster_id}", "the monitor has no view to plan on yet")]
        return []
    needed = needed_agents(spec, view)
    queues = [agent_task_queue(spec.cluster_id, agent_id) for agent_id, _ in needed.values()]
    polled = await asyncio.gather(
        *(pollers(api, queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY) for queue in queues)
    )
    checks = []
    for (node_id, (agent_id, playbook)), queue, identities in zip(
        needed.items(), queues, polled, strict=True
    ):
        name = f"agent {spec.cluster_id}/{node_id}"
        if identities:
            checks.append(ok(name, f"task queue {queue} polled by {', '.join(identities)}"))
        else:
            checks.append(
                fail(
                    name,
                    f"nothing polls task queue {queue}: {playbook}"
                    f" ({spec.remediation[playbook].value}) cannot act on {node_id}",
                    f"on {node_id}'s host: `replicante agent --node {agent_id}`, its config"
                    f" naming cluster_id {spec.cluster_id} and node_id {node_id}",
                )
            )
    return checks


# --- The whole report ----------------------------------------------------------------------


async def diagnose(settings: Settings) -> AsyncIterator[Check]:
    """Every check, in the order an operator reads them, each as soon as it is known;
    secrets scrubbed."""
    redact = redactor(settings)
    async for check in sections(settings):
        yield redact(check)


async def sections(settings: Settings) -> AsyncIterator[Check]:
    temporal, api = await connect(settings)
    yield temporal
    temporal_fix = "see the temporal line above"
    needs = "needs Temporal"
    if api is None:
        yield skipped("namespace", needs)
    else:
        (named,) = await bounded("namespace", namespace(api), RPC_TIMEOUT_S, temporal_fix)
        yield named
        if named.status is Status.FAIL:
            api, needs = None, "needs the namespace"
    if api is None:
        yield skipped("search attributes", needs)
        yield skipped("core worker", needs)
    else:
        for check in [
            *await bounded(
                "search attributes", registered_search_attributes(api), RPC_TIMEOUT_S, temporal_fix
            ),
            *await bounded("core worker", core_worker(api), RPC_TIMEOUT_S, temporal_fix),
        ]:
            yield check
    for check in [
        *await bounded(
            "store",
            asyncio.to_thread(store, settings),
            STORE_TIMEOUT_S,
            "is the store's server hung? see REPLICANTE_STORE / REPLICANTE_STORE_MONGODB_URI",
        ),
        *await bounded(
            "event stream",
            asyncio.to_thread(event_stream, settings),
            3 * STREAM_TIMEOUT_S,  # bootstrap, then two requests
            "are the brokers hung? see REPLICANTE_EVENTS_KAFKA",
        ),
    ]:
        yield check
    if settings.stream is not None:
        for check in (
            await bounded("event relay", relay(api), 3 * RPC_TIMEOUT_S, temporal_fix)
            if api is not None
            else [skipped("event relay", needs)]
        ):
            yield check
    for check in (
        await bounded("clusters", clusters(api), CLUSTERS_BACKSTOP_S, temporal_fix)
        if api is not None
        else [skipped("clusters", needs)]
    ):
        yield check


async def clusters(api: ReplicanteClient) -> list[Check]:
    try:
        async with asyncio.timeout(RPC_TIMEOUT_S):
            watched = await api.clusters()
    except TimeoutError:
        return [
            fail(
                "clusters",
                f"listing the monitors took over {RPC_TIMEOUT_S:g} s",
                "see the temporal line above",
            )
        ]
    if not watched:
        return [
            warn(
                "clusters",
                "none watched (no running monitor)",
                "`replicante cluster apply -f SPEC.yaml` (see playground/ for examples)",
            )
        ]
    reports = await asyncio.gather(
        *(
            bounded(
                f"cluster {c.cluster_id}",
                cluster(api, c),
                CLUSTER_BACKSTOP_S,
                f"`replicante status {c.cluster_id}`; the core worker's log",
            )
            for c in watched
        )
    )
    return [check for report in reports for check in report]


async def problems_after(settings: Settings, within_s: float) -> list[Check]:
    """The FAILs still there after `within_s`, or none as soon as a run finds none: a stack
    just started needs seconds before every worker and agent polls and every monitor has
    probed."""
    deadline = time.monotonic() + within_s
    while True:
        failed = [c async for c in diagnose(settings) if c.status is Status.FAIL]
        if not failed or time.monotonic() >= deadline:
            return failed
        await asyncio.sleep(1.0)


def redactor(settings: Settings) -> Callable[[Check], Check]:
    """Blanks the store's MongoDB password (and the URI that holds it) wherever it shows up:
    drivers' errors are not ours to word, and a doctor's output is pasted into tickets."""
    uri = settings.store_mongodb_uri
    secrets = ([uri] if uri else []) + settings.secrets()

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return lambda c: replace(c, name=scrub(c.name), detail=scrub(c.detail), fix=scrub(c.fix))


def line(check: Check) -> str:
    """`FAIL  name: detail`, and the fix below it, indented."""
    text = f"{check.status.value:<4}  {check.name}: {check.detail}"
    return f"{text}\n      fix: {check.fix}" if check.fix else text


def summary(checks: Iterable[Check]) -> str:
    counts = {s: 0 for s in Status}
    for check in checks:
        counts[check.status] += 1
    parts = [f"{counts[Status.FAIL]} problem(s)", f"{counts[Status.WARN]} warning(s)"]
    if counts[Status.SKIP]:
        parts.append(f"{counts[Status.SKIP]} skipped")
    return ", ".join(parts) + f", {counts[Status.OK]} ok"


async def run(settings: Settings, *, as_json: bool = False) -> int:
    """Print the report; 1 when anything FAILs, else 0."""
    checks: list[Check] = []
    async for check in diagnose(settings):
        checks.append(check)
        if not as_json:
            print(line(check), flush=True)
    failed = any(c.status is Status.FAIL for c in checks)
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}))
    else:
        print(summary(checks))
    return 1 if failed else 0
