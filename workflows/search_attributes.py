"""Custom search attributes the monitor keeps current, so an operator can list every
unhealthy cluster with one visibility query (Temporal UI or `replicante cluster ls`).

They must be registered on the Temporal server; `replicante dev up` and the test
fixtures do that from this table.
"""

from temporalio.common import (
    SearchAttributeIndexedValueType,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)

from models import ClusterSpec

CLUSTER_ID = SearchAttributeKey.for_keyword("ReplicanteClusterId")
KIND = SearchAttributeKey.for_keyword("ReplicanteKind")
HEALTH = SearchAttributeKey.for_keyword("ReplicanteHealth")
OPEN_FINDINGS = SearchAttributeKey.for_int("ReplicanteOpenFindings")

ALL = (CLUSTER_ID, KIND, HEALTH, OPEN_FINDINGS)

_CLI_TYPE_NAMES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
}


def dev_server_flags() -> list[str]:
    """`--search-attribute NAME=TYPE` flags for `temporal server start-dev`."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={_CLI_TYPE_NAMES[key.indexed_value_type]}"]
    return flags


def initial(spec: ClusterSpec) -> TypedSearchAttributes:
    """Set at start so a cluster is findable before its first probe returns."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(CLUSTER_ID, spec.cluster_id),
            SearchAttributePair(KIND, spec.kind.value),
            SearchAttributePair(HEALTH, "unknown"),
            SearchAttributePair(OPEN_FINDINGS, 0),
        ]
    )
