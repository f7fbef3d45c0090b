"""Retry policies the workflows share."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

RETRY_FOREVER = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
"""For work that must happen eventually (a watch, an event write): a datastore or store
that is down is waited out, never given up on."""
