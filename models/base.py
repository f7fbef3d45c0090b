"""The smallest shared types, importing nothing else of ours: what every model that crosses
Temporal is (`Message`), the datastore kinds the plug-in tables are keyed by (`Kind`), and
what an agent may be asked to do (`ServiceAction`).

At the bottom so that the playbooks, which the spec validates against and whose planners
build steps, need nothing that imports the spec.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

MAX_REASON = 2000
"""The longest reason an operator may give (a pause, a decision): it goes into events and
histories whole."""


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Kind(StrEnum):
    ZOOKEEPER = "zookeeper"
    KAFKA = "kafka"
    MONGODB = "mongodb"


class ServiceAction(StrEnum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    STATUS = "status"
    """Exit 0 means the service runs; it changes nothing, so it is never in the ledger."""
