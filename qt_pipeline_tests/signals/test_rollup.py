"""Rollup semantics (the Python twin of the dbt models) and bar alignment without look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.signals.align import align_to_bars
from qt_pipeline.signals.rollup import bucket_of, log_returns, rollup_bars
from qt_pipeline_tests.storage.backends import make_bars


def test_rollup_has_ohlc_semantics_per_bucket():
    bars = make_bars(("AAA", "BBB"), start="2024-01-01 00:00", n=180, seed=3)  # 3 hours of minutes
    r = rollup_bars(bars.sample(frac=1.0, random_state=1), "1h")  # input order must not matter
    assert list(r["bucket"].dt.hour.unique()) == [0, 1, 2] and len(r) == 6
    for (sym, b), row in r.set_index(["symbol", "bucket"]).iterrows():
        src = bars[
            (bars["symbol"] == sym) & (bars["timestamp"] >= b) & (bars["timestamp"] < b + pd.Timedelta("1h"))
        ]
        src = src.sort_values("timestamp")
        assert row["open"] == src["open"].iloc[0] and row["close"] == src["close"].iloc[-1]
        assert row["high"] == src["high"].max() and row["low"] == src["low"].min()
        assert row["volume"] == pytest.approx(src["volume"].sum(), rel=1e-12)
        assert row["vwap"] == pytest.approx(
            (src["vwap"] * src["volume"]).sum() / src["volume"].sum(), rel=1e-12
        )
        assert row["trade_count"] == src["trade_count"].sum() and row["bar_count"] == 60
        assert row["low"] <= row["vwap"] <= row["high"]


def test_buckets_follow_date_bin_origin_and_daily_rollup_totals():
    ts = pd.Series(
        pd.to_datetime(["2024-01-01 00:04:59", "2024-01-01 00:05:00", "2024-01-01 23:59:00"], utc=True)
    )
    assert list(bucket_of(ts, "5min").dt.strftime("%H:%M")) == ["00:00", "00:05", "23:55"]
    bars = make_bars(("AAA",), start="2024-01-01 22:00", n=240, seed=4)  # crosses midnight
    d = rollup_bars(bars, "1D")
    assert list(d["bucket"].dt.day) == [1, 2]
    assert d["volume"].sum() == pytest.approx(bars["volume"].sum(), rel=1e-12)
    assert int(d["bar_count"].sum()) == 240


def test_zero_volume_bucket_takes_mean_vwap_and_returns_are_log_close_ratios():
    bars = make_bars(("AAA",), n=120, seed=5)
    bars.loc[bars.index[:60], "volume"] = 0.0
    r = rollup_bars(bars, "1h")
    assert r["vwap"].iloc[0] == pytest.approx(bars["vwap"].iloc[:60].mean(), rel=1e-12)
    lr = log_returns(r)
    assert np.isnan(lr["log_return"].iloc[0])
    assert lr["log_return"].iloc[1] == pytest.approx(np.log(r["close"].iloc[1] / r["close"].iloc[0]))


def test_align_uses_only_closed_buckets():
    buckets = pd.Series(pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00"], utc=True))
    bars = pd.Series(pd.date_range("2024-01-01 00:00", periods=150, freq="1min", tz="UTC"))
    v = align_to_bars(buckets, np.array([1.0, 2.0]), bars, "1h")
    # bar 00:58 closes at 00:59 (hour 0 still open); bar 00:59 closes at 01:00 = hour 0 closed
    assert np.isnan(v[58]) and v[59] == 1.0 and v[118] == 1.0 and v[119] == 2.0
    codes = align_to_bars(buckets, np.array([3, 1], dtype=np.int8), bars, "1h", fill=-1)
    assert codes.dtype.kind == "i" and codes[0] == -1 and codes[59] == 3
    # a stale value is not carried forever: more than 2 buckets after the last one closes -> fill
    far = pd.Series(pd.date_range("2024-01-01 05:00", periods=2, freq="1min", tz="UTC"))
    assert np.isnan(align_to_bars(buckets, np.array([1.0, 2.0]), far, "1h")).all()
