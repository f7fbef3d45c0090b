"""Custom search attributes the monitor keeps current, so an operator can list every
unhealthy cluster with one visibility query (Temporal UI or `replicante cluster ls`).

They must be registered on the Temporal server, as config/temporal.py names them; the dev
server of the playground and of the tests does that from that table.
"""

from temporalio.common import (
    SearchAttributeIndexedValueType,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)

from config.temporal import SEARCH_ATTRIBUTES
from models import ClusterSpec

CLUSTER_ID = SearchAttributeKey.for_keyword("ReplicanteClusterId")
KIND = SearchAttributeKey.for_keyword("ReplicanteKind")
HEALTH = SearchAttributeKey.for_keyword("ReplicanteHealth")
OPEN_FINDINGS = SearchAttributeKey.for_int("ReplicanteOpenFindings")

ALL = (CLUSTER_ID, KIND, HEALTH, OPEN_FINDINGS)

TYPE_NAMES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
}
assert {key.name: TYPE_NAMES[key.indexed_value_type] for key in ALL} == SEARCH_ATTRIBUTES


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
