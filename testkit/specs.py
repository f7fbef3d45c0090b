"""Specs of the local clusters a test or a benchmark watches."""

from __future__ import annotations

from devstack.kafka import KafkaCluster
from devstack.zookeeper import ZooKeeperEnsemble
from models import ClusterSpec, parse_spec


def spec_of(
    kind: str,
    prefix: str,
    addresses: list[str],
    cluster_id: str,
    interval_s: float,
    probe: dict[str, object],
    **fields: object,
) -> ClusterSpec:
    """A spec naming node n `<prefix><n>`, with a 1 s probe timeout unless `probe` says."""
    return parse_spec(
        {
            "cluster_id": cluster_id,
            "kind": kind,
            "nodes": [
                {"node_id": f"{prefix}{n}", "address": address}
                for n, address in enumerate(addresses, start=1)
            ],
            "probe": {"interval_s": interval_s, "timeout_s": 1.0, "watch_max_s": 600, **probe},
            **fields,
        }
    )


def zk_spec(
    ensemble: ZooKeeperEnsemble, cluster_id: str, *, interval_s: float = 1.0, **probe: object
) -> ClusterSpec:
    return spec_of("zookeeper", "zk", ensemble.addresses, cluster_id, interval_s, probe)


def kafka_spec(
    cluster: KafkaCluster, cluster_id: str, *, interval_s: float = 1.0, **probe: object
) -> ClusterSpec:
    """Brokers kafka1..3, expecting every partition to have 3 replicas."""
    return spec_of(
        "kafka",
        "kafka",
        cluster.addresses,
        cluster_id,
        interval_s,
        probe,
        expect={"replication_factor": 3},
    )


def own_agents(spec: ClusterSpec) -> ClusterSpec:
    """`spec` with each node's agent named after the cluster and node: agents of two tests
    never share a task queue."""
    return spec.model_copy(
        update={
            "nodes": tuple(
                n.model_copy(update={"agent": f"{spec.cluster_id}-{n.node_id}"}) for n in spec.nodes
            )
        }
    )
