"""Closing held links without waiting on the members that cannot answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable


def stop_all(stops: Iterable[Callable[[], None]], wait_s: float) -> None:
    """Run every `stop` at once, each on a daemon thread, and wait for them `wait_s` at most
    in total.

    Closing a link to a healthy member takes milliseconds; one to a hung member waits for
    that member's timeout. The watch hands its view over only after closing, so it waits
    for the healthy ones and leaves the stragglers to finish on their own.
    """
    threads = [threading.Thread(target=stop, daemon=True) for stop in stops]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + wait_s
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
