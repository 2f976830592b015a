from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.evolution.backtest import (
    Costs,
    MarketData,
    evaluate_population,
    evaluate_strategies,
    infer_periods_per_year,
    simulate,
)
from qt_pipeline.evolution.genome import (
    N_GENES,
    Rule,
    Strategy,
    always_long,
    genome_from_dict,
    genome_to_dict,
    make_rule,
    random_population,
)
from qt_pipeline.evolution.metrics import METRIC_NAMES, compute_metrics
from qt_pipeline.market.contract import to_canonical

from . import MINUTE_NS, MINUTES_PER_YEAR, REPO_ROOT, synthetic_market

PPY = MINUTES_PER_YEAR
ALWAYS = Rule("always", 0, None, 0.0, 0.0, "above")


def bars_from_close(close, *, low=None, high=None, open_=None) -> MarketData:
    c = np.asarray(close, dtype=float)
    n = len(c)
    o = np.r_[c[0], c[:-1]] if open_ is None else np.asarray(open_, float)
    h = np.maximum(o, c) if high is None else np.asarray(high, float)
    lo = np.minimum(o, c) if low is None else np.asarray(low, float)
    return MarketData(np.arange(n, dtype=np.int64) * MINUTE_NS, o, h, lo, c, np.ones(n))


@pytest.fixture(scope="module")
def market():
    return synthetic_market(3000, seed=42)


def trading_population(n: int, seed: int) -> np.ndarray:
    """Random genomes with short periods and filters/stops that let them trade on 3000 bars."""
    pop = random_population(np.random.default_rng(seed), n)
    out = []
    for vec in pop:
        d = genome_to_dict(vec)
        d["entry_period"] = min(d["entry_period"], 30)
        d["entry_period2"] = min(d["entry_period2"], 60)
        d["exit_period"] = min(d["exit_period"], 30)
        d["exit_period2"] = min(d["exit_period2"], 60)
        d["atr_period"] = min(d["atr_period"], 30)
        d["entry_level"] *= 0.3
        d["exit_level"] *= 0.3
        out.append(genome_from_dict(d))
    return np.stack(out)


# --------------------------------------------------------------------------------------------------
# hand-computed examples
# --------------------------------------------------------------------------------------------------
CLOSES = [100.0, 101.0, 103.0, 102.0, 104.0, 105.0]
MOM1 = make_rule("momentum", 1, level=0.0)  # up when close[t] > close[t-1], down when below
COSTS = Costs(fee_bps=10.0, slippage_bps=5.0)
RATE = 0.0015


def test_fees_on_a_hand_computed_long_only_example():
    sim = simulate(Strategy(entry=MOM1, exit=None, direction="long"), bars_from_close(CLOSES), COSTS)
    # signals at closes: t1 up -> long from bar 2 (entry at 101); t3 down -> flat from bar 4 (exit at 102);
    # t4 up -> long from bar 5 (entry at 104); the last bar takes no decision.
    np.testing.assert_array_equal(sim.position, [0, 0, 1, 1, 0, 1])
    expected_r = [
        0.0,
        0.0,
        (1 - RATE) * (103 / 101) - 1,  # entry cost on the first bar of the trade
        (102 / 103) * (1 - RATE) - 1,  # exit cost on its last bar
        0.0,
        (1 - RATE) * (105 / 104) - 1,  # still open at the end: marked to market, no exit charge
    ]
    np.testing.assert_allclose(sim.returns, expected_r, rtol=0, atol=1e-15)
    assert sim.equity[-1] == pytest.approx((1 - RATE) ** 3 * (102 / 101) * (105 / 104), abs=1e-14)
    assert sim.trades == 2
    # without costs the same trades earn exactly the price moves
    free = simulate(Strategy(entry=MOM1, exit=None), bars_from_close(CLOSES), Costs(0.0, 0.0))
    assert free.equity[-1] == pytest.approx((102 / 101) * (105 / 104), abs=1e-14)


def test_a_flip_pays_both_the_exit_and_the_entry():
    sim = simulate(Strategy(entry=MOM1, exit=None, direction="both", position_size=0.5),
                   bars_from_close(CLOSES), COSTS)  # fmt: skip
    np.testing.assert_array_equal(sim.position, [0, 0, 0.5, 0.5, -0.5, 0.5])
    c = 0.5 * RATE

    r2, r3, r4, r5 = 103 / 101 - 1, 102 / 103 - 1, 104 / 102 - 1, 105 / 104 - 1
    expected_r = [
        0.0,
        0.0,
        (1 - c) * (1 + 0.5 * r2 - abs(0.5 * 0.5 * r2) * RATE) - 1,  # kept: rebalanced back to 50%
        (1 + 0.5 * r3 - 0.5 * (1 + r3) * RATE) - 1,  # closed (first half of the flip)
        (1 - c) * (1 - 0.5 * r4 - 0.5 * (1 + r4) * RATE) - 1,
        (1 - c) * (1 + 0.5 * r5) - 1,  # last bar: no decision, no rebalancing
    ]
    np.testing.assert_allclose(sim.returns, expected_r, rtol=0, atol=1e-15)
    assert sim.trades == 3
    turnover = 0.5 + abs(0.25 * r2) + 0.5 * (1 + r3) + 0.5 + 0.5 * (1 + r4) + 0.5
    assert sim.turnover == pytest.approx(turnover, abs=1e-14)


def test_buy_and_hold_equals_the_price_return_less_the_entry_fee():
    data = synthetic_market(500, seed=9)
    costs = Costs(fee_bps=3.0, slippage_bps=2.0)
    sim = simulate(always_long(), data, costs, PPY)
    expected = (1 - 5e-4) * data.close[-1] / data.close[0] - 1
    assert abs(sim.equity[-1] - 1 - expected) < 1e-12
    assert abs(sim.metrics[0] - expected) < 1e-12
    assert sim.position[0] == 0 and (sim.position[1:] == 1).all() and sim.trades == 1
    row = evaluate_strategies([always_long()], data, costs, PPY)[0]
    assert abs(row[0] - expected) < 1e-12 and row[8] == pytest.approx(499 / 500)


# --------------------------------------------------------------------------------------------------
# stops and targets
# --------------------------------------------------------------------------------------------------
def test_stop_loss_triggers_on_the_right_bar_and_never_before_entry():
    # entry at the close of bar 0 (100) -> stop at 97. Bar 0's own low (90) is before the entry and must
    # not trigger; bar 2 comes within 0.01 of the stop; bar 3 touches it.
    close = [100.0, 99.0, 98.0, 97.5, 99.0, 100.0]
    open_ = [100.0, 99.5, 98.5, 98.0, 97.5, 99.5]
    low = [90.0, 98.5, 97.01, 96.5, 97.2, 99.0]
    high = [101.0, 100.0, 99.0, 98.5, 99.5, 100.5]
    data = bars_from_close(close, low=low, high=high, open_=open_)
    s = Strategy(entry=ALWAYS, exit=None, stop_loss=0.03)
    sim = simulate(s, data, COSTS)
    # stopped inside bar 3, flat for bar 4 (no re-entry at the stop bar's close), re-entered at close 4
    np.testing.assert_array_equal(sim.position, [0, 1, 1, 1, 0, 1])
    assert sim.returns[3] == pytest.approx((97.0 / 98.0) * (1 - RATE) - 1, abs=1e-15)  # filled at the stop
    assert sim.returns[2] == pytest.approx(98 / 99 - 1, abs=1e-15)
    assert sim.trades == 2
    # a gap through the stop fills at the (worse) open
    gap = bars_from_close(close, low=low, high=high, open_=[100.0, 99.5, 98.5, 96.8, 97.5, 99.5])
    assert simulate(s, gap, COSTS).returns[3] == pytest.approx((96.8 / 98.0) * (1 - RATE) - 1, abs=1e-15)
    # moving the stop-bar's low above the stop removes the exit
    calm = bars_from_close(close, low=[90.0, 98.5, 97.01, 97.2, 97.2, 99.0], high=high, open_=open_)
    np.testing.assert_array_equal(simulate(s, calm, COSTS).position, [0, 1, 1, 1, 1, 1])


def test_take_profit_and_the_worse_case_when_both_could_hit():
    close = [100.0, 101.0, 102.0, 103.0]
    high = [100.0, 101.5, 106.0, 103.5]
    low = [100.0, 100.5, 101.0, 102.5]
    s = Strategy(entry=ALWAYS, exit=None, take_profit=0.05)
    sim = simulate(s, bars_from_close(close, high=high, low=low), Costs(0, 0))
    np.testing.assert_array_equal(sim.position, [0, 1, 1, 0])
    assert sim.returns[2] == pytest.approx(105.0 / 101.0 - 1, abs=1e-15)  # filled at the target
    both = Strategy(entry=ALWAYS, exit=None, take_profit=0.05, stop_loss=0.01)
    sim2 = simulate(both, bars_from_close(close, high=high, low=[100.0, 100.5, 98.0, 102.5]), Costs(0, 0))
    assert sim2.returns[2] == pytest.approx(99.0 / 101.0 - 1, abs=1e-15)  # the stop is assumed


def test_short_stop_and_atr_stop():
    # short from close 0 (100) with a 2% stop -> 102; bar 2 high 102.5 hits it
    close = [100.0, 99.0, 101.0, 100.0]
    high = [100.0, 100.0, 102.5, 101.0]
    always_short = Strategy(entry=Rule("always", 0, None, 0.0, 0.0, "below"), exit=None,
                            direction="short", stop_loss=0.02)  # fmt: skip
    sim = simulate(always_short, bars_from_close(close, high=high), Costs(0, 0))
    np.testing.assert_array_equal(sim.position, [0, -1, -1, 0])
    assert sim.returns[2] == pytest.approx(-(102.0 / 99.0 - 1), abs=1e-15)
    # ATR stop: true ranges are all 2 -> ATR(2) = 2 at bar 1; entry at close 1 (100), stop 100 - 1.5*2 = 97
    c = [100.0, 100.0, 99.0, 98.0, 97.5]
    hi = [101.0, 101.0, 100.0, 99.0, 98.5]
    lo = [99.0, 99.0, 98.0, 97.0, 96.0]
    atr_s = Strategy(entry=ALWAYS, exit=None, atr_period=2, atr_stop=1.5)
    sim = simulate(
        atr_s, bars_from_close(c, high=hi, low=lo, open_=[100, 100, 99.5, 98.5, 97.8]), Costs(0, 0)
    )
    # no entry at close 0 (ATR still warming up); long from bar 2; bar 3's low 97 touches the stop
    np.testing.assert_array_equal(sim.position, [0, 0, 1, 1, 0])
    assert sim.returns[3] == pytest.approx(97.0 / 99.0 - 1, abs=1e-15)


# --------------------------------------------------------------------------------------------------
# no look-ahead, warm-up, filters
# --------------------------------------------------------------------------------------------------
def perturb_after(data: MarketData, t: int, rng: np.random.Generator) -> MarketData:
    """A copy whose bars after t are a different (but consistent) random path that starts with a jump
    of +/-3%, so that any rule peeking at bar t+1 would see a very different bar."""
    n = len(data)
    k = n - t - 1
    c = data.close.copy()
    jump = rng.choice([-0.03, 0.03])
    c[t + 1 :] = c[t] * np.exp(jump + np.cumsum(rng.normal(0, 4e-3, k)))
    o = data.open.copy()
    o[t + 1 :] = np.r_[c[t], c[t + 1 : -1]] * np.exp(rng.normal(0, 1e-3, k))
    h = data.high.copy()
    h[t + 1 :] = np.maximum(o[t + 1 :], c[t + 1 :]) * (1 + np.abs(rng.normal(0, 2e-3, k)))
    lo = data.low.copy()
    lo[t + 1 :] = np.minimum(o[t + 1 :], c[t + 1 :]) * (1 - np.abs(rng.normal(0, 2e-3, k)))
    v = data.volume.copy()
    v[t + 1 :] = rng.uniform(1, 100, k)
    reg = None if data.regime is None else data.regime.copy()
    cor = None if data.correlation is None else data.correlation.copy()
    if reg is not None:
        reg[t + 1 :] = rng.integers(-1, 4, k)
    if cor is not None:
        cor[t + 1 :] = rng.uniform(-1, 1, k)
    return MarketData(data.timestamp, o, h, lo, c, v, reg, cor, data.symbol)


def test_no_look_ahead_property(market):
    rng = np.random.default_rng(123)
    data = MarketData(market.timestamp, market.open, market.high, market.low, market.close, market.volume,
                      rng.integers(0, 4, len(market)).astype(np.int8), rng.uniform(-1, 1, len(market)))  # fmt: skip
    pop = trading_population(40, seed=5)
    traded_before_cut = 0
    for t in (300, 700, 1100, 1500, 1900, 2300, 2700):
        other = perturb_after(data, t, rng)
        for vec in pop:
            a = simulate(vec, data, COSTS)
            b = simulate(vec, other, COSTS)
            # position[t+1] is decided at the close of bar t: it may not depend on later bars either
            np.testing.assert_array_equal(a.position[: t + 2], b.position[: t + 2])
            np.testing.assert_array_equal(a.returns[: t + 1], b.returns[: t + 1])
            traded_before_cut += bool(np.any(a.position[: t + 2] != 0))
            assert (
                np.array_equal(a.position, b.position) or (a.position[t + 2 :] != b.position[t + 2 :]).any()
            )
    assert traded_before_cut > 60  # the property was exercised by strategies that actually trade


def test_no_decision_before_every_indicator_is_warm(market):
    s = Strategy(entry=make_rule("sma_cross", 5, 40), exit=make_rule("rsi", 30), direction="both")
    sim = simulate(s, market, Costs())
    # SMA(40) is defined from bar 39: the first decision is at its close -> first position on bar 40
    first = int(np.flatnonzero(sim.position)[0])
    assert first == 40
    assert int(np.flatnonzero(simulate(s, market.slice(5, None), Costs()).position)[0]) == 40


def test_filters_gate_entries_only_when_series_are_present(market):
    s = Strategy(entry=make_rule("momentum", 3), exit=None, direction="both", regime_mask=0b0100,
                 correlation_max=0.5)  # fmt: skip
    free = simulate(s, market, Costs())
    assert free.trades > 50  # no regime/correlation series -> the filters are inactive
    n = len(market)
    regime = np.where(np.arange(n) < n // 2, 2, 1).astype(np.int8)
    with_regime = MarketData(market.timestamp, market.open, market.high, market.low, market.close,
                             market.volume, regime=regime)  # fmt: skip
    sim = simulate(s, with_regime, Costs())
    entries = np.nonzero((sim.position != 0) & (np.r_[0.0, sim.position[:-1]] != sim.position))[0]
    assert entries.size > 10 and (regime[entries - 1] == 2).all()  # decided at a close in regime 2
    unknown = MarketData(market.timestamp, market.open, market.high, market.low, market.close,
                         market.volume, regime=np.full(n, -1, np.int8))  # fmt: skip
    assert simulate(s, unknown, Costs()).trades == 0
    corr = np.where(np.arange(n) % 100 < 50, 0.2, 0.9)
    corr[:10] = np.nan
    with_corr = MarketData(market.timestamp, market.open, market.high, market.low, market.close,
                           market.volume, correlation=corr)  # fmt: skip
    sim = simulate(s, with_corr, Costs())
    entries = np.nonzero((sim.position != 0) & (np.r_[0.0, sim.position[:-1]] != sim.position))[0]
    assert entries.size > 10 and (corr[entries - 1] <= 0.5).all()


# --------------------------------------------------------------------------------------------------
# evaluate_population: determinism, equality with simulate, chunking, threading, processes
# --------------------------------------------------------------------------------------------------
def test_evaluate_population_is_deterministic_and_equals_simulate(market):
    pop = np.vstack([trading_population(30, seed=1), random_population(np.random.default_rng(2), 10)])
    costs = Costs(fee_bps=2.0, slippage_bps=1.5)
    m1 = evaluate_population(pop, market, costs, PPY)
    m2 = evaluate_population(pop.copy(), market, costs, PPY)
    assert m1.shape == (40, len(METRIC_NAMES)) and m1.dtype == np.float64
    assert m1.tobytes() == m2.tobytes()
    assert (m1[:, 6] > 0).sum() > 20
    for i, vec in enumerate(pop):
        sim = simulate(vec, market, costs, PPY)
        assert sim.metrics.tobytes() == m1[i].tobytes()
        again = compute_metrics(sim.returns, sim.position, PPY, turnover=sim.turnover)
        assert again.tobytes() == m1[i].tobytes()
        assert sim.trades == int(m1[i, 6])
    # threads and memory chunking do not change a bit
    assert evaluate_population(pop, market, costs, PPY, parallel=True).tobytes() == m1.tobytes()
    assert evaluate_population(pop, market, costs, PPY, bank_budget_bytes=1).tobytes() == m1.tobytes()
    # a sub-population gets the same rows (no cross-strategy interaction)
    assert evaluate_population(pop[::3], market, costs, PPY).tobytes() == m1[::3].tobytes()
    assert evaluate_population(np.empty((0, N_GENES)), market, costs, PPY).shape == (0, len(METRIC_NAMES))


def test_threads_share_each_span_one_strategy_at_a_time_without_changing_a_bit(monkeypatch):
    """parallel=True runs the strategies on Numba's threads span by span: each thread takes the strategies
    of its own range one at a time from the left, then helps the range with the most left from its right
    end, then goes on to the next span without waiting for the others; a strategy's next span waits only
    for its own previous one. Any thread count (odd, more threads than cores, so threads are stopped
    mid-span and others run ahead; more threads than strategies) and wherever the threads meet give every
    strategy exactly the bits of its serial run: none is run twice in a span, skipped, or run out of order."""
    import numba

    from qt_pipeline.evolution import _kernels as K
    from qt_pipeline.evolution import backtest as B

    monkeypatch.setattr(B, "SPAN_CACHE_BYTES", 1)  # a span per block: the cuts move many times
    data = synthetic_market(7 * K.FLAG_BLOCK + 11, seed=12)
    pop = np.vstack([trading_population(20, seed=6), random_population(np.random.default_rng(3), 9)])
    costs = Costs(fee_bps=2.0, slippage_bps=1.5)
    want = evaluate_population(pop, data, costs, PPY)
    assert (want[:, 6] > 0).sum() > 10
    for threads in (2, 3, 5, 64):  # (Numba runs the ranges on the threads it has)
        monkeypatch.setattr(numba, "get_num_threads", lambda t=threads: t)
        assert evaluate_population(pop, data, costs, PPY, parallel=True).tobytes() == want.tobytes()
        assert evaluate_population(pop[:2], data, costs, PPY, parallel=True).tobytes() == want[:2].tobytes()


def test_the_span_the_population_runs_in_changes_no_bit(monkeypatch):
    """The population kernel runs every strategy over bars [0, span), then [span, 2 span), ... carrying
    each strategy's state between spans; the span (sized for the cache) must not change a bit."""
    from qt_pipeline.evolution import _kernels as K
    from qt_pipeline.evolution import backtest as B

    data = synthetic_market(5 * K.FLAG_BLOCK + 123, seed=8)  # spans end inside positions and flat runs
    pop = np.vstack([trading_population(24, seed=4), random_population(np.random.default_rng(9), 8)])
    costs = Costs(fee_bps=2.0, slippage_bps=1.5)
    want = [simulate(v, data, costs, PPY).metrics.tobytes() for v in pop]
    got, spans = {}, []
    for span_bytes in (1, 3 * K.FLAG_BLOCK * 8 * 10, 2**40):  # one block per span, a few, one span
        monkeypatch.setattr(B, "SPAN_CACHE_BYTES", span_bytes)
        got[span_bytes] = evaluate_population(pop, data, costs, PPY)
        spans.append(B.span_for(5))
        assert [r.tobytes() for r in got[span_bytes]] == want
        assert evaluate_population(pop, data, costs, PPY, parallel=True).tobytes() == got[span_bytes].tobytes()
    assert spans[0] == K.FLAG_BLOCK and spans[1] == 3 * K.FLAG_BLOCK and spans[2] > len(data)
    # from the environment: KiB; a bad value is one clear line
    monkeypatch.setattr(B, "SPAN_CACHE_BYTES", None)
    monkeypatch.setenv(B.SPAN_ENV, "30")  # 30 KiB / (8 * 10 bytes per bar) -> 384 bars -> one block
    assert B.span_for(5) == K.FLAG_BLOCK
    monkeypatch.setenv(B.SPAN_ENV, "960")
    assert B.span_for(5) == 12 * K.FLAG_BLOCK
    monkeypatch.setenv(B.SPAN_ENV, "half")
    with pytest.raises(ValueError, match="QT_EVOLUTION_SPAN_KB='half' is not a whole number of KiB"):
        evaluate_population(pop, data, costs, PPY)
    assert (got[1][:, 6] > 0).sum() > 15  # the strategies trade across span boundaries


def test_evaluate_population_is_bit_identical_in_another_process(market):
    pop = trading_population(12, seed=3)
    here = evaluate_population(pop, market, Costs(), PPY)
    code = textwrap.dedent(f"""
        import json, sys, numpy as np
        from qt_pipeline.evolution.backtest import Costs, evaluate_population
        from qt_pipeline_tests.evolution import synthetic_market
        pop = np.array(json.loads(sys.stdin.read()))
        m = evaluate_population(pop, synthetic_market(3000, seed=42), Costs(), {PPY!r})
        sys.stdout.write(m.tobytes().hex())
    """)
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(pop.tolist()), capture_output=True,
                         text=True, cwd=REPO_ROOT, timeout=300, check=True)  # fmt: skip
    assert bytes.fromhex(out.stdout) == here.tobytes()


# --------------------------------------------------------------------------------------------------
# MarketData and argument checks
# --------------------------------------------------------------------------------------------------
def test_market_data_from_canonical_frame_and_slice():
    data = synthetic_market(50, seed=1, symbol="BTCUSD")
    ts = pd.to_datetime(data.timestamp, utc=True)
    df = to_canonical(pd.DataFrame({
        "symbol": "BTCUSD", "timestamp": ts, "open": data.open, "high": data.high, "low": data.low,
        "close": data.close, "volume": data.volume, "vwap": data.close, "trade_count": 1,
    }))  # fmt: skip
    md = MarketData.from_frame(df)
    assert md.symbol == "BTCUSD" and len(md) == 50
    assert np.array_equal(md.timestamp, data.timestamp) and np.array_equal(md.close, data.close)
    assert md.close.flags.c_contiguous and not md.close.flags.writeable
    assert infer_periods_per_year(md.timestamp) == pytest.approx(PPY)
    part = md.slice(10, 20)
    assert len(part) == 10 and part.timestamp[0] == md.timestamp[10] and part.close[-1] == md.close[19]
    two = pd.concat([df, df.assign(symbol="ETHUSD")], ignore_index=True)
    with pytest.raises(ValueError, match="holds 2 symbols .* pass symbol= to pick one"):
        MarketData.from_frame(two)
    assert np.array_equal(MarketData.from_frame(two, symbol="ETHUSD").close, data.close)
    with pytest.raises(ValueError, match="strictly increasing; bar 5"):
        MarketData.from_frame(df.iloc[[0, 1, 2, 3, 4, 4, 6]])


def test_market_data_and_arguments_are_validated():
    data = synthetic_market(20, seed=1)
    bad_close = data.close.copy()
    bad_close[7] = np.nan
    with pytest.raises(ValueError, match=r"close must be finite and > 0; bad value nan at bar 7"):
        MarketData(data.timestamp, data.open, data.high, data.low, bad_close, data.volume)
    with pytest.raises(ValueError, match="MarketData.high has 19 values but there are 20 timestamps"):
        MarketData(data.timestamp, data.open, data.high[:-1], data.low, data.close, data.volume)
    with pytest.raises(ValueError, match="regime must hold integer codes"):
        MarketData(data.timestamp, data.open, data.high, data.low, data.close, data.volume,
                   regime=np.zeros(20))  # fmt: skip
    with pytest.raises(ValueError, match="fee_bps must be a finite number of basis points"):
        Costs(fee_bps=-1.0)
    with pytest.raises(ValueError, match=f"shape \\(n, {N_GENES}\\)"):
        evaluate_population(np.zeros((2, 3)), data, Costs(), PPY)
    pop = random_population(np.random.default_rng(0), 3)
    pop[1, 4] = np.inf
    with pytest.raises(ValueError, match=r"population rows \[1\] hold non-finite genes"):
        evaluate_population(pop, data, Costs(), PPY)
    with pytest.raises(ValueError, match="periods_per_year must be a positive number"):
        evaluate_population(np.zeros((0, N_GENES)), data, Costs(), float("nan"))
