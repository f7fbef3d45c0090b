"""What a finding is; the rules that produce them live beside this, one module per kind."""

from __future__ import annotations

from enum import IntEnum

from pydantic import BaseModel, ConfigDict


class Severity(IntEnum):
    INFO = 10
    """Worth knowing, not worth waking anyone: the cluster stays healthy."""
    WARNING = 20
    CRITICAL = 30


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    """Stable name, also the remediation key: `node_down`, `quorum_lost`, ..."""
    severity: Severity
    subject: str
    """What the finding is about: a node id, or the cluster id for cluster-wide ones."""
    message: str

    @property
    def key(self) -> str:
        return f"{self.code}/{self.subject}"


def listing(items: list[str], most: int = 5) -> str:
    """A short human list that says how many it left out.

    >>> listing(["a/0", "a/1"])
    'a/0, a/1'
    >>> listing([f"t/{n}" for n in range(8)], most=3)
    't/0, t/1, t/2 and 5 more'
    """
    shown = ", ".join(items[:most])
    return shown if len(items) <= most else f"{shown} and {len(items) - most} more"
