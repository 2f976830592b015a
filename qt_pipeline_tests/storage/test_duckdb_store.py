"""DuckDB-specific behaviour of the ``local`` backend (the shared contract is in test_contract.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from qt_pipeline.market.contract import ContractError, to_canonical
from qt_pipeline.storage import StorageError, get_storage
from qt_pipeline.storage.duckdb_store import SCHEMA_VERSION, DuckDBStore
from qt_pipeline_tests.storage.backends import make_bars, make_rejects
from qt_pipeline_tests.storage.test_contract import assert_same_bars

T0 = pd.Timestamp("2024-01-01", tz="UTC")
MIN = pd.Timedelta("1min")


@pytest.fixture
def db(tmp_path: Path):
    s = DuckDBStore(tmp_path / "db" / "local.duckdb")
    yield s
    s.close()


def test_locked_file_gives_clear_error(tmp_path: Path):
    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from qt_pipeline.storage.duckdb_store import DuckDBStore
                s = DuckDBStore({str(path)!r})
                print("ready", flush=True)
                sys.stdin.read()  # hold the file until the test closes our stdin
                s.close()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StorageError) as info:
            DuckDBStore(path)
        msg = str(info.value)
        assert str(path) in msg
        assert "locked by another process" in msg and f"PID {holder.pid}" in msg
        assert "Dagster" in msg and "QT_DUCKDB_PATH" in msg
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with DuckDBStore(path) as s:  # released: opens fine now
        assert s.health().healthy


def test_persistence_across_reopen(tmp_path: Path):
    path = tmp_path / "p.duckdb"
    bars = make_bars(["AAA", "BBB"], T0, 50, seed=1)
    with DuckDBStore(path) as s:
        s.write_bars(bars)
        s.write_rejects(make_rejects("a.csv", [2, None]))
    with DuckDBStore(path) as s:
        assert_same_bars(s.read_range(), bars)
        assert len(s.read_rejects()) == 2
        assert s.schema_version == SCHEMA_VERSION
        # migrations ran once: one schema_version row for this module
        assert s.connection.execute("SELECT component, version FROM schema_version").fetchall() == [
            ("bars", SCHEMA_VERSION)
        ]
    with DuckDBStore(path, read_only=True) as ro:
        assert_same_bars(ro.read_bars("AAA"), bars[bars.symbol == "AAA"])
        assert_same_bars(ro.read_bars("AAA", limit=5, from_end=True), bars[bars.symbol == "AAA"].iloc[45:])
        with pytest.raises(StorageError, match="read-only"):
            ro.write_bars(bars)


def test_newer_schema_refused(tmp_path: Path):
    path = tmp_path / "new.duckdb"
    DuckDBStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE schema_version SET version = 999 WHERE component = 'bars'")
    con.close()
    with pytest.raises(StorageError, match="version 999, newer"):
        DuckDBStore(path)


def test_session_timezone_is_utc_and_days_are_utc(db: DuckDBStore):
    assert db.connection.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"
    bars = make_bars(["AAA"], "2024-01-01 23:58", 4, seed=2)  # 2 bars on Jan 1, 2 on Jan 2 (UTC)
    db.write_bars(bars)
    days = db.symbol_days()
    assert list(days.columns) == ["symbol", "day", "rows"]
    assert days.to_dict("records") == [
        {"symbol": "AAA", "day": date(2024, 1, 1), "rows": 2},
        {"symbol": "AAA", "day": date(2024, 1, 2), "rows": 2},
    ]
    only2 = db.symbol_days(pd.Timestamp("2024-01-02", tz="UTC"), None)
    assert only2.to_dict("records") == [{"symbol": "AAA", "day": date(2024, 1, 2), "rows": 2}]
    assert len(db.symbol_days(T0 + pd.Timedelta("30D"))) == 0
    db.write_bars(make_bars(["BBB"], T0, 3, seed=2))
    assert db.symbol_days(symbols=["BBB"]).to_dict("records") == [
        {"symbol": "BBB", "day": date(2024, 1, 1), "rows": 3}
    ]
    assert len(db.symbol_days(symbols=[])) == 0
    assert db.symbol_days()["symbol"].tolist() == ["AAA", "AAA", "BBB"]


def test_timezone_env_cannot_shift_values(tmp_path: Path):
    """A process with TZ=Asia/Tokyo reads back exactly the UTC instants another process wrote."""
    path = tmp_path / "tz.duckdb"
    bars = make_bars(["AAA"], "2024-03-10 06:59", 3, seed=3)  # around a US DST change
    with DuckDBStore(path) as s:
        s.write_bars(bars)
    code = textwrap.dedent(
        f"""
        from qt_pipeline.storage.duckdb_store import DuckDBStore
        with DuckDBStore({str(path)!r}) as s:
            df = s.read_bars("AAA")
            print(",".join(t.isoformat() for t in df["timestamp"]))
            print(s.symbol_days()["day"].astype(str).tolist())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TZ": "Asia/Tokyo"},
        check=True,
    ).stdout.splitlines()
    assert out[0] == ",".join(t.isoformat() for t in bars["timestamp"])
    assert out[1] == "['2024-03-10']"


def test_delete_range(db: DuckDBStore):
    bars = make_bars(["AAA", "BBB"], T0, 20, seed=4)
    db.write_bars(bars)
    assert db.delete_range("AAA", T0 + 5 * MIN, T0 + 10 * MIN) == 5
    a = bars[bars.symbol == "AAA"]
    assert_same_bars(db.read_bars("AAA"), pd.concat([a.iloc[:5], a.iloc[10:]]))
    assert_same_bars(db.read_bars("BBB"), bars[bars.symbol == "BBB"])  # other symbol untouched
    assert db.delete_range("AAA", T0 + 5 * MIN, T0 + 10 * MIN) == 0
    assert db.delete_range("AAA") == 15
    assert len(db.read_bars("AAA")) == 0


def test_replace_range(db: DuckDBStore):
    bars = make_bars(["AAA"], T0, 20, seed=5)
    db.write_bars(bars)
    new = make_bars(["AAA"], T0 + 5 * MIN, 3, seed=6)  # 3 rows replace the 10 rows in [5, 15)
    r = db.replace_range("AAA", T0 + 5 * MIN, T0 + 15 * MIN, new)
    assert r.rows == 3 and r.details["deleted"] == 10
    assert_same_bars(db.read_bars("AAA"), pd.concat([bars.iloc[:5], new, bars.iloc[15:]]))


def test_replace_range_rejects_rows_outside_and_changes_nothing(db: DuckDBStore):
    bars = make_bars(["AAA"], T0, 20, seed=7)
    db.write_bars(bars)
    outside = make_bars(["AAA"], T0 + 14 * MIN, 3, seed=8)
    with pytest.raises(ContractError, match=r"outside \[start, end\)"):
        db.replace_range("AAA", T0 + 5 * MIN, T0 + 15 * MIN, outside)
    other = make_bars(["BBB"], T0 + 5 * MIN, 3, seed=8)
    with pytest.raises(ContractError, match="another symbol"):
        db.replace_range("AAA", T0 + 5 * MIN, T0 + 15 * MIN, other)
    assert_same_bars(db.read_bars("AAA"), bars)


def test_bad_values_refused_before_writing(db: DuckDBStore):
    bars = make_bars(["AAA"], T0, 10, seed=9)
    db.write_bars(bars)
    bad = make_bars(["AAA"], T0 + 10 * MIN, 10, seed=10)
    bad.loc[5, "close"] = float("nan")
    with pytest.raises(ContractError, match=r"\['close'\] hold null/NaN values \(first at batch row 5\)"):
        db.write_bars(bad)
    assert_same_bars(db.read_bars("AAA"), bars)


def test_failed_write_rolls_back_whole_batch(db: DuckDBStore):
    """A write that fails inside DuckDB (here: a write-write conflict with another open transaction on
    one of its rows) leaves none of its rows behind, and the error says so."""
    bars = make_bars(["AAA"], T0, 20, seed=11)
    db.write_bars(bars)
    other = db.connection.cursor()
    other.execute("BEGIN")
    other.execute("UPDATE ohlcv_bars SET close = 1 WHERE timestamp = ?", [(T0 + 15 * MIN).to_pydatetime()])
    try:
        new = make_bars(["AAA"], T0 + 10 * MIN, 20, seed=12)  # 10 updates + 10 inserts, one conflicts
        with pytest.raises(StorageError, match="rolled back"):
            db.write_bars(new)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert_same_bars(db.read_bars("AAA"), bars)
    db.write_bars(new)  # the store is usable afterwards and the retry succeeds
    assert_same_bars(db.read_bars("AAA"), pd.concat([bars.iloc[:10], new]))


def test_export_parquet(db: DuckDBStore, tmp_path: Path):
    bars = make_bars(["BBB", "AAA"], T0, 30, seed=12)
    db.write_bars(bars)
    db.write_rejects(make_rejects("x.csv", [None, 4]))
    out = db.export_parquet(tmp_path / "export")
    exported = to_canonical(pq.read_table(out["ohlcv_bars"]).to_pandas())
    assert_same_bars(exported, bars.sort_values(["symbol", "timestamp"]))
    rej = pq.read_table(out["ohlcv_rejects"]).to_pandas()
    assert len(rej) == 2 and rej["line"].isna().sum() == 1  # NULL line exported as NULL, not -1
    assert pq.ParquetFile(out["ohlcv_bars"]).metadata.row_group(0).column(2).compression == "ZSTD"
    assert not [p for p in (tmp_path / "export").iterdir() if p.name.startswith(".")]  # no temp files left


def test_closed_store_raises_clearly_and_health_reports(db: DuckDBStore):
    db.close()
    db.close()  # twice is fine
    with pytest.raises(StorageError, match="closed"):
        db.read_bars("AAA")
    h = db.health()
    assert not h.healthy and "closed" in h.message


def test_factory_builds_local_store_from_settings(settings):
    store = get_storage("local", settings)
    try:
        assert isinstance(store, DuckDBStore)
        assert store.path == settings.resolved_duckdb_path.resolve()
        store.write_bars(make_bars(["AAA"], T0, 3, seed=13))
        assert store.list_symbols()["rows"].tolist() == [3]
    finally:
        store.close()


def test_one_store_shared_by_threads(db: DuckDBStore):
    from concurrent.futures import ThreadPoolExecutor

    frames = [make_bars([f"S{i}"], T0, 200, seed=i) for i in range(6)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(db.write_bars, frames))
        reads = list(pool.map(lambda i: db.read_bars(f"S{i}"), range(6)))
    for f, r in zip(frames, reads, strict=True):
        assert_same_bars(r, f)
