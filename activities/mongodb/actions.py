"""MongoDB actions that go through the replica set's own commands rather than a node
agent."""

from __future__ import annotations

from typing import Any

import pymongo
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure, PyMongoError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.mongodb.adapter import MongoDBAdapter
from activities.mongodb.connection import (
    PROBE_HEARTBEAT_MS,
    ask_hello,
    pinned_client,
)
from activities.waits import probe_until
from models.remediation import NodeRequest
from models.safety.mongodb import behind
from models.view import ClusterView

STEP_DOWN_S = 60
"""How long the old primary may not stand for election again (the server's default)."""
CATCH_UP_S = 10
"""How long the primary waits for an electable secondary to catch up before it steps
down; none caught up, it refuses and stays primary, so no acknowledged write is lost."""
HEARTBEAT_S = 1.0
NONE_CAUGHT_UP = 262
"""ExceededTimeLimit: what TopologyCoordinator::tryToStartStepDown answers when no electable
secondary caught up within secondaryCatchUpPeriodSecs ("No electable secondaries caught
up")."""


@activity.defn
async def step_down_primary(request: NodeRequest) -> str:
    """`replSetStepDown` on the node, if it is still the primary; what happened, in one
    line. A retry after the step-down finds the node a secondary and does nothing again.

    The server's refusal (no electable secondary caught up, not authorized, authentication
    failed) fails the step for good: asked again, it would refuse again, and the set keeps
    its primary meanwhile. A network error or a timeout is retried.
    """
    spec = request.spec
    node = spec.node(request.node_id)
    adapter = MongoDBAdapter()
    login = adapter.login_of(spec)
    timeout = spec.probe.timeout_s

    def own_word(client: MongoClient[dict[str, Any]]) -> dict[str, Any]:
        with pymongo.timeout(timeout):
            return ask_hello(client)

    def step_down() -> str:
        client = pinned_client(node.address, timeout, login, PROBE_HEARTBEAT_MS)
        try:
            hello = own_word(client)
            if not hello.get("isWritablePrimary", hello.get("ismaster")):
                return f"{node.node_id} is not the primary: nothing to step down"
            try:
                with pymongo.timeout(CATCH_UP_S + timeout):
                    client.admin.command(
                        {"replSetStepDown": STEP_DOWN_S, "secondaryCatchUpPeriodSecs": CATCH_UP_S}
                    )
            except NotPrimaryError:
                # An election (or a shutdown) took the role between the hello and the command.
                return f"{node.node_id} is no longer the primary: nothing to step down"
            except AutoReconnect:
                # Servers before 4.2 close every connection as they step down, so no reply
                # comes; a timeout leaves it open whether they did. The node's own word
                # decides: a secondary now. (While a step-down is still under way, hello
                # says neither writable primary nor secondary.)
                if not own_word(client).get("secondary"):
                    raise
                return f"{node.node_id} stepped down (no reply; it answers as a secondary now)"
            return f"{node.node_id} stepped down"
        finally:
            client.close()

    # The primary answers only once a secondary caught up, or after CATCH_UP_S: heartbeats
    # keep the step alive past the workflow's heartbeat timeout meanwhile. A cancel cannot
    # take back a command already sent; its thread ends when the server answers.
    try:
        return await heartbeating(step_down, HEARTBEAT_S, f"stepping {node.node_id} down")
    except OperationFailure as error:
        if error.code == NONE_CAUGHT_UP:
            # Not a fault: the server kept its primary rather than lose writes, as asked.
            raise ApplicationError(
                f"{node.node_id} stayed primary: no electable secondary caught up within"
                f" {CATCH_UP_S} s ({adapter.describe_error(error, timeout)})",
                non_retryable=True,
            ) from None
        raise ApplicationError(
            f"{node.node_id} refused to step down: {adapter.describe_error(error, timeout)}",
            non_retryable=True,
        ) from None
    except PyMongoError as error:
        raise ApplicationError(
            f"step down {node.node_id}: {adapter.describe_error(error, timeout)}"
        ) from None


@activity.defn
async def wait_caught_up(request: NodeRequest) -> ClusterView:
    """Probe until the node, a secondary again, is within the lag limit of its primary
    (spec `expect.max_lag`, else 10 s): a member that serves but lags is no safe successor,
    and a failover to it would lose the writes it lacks."""
    return await probe_until(
        MongoDBAdapter(), request, lambda view: behind(request.spec, view, request.node_id)
    )
