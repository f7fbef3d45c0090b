"""Lookups and event writes on threads of their own (activities/lookups.py, activities/
events.py WRITES), tested with the loop's default pool held by blocking calls, as a spec of
names that resolve slowly held it: a member named by a host name is still probed within the
probe's timeout, and an event write is stored at once. Both waited behind the held pool
before (a playground node.down stored 5.4 s late beside 16 unresolvable names)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.events import EventActivities
from activities.zookeeper.adapter import ZooKeeperAdapter
from models import Event, EventBatch, parse_spec
from store import SQLiteEventStore
from testkit.fakes import Behaviour, fake_members

HELD = 64
"""More blocking calls than any default pool has threads (min(32, cores + 4))."""


@pytest.fixture
async def held_default_pool() -> AsyncIterator[None]:
    release = threading.Event()
    loop = asyncio.get_running_loop()
    held = [loop.run_in_executor(None, release.wait) for _ in range(HELD)]
    try:
        yield
    finally:
        release.set()
        await asyncio.gather(*held)


async def test_a_member_named_by_host_is_probed_with_the_default_pool_held(
    held_default_pool: None,
) -> None:
    with fake_members("127.0.0.1", {Behaviour.GARBAGE: 1}) as fakes:
        port = fakes[Behaviour.GARBAGE][0].rsplit(":", 1)[1]
        spec = parse_spec(
            {
                "cluster_id": "lookups",
                "kind": "zookeeper",
                "nodes": [{"node_id": "zk1", "address": f"localhost:{port}"}],
                "probe": {"interval_s": 1, "timeout_s": 1, "hold_connections": False},
            }
        )
        started = time.monotonic()
        view = await ZooKeeperAdapter().probe(spec)
    # It connected and read the garbage: the lookup did not wait for the held pool.
    assert (view.nodes[0].error or "").startswith("unparseable reply"), view.nodes[0]
    assert time.monotonic() - started < 1.0


async def test_an_event_write_is_stored_with_the_default_pool_held(
    held_default_pool: None, tmp_path: Path
) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    event = Event(
        event_id="c1/1", cluster_id="c1", type="test.held", at=datetime.now(UTC), message="held"
    )
    started = time.monotonic()
    try:
        stored = await asyncio.wait_for(
            ActivityEnvironment().run(
                EventActivities(store).record_events, EventBatch(events=[event])
            ),
            timeout=5,
        )
    finally:
        store.close()
    assert stored == 1
    assert time.monotonic() - started < 1.0
