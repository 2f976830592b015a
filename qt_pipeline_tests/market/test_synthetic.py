"""SyntheticMarket: determinism per partition, OHLC invariants, planted regimes as ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.market.contract import BAR_COLUMNS, BAR_DTYPES
from qt_pipeline.market.sources import ingest_batches, source_from_settings
from qt_pipeline.market.sources.synthetic import REGIME_NAMES, SyntheticMarket
from qt_pipeline.storage.checksum import frame_checksum

D1 = pd.Timestamp("2024-03-01", tz="UTC")
D2 = pd.Timestamp("2024-03-02", tz="UTC")
D3 = pd.Timestamp("2024-03-03", tz="UTC")


def _bytes(frame: pd.DataFrame) -> bytes:
    """The exact content: timestamps as int64 microseconds, floats/ints as their raw bits, symbols as text."""
    parts = [np.asarray(frame["timestamp"].array.asi8).tobytes(), "|".join(frame["symbol"]).encode()]
    parts += [frame[c].to_numpy().tobytes() for c in BAR_COLUMNS[2:]]
    return b"".join(parts)


def test_same_partition_twice_is_identical_bytes():
    a = SyntheticMarket(42).bars("BTCUSD", D1, D2)
    b = SyntheticMarket(42).bars("BTCUSD", D1, D2)
    assert len(a) == 1440
    assert _bytes(a) == _bytes(b)
    assert frame_checksum(a) == frame_checksum(b)
    c = SyntheticMarket(43).bars("BTCUSD", D1, D2)
    assert frame_checksum(a) != frame_checksum(c)


def test_order_of_generation_does_not_matter_and_days_are_continuous():
    fwd = SyntheticMarket(42)
    d1_first = fwd.bars("ETHUSD", D1, D2)
    d2_after = fwd.bars("ETHUSD", D2, D3)
    rev = SyntheticMarket(42)
    d2_first = rev.bars("ETHUSD", D2, D3)  # day 2 generated before day 1 (and before any other day)
    d1_after = rev.bars("ETHUSD", D1, D2)
    assert _bytes(d1_first) == _bytes(d1_after)
    assert _bytes(d2_after) == _bytes(d2_first)
    # a two-day fetch is the two single days
    both = SyntheticMarket(42).bars("ETHUSD", D1, D3)
    assert _bytes(both) == _bytes(pd.concat([d1_first, d2_after], ignore_index=True))
    # continuity: day 2 opens where day 1 closed
    assert d2_first["open"].iloc[0] == pytest.approx(d1_first["close"].iloc[-1], rel=1e-12)
    # partial ranges are the same rows as the full day
    part = SyntheticMarket(42).bars("ETHUSD", D1 + pd.Timedelta(hours=5), D1 + pd.Timedelta(hours=6))
    assert _bytes(part) == _bytes(d1_first.iloc[300:360].reset_index(drop=True))


def test_ohlc_invariants_on_100k_bars_and_validation_accepts_all():
    m = SyntheticMarket(7, symbols=["SOLUSD"])
    start = pd.Timestamp("2023-01-01", tz="UTC")
    bars = m.bars("SOLUSD", start, start + pd.Timedelta(minutes=100_000))
    assert len(bars) == 100_000
    assert {c: bars[c].dtype for c in BAR_COLUMNS} == BAR_DTYPES
    o, h, lo, c, vw = (bars[k].to_numpy() for k in ("open", "high", "low", "close", "vwap"))
    assert (lo > 0).all()
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all()
    assert (vw > lo).all() and (vw < h).all()  # strictly inside
    assert (bars["volume"] > 0).all() and (bars["trade_count"] >= 1).all()
    ts = bars["timestamp"]
    assert ts.is_monotonic_increasing and ts.is_unique
    assert ((ts - ts.dt.floor("D")) % pd.Timedelta(minutes=1) == pd.Timedelta(0)).all()
    # trade_count tracks volume
    assert np.corrcoef(bars["volume"], bars["trade_count"])[0, 1] > 0.9
    # U-shaped intraday volume: the open and close hours trade more than midday
    hour = ts.dt.hour
    by_hour = bars.groupby(hour)["volume"].mean()
    assert by_hour[[0, 23]].mean() > 1.5 * by_hour[[11, 12]].mean()
    res = ingest_batches(
        m, "SOLUSD", start, start + pd.Timedelta(days=3), now=pd.Timestamp("2030-01-01", tz="UTC")
    )
    assert res.rejected.empty and len(res.accepted) == 3 * 1440


def test_other_intervals_stay_on_grid():
    m = SyntheticMarket(1, interval="1h")
    bars = m.bars("BTCUSD", D1, D3)
    assert len(bars) == 48
    assert (bars["timestamp"].dt.minute == 0).all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()


def test_regimes_cover_the_range_and_match_the_table():
    m = SyntheticMarket(42)
    start = pd.Timestamp("2024-01-01T05:30", tz="UTC")
    end = pd.Timestamp("2024-04-01", tz="UTC")
    reg = m.regimes("BTCUSD", start, end)
    assert list(reg.columns) == ["symbol", "start", "end", "regime", "drift", "volatility"]
    assert reg["start"].iloc[0] == start and reg["end"].iloc[-1] == end
    assert (reg["start"].iloc[1:].to_numpy() == reg["end"].iloc[:-1].to_numpy()).all()  # contiguous
    assert (reg["regime"].iloc[1:].to_numpy() != reg["regime"].iloc[:-1].to_numpy()).all()  # merged runs
    assert set(reg["regime"]) == set(REGIME_NAMES)  # a quarter visits every regime
    up = reg[reg["regime"] == "trend_up"]
    assert (up["drift"] > 0).all()
    assert (
        reg.loc[reg["regime"] == "high_vol", "volatility"]
        > reg.loc[reg["regime"] == "low_vol", "volatility"].max()
    ).all()
    # same answer for a sub-range
    sub = m.regimes("BTCUSD", pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-02-02", tz="UTC"))
    assert sub["start"].iloc[0] == pd.Timestamp("2024-02-01", tz="UTC")
    inside = reg[(reg["end"] > sub["start"].iloc[0]) & (reg["start"] < sub["end"].iloc[-1])]
    assert list(inside["regime"]) == list(sub["regime"])


def test_realised_returns_follow_the_planted_regimes():
    """Over a year, log returns inside trend_up segments sum to clearly positive, trend_down to clearly
    negative, and high_vol bars are far more volatile than low_vol bars."""
    m = SyntheticMarket(42, interval="5min")
    start = pd.Timestamp("2023-01-01", tz="UTC")
    end = pd.Timestamp("2024-01-01", tz="UTC")
    bars = m.bars("BTCUSD", start, end)
    reg = m.regimes("BTCUSD", start, end)
    logret = np.log(bars["close"].to_numpy()) - np.log(bars["open"].to_numpy())
    idx = pd.IntervalIndex.from_arrays(reg["start"], reg["end"], closed="left")
    which = reg["regime"].to_numpy()[idx.get_indexer(bars["timestamp"])]
    days = {r: (which == r).sum() / 288 for r in REGIME_NAMES}
    mean_up = logret[which == "trend_up"].sum() / days["trend_up"]
    mean_down = logret[which == "trend_down"].sum() / days["trend_down"]
    assert days["trend_up"] > 30 and days["trend_down"] > 30
    assert 0.02 < mean_up < 0.06  # planted drift 0.04/day
    assert -0.06 < mean_down < -0.02
    assert logret[which == "high_vol"].std() > 5 * logret[which == "low_vol"].std()


def test_source_from_settings_synthetic(settings):
    src = source_from_settings(settings)
    assert isinstance(src, SyntheticMarket)
    assert src.symbols() == sorted(settings.symbols)
    batch = src.fetch("BTCUSD", D1, D2)
    assert batch.source == "synthetic:seed=42" and len(batch.frame) == 1440


def test_malformed_symbol_is_refused():
    with pytest.raises(ValueError, match="symbol 'BTC USD' is malformed"):
        SyntheticMarket(1).bars("BTC USD", D1, D2)


def test_common_market_factor_plants_time_varying_correlation():
    from qt_pipeline.market.sources.synthetic import CORRELATION_STATE_NAMES

    m = SyntheticMarket(seed=3, symbols=("AAA", "BBB", "CCC"), interval="1h")
    start, end = "2024-01-01", "2024-04-01"
    states = m.correlation_states(start, end)
    assert set(states["state"]) == set(CORRELATION_STATE_NAMES)
    assert states["start"].iloc[0] == pd.Timestamp(start, tz="UTC") and states["end"].iloc[
        -1
    ] == pd.Timestamp(end, tz="UTC")
    assert (states["start"].iloc[1:].to_numpy() == states["end"].iloc[:-1].to_numpy()).all()
    rets = pd.DataFrame(
        {s: np.log(m.bars(s, start, end).set_index("timestamp")["close"]).diff() for s in m.symbols()}
    )
    hour_rho = pd.Series(np.nan, index=rets.index)
    for seg in states.itertuples():
        hour_rho[(rets.index >= seg.start) & (rets.index < seg.end)] = seg.rho
    by_state = {rho: g.corr().to_numpy()[np.triu_indices(3, 1)].mean() for rho, g in rets.groupby(hour_rho)}
    low, high = min(by_state), max(by_state)
    assert by_state[high] > by_state[low] + 0.25, by_state
    # the factor is market-wide: the planted states do not depend on the symbol set
    other = SyntheticMarket(seed=3, symbols=("ZZZ",)).correlation_states(start, end)
    pd.testing.assert_frame_equal(states, other)
