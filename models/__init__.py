"""The shared value types of Replicante. Imports nothing else of ours."""

from models.agent import (
    SERVICE_ACTIVITY,
    ActionCommand,
    AgentConfig,
    ServiceAction,
    ServiceRequest,
    ServiceResult,
    agent_task_queue,
    load_agent_config,
    parse_agent_config,
)
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
    "SERVICE_ACTIVITY",
    "ActionCommand",
    "AgentConfig",
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
    "ServiceAction",
    "ServiceRequest",
    "ServiceResult",
    "Severity",
    "ShardStatus",
    "SpecError",
    "WatchRequest",
    "agent_task_queue",
    "changes",
    "evaluate",
    "health_of",
    "load_agent_config",
    "load_spec",
    "parse_agent_config",
    "parse_spec",
    "watch_key",
]
