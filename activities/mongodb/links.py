"""Held links: what a held client's monitor tells of its server, so that a member's crash
is seen at once rather than at the next probe."""

from __future__ import annotations

from collections.abc import Callable

from pymongo import monitoring

# The held links' heartbeat: pymongo's floor. On 4.4+ the heartbeat is a streamed hello
# the server holds open, so a crash is seen when its socket closes, not at the next beat.
LINK_HEARTBEAT_MS = 500
LINK_STOP_WAIT_S = 0.5


class LinkWatch(monitoring.ServerHeartbeatListener, monitoring.ServerListener):
    """Calls `on_change` when its server's type changes (primary, secondary, unknown, ...)
    or a heartbeat fails after one succeeded. pymongo calls it from its monitor thread."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._up = False
        self.closing = False
        """Set when the links close: what their clients see while closing is no news."""

    def _tell(self) -> None:
        if not self.closing:
            self._on_change()

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        self._up = True

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        if self._up:
            self._up = False
            self._tell()

    def opened(self, event: monitoring.ServerOpeningEvent) -> None:
        pass

    def description_changed(self, event: monitoring.ServerDescriptionChangedEvent) -> None:
        if event.previous_description.server_type != event.new_description.server_type:
            self._tell()

    def closed(self, event: monitoring.ServerClosedEvent) -> None:
        pass
