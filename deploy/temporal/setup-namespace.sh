#!/bin/sh
# Registers what Replicante needs on the Temporal server, once it serves: the namespace
# and the search attributes the monitor keeps (workflows/search_attributes.py). The server
# image does neither. Each step looks before it acts, so a rerun changes nothing.
# TEMPORAL_ADDRESS is the temporal CLI's own variable; the namespace, TEMPORAL_NAMESPACE,
# is passed as a flag because `operator namespace` ignores that variable (CLI 1.9.1).
set -eu

t() {
    temporal "$@" --namespace "$TEMPORAL_NAMESPACE"
}

wait_for() {
    tries=0
    until "$@" >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            echo "setup-namespace: gave up after 120 s: $*" >&2
            exit 1
        fi
        sleep 2
    done
}

wait_for t operator cluster health
t operator namespace describe >/dev/null 2>&1 || t operator namespace create --retention 720h
# A new namespace reaches the server's other APIs a few seconds after it is created.
wait_for t operator search-attribute list

for attribute in ReplicanteClusterId:Keyword ReplicanteKind:Keyword \
    ReplicanteHealth:Keyword ReplicanteOpenFindings:Int; do
    name=${attribute%%:*}
    t operator search-attribute list | grep -qw "$name" \
        || t operator search-attribute create --name "$name" --type "${attribute##*:}"
    # A visibility query naming the attribute is refused until the server knows it: the
    # clusters applied next start their monitors with these attributes set.
    wait_for t workflow count --query "$name IS NOT NULL"
done
