"""Blocking calls an activity waits on for longer than its heartbeat timeout."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from temporalio import activity

T = TypeVar("T")


async def heartbeating(
    call: Callable[[], T], every_s: float, *details: object, executor: Executor | None = None
) -> T:
    """`call()` on a thread (of `executor`, else the loop's default pool), heartbeating
    `details` every `every_s` until it returns: its result, or what it raised. Cancelling
    stops the waiting, not the thread, which ends when `call` does (a command already sent
    cannot be taken back)."""
    # As asyncio.to_thread does: the call sees the activity's context (its logger's).
    bound = functools.partial(contextvars.copy_context().run, call)
    running = asyncio.get_running_loop().run_in_executor(executor, bound)
    try:
        while not running.done():
            activity.heartbeat(*details)
            await asyncio.wait([running], timeout=every_s)
        return running.result()
    finally:
        running.cancel()
