"""Consistency DuckDB vs PostgreSQL: per-partition proof, key-level diff, whole history, reconcile."""

from __future__ import annotations

from datetime import date

import pandas as pd

from qt_pipeline.storage.checksum import frame_checksum, symbol_day_checksums
from qt_pipeline.storage.consistency import check_partition, compare_history, diff_frames, reconcile
from qt_pipeline.storage.migration import day_bounds, migrate_all, read_ledger
from qt_pipeline_tests.storage.central.helpers import make_bars, sql


def test_diff_frames_compares_floats_exactly_and_names_keys() -> None:
    a = make_bars(("BTCUSD",), days=1, per_day=5)
    b = a.copy()
    b.loc[1, "close"] = 0.1 + 0.2  # vs 0.30000000000000004 style: only bits count
    a.loc[1, "close"] = 0.3
    b = b.drop(index=3)
    extra = a.iloc[[0]].assign(timestamp=a["timestamp"].iloc[0] - pd.Timedelta(minutes=1))
    b = pd.concat([b, extra], ignore_index=True)
    d = diff_frames(a, b)
    assert (d.missing_in_central, d.extra_in_central, d.values_differ) == (1, 1, 1)
    kinds = {k.kind: k for k in d.keys}
    assert kinds["values_differ"].columns == ("close",)
    assert kinds["values_differ"].timestamp == a["timestamp"].iloc[1]
    assert "close local=0.3 central=0.30000000000000004" in kinds["values_differ"].describe()
    assert kinds["missing_in_central"].timestamp == a["timestamp"].iloc[3]
    assert kinds["extra_in_central"].timestamp == extra["timestamp"].iloc[0]
    assert len(diff_frames(a, b, max_keys=2).keys) == 2


def test_altered_value_is_found_named_and_reconciled(local, central, pg_schema) -> None:
    url, schema = pg_schema
    local.write_bars(make_bars(("BTCUSD", "ETHUSD"), days=3, per_day=20))
    migrate_all(local, central)
    day = date(2024, 1, 3)
    assert check_partition(local, central, "ETHUSD", day).ok
    assert compare_history(local, central).ok

    lo, hi = day_bounds(day)
    ts = local.read_bars("ETHUSD", lo, hi)["timestamp"].iloc[7]
    sql(
        url,
        f'UPDATE "{schema}".ohlcv_bars SET high = high * 1.0000001 WHERE symbol = %s AND "timestamp" = %s',
        ("ETHUSD", ts.to_pydatetime()),
    )
    res = check_partition(local, central, "ETHUSD", day)
    assert not res.ok and res.local_rows == res.central_rows == 20
    assert res.diff is not None and res.diff.values_differ == 1
    key = res.diff.keys[0]
    assert (key.symbol, key.timestamp, key.columns) == ("ETHUSD", ts, ("high",))
    md = res.metadata()
    assert ts.isoformat() in md["differing_keys"][0] and md["values_differ"] == 1
    assert check_partition(local, central, "BTCUSD", day).ok  # other partitions are untouched

    hist = compare_history(local, central)
    assert [(d.symbol, d.day, d.reason) for d in hist.differing] == [("ETHUSD", day, "checksum_differs")]
    assert hist.compared == 6

    dry = reconcile(local, central, hist.differing, dry_run=True)
    assert dry.repaired == 0 and [(a.symbol, a.day) for a in dry.actions] == [("ETHUSD", day)]
    assert not check_partition(local, central, "ETHUSD", day).ok  # dry run wrote nothing

    done = reconcile(local, central, hist.differing)
    assert done.repaired == 1 and done.rows_copied == 20
    assert check_partition(local, central, "ETHUSD", day).ok
    assert compare_history(local, central).ok
    assert read_ledger(central)["2024-01-03|ETHUSD"] == frame_checksum(local.read_bars("ETHUSD", lo, hi))


def test_extra_and_missing_rows_and_days_are_repaired(local, central, pg_schema) -> None:
    url, schema = pg_schema
    local.write_bars(make_bars(("BTCUSD",), days=2, per_day=10))
    migrate_all(local, central)
    t = f'"{schema}".ohlcv_bars'
    # a row only Postgres has, a row Postgres lost, and a whole symbol-day only Postgres has
    sql(url, f"INSERT INTO {t} SELECT symbol, \"timestamp\" + interval '1 hour', open, high, low, close, "
             f"volume, vwap, trade_count FROM {t} WHERE symbol = 'BTCUSD' AND \"timestamp\" = '2024-01-02T00:00Z'")  # fmt: skip
    sql(url, f"DELETE FROM {t} WHERE symbol = 'BTCUSD' AND \"timestamp\" = '2024-01-03T00:05Z'")
    central.write_bars(make_bars(("SOLUSD",), days=1, per_day=3))

    r1 = check_partition(local, central, "BTCUSD", date(2024, 1, 2))
    assert r1.diff.extra_in_central == 1 and r1.diff.keys[0].kind == "extra_in_central"
    r2 = check_partition(local, central, "BTCUSD", "2024-01-03")
    assert r2.diff.missing_in_central == 1 and r2.central_rows == 9

    hist = compare_history(local, central)
    assert {(d.symbol, d.day.isoformat(), d.reason) for d in hist.differing} == {
        ("BTCUSD", "2024-01-02", "row_count_differs"),
        ("BTCUSD", "2024-01-03", "row_count_differs"),
        ("SOLUSD", "2024-01-02", "only_in_central"),
    }
    summary = reconcile(local, central, hist.differing)
    assert summary.repaired == 3
    assert compare_history(local, central).ok
    assert central.read_bars("SOLUSD").empty  # replace_range removed rows local never had
    pd.testing.assert_frame_equal(central.read_range(), local.read_range())


def test_compare_history_honours_symbols_and_range(local, central) -> None:
    local.write_bars(make_bars(("BTCUSD", "ETHUSD"), days=3, per_day=5))
    migrate_all(local, central, symbols=["BTCUSD"])
    assert compare_history(local, central, symbols=["BTCUSD"]).ok
    eth = compare_history(local, central, symbols=["ETHUSD"], start=date(2024, 1, 3))
    assert [(d.day.isoformat(), d.reason) for d in eth.differing] == [
        ("2024-01-03", "missing_in_central"),
        ("2024-01-04", "missing_in_central"),
    ]


def test_one_missing_symbol_day_is_the_only_difference_reported(local, central, pg_schema) -> None:
    """Regression: the outer merge of per-symbol-day checksums turned the 64-bit checksum column into
    float64 when any symbol-day was missing on one side, so identical days were reported as
    ``checksum_differs`` (one deleted day gave 36 differences) and reconcile re-copied all of them."""
    url, schema = pg_schema
    local.write_bars(make_bars(("BTCUSD", "ETHUSD", "SOLUSD"), days=4, per_day=30))
    migrate_all(local, central)
    assert compare_history(local, central).ok
    sums = symbol_day_checksums(local.read_range())["checksum"]
    assert any(int(c) > 2**53 for c in sums)  # checksums a float64 cannot hold exactly
    sql(url, f"DELETE FROM \"{schema}\".ohlcv_bars WHERE symbol = 'ETHUSD' AND \"timestamp\" >= '2024-01-03' "
             "AND \"timestamp\" < '2024-01-04'")  # fmt: skip
    hist = compare_history(local, central)
    assert [(d.symbol, d.day.isoformat(), d.reason) for d in hist.differing] == [
        ("ETHUSD", "2024-01-03", "missing_in_central")
    ]
    summary = reconcile(local, central, hist.differing)
    assert summary.repaired == 1 and summary.rows_copied == 30
    assert compare_history(local, central).ok
