"""The run report end to end: a real serial run over two symbols and two walk-forward folds, checked
against independent computations (buy-and-hold from the raw bars, the number of genomes tried, the
fold layout) and for flags in words."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.evolution.config import parse_config
from qt_pipeline.evolution.fitness import FEASIBLE_BOUND
from qt_pipeline.evolution.ga import HallOfFame
from qt_pipeline.evolution.genome import genome_from_dict, genome_to_dict, random_population
from qt_pipeline.evolution.metrics import METRIC_INDEX
from qt_pipeline.evolution.ray_eval import SerialEvaluator
from qt_pipeline.evolution.runner import run_evolution
from qt_pipeline.evolution.state import DuckDBStateStore
from qt_pipeline.storage import get_storage
from qt_pipeline_tests.evolution.evo_helpers import small_config, synthetic_bars, write_bars


@pytest.fixture
def run(settings, tmp_path):
    write_bars(settings, {"BTCUSD": 4320, "ETHUSD": 4320})
    store = get_storage("local", settings)
    state = DuckDBStateStore(tmp_path / "evo.duckdb")
    cfg = parse_config(small_config(symbols=["BTCUSD", "ETHUSD"], generations=3, population_size=16, run_id="rep",
                                    costs={"fee_bps": 2.0, "slippage_bps": 1.0}))  # fmt: skip
    try:
        result = run_evolution(cfg, store, state, SerialEvaluator())
        saved = state.load_strategies("rep")
    finally:
        state.close()
        store.close()
    return cfg, result, saved


def test_report_benchmark_evidence_folds_symbols_and_flags_in_words(run):
    cfg, result, saved = run
    t = result.report.table
    rate = 3e-4
    growth = 1.0
    bounds = [(pd.Timestamp("2024-03-02 01:12", tz="UTC"), pd.Timestamp("2024-03-02 12:00", tz="UTC")),
              (pd.Timestamp("2024-03-03 13:12", tz="UTC"), pd.Timestamp("2024-03-04", tz="UTC"))]  # fmt: skip
    for lo, hi in bounds:  # out-of-sample part of each 1.5-day block (70% in sample)
        seg = 0.0
        for i, sym in enumerate(cfg.symbols):
            bars = synthetic_bars(sym, 4320, seed=7 + i)
            part = bars[(bars["timestamp"] >= lo) & (bars["timestamp"] < hi)]
            seg += 0.5 * (1 - rate) * part["close"].iloc[-1] / part["close"].iloc[0]
        growth *= seg
    assert (t["bh_oos_total_return"] - (growth - 1)).abs().max() < 1e-12
    assert len(t) >= 2
    assert t["psr"].between(0, 1).all() and t["dsr"].between(0, 1).all()
    assert (t["dsr"] <= t["psr"] + 1e-12).all()  # deflating for the genomes tried never helps
    assert any(f"{result.final.evaluations} genomes evaluated" in n for n in result.report.notes)
    assert any("24/7 market" in n for n in result.report.notes)
    assert any("CAGR and Calmar are n/a" in n for n in result.report.notes)
    assert t["is_cagr"].isna().all() and t["oos_calmar"].isna().all()  # 3 days: no annual extrapolation
    # three days of minute bars cannot say much: every strategy is told so, in words
    assert (
        t["flags"]
        .str.contains(r"OOS window too short: 0\.\d days, [\d,]+ bars, Sharpe standard error ±\d")
        .all()
    )
    for col in ("oos_f1_sharpe", "oos_f2_sharpe", "is_sharpe@BTCUSD", "oos_sharpe@ETHUSD", "is_turnover"):
        assert col in t.columns and t[col].notna().all()
    # the portfolio is not the mean of per-symbol figures; trades add up across symbols
    np.testing.assert_array_equal(t["is_n_trades"], t["is_n_trades@BTCUSD"] + t["is_n_trades@ETHUSD"])
    # infeasible strategies (a constraint broken) rank below every feasible one, and say why
    feasible = t["fitness"] > -FEASIBLE_BOUND
    if (~feasible).any():
        assert feasible.iloc[: int(feasible.sum())].all()
        assert (
            t.loc[~feasible, "flags"]
            .str.contains(r"trades? in (sample|in-sample fold)|drawdown|market")
            .all()
        )
    # stored rows carry every fold and symbol
    row = saved.iloc[0]
    assert [f["fold"] for f in row["oos_metrics"]["oos_folds"]] == [1, 2]
    assert set(row["is_metrics"]["is_per_symbol"]) == {"BTCUSD", "ETHUSD"}
    assert 0 <= row["is_metrics"]["psr"] <= 1 and "benchmark" in row["oos_metrics"]
    # near-duplicates collapsed: no two hall-of-fame strategies make the same trades
    keys = result.hall_of_fame.metrics[:, METRIC_INDEX["trade_key"]]
    assert len(np.unique(keys)) == len(keys)


def test_hall_of_fame_keeps_one_strategy_per_set_of_trades():
    base = genome_to_dict(random_population(np.random.default_rng(0), 1)[0])
    sizes = [genome_from_dict({**base, "position_size": s}) for s in (0.5, 0.9, 0.7)]
    pop = np.stack(sizes)
    met = np.zeros((3, len(METRIC_INDEX)))
    met[:, METRIC_INDEX["trade_key"]] = 12345.0  # the same trades, other sizes
    met[:, METRIC_INDEX["sharpe"]] = [1.0, 1.2, 1.1]
    hof = HallOfFame.empty(pop.shape[1], met.shape[1]).update(
        pop, np.array([1.0, 1.2, 1.1]), met, 0, 5, behaviour_column=METRIC_INDEX["trade_key"]
    )
    assert len(hof) == 1 and hof.fitness[0] == 1.2  # the fittest of the clones
