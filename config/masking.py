"""The secret values this process has read or been told of, for the log masker
(worker/logs.py) to hide wherever they would show up, whoever logs them."""

from __future__ import annotations

MIN_MASKED = 8
"""Shorter values are not masked by value: a six-character password that is also another
cluster's id blanked that id in every line, which told whoever read the logs the password.
They are still never logged by us; the masker is the net below that."""
_known: set[str] = set()


def remember(value: str) -> None:
    """Mask `value` in this process's logs from now on, if it is long enough to be masked
    without blanking ordinary words."""
    if len(value) >= MIN_MASKED:
        _known.add(value)


def known() -> frozenset[str]:
    """Every secret value this process has read or been told of."""
    # One C call under the GIL: safe against a probe thread adding to the set meanwhile.
    return frozenset(_known)
