"""The backtester against ``docs/execution_model.md``: an independent, naive per-bar Python loop that
implements the document (rules from the oscillator definitions of ``genome.py``, fills, costs,
rebalancing, borrow, metrics) is compared with the fused kernel on random genomes to 1e-9.

Only the indicator series come from ``qt_pipeline.evolution.indicators`` (tested on their own against
reference formulas in ``test_indicators.py``); everything the execution model defines is re-done here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qt_pipeline.evolution import indicators as ind
from qt_pipeline.evolution.backtest import Costs, MarketData, evaluate_population, simulate
from qt_pipeline.evolution.genome import (
    Rule,
    Strategy,
    decode,
    genome_from_dict,
    genome_to_dict,
    random_population,
)
from qt_pipeline.evolution.metrics import METRIC_INDEX

from . import MINUTES_PER_YEAR, synthetic_market

PPY = MINUTES_PER_YEAR


def gappy_market(n: int, seed: int) -> MarketData:
    """Bars whose opens often gap away from the previous close (so stops and targets gap too)."""
    base = synthetic_market(n, seed=seed, vol=3e-3)
    rng = np.random.default_rng(seed + 1000)
    gap = np.where(rng.random(n) < 0.08, rng.normal(0, 0.01, n), 0.0)
    o = base.open * np.exp(gap)
    h = np.maximum(base.high, np.maximum(o, base.close))
    lo = np.minimum(base.low, np.minimum(o, base.close))
    return MarketData(base.timestamp, o, h, lo, base.close, base.volume)


def _series(rule: Rule, d: MarketData) -> tuple[np.ndarray, np.ndarray | None]:
    c = d.close
    k, p = rule.kind, rule.period
    if k == "sma_cross":
        return ind.sma(c, p), ind.sma(c, rule.period2)
    if k == "ema_cross":
        return ind.ema(c, p), ind.ema(c, rule.period2)
    if k == "rsi":
        return ind.rsi(c, p), None
    if k == "bollinger":
        return ind.sma(c, p), ind.rolling_std(c, p)
    if k in ("momentum", "breakout"):
        hi, lo = ind.donchian(d.high, d.low, p) if k == "breakout" else (None, None)
        return hi, lo
    return None, None


def naive_sides(rule: Rule, d: MarketData, t: int, a, b) -> tuple[bool, bool] | None:
    """(up, down) of ``rule`` at the close of t per the oscillator table of ``genome.py``; None while an
    input is undefined (warm-up)."""
    c = d.close[t]
    th = rule.threshold
    k = rule.kind
    if k == "always":
        up, dn = True, False
    elif k in ("sma_cross", "ema_cross"):
        if math.isnan(a[t]) or math.isnan(b[t]):
            return None
        up, dn = a[t] > b[t] * (1 + th), a[t] < b[t] * (1 - th)
    elif k == "rsi":
        if math.isnan(a[t]):
            return None
        up, dn = a[t] - 50 > th, a[t] - 50 < -th
    elif k == "bollinger":
        if math.isnan(a[t]) or math.isnan(b[t]):
            return None
        up = b[t] > 0 and c - a[t] > th * b[t]
        dn = b[t] > 0 and c - a[t] < -th * b[t]
    elif k == "momentum":
        if t < rule.period:
            return None
        ref = d.close[t - rule.period]
        up, dn = c > ref * (1 + th), c < ref * (1 - th)
    elif k == "breakout":  # channel of the previous p bars
        if t < 1 or math.isnan(a[t - 1]) or math.isnan(b[t - 1]):
            return None
        half = 0.5 * (a[t - 1] - b[t - 1])
        pos = c - 0.5 * (a[t - 1] + b[t - 1])
        up = half > 0 and pos > th * half
        dn = half > 0 and pos < -th * half
    else:  # pragma: no cover
        raise AssertionError(k)
    return (dn, up) if rule.comparison == "below" else (up, dn)


def naive_backtest(
    s: Strategy, d: MarketData, costs: Costs, ppy: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """(positions, per-bar net returns, turnover) by the document, one bar at a time."""
    n = len(d)
    rate = (costs.fee_bps + costs.slippage_bps) / 1e4
    borrow = costs.borrow_bps_per_year / 1e4 / ppy
    ea, eb = _series(s.entry, d)
    ex = s.exit or s.entry
    xa, xb = _series(ex, d)
    atr = ind.atr(d.high, d.low, d.close, s.atr_period) if s.atr_stop > 0 else None
    pos_out, ret_out = np.zeros(n), np.zeros(n)
    p, opened, stop, target, turnover = 0.0, False, -math.inf, math.inf, 0.0
    for t in range(n):
        # fills inside bar t
        R, exited = 0.0, False
        if p != 0:
            o = d.open[t]
            fill = d.close[t]
            if p > 0:
                if o <= stop or o >= target:
                    fill, exited = o, True
                elif d.low[t] <= stop:
                    fill, exited = stop, True
                elif d.high[t] >= target:
                    fill, exited = target, True
            else:
                if o >= stop or o <= target:
                    fill, exited = o, True
                elif d.high[t] >= stop:
                    fill, exited = stop, True
                elif d.low[t] <= target:
                    fill, exited = target, True
            R = fill / d.close[t - 1] - 1
        # decision at the close of t
        nxt = p
        if exited:
            nxt = 0.0
        elif t < n - 1:
            e = naive_sides(s.entry, d, t, ea, eb)
            x = naive_sides(ex, d, t, xa, xb)
            warm = e is not None and x is not None and (atr is None or t >= s.atr_period - 1)
            if warm:
                eu, ed = e
                xu, xd = x
                if (p > 0 and xd) or (p < 0 and xu):
                    nxt = 0.0
                want = 0.0
                if eu and s.direction in ("long", "both") and not xd and p <= 0:
                    want = s.position_size
                elif ed and s.direction in ("short", "both") and not xu and p >= 0:
                    want = -s.position_size
                if (
                    want != 0
                    and (p == 0 or s.direction == "both")
                    and (atr is None or not math.isnan(atr[t]))
                ):
                    nxt = want
                    c = d.close[t]
                    sgn = 1.0 if want > 0 else -1.0
                    stop = c * (1 - sgn * s.stop_loss) if s.stop_loss > 0 else -sgn * math.inf
                    if atr is not None:
                        st = c - sgn * s.atr_stop * atr[t]
                        stop = max(stop, st) if want > 0 else min(stop, st)
                    target = c * (1 + sgn * s.take_profit) if s.take_profit > 0 else sgn * math.inf
        # equity of bar t
        r = 0.0
        if p != 0:
            if nxt != p:
                x = abs(p * (1 + R))
            elif t < n - 1:
                x = abs(p * (1 - p) * R)
            else:
                x = 0.0
            growth = (1 + p * R - x * rate) * (1 - abs(p) * rate if opened else 1.0)
            growth *= 1 - abs(p) * borrow if p < 0 else 1.0
            turnover += x + (abs(p) if opened else 0.0)
            r = growth - 1
        pos_out[t], ret_out[t] = p, r
        opened = nxt != p and nxt != 0
        p = nxt
    return pos_out, ret_out, turnover


def naive_metrics(r: np.ndarray, pos: np.ndarray, ppy: float) -> dict[str, float]:
    eq = np.cumprod(1 + r)
    total = eq[-1] - 1
    sd = np.std(r, ddof=1)
    sharpe = np.mean(r) / sd * math.sqrt(ppy) if sd > 1e-6 * np.sqrt(np.mean(r * r)) else 0.0
    runmax = np.maximum.accumulate(np.maximum(eq, 1.0))
    mdd = float(np.max(1 - eq / runmax))
    trades = [i for i in range(len(pos)) if pos[i] != 0 and (i == 0 or pos[i - 1] != pos[i])]
    return {"total_return": total, "sharpe": sharpe, "max_drawdown": mdd, "n_trades": len(trades),
            "exposure": float(np.mean(pos != 0))}  # fmt: skip


def random_trading_genomes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for vec in random_population(rng, n):
        d = genome_to_dict(vec)
        for g in ("entry_period", "exit_period", "atr_period"):
            d[g] = min(d[g], 30)
        for g in ("entry_period2", "exit_period2"):
            d[g] = min(d[g], 60)
        d["entry_level"] *= 0.3
        d["exit_level"] *= 0.3
        d["stop_loss"] = abs(d["stop_loss"]) * 0.3  # tight enough to be hit (and gapped through)
        d["take_profit"] = abs(d["take_profit"]) * 0.15
        out.append(genome_from_dict(d))
    return np.stack(out)


@pytest.mark.parametrize("seed", [1, 2])
def test_backtester_equals_the_naive_loop_of_the_document(seed):
    data = gappy_market(1500, seed)
    costs = Costs(fee_bps=4.0, slippage_bps=3.0, borrow_bps_per_year=50_00.0)
    pop = random_trading_genomes(60, seed)
    rows = evaluate_population(pop, data, costs, PPY)
    exercised = {"short": 0, "fractional": 0, "trades": 0}
    for i, vec in enumerate(pop):
        s = decode(vec)
        pos, r, turnover = naive_backtest(s, data, costs, PPY)
        sim = simulate(vec, data, costs, PPY)
        np.testing.assert_array_equal(sim.position, pos, err_msg=s.describe())
        np.testing.assert_allclose(sim.returns, r, rtol=0, atol=1e-12, err_msg=s.describe())
        np.testing.assert_allclose(sim.equity, np.cumprod(1 + r), rtol=1e-9, atol=0)
        m = naive_metrics(r, pos, PPY)
        row = rows[i]
        assert row[METRIC_INDEX["total_return"]] == pytest.approx(m["total_return"], abs=1e-9)
        assert row[METRIC_INDEX["sharpe"]] == pytest.approx(m["sharpe"], rel=1e-9, abs=1e-9)
        assert row[METRIC_INDEX["max_drawdown"]] == pytest.approx(m["max_drawdown"], abs=1e-9)
        assert row[METRIC_INDEX["n_trades"]] == m["n_trades"]
        assert row[METRIC_INDEX["exposure"]] == pytest.approx(m["exposure"], abs=1e-12)
        assert row[METRIC_INDEX["turnover"]] == pytest.approx(turnover, rel=1e-9, abs=1e-12)
        exercised["trades"] += m["n_trades"] > 0
        exercised["short"] += bool((pos < 0).any())
        exercised["fractional"] += bool(((pos != 0) & (np.abs(pos) != 1)).any())
    # the comparison exercised what the document describes, not only flat strategies
    assert exercised["trades"] > 40 and exercised["short"] > 10 and exercised["fractional"] > 30


def test_gaps_through_targets_fill_at_the_open_and_borrow_is_charged_on_shorts():
    # long from close 0 (100) with a 5% target (105): bar 2 opens at 110, above the target -> filled at 110
    close = [100.0, 101.0, 111.0, 112.0]
    open_ = [100.0, 100.5, 110.0, 111.0]
    high = [100.0, 101.5, 112.0, 112.5]
    low = [100.0, 100.0, 109.0, 110.5]
    ts = np.arange(4, dtype=np.int64) * 60_000_000_000
    d = MarketData(ts, open_, high, low, close, np.ones(4))
    s = Strategy(entry=Rule("always", 0, None, 0.0, 0.0, "above"), exit=None, take_profit=0.05)
    sim = simulate(s, d, Costs(0, 0))
    assert sim.returns[2] == pytest.approx(110.0 / 101.0 - 1, abs=1e-15)  # not 105/101
    # a short of size 1 pays borrow per bar held and the rebalancing its sizing implies
    short = Strategy(entry=Rule("always", 0, None, 0.0, 0.0, "below"), exit=None, direction="short")
    flat_prices = MarketData(ts, [100.0] * 4, [100.0] * 4, [100.0] * 4, [100.0] * 4, np.ones(4))
    sim = simulate(short, flat_prices, Costs(0, 0, borrow_bps_per_year=1000.0), periods_per_year=10.0)
    np.testing.assert_allclose(sim.returns, [0, -0.01, -0.01, -0.01], rtol=0, atol=1e-15)
    moving = simulate(short, MarketData(ts, [100.0, 100, 110, 99], [100.0, 100, 110, 110],
                                        [100.0, 100, 100, 99], [100.0, 100, 110, 99], np.ones(4)),
                      Costs(10.0, 0.0))  # fmt: skip
    # bar 2: R = +10% -> equity 0.9 but the short is worth -1.1: 0.2 of the starting equity is traded back
    assert moving.returns[2] == pytest.approx(0.9 - 0.2 * 1e-3 - 1, abs=1e-15)
    assert moving.turnover == pytest.approx(1.0 + 0.2, abs=1e-12)
