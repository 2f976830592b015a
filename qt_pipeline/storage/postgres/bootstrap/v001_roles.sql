-- qt_pipeline database bootstrap, version 1: least-privilege roles for a Neon (or any PostgreSQL) database.
-- Rendered and applied by `qt db bootstrap` (which fills in the {{...}} names); idempotent, re-run it after
-- a schema change to re-grant on existing objects. Run it as the database owner (Neon: neondb_owner) or a
-- superuser. Passwords are never part of this file: `qt db bootstrap --apply --password-file` sets them.
--
--   {{owner}}   owns the schema: Alembic migrations, partitions ahead, cold tier (DDL). NEON_DIRECT_URL.
--   {{writer}}  the pipeline: reads and writes rows of existing tables, stages COPY in temporary tables;
--               no DDL on the schema. NEON_DATABASE_URL (pooled host).
--   {{reader}}  research workers: SELECT only, read-only transactions, short timeouts, no temp tables.
-- TimescaleDB (Neon): a writer's INSERT creates chunks itself (chunks inherit the hypertable's grants);
-- natively partitioned tables get their daily partitions from the owner (ensure_partitions over
-- NEON_DIRECT_URL), ahead of the data.

-- 1. roles (cluster-wide), without superuser/createdb/createrole/replication
DO $do$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['{{owner}}', '{{writer}}', '{{reader}}'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', r);
        END IF;
    END LOOP;
END
$do$;
ALTER ROLE "{{owner}}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE "{{writer}}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT {{writer_connection_limit}};
ALTER ROLE "{{reader}}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT {{reader_connection_limit}};
-- the bootstrapping user must be a member of the owner to create its schema and set default privileges
-- (a Neon owner has CREATEROLE, not superuser)
GRANT "{{owner}}" TO CURRENT_USER;

-- 2. per-role defaults, applied at login by the server (so they hold behind PgBouncer, where startup
--    options are rejected); the pipeline's SET LOCAL values still apply inside its transactions
ALTER ROLE "{{owner}}" SET statement_timeout = '{{owner_statement_timeout}}';
ALTER ROLE "{{owner}}" SET lock_timeout = '{{owner_lock_timeout}}';
ALTER ROLE "{{owner}}" SET idle_in_transaction_session_timeout = '10min';
ALTER ROLE "{{writer}}" SET statement_timeout = '{{writer_statement_timeout}}';
ALTER ROLE "{{writer}}" SET lock_timeout = '{{writer_lock_timeout}}';
ALTER ROLE "{{writer}}" SET idle_in_transaction_session_timeout = '10min';
ALTER ROLE "{{reader}}" SET statement_timeout = '{{reader_statement_timeout}}';
ALTER ROLE "{{reader}}" SET lock_timeout = '{{reader_lock_timeout}}';
ALTER ROLE "{{reader}}" SET idle_in_transaction_session_timeout = '1min';
ALTER ROLE "{{reader}}" SET default_transaction_read_only = on;

-- 3. the database: nobody but these roles connects; temporary tables for the COPY staging of the writer
REVOKE ALL ON DATABASE "{{database}}" FROM PUBLIC;
GRANT CONNECT, TEMPORARY, CREATE ON DATABASE "{{database}}" TO "{{owner}}";
GRANT CONNECT, TEMPORARY ON DATABASE "{{database}}" TO "{{writer}}";
GRANT CONNECT ON DATABASE "{{database}}" TO "{{reader}}";
-- PostgreSQL < 15 lets everyone create objects in "public"
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- 4. the extension where the server offers it (Neon: TimescaleDB Apache-2 build); else native partitions
DO $do$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXCEPTION WHEN others THEN
            RAISE NOTICE 'timescaledb is offered but could not be created (%); native partitioning is used', SQLERRM;
        END;
    ELSE
        RAISE NOTICE 'timescaledb is not available on this server; native partitioning is used';
    END IF;
END
$do$;

-- 5. the schema, owned by the owner role
CREATE SCHEMA IF NOT EXISTS "{{schema}}" AUTHORIZATION "{{owner}}";
ALTER SCHEMA "{{schema}}" OWNER TO "{{owner}}";
REVOKE ALL ON SCHEMA "{{schema}}" FROM PUBLIC;
GRANT USAGE ON SCHEMA "{{schema}}" TO "{{writer}}", "{{reader}}";

-- 6. grants on what exists now, and default privileges for what the owner creates later (migrations,
--    partitions): DML for the writer (no TRUNCATE, REFERENCES or TRIGGER), SELECT for the reader
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{{schema}}" TO "{{writer}}";
GRANT SELECT ON ALL TABLES IN SCHEMA "{{schema}}" TO "{{reader}}";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "{{schema}}" TO "{{writer}}";
GRANT SELECT ON ALL SEQUENCES IN SCHEMA "{{schema}}" TO "{{reader}}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{{owner}}" IN SCHEMA "{{schema}}"
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{{writer}}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{{owner}}" IN SCHEMA "{{schema}}"
    GRANT SELECT ON TABLES TO "{{reader}}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{{owner}}" IN SCHEMA "{{schema}}"
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO "{{writer}}";
ALTER DEFAULT PRIVILEGES FOR ROLE "{{owner}}" IN SCHEMA "{{schema}}"
    GRANT SELECT ON SEQUENCES TO "{{reader}}";

COMMENT ON SCHEMA "{{schema}}" IS 'qt_pipeline central store; bootstrap v001 (qt db bootstrap)';
