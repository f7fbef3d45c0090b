"""The one interface every datastore kind implements (one package per kind, registered in
activities/kinds.py).

Workflows never see this: they call the probe and watch activities, which pick the
adapter for `spec.kind`.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import ClassVar, Generic, TypeVar

from activities.links import LinkStates
from config.secret_scope import SecretUnavailable
from models import ClusterSpec, ClusterView, Kind

LoginT = TypeVar("LoginT", covariant=True)
"""The kind's login value (config/<kind>.py): TLS and credentials, no secret in its repr."""


class Adapter(abc.ABC, Generic[LoginT]):
    kind: ClassVar[Kind]

    @abc.abstractmethod
    async def probe(self, spec: ClusterSpec) -> ClusterView:
        """Read every node concurrently, each bounded by `spec.probe.timeout_s`.

        Never raises for a node that is down, slow or answering garbage: that node is
        reported unreachable with the reason in `NodeStatus.error`.
        """

    def prober(self, spec: ClusterSpec, links: LinkStates) -> Callable[[], Awaitable[ClusterView]]:
        """The probe of one watch's rounds, which may keep what a round read for the next
        while `links` (the watch's own held links) say it still holds: this watch's alone,
        never shared with another watch or spec. By default each round is a whole `probe`."""
        return partial(self.probe, spec)

    @abc.abstractmethod
    def hold_links(
        self, spec: ClusterSpec, on_change: Callable[[], None]
    ) -> AbstractContextManager[LinkStates]:
        """Hold one live connection per node while the context is open; what they say of
        each node (`NO_LINKS` if they do not tell).

        `on_change` is called, from any thread, whenever a link's state changes (a
        member's process died, or came back), so the watch probes at once instead of
        waiting for the next interval.
        """

    @abc.abstractmethod
    def login_of(self, spec: ClusterSpec) -> LoginT:
        """How to reach and log in to the spec's nodes, its secrets read now; raises
        SecretUnavailable when one cannot be read."""

    def login_for_links(self, spec: ClusterSpec) -> LoginT | None:
        """The login held links use; None when a secret cannot be read, for then no link
        could log in, and the probe reports the missing secret on every node each round."""
        try:
            return self.login_of(spec)
        except SecretUnavailable:
            return None

    @abc.abstractmethod
    def describe_error(self, error: BaseException, timeout: float) -> str:
        """One line for `NodeStatus.error` (or an action's failure) saying why a node could
        not be asked, `timeout` being the bound it was asked within; never a secret."""
