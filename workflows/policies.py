"""Retry policies and activity options the workflows share."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

RETRY_FOREVER = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
"""For work that must happen eventually (a watch, an event write): a datastore or store
that is down is waited out, never given up on."""

EVENT_WRITE_TIMEOUT = timedelta(seconds=30)
"""A store that is slow under load is waited for, within reason: a write takes milliseconds."""

EVENT_WRITE_HEARTBEAT = timedelta(seconds=5)
"""The write heartbeats while it runs: a worker that dies mid-write is noticed in seconds,
not at the end of EVENT_WRITE_TIMEOUT, and the write retried on another."""
