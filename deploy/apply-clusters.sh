#!/bin/sh
# Applies every cluster spec in the directory given (docker-compose.yml mounts deploy/clusters
# there): `cluster apply` starts a cluster's monitor, or gives one already watched its spec
# again, so a rerun is harmless. Stops at the first spec refused.
set -eu
for spec in "$1"/*.yaml; do
    replicante cluster apply -f "$spec"
done
