"""Waiting for the events a monitor or a remediation stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from models import Event
from store import EventQuery, EventStore


async def wait_for_event(
    store: EventStore,
    cluster_id: str,
    match: Callable[[Event], bool],
    timeout: float = 30.0,
    after: float = 0.0,
) -> Event:
    """The first stored event of the cluster that matches, stored after `after` (epoch s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stored in store.query(EventQuery(cluster_id=cluster_id)):
            if stored.stored_at.timestamp() >= after and match(stored.event):
                return stored.event
        await asyncio.sleep(0.1)
    seen = [s.event.type for s in store.query(EventQuery(cluster_id=cluster_id))]
    raise AssertionError(f"no matching event for {cluster_id} within {timeout}s; saw {seen}")


def of_type(type_: str, node_id: str | None = None) -> Callable[[Event], bool]:
    return lambda e: e.type == type_ and (node_id is None or e.node_id == node_id)
