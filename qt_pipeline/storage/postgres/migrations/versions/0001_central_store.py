"""Central store: ohlcv_bars (hypertable or natively partitioned, chosen by capability), ohlcv_rejects,
migration_ledger, cold_tier_ranges.

Revision ID: 0001_central_store
Revises:
Create Date: 2026-11-28

Layout of ``ohlcv_bars``:

* TimescaleDB installed (and ``QT_PG_TIMESCALEDB`` not ``off``): a hypertable with 1-day chunks. On
  TimescaleDB < 2.13 (Neon on PG14/15 ships 2.10) only the old call exists:
  ``create_hypertable('<schema>.ohlcv_bars', 'timestamp', chunk_time_interval => interval '1 day')``;
  on >= 2.13 the ``by_range`` API is used. ``hypertable_api='old'|'new'`` forces one (tests).
* otherwise: ``PARTITION BY RANGE ("timestamp")`` with daily partitions ``ohlcv_bars_pYYYYMMDD`` created
  ahead by :func:`qt_pipeline.storage.postgres.layout.ensure_partitions`. No DEFAULT partition: a row for a
  missing day must fail loudly, never land silently in a catch-all.
"""

from __future__ import annotations

import logging

from alembic import op

from qt_pipeline.storage.postgres.capabilities import detect_capabilities
from qt_pipeline.storage.postgres.schema import migration_option, qi, schema_name

revision = "0001_central_store"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("qt_pipeline.storage.postgres")

BAR_COLUMNS_SQL = """
    symbol text NOT NULL,
    "timestamp" timestamptz NOT NULL,
    open double precision NOT NULL,
    high double precision NOT NULL,
    low double precision NOT NULL,
    close double precision NOT NULL,
    volume double precision NOT NULL,
    vwap double precision NOT NULL,
    trade_count bigint NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, "timestamp")
"""


def upgrade() -> None:
    s = qi(schema_name())
    bind = op.get_bind()
    caps = detect_capabilities(bind)
    use_hypertable = caps.has_timescaledb and migration_option("timescaledb", "auto") != "off"
    if use_hypertable:
        op.execute(f"CREATE TABLE {s}.ohlcv_bars ({BAR_COLUMNS_SQL})")
        api = migration_option("hypertable_api", "auto")
        old = api == "old" or (api == "auto" and caps.old_hypertable_api)
        target = f"{s}.ohlcv_bars".replace("'", "''")
        if old:
            op.execute(
                f"SELECT create_hypertable('{target}', 'timestamp', chunk_time_interval => interval '1 day')"
            )
        else:
            op.execute(f"SELECT create_hypertable('{target}', by_range('timestamp', interval '1 day'))")
        log.info(
            "ohlcv_bars: hypertable, 1-day chunks (TimescaleDB %s, %s API)",
            caps.timescaledb_version,
            "old" if old else "by_range",
        )
    else:
        op.execute(f'CREATE TABLE {s}.ohlcv_bars ({BAR_COLUMNS_SQL}) PARTITION BY RANGE ("timestamp")')
        log.info("ohlcv_bars: native daily range partitions (no TimescaleDB)")

    op.execute(
        f"""CREATE TABLE {s}.ohlcv_rejects (
            source text NOT NULL,
            line bigint NOT NULL DEFAULT -1,
            symbol text,
            "timestamp" text,
            reason text NOT NULL,
            detail text,
            raw text,
            rejected_at timestamptz NOT NULL,
            PRIMARY KEY (source, line, reason)
        )"""
    )
    op.execute(
        f"""CREATE TABLE {s}.migration_ledger (
            partition_key text PRIMARY KEY,
            symbol text NOT NULL,
            day date NOT NULL,
            rows bigint NOT NULL,
            checksum numeric(20,0) NOT NULL,
            bytes bigint,
            seconds double precision,
            status text NOT NULL,
            source text,
            migrated_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    op.execute(f"CREATE INDEX migration_ledger_symbol_day ON {s}.migration_ledger (symbol, day)")
    op.execute(
        f"""CREATE TABLE {s}.cold_tier_ranges (
            id bigserial PRIMARY KEY,
            range_start timestamptz NOT NULL,
            range_end timestamptz NOT NULL,
            location text NOT NULL,
            rows bigint NOT NULL,
            checksum numeric(20,0) NOT NULL,
            archived_at timestamptz NOT NULL DEFAULT now(),
            dropped_at timestamptz,
            UNIQUE (range_start, range_end)
        )"""
    )


def downgrade() -> None:
    s = qi(schema_name())
    for table in ("cold_tier_ranges", "migration_ledger", "ohlcv_rejects", "ohlcv_bars"):
        op.execute(f"DROP TABLE IF EXISTS {s}.{table} CASCADE")
