"""Portfolio evaluation across symbols, walk-forward segments, calendar-aware annualisation, evidence
strength (PSR/DSR) — each against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from qt_pipeline.evolution.backtest import Costs, MarketData, simulate
from qt_pipeline.evolution.calendar import infer_calendar
from qt_pipeline.evolution.genome import decode
from qt_pipeline.evolution.metrics import METRIC_INDEX
from qt_pipeline.evolution.report import expected_max_sharpe, probabilistic_sharpe
from qt_pipeline.evolution.validation import Plan, Segment, fold_groups, walk_forward_bounds

from . import MINUTE_NS, synthetic_market
from .test_execution_model import random_trading_genomes

IX = METRIC_INDEX


def _with_gaps(d: MarketData, keep: np.ndarray, symbol: str) -> MarketData:
    return MarketData(d.timestamp[keep], d.open[keep], d.high[keep], d.low[keep], d.close[keep], d.volume[keep],
                      symbol=symbol)  # fmt: skip


def naive_portfolio_equity(
    sims: list, datasets: list[MarketData], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(union timestamps, portfolio equity): each sleeve's equity carried forward on the union timeline."""
    union = np.unique(np.concatenate([d.timestamp for d in datasets]))
    port = np.zeros(len(union))
    for sim, d, w in zip(sims, datasets, weights, strict=True):
        eq = 1.0
        j = 0
        for k, ts in enumerate(union):
            if j < len(d) and d.timestamp[j] == ts:
                eq = sim.equity[j]
                j += 1
            port[k] += w * eq
    return union, port


def test_portfolio_rows_equal_sleeves_summed_on_the_union_timeline():
    rng = np.random.default_rng(5)
    a = _with_gaps(synthetic_market(1200, seed=1), rng.random(1200) > 0.05, "AAA")  # missing bars
    b = _with_gaps(synthetic_market(1200, seed=2), np.arange(1200) >= 100, "BBB")  # starts later
    seg = Segment("IS 1", (a, b), pd.Timestamp(0, tz="UTC"), pd.Timestamp(10**12, tz="UTC"))
    weights = np.array([3.0, 1.0])
    ppy = 525_960.0
    plan = Plan(("AAA", "BBB"), weights, (seg,), ((0,),), ppy)
    pop = random_trading_genomes(25, seed=9)
    costs = Costs(fee_bps=2.0, slippage_bps=1.0)
    rows = plan.evaluate(pop, costs)
    assert rows.shape == (25, 1 + 2, len(IX))
    w = weights / weights.sum()
    traded = 0
    for i, vec in enumerate(pop):
        sims = [simulate(vec, d, costs, ppy) for d in (a, b)]
        _, port = naive_portfolio_equity(sims, [a, b], w)
        r = np.diff(np.r_[1.0, port]) / np.r_[1.0, port[:-1]]
        row = rows[i, 0]
        assert row[IX["total_return"]] == pytest.approx(port[-1] - 1, abs=1e-12)
        sd = np.std(r, ddof=1)
        expect_sharpe = np.mean(r) / sd * math.sqrt(ppy) if sd > 0 else 0.0
        assert row[IX["sharpe"]] == pytest.approx(expect_sharpe, rel=1e-9, abs=1e-9)
        dd = float(np.max(1 - port / np.maximum.accumulate(np.maximum(port, 1.0))))
        assert row[IX["max_drawdown"]] == pytest.approx(dd, abs=1e-12)
        assert row[IX["n_trades"]] == sims[0].trades + sims[1].trades
        assert row[IX["turnover"]] == pytest.approx(w @ [s.turnover for s in sims], rel=1e-12)
        assert row[IX["n_bars"]] == len(port)
        # per-symbol rows are the symbols' own backtests
        assert rows[i, 1].tobytes() == sims[0].metrics.tobytes()
        assert rows[i, 2].tobytes() == sims[1].metrics.tobytes()
        traded += sims[0].trades > 0 and sims[1].trades > 0
    assert traded > 15


def test_anchored_groups_concatenate_segments_and_rolling_groups_do_not():
    d = synthetic_market(3000, seed=3)
    segs = tuple(
        Segment(f"IS {k + 1}", (d.slice(k * 1000, (k + 1) * 1000),), pd.Timestamp(k, tz="UTC"), pd.Timestamp(k + 1, tz="UTC"))
        for k in range(3)
    )  # fmt: skip
    pop = random_trading_genomes(8, seed=4)
    costs = Costs()
    anchored = Plan(("T",), np.ones(1), segs, fold_groups(3, "anchored"), 525_960.0).evaluate(pop, costs)
    rolling = Plan(("T",), np.ones(1), segs, fold_groups(3, "rolling"), 525_960.0).evaluate(pop, costs)
    for i, vec in enumerate(pop):
        parts = [simulate(vec, s.datasets[0], costs, 525_960.0) for s in segs]
        for k in range(3):
            assert rolling[i, k].tobytes() == parts[k].metrics.tobytes()  # one symbol, one segment: itself
            r = np.concatenate([p.returns for p in parts[: k + 1]])
            growth = np.prod([p.equity[-1] for p in parts[: k + 1]])
            assert anchored[i, k, IX["total_return"]] == pytest.approx(growth - 1, abs=1e-12)
            assert anchored[i, k, IX["n_bars"]] == len(r)
            assert anchored[i, k, IX["n_trades"]] == sum(p.trades for p in parts[: k + 1])
            worst = max(p.metrics[IX["max_drawdown"]] for p in parts[: k + 1])
            assert anchored[i, k, IX["max_drawdown"]] == worst  # segments are separate backtests
            exposed = sum(float(np.sum(p.position != 0)) for p in parts[: k + 1])
            assert anchored[i, k, IX["exposure"]] == pytest.approx(exposed / len(r), abs=1e-12)
            sd = np.std(r, ddof=1)
            if sd > 0:
                assert anchored[i, k, IX["sharpe"]] == pytest.approx(
                    np.mean(r) / sd * math.sqrt(525_960.0), rel=1e-6
                )
    # every segment starts flat: a strategy's first position in a segment comes after its own warm-up
    s = decode(pop[0])
    assert simulate(s, segs[1].datasets[0], costs).position[0] == 0.0


def test_walk_forward_bounds_never_overlap_and_cover_the_window():
    start, end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-22", tz="UTC")
    b = walk_forward_bounds(start, end, 3, 0.7)
    assert b[0][0] == start and b[-1][2] == end
    for (a, m, e), nxt in zip(b, [*b[1:], None], strict=True):
        assert a < m < e
        assert (m - a) / (e - a) == pytest.approx(0.7, abs=1e-6)
        if nxt is not None:
            assert nxt[0] == e
    assert fold_groups(3, "rolling") == ((0,), (1,), (2,))
    assert fold_groups(3, "anchored") == ((0,), (0, 1), (0, 1, 2))


def _stamps(freq: str, start: str, end: str, *, weekdays_only: bool = False, hours: tuple[int, int] | None = None,
            fx: bool = False) -> np.ndarray:  # fmt: skip
    idx = pd.date_range(start, end, freq=freq, tz="UTC", inclusive="left")
    if weekdays_only:
        idx = idx[idx.day_of_week < 5]
    if hours is not None:
        minutes = idx.hour * 60 + idx.minute
        idx = idx[(minutes >= hours[0]) & (minutes < hours[1])]
    if fx:  # Sunday 22:00 UTC to Friday 22:00 UTC
        dow, h = idx.day_of_week, idx.hour
        idx = idx[~((dow == 5) | ((dow == 6) & (h < 22)) | ((dow == 4) & (h >= 22)))]
    return idx.as_unit("ns").asi8


def test_calendar_is_inferred_from_the_timestamps():
    crypto = infer_calendar(_stamps("1min", "2024-01-01", "2024-01-15"))
    assert crypto.kind == "24/7" and crypto.periods_per_year == pytest.approx(365.25 * 1440)
    daily_equity = infer_calendar(_stamps("1D", "2023-01-01", "2024-01-01", weekdays_only=True))
    assert daily_equity.kind == "sessions" and daily_equity.periods_per_year == pytest.approx(252)
    us_minutes = infer_calendar(
        _stamps("1min", "2024-01-01", "2024-01-20", weekdays_only=True, hours=(870, 1260))
    )
    assert us_minutes.periods_per_year == pytest.approx(252 * 390)
    fx_hourly = infer_calendar(_stamps("1h", "2024-01-01", "2024-02-01", fx=True))
    assert fx_hourly.kind == "sessions" and fx_hourly.periods_per_year == pytest.approx(260 * 24)
    short = infer_calendar(_stamps("1min", "2024-01-02", "2024-01-04"))  # Tue-Wed: no weekend seen
    assert short.kind == "24/7" and "no weekend" in short.note
    override = infer_calendar(_stamps("1min", "2024-01-01", "2024-01-02"), 1000.0)
    assert override.periods_per_year == 1000.0 and "set in the config" in override.describe()
    with pytest.raises(ValueError, match="at least 2 timestamps"):
        infer_calendar(np.array([0], dtype=np.int64))
    assert MINUTE_NS == 60 * 10**9


def test_probabilistic_and_deflated_sharpe_follow_the_published_formulas():
    rng = np.random.default_rng(0)
    r = rng.standard_t(5, 2000) * 0.01 + 0.001
    sr = r.mean() / r.std(ddof=1)
    skew = stats.skew(r)
    kurt = stats.kurtosis(r, fisher=False)
    psr = probabilistic_sharpe(sr, len(r), skew, kurt)
    z = sr * math.sqrt(len(r) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    assert psr == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    # with many trials luck alone reaches a higher Sharpe: the deflated probability is lower
    trials = rng.normal(0, 0.02, 500)
    sr0 = expected_max_sharpe(trials)
    g = 0.5772156649015329
    n = len(trials)
    expect = trials.std(ddof=1) * (
        (1 - g) * stats.norm.ppf(1 - 1 / n) + g * stats.norm.ppf(1 - 1 / (n * math.e))
    )
    assert sr0 == pytest.approx(expect, rel=1e-12)
    dsr = probabilistic_sharpe(sr, len(r), skew, kurt, sr0)
    assert 0 <= dsr < psr
    assert math.isnan(probabilistic_sharpe(0.1, 1, 0.0, 3.0))


def test_prepare_data_lays_out_folds_with_purge_and_embargo(settings):
    from qt_pipeline.evolution.config import parse_config
    from qt_pipeline.evolution.runner import prepare_data
    from qt_pipeline.storage import get_storage
    from qt_pipeline_tests.evolution.evo_helpers import small_config, write_bars

    write_bars(settings, {"BTCUSD": 4320, "ETHUSD": 4320})
    store = get_storage("local", settings)
    try:
        cfg = parse_config(small_config(symbols=["BTCUSD", "ETHUSD"], folds=3, scheme="anchored", purge_bars=30,
                                        embargo_bars=20, train_fraction=0.5))  # fmt: skip
        data = prepare_data(cfg, store)
    finally:
        store.close()
    isp, oosp = data.is_plan, data.oos_plan
    assert isp.groups == ((0,), (0, 1), (0, 1, 2)) and data.all_index == 2 and data.fold_index == (0, 1, 2)
    assert oosp.groups == ((0,), (1,), (2,), (0, 1, 2))
    day = 86_400 * 10**9
    t0 = pd.Timestamp("2024-03-01", tz="UTC").value
    for k in range(3):  # blocks of one day: 12 h in sample, then 12 h out of sample
        for d in isp.segments[k].datasets:
            first = t0 + k * day + (20 * MINUTE_NS if k else 0)  # embargo after the first block
            assert d.timestamp[0] == first and d.timestamp[-1] == t0 + k * day + day // 2 - MINUTE_NS
        for d in oosp.segments[k].datasets:
            assert d.timestamp[0] == t0 + k * day + day // 2 + 30 * MINUTE_NS  # purged
            assert d.timestamp[-1] == t0 + (k + 1) * day - MINUTE_NS
    # no bar is both in and out of sample
    seen_is = np.concatenate([d.timestamp for s in isp.segments for d in s.datasets])
    seen_oos = np.concatenate([d.timestamp for s in oosp.segments for d in s.datasets])
    assert not np.intersect1d(seen_is, seen_oos).size
    assert data.calendar.kind == "24/7"
