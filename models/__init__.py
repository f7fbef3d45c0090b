"""The shared value types of Replicante. Imports nothing else of ours."""

from models.events import EVENT_SCHEMA_VERSION, Event, EventDraft, changes
from models.findings import Finding, Severity, evaluate, health_of
from models.monitor import EventBatch, MonitorInput, MonitorStatus, WatchRequest, watch_key
from models.spec import (
    ClusterSpec,
    Expectations,
    Kind,
    NodeSpec,
    Policy,
    ProbeSettings,
    SecretRef,
    SpecError,
    load_spec,
    parse_spec,
)
from models.stream import RelayReport, RelayRequest
from models.view import ClusterView, Health, NodeStatus, Role, ShardStatus

__all__ = [
    "EVENT_SCHEMA_VERSION",
    "ClusterSpec",
    "ClusterView",
    "Event",
    "EventBatch",
    "EventDraft",
    "Expectations",
    "Finding",
    "Health",
    "Kind",
    "MonitorInput",
    "MonitorStatus",
    "NodeSpec",
    "NodeStatus",
    "Policy",
    "ProbeSettings",
    "RelayReport",
    "RelayRequest",
    "Role",
    "SecretRef",
    "Severity",
    "ShardStatus",
    "SpecError",
    "WatchRequest",
    "changes",
    "evaluate",
    "health_of",
    "load_spec",
    "parse_spec",
    "watch_key",
]
