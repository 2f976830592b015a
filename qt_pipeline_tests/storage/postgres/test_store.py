"""PostgresStore behaviour beyond the shared contract: write paths, exact floats, replace/delete, cold-tier
reads, symbol_days, health, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qt_pipeline.market.contract import ContractError
from qt_pipeline.storage import get_storage
from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.storage.backends import make_bars
from qt_pipeline_tests.storage.postgres.helpers import count_rows

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _bits(s: pd.Series) -> np.ndarray:
    return s.to_numpy("float64").view(np.uint64)


def test_copy_upsert_is_idempotent_and_exact(pg_store: PostgresStore, pg_schema):
    url, schema = pg_schema
    bars = make_bars(["AAA", "BBB"], T0, 500, seed=11)
    rng = np.random.default_rng(3)
    bars["close"] = rng.random(len(bars)) * 10.0 ** rng.integers(-300, 300, len(bars))  # awkward magnitudes
    r1 = pg_store.write_bars(bars)
    assert r1.details["path"] == "copy"  # empty range: straight COPY into the table
    r2 = pg_store.write_bars(bars)
    assert r2.details["path"] == "upsert" and r2.details["rows_inserted_or_changed"] == 0
    assert count_rows(url, schema) == 1000
    got = pg_store.read_range()
    pd.testing.assert_frame_equal(got, bars, check_exact=True)
    for c in ("open", "high", "low", "close", "volume", "vwap"):
        np.testing.assert_array_equal(_bits(got[c]), _bits(bars[c]))
    assert frame_checksum(got) == frame_checksum(bars)


def test_upsert_replaces_values_and_adds_rows(pg_store: PostgresStore):
    bars = make_bars(["AAA"], T0, 100, seed=12)
    pg_store.write_bars(bars)
    changed = make_bars(["AAA"], T0 + pd.Timedelta("50min"), 100, seed=13)  # 50 overlap, 50 new
    r = pg_store.write_bars(changed)
    assert r.details["path"] == "upsert" and r.details["rows_inserted_or_changed"] == 100
    want = pd.concat([bars.iloc[:50], changed], ignore_index=True)
    pd.testing.assert_frame_equal(pg_store.read_bars("AAA"), want, check_exact=True)


def test_copy_bars_append_falls_back_to_upsert_on_conflict(pg_store: PostgresStore, pg_schema):
    url, schema = pg_schema
    bars = make_bars(["AAA"], T0, 60, seed=14)
    r = pg_store.copy_bars_append(bars)
    assert r.details["path"] == "copy"
    again = bars.copy()
    again["close"] = again["close"] * 2
    r = pg_store.copy_bars_append(again)  # keys exist: COPY hits 23505, the batch is upserted instead
    assert r.details["path"] == "append→upsert"
    pd.testing.assert_frame_equal(pg_store.read_bars("AAA"), again, check_exact=True)
    assert count_rows(url, schema) == 60


def test_forced_upsert_mode_on_empty_range(pg_store: PostgresStore):
    bars = make_bars(["AAA"], T0, 10)
    assert pg_store.write_bars(bars, mode="upsert").details["path"] == "upsert"
    pd.testing.assert_frame_equal(pg_store.read_bars("AAA"), bars, check_exact=True)


def test_bad_batches_are_refused_whole(pg_store: PostgresStore, pg_schema):
    url, schema = pg_schema
    bars = make_bars(["AAA"], T0, 10)
    dup = pd.concat([bars, bars.iloc[[3]]], ignore_index=True)
    with pytest.raises(ContractError, match="duplicate .symbol, timestamp. keys.*AAA, 2024-01-01 00:03"):
        pg_store.write_bars(dup)
    holes = bars.copy()
    holes.loc[4, "vwap"] = np.nan
    with pytest.raises(
        ContractError, match=r"column\(s\) \['vwap'\] hold null/NaN values \(first at batch row 4\)"
    ):
        pg_store.write_bars(holes)
    with pytest.raises(ContractError, match="missing column"):
        pg_store.write_bars(bars.drop(columns=["vwap"]))
    pg_store.ensure_schema()
    assert count_rows(url, schema) == 0


def test_replace_and_delete_range(pg_store: PostgresStore):
    a = make_bars(["AAA"], T0, 60, seed=1)
    b = make_bars(["BBB"], T0, 60, seed=2)
    pg_store.write_bars(pd.concat([a, b], ignore_index=True))
    lo, hi = T0 + pd.Timedelta("10min"), T0 + pd.Timedelta("20min")
    new = make_bars(["AAA"], lo, 5, seed=9)  # 10 rows replaced by 5
    r = pg_store.replace_range("AAA", lo, hi, new)
    assert r.details["deleted"] == 10 and r.rows == 5
    want = pd.concat([a.iloc[:10], new, a.iloc[20:]], ignore_index=True)
    pd.testing.assert_frame_equal(pg_store.read_bars("AAA"), want, check_exact=True)
    pd.testing.assert_frame_equal(pg_store.read_bars("BBB"), b, check_exact=True)  # untouched
    with pytest.raises(ContractError, match="outside the range; nothing was written"):
        pg_store.replace_range("AAA", lo, hi, make_bars(["AAA"], hi, 2))
    assert pg_store.delete_range("AAA", T0, lo) == 10
    assert pg_store.delete_range("AAA") == 45
    assert pg_store.read_bars("AAA").empty
    assert len(pg_store.read_bars("BBB")) == 60


def test_symbol_days(pg_store: PostgresStore):
    pg_store.write_bars(make_bars(["AAA", "BBB"], "2024-01-01 23:00", 120))  # 60 on day 1, 60 on day 2
    days = pg_store.symbol_days()
    assert list(days.columns) == ["symbol", "day", "rows"]
    assert [(s, str(d), n) for s, d, n in days.itertuples(index=False)] == [
        ("AAA", "2024-01-01", 60),
        ("AAA", "2024-01-02", 60),
        ("BBB", "2024-01-01", 60),
        ("BBB", "2024-01-02", 60),
    ]
    some = pg_store.symbol_days(start=pd.Timestamp("2024-01-02", tz="UTC"), symbols=["BBB"])
    assert [(s, str(d), n) for s, d, n in some.itertuples(index=False)] == [("BBB", "2024-01-02", 60)]
    assert days["rows"].dtype == np.int64
    assert pg_store.symbol_days(symbols=[]).empty


def test_reads_merge_archived_cold_tier_ranges(pg_store: PostgresStore, tmp_path):
    """Rows of a dropped range come back from its Parquet file; on a key in both, Postgres wins."""
    bars = make_bars(["AAA", "BBB"], "2024-01-01", 2 * 1440, seed=21)  # two days per symbol
    pg_store.write_bars(bars)
    day1 = bars[bars["timestamp"] < pd.Timestamp("2024-01-02", tz="UTC")]
    path = tmp_path / "cold" / "2024-01-01.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(day1, preserve_index=False), path)
    from qt_pipeline.storage.postgres.layout import list_time_partitions

    with pg_store.direct_engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {pg_store.qualified('cold_tier_ranges')} (range_start, range_end, location, rows, "
            "checksum, dropped_at) VALUES ('2024-01-01Z', '2024-01-02Z', %s, %s, 0, now())",
            (str(path), len(day1)),
        )
        part = next(
            p for p in list_time_partitions(conn, pg_store.schema) if p.name == "ohlcv_bars_p20240101"
        )
        from qt_pipeline.storage.postgres.layout import drop_time_partition

        drop_time_partition(conn, pg_store.schema, part)
    pd.testing.assert_frame_equal(pg_store.read_range(), bars, check_exact=True)
    aaa = bars[bars["symbol"] == "AAA"].reset_index(drop=True)
    pd.testing.assert_frame_equal(pg_store.read_bars("AAA"), aaa, check_exact=True)
    lo, hi = pd.Timestamp("2024-01-01 23:50", tz="UTC"), pd.Timestamp("2024-01-02 00:10", tz="UTC")
    window = aaa[(aaa["timestamp"] >= lo) & (aaa["timestamp"] < hi)].reset_index(drop=True)
    pd.testing.assert_frame_equal(pg_store.read_bars("AAA", lo, hi), window, check_exact=True)
    last = pg_store.read_bars("AAA", None, pd.Timestamp("2024-01-02 00:02", tz="UTC"), limit=5, from_end=True)
    pd.testing.assert_frame_equal(last, aaa.iloc[1437:1442].reset_index(drop=True), check_exact=True)
    only_close = pg_store.read_bars("AAA", limit=3, columns=["close"])
    pd.testing.assert_frame_equal(only_close, aaa.loc[:2, ["close"]], check_exact=True)
    assert [(s, str(d), n) for s, d, n in pg_store.symbol_days().itertuples(index=False)] == [
        ("AAA", "2024-01-01", 1440),
        ("AAA", "2024-01-02", 1440),
        ("BBB", "2024-01-01", 1440),
        ("BBB", "2024-01-02", 1440),
    ]
    summary = pg_store.list_symbols()
    assert list(summary["rows"]) == [2880, 2880]
    assert summary.loc[0, "first_timestamp"] == pd.Timestamp("2024-01-01", tz="UTC")
    # a re-written cold row is back in Postgres: the Postgres version wins
    fixed = aaa.iloc[[5]].copy()
    fixed["close"] = 12345.5
    pg_store.write_bars(fixed)
    got = pg_store.read_bars("AAA", aaa.loc[5, "timestamp"], aaa.loc[6, "timestamp"])
    assert got["close"].tolist() == [12345.5]
    assert len(pg_store.read_bars("AAA")) == 2880
    # a missing archive file is a clear error, not silently missing rows
    path.unlink()
    from qt_pipeline.storage.interface import StorageError

    with pytest.raises(StorageError, match="cold-tier file .* cannot be read.*restore the file"):
        pg_store.read_bars("AAA")


def test_health_reports_facts(pg_store: PostgresStore):
    pg_store.write_bars(make_bars(["AAA"], T0, 5))
    h = pg_store.health()
    assert h.healthy and h.backend == "neon" and h.latency_ms is not None
    d = h.details
    assert d["server_version_num"] >= 150000 and d["timescaledb_version"] is None
    assert d["database_bytes"] > 0 and d["connect_ms"] > 0 and d["is_neon"] is False
    assert d["pool_size"] == 5 and "pool_checked_out" in d and d["layout"] == "partitioned"


def test_factory_builds_the_neon_backend(pg_schema, monkeypatch, settings):
    url, schema = pg_schema
    monkeypatch.setenv("NEON_DATABASE_URL", url)
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    from qt_pipeline.config import Settings

    store = get_storage("neon", Settings())
    try:
        assert isinstance(store, PostgresStore) and store.schema == schema
        store.write_bars(make_bars(["AAA"], T0, 3))
        assert len(store.read_bars("AAA")) == 3
    finally:
        store.close()
