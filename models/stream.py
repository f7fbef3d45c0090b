"""What crosses Temporal between the event stream workflow and its relay activity."""

from __future__ import annotations

from models.base import Message


class RelayRequest(Message):
    run_for_s: float = 3600.0
    """The relay returns after this long, so its workflow can continue-as-new now and then."""


class RelayReport(Message):
    published: int = 0
    outages: int = 0
    """How many times Kafka stopped acknowledging during the run."""
