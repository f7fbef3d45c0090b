"""The store interface; one module per backend."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from models import Event


@dataclass(frozen=True)
class EventQuery:
    cluster_id: str | None = None
    since: datetime | None = None
    types: tuple[str, ...] = ()
    limit: int = 1000


@dataclass(frozen=True)
class StoredEvent:
    event: Event
    stored_at: datetime
    """When the store first accepted it; detection latency is measured against this."""


class EventStore(abc.ABC):
    @abc.abstractmethod
    def append(self, events: Sequence[Event]) -> int:
        """Store events not stored yet (by event_id); returns how many were new.

        Idempotent: appending the same event twice stores it once, so a retried
        activity never duplicates the audit log.
        """

    @abc.abstractmethod
    def query(self, query: EventQuery) -> list[StoredEvent]:
        """Events in time order (oldest first), the newest `limit` of those matching."""

    @abc.abstractmethod
    def close(self) -> None: ...
