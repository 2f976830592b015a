from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.evolution import indicators as ind

from . import synthetic_market


@pytest.fixture(scope="module")
def bars():
    return synthetic_market(600, seed=5)


def _nan_count(a):
    return int(np.isnan(a).sum())


def test_sma_matches_pandas_and_rolling_std_matches_an_exact_two_pass(bars):
    s = pd.Series(bars.close)
    for p in (1, 2, 5, 20, 77):
        got = ind.sma(bars.close, p)
        np.testing.assert_allclose(got, s.rolling(p).mean().to_numpy(), rtol=1e-11, atol=0)
        assert _nan_count(got) == p - 1
        sd = ind.rolling_std(bars.close, p)
        exact = np.array([bars.close[i - p + 1 : i + 1].std() for i in range(p - 1, len(bars.close))])
        np.testing.assert_allclose(sd[p - 1 :], exact, rtol=1e-9, atol=1e-11)  # prices ~100
        assert _nan_count(sd) == p - 1
    assert np.isnan(ind.sma(bars.close[:3], 5)).all()


def test_sma_hand_values():
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    np.testing.assert_array_equal(ind.sma(x, 3), [np.nan, np.nan, 2.0, 3.0, 17 / 3])
    mid, up, lo = ind.bollinger(np.array([1.0, 3.0, 1.0, 3.0]), 2, k=2.0)
    np.testing.assert_array_equal(mid, [np.nan, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(up, [np.nan, 4.0, 4.0, 4.0])  # std of (1, 3) is 1
    np.testing.assert_array_equal(lo, [np.nan, 0.0, 0.0, 0.0])


def test_ema_matches_a_plain_loop(bars):
    p = 10
    x = bars.close
    ref = np.full(x.shape, np.nan)
    e = x[:p].mean()
    ref[p - 1] = e
    for i in range(p, len(x)):
        e = e + 2 / (p + 1) * (x[i] - e)
        ref[i] = e
    np.testing.assert_allclose(ind.ema(x, p), ref, rtol=1e-12)
    assert _nan_count(ind.ema(x, p)) == p - 1


def test_rsi_hand_computed():
    x = np.array([10.0, 11.0, 12.0, 11.0, 13.0])
    # changes +1 +1 -1 +2; seed at t=2: gain 1, loss 0 -> 100; t=3: gain .5, loss .5 -> 50;
    # t=4: gain (0.5 + 2)/2 = 1.25, loss 0.25 -> RS 5 -> 100 - 100/6
    got = ind.rsi(x, 2)
    np.testing.assert_allclose(got, [np.nan, np.nan, 100.0, 50.0, 100 - 100 / 6], rtol=1e-14)
    assert ind.rsi(np.full(6, 5.0), 3)[3:].tolist() == [50.0, 50.0, 50.0]
    r = ind.rsi(synthetic_market(400, 1).close, 14)
    assert _nan_count(r) == 14 and np.nanmin(r) >= 0 and np.nanmax(r) <= 100


def test_atr_hand_computed():
    h = np.array([11.0, 12.0, 13.0, 12.5])
    lo = np.array([9.0, 10.5, 11.0, 10.0])
    c = np.array([10.0, 11.5, 12.0, 11.0])
    # TR: 2, max(1.5, 2, .5)=2, max(2, 1.5, .5)=2, max(2.5, .5, 2)=2.5
    np.testing.assert_array_equal(ind.true_range(h, lo, c), [2.0, 2.0, 2.0, 2.5])
    # ATR(2): seed mean(2, 2) = 2 at t=1; t=2: (2*1 + 2)/2 = 2; t=3: (2 + 2.5)/2 = 2.25
    np.testing.assert_array_equal(ind.atr(h, lo, c, 2), [np.nan, 2.0, 2.0, 2.25])


def test_momentum_and_donchian(bars):
    m = ind.momentum(bars.close, 7)
    np.testing.assert_allclose(m[7:], bars.close[7:] / bars.close[:-7] - 1, rtol=1e-15)
    assert _nan_count(m) == 7
    for p in (1, 3, 50):
        up, lo = ind.donchian(bars.high, bars.low, p)
        np.testing.assert_array_equal(up, pd.Series(bars.high).rolling(p).max().to_numpy())
        np.testing.assert_array_equal(lo, pd.Series(bars.low).rolling(p).min().to_numpy())


INDICATORS = {
    "sma": lambda d: ind.sma(d["close"], 12),
    "ema": lambda d: ind.ema(d["close"], 12),
    "std": lambda d: ind.rolling_std(d["close"], 12),
    "rsi": lambda d: ind.rsi(d["close"], 12),
    "atr": lambda d: ind.atr(d["high"], d["low"], d["close"], 12),
    "momentum": lambda d: ind.momentum(d["close"], 12),
    "donchian_hi": lambda d: ind.donchian(d["high"], d["low"], 12)[0],
    "donchian_lo": lambda d: ind.donchian(d["high"], d["low"], 12)[1],
    "bollinger_up": lambda d: ind.bollinger(d["close"], 12, 2.0)[1],
}


@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_no_look_ahead(name, bars):
    """Changing bars after t changes no indicator value at or before t."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    base = {"close": bars.close, "high": bars.high, "low": bars.low}
    ref = INDICATORS[name](base)
    for t in rng.integers(20, 580, 8):
        d = {k: v.copy() for k, v in base.items()}
        scale = rng.uniform(0.5, 1.5, len(bars.close) - t - 1)
        for k in d:
            d[k][t + 1 :] *= scale
        got = INDICATORS[name](d)
        np.testing.assert_array_equal(got[: t + 1], ref[: t + 1])
        assert not np.array_equal(got[t + 1 :], ref[t + 1 :])  # the tail did change


def test_bad_arguments_are_explained():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="sma: period must be an integer >= 1"):
        ind.sma(x, 0)
    with pytest.raises(ValueError, match="rsi: expected a 1-D"):
        ind.rsi(np.ones((3, 3)), 2)
    with pytest.raises(ValueError, match="atr: high/low/close lengths differ"):
        ind.atr(x, x[:5], x, 2)
