"""The adapter of each datastore kind, in one table keyed by `Kind`: a new kind is one
package in activities/ and one line here."""

from __future__ import annotations

from collections.abc import Callable

from temporalio.exceptions import ApplicationError

from activities.adapter import Adapter
from activities.kafka.adapter import KafkaAdapter
from activities.mongodb.adapter import MongoDBAdapter
from activities.zookeeper.adapter import ZooKeeperAdapter
from models import Kind

ADAPTERS: dict[Kind, Callable[[], Adapter[object]]] = {
    Kind.ZOOKEEPER: ZooKeeperAdapter,
    Kind.KAFKA: KafkaAdapter,
    Kind.MONGODB: MongoDBAdapter,
}


def adapter_for(kind: Kind) -> Adapter[object]:
    factory = ADAPTERS.get(kind)
    if factory is None:
        raise ApplicationError(f"no adapter for kind {kind.value!r} yet", non_retryable=True)
    return factory()
