"""The store interface; one module per backend."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from models import Event


class StoreError(Exception):
    """The store cannot be opened or used (a server down, a file from a newer version).

    Not a RuntimeError: the CLI reads RuntimeError as "Temporal is unreachable".
    """


@dataclass(frozen=True)
class EventQuery:
    cluster_id: str | None = None
    since: datetime | None = None
    types: tuple[str, ...] = ()
    limit: int = 1000
    """The newest `limit` matching events; below 1, none."""


@dataclass(frozen=True)
class StoredEvent:
    event: Event
    stored_at: datetime
    """When the store first accepted it; detection latency is measured against this.
    Microseconds in SQLite; milliseconds in MongoDB (a BSON date)."""


class EventStore(abc.ABC):
    """The audit log, and the outbox of the event stream.

    Every appended event is *unpublished* until the stream relay has handed it to the
    Kafka topic and called `mark_published`. Keeping the outbox in the same store as the
    log means an event is never in the topic without being in the log, and never lost
    from the topic while the broker is down: the relay catches up from `unpublished`.
    A relay that dies between the broker's ack and marking would produce those events
    again; the relay (activities/stream.py) reads the topic's tail back first and marks
    what is already there. Each event carries its `event_id`, so a consumer can still
    deduplicate should anything slip past that.
    """

    @abc.abstractmethod
    def append(self, events: Sequence[Event]) -> int:
        """Store events not stored yet (by event_id); returns how many were new.

        Idempotent: appending the same event twice stores it once, so a retried
        activity never duplicates the audit log (nor the outbox).
        """

    @abc.abstractmethod
    def query(self, query: EventQuery) -> list[StoredEvent]:
        """Events in time order (oldest first), the newest `limit` of those matching."""

    @abc.abstractmethod
    def unpublished(self, limit: int) -> list[Event]:
        """Up to `limit` events not marked published, oldest append first.

        Append order, not event time: each monitor appends its batches one after the
        other, so append order is each cluster's event order, and the relay publishes in
        it. Events of different clusters may interleave in any order.
        """

    @abc.abstractmethod
    def mark_published(self, event_ids: Sequence[str]) -> int:
        """Mark events as handed to the stream; returns how many were not marked before.

        Idempotent: ids already marked, repeated or unknown change nothing.
        """

    @abc.abstractmethod
    def unpublished_count(self) -> int:
        """How many events wait for the relay (a backlog that grows means it is stuck)."""

    @abc.abstractmethod
    def close(self) -> None: ...
