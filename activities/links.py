"""What a watch's held links say of its nodes, and closing them without waiting on the
members that cannot answer."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable

_stretches = itertools.count(1)


class LinkStates:
    """Which of a watch's nodes its held links serve now, written by the links (from any
    thread) and read by the watch's rounds.

    A node's link serves while its session is up, logged in as the spec says, and each ping
    is answered within the probe's timeout; each unbroken stretch of serving has an id of its
    own. A reading taken while stretch s was up still holds, as far as the link can tell,
    while `serving(node)` is s: the member neither died, nor hung, nor dropped its clients
    (as a ZooKeeper member does when it leaves the quorum or loses its leader). Kinds whose
    links do not tell serve nothing (`NO_LINKS`)."""

    def __init__(self) -> None:
        self._serving: dict[str, int] = {}

    def serving(self, node_id: str) -> int | None:
        """The id of the stretch the node's link has served since; None: it does not."""
        return self._serving.get(node_id)

    def began(self, node_id: str) -> None:
        self._serving[node_id] = next(_stretches)

    def ended(self, node_id: str) -> None:
        self._serving.pop(node_id, None)


NO_LINKS = LinkStates()
"""What a watch without held links, or of a kind whose links do not tell, reads: nothing
serves, so each round asks every node."""


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
