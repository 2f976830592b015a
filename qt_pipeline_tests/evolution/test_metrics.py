from __future__ import annotations

import math

import numpy as np
import pytest

from qt_pipeline.evolution.metrics import METRIC_NAMES, compute_metrics, metrics_to_dict

# A handcrafted series: 6 bars, a winning long (bars 1-2), a flat bar, a losing short (bars 4-5).
R = np.array([0.0, 0.10, -0.05, 0.0, -0.10, 0.08])
P = np.array([0.0, 1.0, 1.0, 0.0, -1.0, -1.0])


def test_metrics_of_a_handcrafted_series():
    m = metrics_to_dict(compute_metrics(R, P, periods_per_year=12))
    # equity 1, 1.1, 1.045, 1.045, 0.9405, 1.01574
    assert m["total_return"] == pytest.approx(0.01574, abs=1e-14)
    # 6 bars at 12 per year = half a year: CAGR = 1.01574**2 - 1
    assert m["cagr"] == pytest.approx(0.0317277476, abs=1e-12)
    # peak 1.1, trough 0.9405 -> 1 - 0.855
    assert m["max_drawdown"] == pytest.approx(0.145, abs=1e-14)
    assert m["calmar"] == pytest.approx(0.0317277476 / 0.145, abs=1e-11)
    # mean 0.005; squared deviations sum to 0.02875 -> sample variance 0.00575
    assert m["sharpe"] == pytest.approx(0.005 / math.sqrt(0.00575) * math.sqrt(12), rel=1e-12)
    # downside: (0.05^2 + 0.1^2) / 6 bars
    assert m["sortino"] == pytest.approx(0.005 / math.sqrt(0.0125 / 6) * math.sqrt(12), rel=1e-12)
    # trades: long 1.1*0.95 = 1.045 (win), short 0.9*1.08 = 0.972 (loss)
    assert m["n_trades"] == 2 and isinstance(m["n_trades"], int)
    assert m["win_rate"] == 0.5
    assert m["exposure"] == pytest.approx(4 / 6, abs=1e-15)
    assert list(m) == list(METRIC_NAMES)


def test_sharpe_and_sortino_agree_with_numpy_on_random_returns():
    rng = np.random.default_rng(4)
    r = rng.normal(2e-4, 1e-2, 5000)
    p = np.ones_like(r)
    m = compute_metrics(r, p, 252.0)
    assert m[2] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252), rel=1e-9)
    down = np.minimum(r, 0.0)
    assert m[3] == pytest.approx(r.mean() / np.sqrt((down**2).mean()) * math.sqrt(252), rel=1e-9)
    eq = np.cumprod(1 + r)
    assert m[0] == pytest.approx(eq[-1] - 1, rel=1e-10)
    peak = np.maximum.accumulate(np.r_[1.0, eq])[1:]
    assert m[5] == pytest.approx((1 - eq / peak).max(), rel=1e-12)
    assert m[6] == 1 and m[8] == 1.0


def test_trade_counting_rules():
    # a flip is two trades; a position open at the end counts; an unchanged position is one trade
    r = np.array([0.0, 0.01, 0.01, -0.02, 0.03])
    m = compute_metrics(r, np.array([0.0, 0.5, -0.5, -0.5, 0.5]), 1.0)
    assert m[6] == 3
    # trade returns: +1% (win), 0.99*1.03... for the short: (1.01)*(0.98) = 0.9898 (loss), last 1.03 (win)
    assert m[7] == pytest.approx(2 / 3)
    assert m[8] == pytest.approx(4 / 5)


def test_degenerate_series():
    flat = compute_metrics(np.zeros(10), np.zeros(10), 252.0)
    expect = np.zeros(len(METRIC_NAMES))
    expect[METRIC_NAMES.index("kurtosis")] = 3.0  # a degenerate series is reported as normal (skew 0)
    expect[METRIC_NAMES.index("n_bars")] = 10
    assert np.array_equal(flat, expect)
    const = compute_metrics(np.full(10, 0.01), np.ones(10), 252.0)
    assert const[2] == 0.0  # no variation -> no Sharpe (not a rounding-noise blow-up)
    assert const[3] == 0.0 and const[5] == 0.0 and const[4] == 0.0 and const[7] == 1.0
    wiped = compute_metrics(np.array([0.0, -1.0, 0.0]), np.array([0.0, 1.0, 0.0]), 252.0)
    assert wiped[0] == -1.0 and wiped[1] == -1.0 and wiped[5] == 1.0
    empty = compute_metrics(np.zeros(0), np.zeros(0), 252.0)
    assert np.array_equal(empty, np.zeros(len(METRIC_NAMES)))
    # skewness and kurtosis of a known sample
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.05, -0.01])
    m = compute_metrics(r, np.ones(6), 252.0)
    z = r - r.mean()
    assert m[METRIC_NAMES.index("skew")] == pytest.approx(np.mean(z**3) / np.mean(z**2) ** 1.5, rel=1e-9)
    assert m[METRIC_NAMES.index("kurtosis")] == pytest.approx(np.mean(z**4) / np.mean(z**2) ** 2, rel=1e-9)


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="same length"):
        compute_metrics(np.zeros(3), np.zeros(4), 252.0)
    with pytest.raises(ValueError, match="periods_per_year must be a positive"):
        compute_metrics(np.zeros(3), np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        compute_metrics(np.array([0.0, np.nan]), np.zeros(2), 252.0)
    with pytest.raises(ValueError, match=f"a metric row has {len(METRIC_NAMES)} values"):
        metrics_to_dict(np.zeros(3))
