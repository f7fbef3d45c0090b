"""Blocking calls an activity waits on for longer than its heartbeat timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from temporalio import activity

T = TypeVar("T")


async def heartbeating(call: Callable[[], T], every_s: float, *details: object) -> T:
    """`call()` on a thread, heartbeating `details` every `every_s` until it returns: its
    result, or what it raised. Cancelling stops the waiting, not the thread, which ends
    when `call` does (a command already sent cannot be taken back)."""
    running = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        while not running.done():
            activity.heartbeat(*details)
            await asyncio.wait([running], timeout=every_s)
        return running.result()
    finally:
        running.cancel()
