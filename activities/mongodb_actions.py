"""MongoDB actions that go through the replica set's own commands rather than a node
agent."""

from __future__ import annotations

import asyncio

import pymongo
from pymongo.errors import AutoReconnect, PyMongoError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.mongodb import _client, _hello, describe_error
from activities.secrets import read_secrets
from models.remediation import NodeRequest

STEP_DOWN_S = 60
"""How long the old primary may not stand for election again (the server's default)."""
CATCH_UP_S = 10
"""How long the primary waits for an electable secondary to catch up before it steps
down; none caught up, it refuses and stays primary, so no acknowledged write is lost."""


@activity.defn
async def step_down_primary(request: NodeRequest) -> str:
    """`replSetStepDown` on the node, if it is still the primary; what happened, in one
    line. A retry after the step-down found the node a secondary and does nothing again."""
    spec = request.spec
    node = spec.node(request.node_id)
    credentials = read_secrets(spec, "username", "password")
    timeout = spec.probe.timeout_s

    def step_down() -> str:
        client = _client(node.address, timeout, credentials, heartbeat_ms=10_000)
        try:
            with pymongo.timeout(timeout):
                hello = _hello(client)
            if not hello.get("isWritablePrimary", hello.get("ismaster")):
                return f"{node.node_id} is not the primary: nothing to step down"
            try:
                with pymongo.timeout(CATCH_UP_S + timeout):
                    client.admin.command(
                        {"replSetStepDown": STEP_DOWN_S, "secondaryCatchUpPeriodSecs": CATCH_UP_S}
                    )
            except AutoReconnect:
                # Servers before 4.2 close every connection as they step down.
                pass
            return f"{node.node_id} stepped down"
        finally:
            client.close()

    try:
        return await asyncio.to_thread(step_down)
    except PyMongoError as error:
        raise ApplicationError(
            f"step down {node.node_id}: {describe_error(error, timeout)}"
        ) from None
