"""The one interface every datastore kind implements (one module per kind).

Workflows never see this: they call the probe and watch activities, which pick the
adapter for `spec.kind`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import ClassVar

from models import ClusterSpec, ClusterView, Kind


class Adapter(abc.ABC):
    kind: ClassVar[Kind]

    @abc.abstractmethod
    async def probe(self, spec: ClusterSpec) -> ClusterView:
        """Read every node concurrently, each bounded by `spec.probe.timeout_s`.

        Never raises for a node that is down, slow or answering garbage: that node is
        reported unreachable with the reason in `NodeStatus.error`.
        """

    @abc.abstractmethod
    def hold_links(
        self, spec: ClusterSpec, on_change: Callable[[], None]
    ) -> AbstractContextManager[None]:
        """Hold one live connection per node while the context is open.

        `on_change` is called, from any thread, whenever a link's state changes (a
        member's process died, or came back), so the watch probes at once instead of
        waiting for the next interval.
        """
