"""TimescaleDB compression after writes into old days (issue 10), against the TimescaleDB harness:
re-sending identical rows decompresses nothing; a changed row leaves its chunk partially compressed and
the next cold-tier run compresses it again; reported sizes are the true on-disk sizes (compressed data
included). Nothing version-specific is assumed: the chunk state and sizes are read the way the code
detects them, and compared with TimescaleDB's own functions where this server has them."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest
from pydantic import SecretStr

from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.cold_tier import run_cold_tier
from qt_pipeline.storage.postgres.layout import list_time_partitions
from qt_pipeline_tests.storage.central.helpers import make_bars

NOW = pd.Timestamp("2024-01-10T12:00Z")
pytestmark = pytest.mark.timescale


def _parts(central):
    with central.engine.connect() as conn:
        parts = list_time_partitions(conn, central.schema)
        conn.rollback()
    return parts


def _detailed_sizes(central) -> dict[str, int] | None:
    with central.engine.connect() as conn:
        has = conn.exec_driver_sql(
            "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'chunks_detailed_size')"
        ).scalar()
        if not has:
            return None
        rows = conn.exec_driver_sql(
            "SELECT chunk_name, total_bytes FROM chunks_detailed_size(%s::regclass)",
            (f'"{central.schema}".ohlcv_bars',),
        ).all()
        conn.rollback()
    return {r[0]: int(r[1]) for r in rows}


def _relation_sizes(central) -> dict[str, int]:
    with central.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT chunk_name, pg_total_relation_size(format('%%I.%%I', chunk_schema, chunk_name)::regclass) "
            "FROM timescaledb_information.chunks WHERE hypertable_schema = %s",
            (central.schema,),
        ).all()
        conn.rollback()
    return {r[0]: int(r[1]) for r in rows}


def test_written_old_days_are_compressed_again_and_sizes_are_true(settings, timescale_dsn) -> None:
    from qt_pipeline.cli.central import db_status
    from qt_pipeline.storage.postgres.store import PostgresStore

    schema = f"rc_{uuid.uuid4().hex[:8]}"
    central = PostgresStore(timescale_dsn, settings, schema=schema)
    try:
        central.ensure_schema()
        if not central.capabilities.can_compress:
            pytest.fail("the TimescaleDB harness must have the TSL (compression) build")
        bars = make_bars(("BTCUSD", "ETHUSD"), days=3, per_day=40)  # 2024-01-02 .. 04
        central.write_bars(bars)
        report = run_cold_tier(central, settings, older_than_days=5, now=NOW)
        assert [p.action for p in report.partitions] == ["compressed"] * 3
        parts = _parts(central)
        assert all(p.is_compressed and not p.needs_recompression for p in parts)
        detailed = _detailed_sizes(central)
        if detailed is not None:  # sizes include the compressed data, unlike pg_total_relation_size(chunk)
            assert {p.name: p.bytes for p in parts} == detailed
            relation = _relation_sizes(central)
            assert all(p.bytes > relation[p.name] for p in parts)
        sizes_before = {p.name: p.bytes for p in parts}

        # 1. identical rows re-sent (a reconcile, a replay): nothing is decompressed
        central.write_bars(bars[bars["timestamp"] < pd.Timestamp("2024-01-03T00:00Z")])
        parts = _parts(central)
        assert not any(p.needs_recompression for p in parts)
        assert {p.name: p.bytes for p in parts} == sizes_before
        assert run_cold_tier(central, settings, older_than_days=5, now=NOW).partitions == []

        # 2. a corrected bar in an old day: that chunk becomes partially compressed ...
        fix = bars[bars["timestamp"] >= pd.Timestamp("2024-01-03T00:00Z")].head(3).assign(close=777.25)
        central.write_bars(fix)
        parts = _parts(central)
        partial = [p.name for p in parts if p.needs_recompression]
        assert len(partial) == 1 and all(p.is_compressed for p in parts)
        # ... and the next cold-tier run compresses it again (and only it)
        report = run_cold_tier(central, settings, older_than_days=5, now=NOW)
        assert [(p.name, p.action) for p in report.partitions] == [(partial[0], "recompressed")]
        assert report.partitions[0].rows == 80
        parts = _parts(central)
        assert not any(p.needs_recompression for p in parts) and all(p.is_compressed for p in parts)
        expected = (
            pd.concat([bars, fix], ignore_index=True)
            .drop_duplicates(["symbol", "timestamp"], keep="last")
            .sort_values(["symbol", "timestamp"])
            .reset_index(drop=True)
        )
        got = central.read_range()
        assert len(got) == 240 and frame_checksum(got) == frame_checksum(expected)

        # 3. `qt db status` reports the true size of the bars table (sum of the true chunk sizes)
        status_settings = settings.model_copy(
            update={"neon_database_url": SecretStr(timescale_dsn), "pg_schema": schema}
        )
        info = db_status(status_settings)
        assert info["compressed_chunks"] == 3
        assert info["tables"]["ohlcv_bars"] == (240, sum(p.bytes for p in parts))
    finally:
        with central.direct_engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        central.close()
