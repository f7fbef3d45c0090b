"""Topics of a test's own on the local Kafka cluster."""

from __future__ import annotations

import uuid

from devstack.kafka import KafkaCluster

TEST_TOPIC_PREFIX = "t-"


def new_topic(cluster: KafkaCluster, partitions: int, min_isr: int | None = None) -> str:
    """A topic of the caller's own (RF 3), every partition led by its preferred replica;
    the `kafka_healthy` fixture deletes it after the test."""
    name = f"{TEST_TOPIC_PREFIX}{uuid.uuid4().hex[:8]}"
    configs = {"min.insync.replicas": str(min_isr)} if min_isr is not None else {}
    with cluster.admin(timeout=30) as admin:
        admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 3, "configs": configs}},
            wait_for_metadata=True,
        )
    return name
