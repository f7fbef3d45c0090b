"""A cancel is never lost by the watch's wait on its wake event (activities/waits.py
`woken`). On Python 3.11 `asyncio.wait_for` swallowed one that landed in the tick the event
was set (cpython#86296): the watch went on probing for up to 10 minutes after its worker
shut down, and the shutdown waited for it. Here the cancel lands at each tick offset of a
loop that waits as the watch does, and must end it every time; the same loop on
`asyncio.wait_for` shows the race is real on this Python. No servers."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

import pytest

from activities.waits import woken

Wait = Callable[[asyncio.Event], Awaitable[object]]
OFFSETS = range(6)


async def the_watchs_wait(event: asyncio.Event) -> object:
    return await woken(event, 10.0)


async def wait_for(event: asyncio.Event) -> object:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=10.0)
    return None


async def cancelled_at(wait: Wait, offset: int) -> bool:
    """Whether a loop waiting on an event as the watch does ends when cancelled `offset`
    ticks in, in the tick the event is set (and set again after)."""
    event = asyncio.Event()

    async def watch() -> None:
        while True:
            event.clear()
            await wait(event)

    task = asyncio.create_task(watch())
    for _ in range(offset):
        await asyncio.sleep(0)
    event.set()
    task.cancel()
    for _ in range(4):
        await asyncio.sleep(0)
        event.set()
    done, _ = await asyncio.wait([task], timeout=1.0)
    task.cancel()  # a loop that survived its cancel: end it for good
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return bool(done)


@pytest.mark.parametrize("offset", OFFSETS)
async def test_the_watchs_wait_never_loses_a_cancel(offset: int) -> None:
    assert await cancelled_at(the_watchs_wait, offset)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for is fixed in 3.12")
async def test_asyncio_wait_for_loses_one_on_this_python() -> None:
    # The control: without it, the test above could pass on a race that never happens here.
    assert not all([await cancelled_at(wait_for, offset) for offset in OFFSETS])
