#!/bin/sh
# Creates Temporal's two PostgreSQL databases and brings their schemas to the version of
# this admin-tools image, before the server starts: the temporalio/server image does not
# (temporalio/auto-setup did, and is deprecated). Runs on every `docker compose up`.
# SQL_PASSWORD is temporal-sql-tool's own variable, set by docker-compose.yml.
set -eu

sql() {
    temporal-sql-tool --plugin postgres12 --ep postgresql -p 5432 -u temporal --db "$@"
}

for db in temporal:temporal temporal_visibility:visibility; do
    name=${db%%:*}
    versioned=/etc/temporal/schema/postgresql/v12/${db##*:}/versioned
    sql "$name" create
    # update-schema moves an existing schema forward. Only a new database lacks the
    # version table it needs: setup-schema makes that table, and only then, so a rerun
    # never resets the version of a schema in use.
    if ! sql "$name" update-schema -d "$versioned"; then
        sql "$name" setup-schema -v 0.0
        sql "$name" update-schema -d "$versioned"
    fi
done
