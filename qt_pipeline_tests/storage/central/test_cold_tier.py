"""Cold tier: Parquet archive + drop (vanilla PostgreSQL) and native compression (TimescaleDB TSL)."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.cold_tier import ColdTierError, cold_cutoff, list_archives, run_cold_tier
from qt_pipeline.storage.migration import migrate_all
from qt_pipeline.storage.postgres.layout import list_time_partitions
from qt_pipeline_tests.storage.central.helpers import make_bars, sql

NOW = pd.Timestamp("2024-01-10T12:00Z")


def _partition_days(central) -> list[date]:
    with central.engine.connect() as conn:
        parts = list_time_partitions(conn, central.schema)
    return [p.range_start.date() for p in parts]


def test_cutoff_is_midnight_based() -> None:
    assert cold_cutoff(5, NOW) == pd.Timestamp("2024-01-05T00:00Z")
    with pytest.raises(ValueError, match="QT_COLD_AFTER_DAYS must be >= 0"):
        cold_cutoff(-1, NOW)


def test_archive_then_read_gives_back_identical_data(settings, local, central, pg_schema) -> None:
    url, schema = pg_schema
    bars = make_bars(("BTCUSD", "ETHUSD"), days=5, per_day=30)  # 2024-01-02 .. 2024-01-06
    local.write_bars(bars)
    migrate_all(local, central)
    before = central.read_range()

    report = run_cold_tier(central, settings, older_than_days=5, now=NOW)  # cutoff 2024-01-05
    assert report.mode == "parquet" and not report.failed
    archived = [p for p in report.partitions if p.action == "archived"]
    assert [p.range_start.date() for p in archived] == [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)]
    for p in archived:
        assert p.rows == 60 and p.bytes_before > 0 and p.bytes_after > 0
        path = Path(p.location)
        assert path.parent == settings.resolved_cold_tier_dir / "ohlcv_bars" / f"date={p.range_start.date()}"
        assert path.name.startswith("part-") and path.suffix == ".parquet"
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    # the partitions are gone from Postgres, the rows live only in the archive ...
    days = _partition_days(central)
    assert date(2024, 1, 4) not in days and date(2024, 1, 5) in days
    assert sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] == 120
    cat = list_archives(central)
    assert len(cat) == 3 and cat["dropped_at"].notna().all() and list(cat["rows"]) == [60, 60, 60]
    # ... and reads through the store return exactly the original data
    pd.testing.assert_frame_equal(central.read_range(), before)
    pd.testing.assert_frame_equal(central.read_bars("ETHUSD"), local.read_bars("ETHUSD"))
    assert frame_checksum(central.read_range()) == frame_checksum(local.read_range())
    # running it again finds nothing more to archive
    assert run_cold_tier(central, settings, older_than_days=5, now=NOW).partitions == []
    with pytest.raises(ColdTierError, match="cannot compress .*use mode 'auto' or 'parquet'"):
        run_cold_tier(central, settings, mode="compression")


def test_corrupted_archive_is_never_dropped(settings, local, central, pg_schema) -> None:
    url, schema = pg_schema
    local.write_bars(make_bars(("BTCUSD",), days=2, per_day=40))
    migrate_all(local, central)

    def truncate(path: Path) -> None:  # a short write: half of the file is lost
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ColdTierError, match="NOT dropped") as err:
        run_cold_tier(central, settings, older_than_days=0, now=NOW, on_archive_written=truncate)
    assert "cannot be read back" in str(err.value)
    assert {date(2024, 1, 2), date(2024, 1, 3)} <= set(_partition_days(central))
    assert sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] == 80
    assert list_archives(central).empty
    assert not list((settings.resolved_cold_tier_dir / "ohlcv_bars").rglob("*.parquet"))

    def drop_rows(path: Path) -> None:  # a readable archive with rows missing
        t = pq.read_table(path)
        pq.write_table(t.slice(0, t.num_rows - 1), path)

    report = run_cold_tier(
        central, settings, older_than_days=0, now=NOW, on_archive_written=drop_rows, raise_on_error=False
    )
    assert {p.action for p in report.partitions} == {"failed"} and len(report.failed) == 2
    assert "39 rows" in report.failed[0].error and "40 rows" in report.failed[0].error
    assert sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] == 80
    pd.testing.assert_frame_equal(central.read_range(), local.read_range())


def test_rows_written_back_into_an_archived_day_are_merged_and_rearchived(settings, local, central) -> None:
    local.write_bars(make_bars(("BTCUSD",), days=1, per_day=10))
    migrate_all(local, central)
    run_cold_tier(central, settings, older_than_days=0, now=NOW)
    assert list_archives(central)["dropped_at"].notna().all()
    # a late correction of one bar of the archived day: Postgres wins on read
    fix = local.read_bars("BTCUSD").iloc[[4]].assign(close=123.456)
    central.write_bars(fix)
    got = central.read_bars("BTCUSD")
    assert len(got) == 10 and got["close"].iloc[4] == 123.456
    first_location = list_archives(central)["location"].iloc[0]
    report = run_cold_tier(central, settings, older_than_days=0, now=NOW)
    assert [p.rows for p in report.partitions if p.action == "archived"] == [10]
    cat = list_archives(central)
    assert len(cat) == 1 and cat["location"].iloc[0] != first_location and not Path(first_location).exists()
    pd.testing.assert_frame_equal(central.read_bars("BTCUSD"), got)


@pytest.mark.timescale
def test_timescale_compression_path(settings, timescale_dsn) -> None:
    from qt_pipeline.storage.postgres.store import PostgresStore

    schema = f"ct_{uuid.uuid4().hex[:8]}"
    central = PostgresStore(timescale_dsn, settings, schema=schema)
    try:
        central.ensure_schema()
        assert central.capabilities.can_compress and central.layout == "hypertable"
        bars = make_bars(("BTCUSD", "ETHUSD"), days=3, per_day=8)
        central.write_bars(bars)
        report = run_cold_tier(central, settings, older_than_days=5, now=NOW)  # cutoff 2024-01-05
        assert report.mode == "compression" and not report.failed
        assert [p.action for p in report.partitions] == ["compressed"] * 3
        assert sum(p.rows for p in report.partitions) == len(bars)
        for p in report.partitions:
            assert p.bytes_before and p.bytes_after  # from chunk_compression_stats
        with central.engine.connect() as conn:
            parts = list_time_partitions(conn, schema)
        assert [p.is_compressed for p in parts] == [True, True, True]
        # compressed chunks stay readable, bit-exact
        pd.testing.assert_frame_equal(
            central.read_range(), bars.sort_values(["symbol", "timestamp"]).reset_index(drop=True)
        )
        assert run_cold_tier(central, settings, older_than_days=5, now=NOW).partitions == []  # idempotent
    finally:
        with central.direct_engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        central.close()


@pytest.mark.timescale
def test_parquet_archive_of_hypertable_chunks(settings, timescale_dsn) -> None:
    """Neon's path (hypertable without compression): chunks archived to Parquet, then drop_chunks."""
    from qt_pipeline.storage.postgres.store import PostgresStore

    schema = f"ca_{uuid.uuid4().hex[:8]}"
    central = PostgresStore(timescale_dsn, settings, schema=schema)
    try:
        central.ensure_schema()
        bars = make_bars(("BTCUSD",), days=3, per_day=6)
        central.write_bars(bars)
        report = run_cold_tier(central, settings, older_than_days=6, now=NOW, mode="parquet")  # cutoff 01-04
        assert report.mode == "parquet" and not report.failed
        assert [(p.action, p.rows) for p in report.partitions] == [("archived", 6), ("archived", 6)]
        with central.engine.connect() as conn:
            left = [p.range_start.date() for p in list_time_partitions(conn, schema)]
        assert left == [date(2024, 1, 4)]
        expected = bars.sort_values(["symbol", "timestamp"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(central.read_range(), expected)
        with pytest.raises(ValueError, match="cold tier mode"):
            run_cold_tier(central, settings, mode="zip")
    finally:
        with central.direct_engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        central.close()
