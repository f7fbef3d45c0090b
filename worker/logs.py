"""The log lines of every process (core worker, node agent, CLI call): structlog, one format
per process, whoever logs.

`REPLICANTE_LOG_FORMAT=json|console` picks the format; unset, it is `console` (readable,
coloured) when stderr is a terminal and `json` (one object per line) otherwise, so a worker
under systemd, Docker or `dev up` writes JSON. `REPLICANTE_LOG_LEVEL=debug|info|warning|error`
(default info); at debug each node's probe is a line.

Everything logs through the standard library: our modules, temporalio, the Temporal Rust
core (forwarded by the runtime of worker/telemetry.py), kazoo, pymongo. structlog's
`ProcessorFormatter` on the root logger's one handler turns each record into a line, with
what the line is about as flat keys:

- `workflow_id`, `run_id`, `task_queue`, and `workflow` (its type) or `activity` (its type):
  in workflow code from the SDK's `workflow.logger`, in an activity from its info;
- `cluster_id`: from the activity's input, else from the workflow id (`monitor/<cluster>`,
  `remediate/<cluster>/...`);
- `node`, `step`: from the activity's input (a step's node, the agent's own node, the step
  named by a service action's key), each node's probe, and workflow code's `extra=`.

Activities get theirs from `ActivityContext`, a worker interceptor that binds them in
structlog's context variables while the activity runs: every line logged meanwhile carries
them, a datastore client's included.

Secrets never appear: every value read through config/secrets.py, the password of the
event store's MongoDB URI, the payload key of REPLICANTE_CODEC_KEY, the password of any
`scheme://user:password@` URI and the value of any key named like a password, secret, token
or credential become `***`, in the message, the exception and every key.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger
from temporalio import activity, workflow
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from config import masking
from config.logs import LogFormat, chosen_format, chosen_level
from config.settings import Settings
from models import ClusterSpec, ServiceRequest, WatchRequest
from models.remediation import NodeRequest

MASK = "***"
SECRET_KEY = re.compile(r"passw|secret|token|credential|api_?key", re.IGNORECASE)
# Userinfo cannot hold an unescaped "/", "?", "#" or "@" (RFC 3986): a host:port/path is
# left alone.
# Linear in the text's length, which a spec or a reason sets: a match starts only where a
# scheme can (not inside a run of scheme characters), and its possessive runs never give
# back what they took. Without both, a 32 kB line of letters took 6.6 s under the GIL.
URI_PASSWORD = re.compile(
    r"(?<![a-z0-9+.-])(?P<user>[a-z][a-z0-9+.-]*+://[^:/?#@\s]*+):[^@/?#\s]++@", re.IGNORECASE
)
# The SDK's per-record dicts (logger extras), flattened into our keys.
SDK_KEYS = {
    "temporal_workflow": {
        "workflow_id": "workflow_id",
        "run_id": "run_id",
        "workflow_type": "workflow",
        "task_queue": "task_queue",
    },
    "temporal_activity": {
        "workflow_id": "workflow_id",
        "workflow_run_id": "run_id",
        "activity_type": "activity",
        "task_queue": "task_queue",
    },
}
CONTEXT_KEYS = (
    "cluster_id",
    "node",
    "step",
    "workflow_id",
    "run_id",
    "workflow",
    "activity",
    "task_queue",
)
# Attributes another formatter may have left on a record before ours sees it.
FORMATTER_LEFTOVERS = ("message", "asctime")


def configure(settings: Settings) -> None:
    """Set up this process's logging from the environment, once: later calls (the CLI's
    `main`, then the worker it runs) only learn the settings' secrets. A process whose
    root logger already has a handler (a program that embeds us, pytest) keeps its own.
    Raises SpecError for a bad REPLICANTE_LOG_FORMAT or REPLICANTE_LOG_LEVEL."""
    for secret in settings.secrets():
        masking.remember(secret)
    root = logging.getLogger()
    if root.handlers:
        return
    tty = sys.stderr.isatty()
    log_format = chosen_format(os.environ, tty)
    level = chosen_level(os.environ)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, colors=tty))
    root.addHandler(handler)
    root.setLevel(level)
    # kafka-python narrates every connection at INFO; its warnings and errors are the news.
    if level > logging.DEBUG:
        logging.getLogger("kafka").setLevel(logging.WARNING)
    # The SDK would also append its dict of details to each message: the keys carry them.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False


def formatter(log_format: LogFormat, colors: bool = False) -> logging.Formatter:
    """The formatter of every line: the keys (module doc), secrets masked, then rendered."""
    render: list[Processor]
    if log_format is LogFormat.JSON:
        render = [_message, structlog.processors.JSONRenderer()]
    else:
        render = [
            structlog.dev.ConsoleRenderer(
                colors=colors, exception_formatter=structlog.dev.plain_traceback, sort_keys=False
            )
        ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            _timestamp,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.ExtraAdder(),
            _flatten,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            # As text, so that the masking below reaches the exception's message too.
            structlog.processors.format_exc_info,
            mask_secrets,
            _ordered,
            *render,
        ],
    )


def _timestamp(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    # The record's own time: the Rust core's forwarded lines arrive a few ms after it.
    created = event["_record"].created
    event["timestamp"] = (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    return event


def _flatten(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The SDK's extras as our flat keys, the Rust core's fields as keys, the cluster of
    the workflow id when nothing named it; keys without a value dropped."""
    for extra, names in SDK_KEYS.items():
        details = event.pop(extra, None) or {}
        for theirs, ours in names.items():
            if theirs in details:
                event.setdefault(ours, details[theirs])
    core = event.pop("temporal_log", None)
    if core is not None:
        event["core_target"] = core.target
        for key, value in (core.fields or {}).items():
            event.setdefault(key, value)
    if "cluster_id" not in event and isinstance(event.get("workflow_id"), str):
        event["cluster_id"] = cluster_of(event["workflow_id"])
    for key in [k for k, v in event.items() if v is None or k.startswith("__")]:
        del event[key]
    for key in FORMATTER_LEFTOVERS:
        event.pop(key, None)
    return event


def cluster_of(workflow_id: str) -> str | None:
    """The cluster a monitor's or a remediation's workflow id names; cluster ids hold no "/".

    >>> from models import monitor_workflow_id
    >>> from models.remediation import workflow_id
    >>> cluster_of(monitor_workflow_id("zk-prod")), cluster_of(workflow_id("zk-prod", "x/zk2"))
    ('zk-prod', 'zk-prod')
    >>> cluster_of("events/stream") is None
    True
    """
    kind, _, rest = workflow_id.partition("/")
    if kind not in ("monitor", "remediate"):
        return None
    return rest.split("/", 1)[0] or None


def mask_secrets(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Every known secret value, URI password and secret-named key's value as `***`.

    >>> masking.remember("hunter2!")
    >>> mask_secrets(None, "info", {"event": "login with hunter2! failed",
    ...     "uri": "mongodb://app:pw%40x@db1:27017,db2/?replicaSet=rs0",
    ...     "db_password": "anything", "nested": {"API_TOKEN": 42}, "port": 9092})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'event': 'login with *** failed', 'uri': 'mongodb://app:***@db1:27017,db2/?replicaSet=rs0',
     'db_password': '***', 'nested': {'API_TOKEN': '***'}, 'port': 9092}
    """
    # Longest first: a secret holding another is masked whole.
    known = sorted(masking.known(), key=len, reverse=True)
    return {key: _masked(key, value, known) for key, value in event.items()}


def _masked(key: object, value: object, known: Sequence[str]) -> object:
    if isinstance(key, str) and SECRET_KEY.search(key):
        return MASK
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: _masked(k, v, known) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(None, v, known) for v in value]
    text = URI_PASSWORD.sub(rf"\g<user>:{MASK}@", str(value))
    for secret in known:
        text = text.replace(secret, MASK)
    return text


def _ordered(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The keys in one order on every line, what a reader scans for first."""
    head = {key: event.pop(key) for key in ("timestamp", "level", "logger", "event")}
    about = {key: event.pop(key) for key in CONTEXT_KEYS if key in event}
    return {**head, **about, **event}


def _message(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """structlog's `event` is the line's message; ours are Replicante's events."""
    return {("message" if key == "event" else key): value for key, value in event.items()}


class ActivityContext(Interceptor):
    """Binds what each activity is about (module doc) to structlog's context variables
    while it runs; `fixed` keys (the node agent's `node`) go on every activity's lines."""

    def __init__(self, **fixed: str) -> None:
        self.fixed = fixed

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BindActivity(next, self.fixed)


class _BindActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, fixed: Mapping[str, str]) -> None:
        super().__init__(next)
        self.fixed = fixed

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        with structlog.contextvars.bound_contextvars(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            activity=info.activity_type,
            task_queue=info.task_queue,
            **self.fixed,
            **about(input.args),
        ):
            return await self.next.execute_activity(input)


def about(args: Sequence[Any]) -> dict[str, str]:
    """The cluster, node and step an activity's input names.

    >>> key = "remediate/c1/node_down/zk2/r1#start-zk2"
    >>> about([ServiceRequest(action="start", cluster_id="c1", node_id="zk2", key=key)])
    {'step': 'start-zk2'}
    """
    found: dict[str, str] = {}
    for arg in args:
        if isinstance(arg, ClusterSpec):
            found["cluster_id"] = arg.cluster_id
        elif isinstance(arg, WatchRequest):
            found["cluster_id"] = arg.spec.cluster_id
        elif isinstance(arg, NodeRequest):
            found["cluster_id"] = arg.spec.cluster_id
            # A cluster-wide step names the cluster as its node (models/remediation.py).
            if arg.node_id != arg.spec.cluster_id:
                found["node"] = arg.node_id
        elif isinstance(arg, ServiceRequest):
            # The key is `<workflow id>/<run id>#<step>`.
            _, hash_sign, step = arg.key.rpartition("#")
            if hash_sign and step:
                found["step"] = step
    return found
