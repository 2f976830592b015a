"""Schema setup of the central store: Alembic ``upgrade heads`` run programmatically into a target schema.

Alembic is the only place DDL for Postgres tables lives (``migrations/versions``). Other domains add their
tables as independent branch revisions with ``down_revision = "0001_central_store"`` in the same
``versions/`` directory; :func:`upgrade` upgrades every head. Inside a revision, ``schema_name()`` is the
target schema and ``migration_option(name)`` reads the options passed to :func:`upgrade`.

:func:`upgrade` is safe to run concurrently from several processes: it holds a transaction-scoped
advisory lock (``pg_advisory_xact_lock`` — fine behind PgBouncer) for the whole upgrade, which runs in
one transaction.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

log = logging.getLogger("qt_pipeline.storage.postgres")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BASE_REVISION = "0001_central_store"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

TimescaleMode = Literal["auto", "off"]
HypertableApi = Literal["auto", "old", "new"]


def check_identifier(name: str, what: str = "schema") -> str:
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(
            f"{what} name {name!r} is not allowed: use letters, digits and '_' (max 63, not starting with "
            "a digit), e.g. QT_PG_SCHEMA=qt_central"
        )
    return name


def qi(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# --- helpers for revision files -------------------------------------------------------------------------
def _attributes() -> dict[str, Any]:
    from alembic import context

    return context.config.attributes


def schema_name() -> str:
    """The target schema of the running migration."""
    return check_identifier(_attributes().get("schema", "public"))


def migration_option(name: str, default: Any = None) -> Any:
    return _attributes().get(name, default)


# --- programmatic upgrade -------------------------------------------------------------------------------
def alembic_config(schema: str, **attributes: Any):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["schema"] = schema
    cfg.attributes.update(attributes)
    return cfg


def head_revisions() -> set[str]:
    return set(_heads())


@functools.lru_cache(maxsize=1)
def _heads() -> tuple[str, ...]:
    from alembic.script import ScriptDirectory

    return tuple(ScriptDirectory.from_config(alembic_config("public")).get_heads())


def applied_revisions(conn: sa.Connection, schema: str) -> set[str]:
    exists = conn.exec_driver_sql(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{qi(schema)}.alembic_version",)
    ).scalar()
    if not exists:
        return set()
    return {r[0] for r in conn.exec_driver_sql(f"SELECT version_num FROM {qi(schema)}.alembic_version")}


def ensure_timescaledb_extension(conn: sa.Connection, mode: TimescaleMode = "auto") -> bool:
    """``CREATE EXTENSION IF NOT EXISTS timescaledb`` when the server offers it but it is not installed.

    Permission problems (or a server without the library preloaded) are tolerated: the schema then falls
    back to native partitioning. Runs in its own short transaction. Returns whether it is installed.
    """
    if mode == "off":
        return False
    row = conn.exec_driver_sql(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),"
        " (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb')"
    ).one()
    conn.commit()
    if row[0] is not None:
        return True
    if row[1] is None:
        return False
    try:
        with conn.begin():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS timescaledb")
        log.info("installed the timescaledb extension (%s)", row[1])
        return True
    except sa.exc.DBAPIError as exc:
        from qt_pipeline.redaction import redact

        log.warning(
            "timescaledb %s is available but could not be installed (%s); using native partitioning",
            row[1],
            redact(str(getattr(exc, "orig", exc)).strip().splitlines()[0]),
        )
        return False


def upgrade(
    engine: sa.Engine,
    schema: str = "public",
    *,
    timescaledb: TimescaleMode = "auto",
    hypertable_api: HypertableApi = "auto",
) -> set[str]:
    """Bring ``schema`` to every Alembic head (creating the schema if needed). Idempotent.

    ``timescaledb='off'`` lays ``ohlcv_bars`` out as a natively partitioned table even when TimescaleDB is
    available; ``hypertable_api`` forces the old (``create_hypertable(t, col, chunk_time_interval => …)``)
    or new (``by_range``) call instead of choosing by the detected version. Returns the applied heads.
    """
    from alembic import command

    check_identifier(schema)
    heads = head_revisions()
    with engine.connect() as conn:
        # fast path: nothing to do (no lock, no DDL)
        with conn.begin():
            if applied_revisions(conn, schema) >= heads:
                return heads
        ensure_timescaledb_extension(conn, timescaledb)
        with conn.begin():
            conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"qt_pipeline.schema:{schema}",)
            )
            if not conn.exec_driver_sql("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).first():
                conn.exec_driver_sql(f"CREATE SCHEMA {qi(schema)}")
            cfg = alembic_config(
                schema, connection=conn, timescaledb=timescaledb, hypertable_api=hypertable_api
            )
            command.upgrade(cfg, "heads")
            applied = applied_revisions(conn, schema)
    log.info("schema %s is at %s", schema, sorted(applied))
    return applied
