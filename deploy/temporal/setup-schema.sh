#!/bin/sh
# Creates Temporal's two PostgreSQL databases and brings their schemas to the version of the
# temporal-sql-tool that runs it, before the server starts: the temporalio/server image does
# not (temporalio/auto-setup did, and is deprecated). Runs on every `docker compose up` and
# on every start of the production-shape engine (devstack/engine.py).
# Where it logs in is temporal-sql-tool's own variables (SQL_PLUGIN, SQL_HOST, SQL_PORT,
# SQL_USER, SQL_PASSWORD), which docker-compose.yml and the engine set; TEMPORAL_SCHEMA_DIR
# is the server's schema/postgresql/v12, by default where the admin-tools image has it.
set -eu
schema=${TEMPORAL_SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}

for db in temporal:temporal temporal_visibility:visibility; do
    name=${db%%:*}
    versioned=$schema/${db##*:}/versioned
    temporal-sql-tool --db "$name" create
    # update-schema moves an existing schema forward. Only a new database lacks the
    # version table it needs: setup-schema makes that table, and only then, so a rerun
    # never resets the version of a schema in use.
    if ! temporal-sql-tool --db "$name" update-schema -d "$versioned"; then
        temporal-sql-tool --db "$name" setup-schema -v 0.0
        temporal-sql-tool --db "$name" update-schema -d "$versioned"
    fi
done
