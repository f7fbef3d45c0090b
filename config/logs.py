"""How a process logs, as REPLICANTE_LOG_FORMAT and REPLICANTE_LOG_LEVEL ask
(worker/logs.py formats the lines)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum

from models import SpecError

LEVELS = ("debug", "info", "warning", "error")


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


def chosen_format(env: Mapping[str, str], tty: bool) -> LogFormat:
    """The format REPLICANTE_LOG_FORMAT asks for, else the one that suits stderr.

    >>> chosen_format({}, tty=True).value, chosen_format({}, tty=False).value
    ('console', 'json')
    >>> chosen_format({"REPLICANTE_LOG_FORMAT": "JSON"}, tty=True).value
    'json'
    >>> chosen_format({"REPLICANTE_LOG_FORMAT": "xml"}, tty=True)
    Traceback (most recent call last):
    ...
    models.spec.SpecError: REPLICANTE_LOG_FORMAT=xml: not one of json, console
    """
    name = env.get("REPLICANTE_LOG_FORMAT", "").strip().lower()
    if not name:
        return LogFormat.CONSOLE if tty else LogFormat.JSON
    try:
        return LogFormat(name)
    except ValueError:
        choices = ", ".join(f.value for f in LogFormat)
        raise SpecError(f"REPLICANTE_LOG_FORMAT={name}: not one of {choices}") from None


def chosen_level(env: Mapping[str, str]) -> int:
    """
    >>> chosen_level({}) == logging.INFO, chosen_level({"REPLICANTE_LOG_LEVEL": "Debug"})
    (True, 10)
    >>> chosen_level({"REPLICANTE_LOG_LEVEL": "verbose"})
    Traceback (most recent call last):
    ...
    models.spec.SpecError: REPLICANTE_LOG_LEVEL=verbose: not one of debug, info, warning, error
    """
    name = env.get("REPLICANTE_LOG_LEVEL", "").strip().lower() or "info"
    if name not in LEVELS:
        raise SpecError(f"REPLICANTE_LOG_LEVEL={name}: not one of {', '.join(LEVELS)}")
    return logging.getLevelNamesMapping()[name.upper()]
