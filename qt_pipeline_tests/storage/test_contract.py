"""The storage contract (qt_pipeline/storage/interface.py), run against every backend in BACKENDS."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.market.contract import BAR_COLUMNS, BAR_DTYPES, REJECT_COLUMNS, ContractError, empty_bars
from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.interface import SYMBOL_SUMMARY_COLUMNS, DataStorageInterface, HealthStatus
from qt_pipeline_tests.storage.backends import make_bars, make_rejects

T0 = pd.Timestamp("2024-01-01", tz="UTC")
MIN = pd.Timedelta("1min")


def _bits(s: pd.Series) -> np.ndarray:
    return s.to_numpy(dtype="float64").view(np.uint64)


def assert_same_bars(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal values, dtypes and float bits."""
    assert list(got.columns) == list(want.columns)
    assert dict(got.dtypes) == dict(want.dtypes)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_exact=True)
    for c in got.columns:
        if got[c].dtype == np.float64:
            np.testing.assert_array_equal(_bits(got[c]), _bits(want[c]))


def assert_canonical_empty(df: pd.DataFrame, columns=BAR_COLUMNS) -> None:
    assert len(df) == 0
    assert list(df.columns) == list(columns)
    assert {c: df[c].dtype for c in df.columns} == {c: BAR_DTYPES[c] for c in columns}


def test_floats_round_trip_bit_exact(store: DataStorageInterface):
    bars = make_bars(["AAA"], T0, 8, seed=1)
    special = [
        0.1 + 0.2,
        1e-300,
        123456789.123456789,
        5e-324,
        2.2250738585072014e-308 / 3,
        1.7976931348623157e308,
        -0.0,
        1 / 3,
    ]
    for c in ("open", "high", "low", "close", "volume", "vwap"):
        bars[c] = special  # values need not be valid OHLC here: the store must not touch them
    bars.loc[0, "trade_count"] = 2**62
    store.write_bars(bars)
    got = store.read_bars("AAA")
    assert_same_bars(got, bars)
    assert frame_checksum(got) == frame_checksum(bars)
    assert np.signbit(got.loc[6, "close"])  # -0.0 kept its sign


def test_idempotent_rewrite(store: DataStorageInterface):
    bars = make_bars(["AAA", "BBB"], T0, 50, seed=2)
    r1 = store.write_bars(bars)
    first = store.read_range()
    summary1 = store.list_symbols()
    r2 = store.write_bars(bars)
    assert r1.rows == r2.rows == 100 and r1.backend == store.backend_name
    assert_same_bars(store.read_range(), first)
    pd.testing.assert_frame_equal(store.list_symbols(), summary1)
    assert list(summary1["rows"]) == [50, 50]


def test_upsert_replaces_values_and_keeps_others(store: DataStorageInterface):
    bars = make_bars(["AAA"], T0, 20, seed=3)
    store.write_bars(bars)
    update = bars.iloc[5:10].copy()
    update["close"] = update["close"] + 1.5
    update["trade_count"] = 7
    extra = make_bars(["AAA"], T0 + 20 * MIN, 3, seed=4)
    store.write_bars(pd.concat([update, extra], ignore_index=True))
    want = pd.concat([bars.iloc[:5], update, bars.iloc[10:], extra], ignore_index=True)
    assert_same_bars(store.read_bars("AAA"), want)


def test_range_semantics(store: DataStorageInterface):
    bars = make_bars(["AAA"], T0, 30, seed=5)
    store.write_bars(bars)
    ts = bars["timestamp"]
    got = store.read_bars("AAA", ts[10], ts[20])
    assert_same_bars(got, bars.iloc[10:20])  # start inclusive, end exclusive
    assert_same_bars(store.read_bars("AAA", None, ts[3]), bars.iloc[:3])
    assert_same_bars(store.read_bars("AAA", ts[27], None), bars.iloc[27:])
    assert_same_bars(store.read_bars("AAA"), bars)
    # Bounds in another zone are the same instants; python datetimes work too.
    berlin = ts[10].tz_convert("Europe/Berlin")
    assert_same_bars(store.read_bars("AAA", berlin, ts[20].to_pydatetime()), bars.iloc[10:20])
    # A bound between two bars (even by a nanosecond) excludes/includes correctly.
    assert_same_bars(
        store.read_bars("AAA", ts[10] + pd.Timedelta(1, "ns"), ts[20] + pd.Timedelta(1, "ns")),
        bars.iloc[11:21],
    )


def test_range_across_days(store: DataStorageInterface):
    bars = make_bars(["AAA"], "2024-01-01 23:00", 180, seed=6)  # 23:00 day 1 .. 01:59 day 2
    store.write_bars(bars)
    assert_same_bars(store.read_bars("AAA"), bars)
    lo, hi = pd.Timestamp("2024-01-01 23:30", tz="UTC"), pd.Timestamp("2024-01-02 00:30", tz="UTC")
    assert_same_bars(store.read_bars("AAA", lo, hi), bars.iloc[30:90])
    assert_same_bars(store.read_bars("AAA", lo, hi, limit=45, from_end=True), bars.iloc[45:90])
    assert_same_bars(store.read_bars("AAA", limit=70, from_end=True), bars.iloc[110:])


def test_limit_and_from_end(store: DataStorageInterface):
    bars = make_bars(["AAA"], T0, 40, seed=7)
    store.write_bars(bars)
    assert_same_bars(store.read_bars("AAA", limit=5), bars.iloc[:5])
    assert_same_bars(store.read_bars("AAA", limit=5, from_end=True), bars.iloc[35:])
    ts = bars["timestamp"]
    assert_same_bars(store.read_bars("AAA", ts[10], ts[30], limit=4, from_end=True), bars.iloc[26:30])
    assert_same_bars(store.read_bars("AAA", ts[10], ts[30], limit=4), bars.iloc[10:14])
    assert_same_bars(store.read_bars("AAA", limit=1000, from_end=True), bars)
    assert_canonical_empty(store.read_bars("AAA", limit=0))


def test_columns_subset(store: DataStorageInterface):
    bars = make_bars(["AAA"], T0, 10, seed=8)
    store.write_bars(bars)
    got = store.read_bars("AAA", columns=["close", "timestamp"])  # returned in canonical order
    assert_same_bars(got, bars[["timestamp", "close"]])
    only_close = store.read_bars("AAA", columns=["close"], limit=3, from_end=True)
    assert_same_bars(only_close, bars[["close"]].iloc[7:])
    assert_canonical_empty(store.read_bars("ZZZ", columns=["vwap", "symbol"]), ("symbol", "vwap"))
    with pytest.raises(ContractError, match="unknown bar column"):
        store.read_bars("AAA", columns=["close", "price"])
    with pytest.raises(ContractError, match="at least one bar column"):
        store.read_bars("AAA", columns=[])


def test_empty_results_are_canonical(store: DataStorageInterface):
    assert_canonical_empty(store.read_bars("AAA"))  # empty store
    store.write_bars(make_bars(["AAA"], T0, 10, seed=9))
    assert_canonical_empty(store.read_bars("NOPE"))
    assert_canonical_empty(store.read_bars("AAA", T0 + 5 * MIN, T0 + 5 * MIN))  # empty range
    assert_canonical_empty(store.read_bars("AAA", T0 + 9 * MIN, T0))  # inverted range
    assert_canonical_empty(store.read_bars("AAA", T0 + pd.Timedelta("30D")))
    assert_canonical_empty(store.read_range(["NOPE"]))


def test_list_symbols(store: DataStorageInterface):
    empty = store.list_symbols()
    assert list(empty.columns) == list(SYMBOL_SUMMARY_COLUMNS) and len(empty) == 0
    store.write_bars(make_bars(["BBB"], "2024-01-01 23:50", 30, seed=10))
    store.write_bars(make_bars(["AAA"], T0, 12, seed=11))
    s = store.list_symbols()
    assert list(s.columns) == list(SYMBOL_SUMMARY_COLUMNS)
    assert list(s["symbol"]) == ["AAA", "BBB"]
    assert list(s["rows"]) == [12, 30]
    assert s["rows"].dtype == np.int64
    for c in ("first_timestamp", "last_timestamp"):
        assert s[c].dtype == BAR_DTYPES["timestamp"]
    assert s.loc[0, "first_timestamp"] == T0 and s.loc[0, "last_timestamp"] == T0 + 11 * MIN
    assert s.loc[1, "first_timestamp"] == pd.Timestamp("2024-01-01 23:50", tz="UTC")
    assert s.loc[1, "last_timestamp"] == pd.Timestamp("2024-01-02 00:19", tz="UTC")


def test_rejects_round_trip_and_idempotence(store: DataStorageInterface):
    a = make_rejects("landing/a.csv", [2, 3, None])
    b = make_rejects("landing/b.csv", [5], reason="duplicate_key")
    assert store.write_rejects(a) == 3
    store.write_rejects(b)
    got = store.read_rejects("landing/a.csv")
    assert list(got.columns) == list(REJECT_COLUMNS)
    assert len(got) == 3
    assert got["line"].isna().sum() == 1
    assert sorted(got["line"].dropna().tolist()) == [2, 3]
    assert set(got["detail"]) == {"detail 0", "detail 1", "detail 2"}
    assert (got["rejected_at"] == pd.Timestamp("2024-02-01", tz="UTC")).all()
    # same rows again (NULL line included) do not duplicate; a changed detail replaces the old one
    a2 = a.copy()
    a2["detail"] = "again"
    store.write_rejects(a)
    store.write_rejects(a2)
    again = store.read_rejects("landing/a.csv")
    assert len(again) == 3 and set(again["detail"]) == {"again"}
    everything = store.read_rejects()
    assert len(everything) == 4
    assert set(everything["source"]) == {"landing/a.csv", "landing/b.csv"}
    assert len(store.read_rejects("nowhere.csv")) == 0


def test_naive_bounds_rejected(store: DataStorageInterface):
    store.write_bars(make_bars(["AAA"], T0, 5, seed=12))
    with pytest.raises(ValueError, match="naive"):
        store.read_bars("AAA", datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        store.read_bars("AAA", None, pd.Timestamp("2024-01-02"))
    with pytest.raises(ValueError, match="naive"):
        store.read_range(["AAA"], pd.Timestamp("2024-01-01"))


def test_bad_batches_write_nothing(store: DataStorageInterface):
    good = make_bars(["AAA"], T0, 5, seed=13)
    store.write_bars(good)
    naive = make_bars(["AAA"], T0 + 5 * MIN, 5, seed=14)
    naive["timestamp"] = naive["timestamp"].dt.tz_localize(None)
    with pytest.raises(ContractError, match="tz-aware"):
        store.write_bars(naive)
    missing = make_bars(["AAA"], T0 + 5 * MIN, 5, seed=14).drop(columns=["vwap"])
    with pytest.raises(ContractError, match="vwap"):
        store.write_bars(missing)
    dup = make_bars(["AAA", "BBB"], T0 + 5 * MIN, 5, seed=15)
    dup = pd.concat([dup, dup.iloc[[7]]], ignore_index=True)
    with pytest.raises(ContractError, match="duplicate"):
        store.write_bars(dup)
    assert_same_bars(store.read_range(), good)


def test_health(store: DataStorageInterface):
    h = store.health()
    assert isinstance(h, HealthStatus)
    assert h.healthy, h.message
    assert h.backend == store.backend_name
    assert h.latency_ms is not None and h.latency_ms >= 0
    assert h.location == store.location


def test_read_range_multi_symbol(store: DataStorageInterface):
    bars = make_bars(["CCC", "AAA", "BBB"], "2024-01-01 23:55", 10, seed=16)
    store.write_bars(bars)
    want = bars.sort_values(["symbol", "timestamp"]).reset_index(drop=True)
    assert_same_bars(store.read_range(), want)
    lo, hi = pd.Timestamp("2024-01-01 23:58", tz="UTC"), pd.Timestamp("2024-01-02 00:03", tz="UTC")
    got = store.read_range(["CCC", "AAA", "NOPE"], lo, hi)
    sel = want[want["symbol"].isin(["AAA", "CCC"]) & (want["timestamp"] >= lo) & (want["timestamp"] < hi)]
    assert_same_bars(got, sel)
    assert len(got) == 10
    assert_canonical_empty(store.read_range([]))


def test_store_is_reusable_after_many_small_writes(store: DataStorageInterface):
    bars = make_bars(["AAA"], T0, 30, seed=17)
    for i in range(0, 30, 7):
        store.write_bars(bars.iloc[i : i + 7])
    assert_same_bars(store.read_bars("AAA"), bars)
    assert frame_checksum(store.read_range()) == frame_checksum(bars)


def test_empty_write_is_a_no_op(store: DataStorageInterface):
    r = store.write_bars(empty_bars())
    assert r.rows == 0
    assert len(store.list_symbols()) == 0


def test_limit_with_uneven_density(store: DataStorageInterface):
    """Dense minutes then sparse bars days apart: the last/first N must still be exact."""
    dense = make_bars(["AAA"], T0, 100, seed=18)
    sparse = make_bars(["AAA"], T0 + pd.Timedelta("10D"), 5, seed=19, freq="10D")
    bars = pd.concat([dense, sparse], ignore_index=True)
    store.write_bars(bars)
    for n in (1, 3, 20, 104, 105, 500):
        assert_same_bars(store.read_bars("AAA", limit=n, from_end=True), bars.iloc[max(0, 105 - n) :])
        assert_same_bars(store.read_bars("AAA", limit=n), bars.iloc[:n])
    lo = T0 + 50 * MIN
    assert_same_bars(store.read_bars("AAA", lo, None, limit=52, from_end=True), bars.iloc[53:])
    assert_same_bars(store.read_bars("AAA", lo, None, limit=52), bars.iloc[50:102])
    assert_same_bars(
        store.read_bars("AAA", lo, None, limit=7, from_end=True, columns=["close"]), bars[["close"]].iloc[98:]
    )
