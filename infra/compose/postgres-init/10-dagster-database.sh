#!/bin/sh
# First start of the postgres service only (docker-entrypoint-initdb.d): the Dagster instance's own role
# and database (run/event-log/schedule storage, infra/dagster.prod.yaml), apart from the qt data database.
# The qt roles (owner/writer/reader) are created by the db-bootstrap service (`qt db bootstrap --apply`).
set -eu
pw=$(cat "${DAGSTER_PG_PASSWORD_FILE}")
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres -v pw="${pw}" <<'SQL'
CREATE ROLE dagster LOGIN PASSWORD :'pw';
CREATE DATABASE dagster OWNER dagster;
REVOKE ALL ON DATABASE dagster FROM PUBLIC;
SQL
