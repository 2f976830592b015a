from __future__ import annotations

import numpy as np
import pytest

from qt_pipeline.evolution.fitness import (
    FEASIBLE_BOUND,
    FITNESS_FLOOR,
    INFEASIBLE,
    FitnessConfig,
    describe_violations,
    fitness,
    violation,
)
from qt_pipeline.evolution.metrics import METRIC_INDEX, METRIC_NAMES


def row(**kv) -> np.ndarray:
    r = np.zeros(len(METRIC_NAMES))
    r[METRIC_INDEX["exposure"]] = 0.5
    for k, v in kv.items():
        r[METRIC_INDEX[k]] = v
    return r


def test_feasible_genomes_score_their_metric_and_every_infeasible_one_ranks_below():
    m = np.stack([
        row(sharpe=1.5, sortino=2.0, calmar=3.0, cagr=0.2, n_trades=20, max_drawdown=0.1),
        row(sharpe=-9000.0, n_trades=20, max_drawdown=0.1),  # feasible but terrible
        row(sharpe=30.0, n_trades=3, max_drawdown=0.1),  # a lucky few trades: infeasible
        row(sharpe=30.0, n_trades=20, max_drawdown=0.75),  # drawdown over the limit
        row(sharpe=5.0, n_trades=0, max_drawdown=0.0, exposure=0.0),  # never trades
    ])  # fmt: skip
    f = fitness(m, FitnessConfig())
    assert f[0] == 1.5 and f[1] == -9000.0
    assert (f[2:] < f[1]).all() and (f[2:] < -FEASIBLE_BOUND).all() and (f[2:] > FITNESS_FLOOR).all()
    # among infeasible ones, the one closer to feasibility ranks higher (Deb's rules)
    np.testing.assert_allclose(f[2], INFEASIBLE - 0.7, rtol=0, atol=1e-12)  # 7 of 10 trades missing
    np.testing.assert_allclose(f[3], INFEASIBLE - 0.5, rtol=0, atol=1e-12)  # 0.25 over 0.5
    assert f[4] == INFEASIBLE - 2.0  # all 10 trades missing, and all 3 of its only fold
    more = fitness(np.stack([row(sharpe=1.0, n_trades=k) for k in range(12)]))
    assert np.all(np.diff(more[:11]) > 0) and more[10] == more[11] == 1.0
    assert fitness(m[:1], FitnessConfig(metric="sortino"))[0] == 2.0
    assert fitness(m[:1], FitnessConfig(metric="calmar"))[0] == 3.0
    assert fitness(m[:1], FitnessConfig(metric="cagr"))[0] == 0.2
    # exposure limits bind
    lim = FitnessConfig(min_exposure=0.6, max_exposure=0.9)
    assert violation(m[:1], lim)[0] == pytest.approx(0.1)
    assert fitness(m[:1], FitnessConfig(max_exposure=0.4))[0] < -FEASIBLE_BOUND


def test_folds_are_aggregated_and_every_fold_needs_its_trades():
    allis = np.stack([row(sharpe=2.0, n_trades=30), row(sharpe=2.0, n_trades=30)])
    folds = np.stack([
        np.stack([row(sharpe=3.0, n_trades=10), row(sharpe=1.0, n_trades=10), row(sharpe=-1.0, n_trades=10)]),
        np.stack([row(sharpe=9.0, n_trades=28), row(sharpe=1.0, n_trades=1), row(sharpe=1.0, n_trades=1)]),
    ])  # fmt: skip
    f = fitness(allis, FitnessConfig(), folds)
    assert f[0] == pytest.approx(1.0)  # mean of 3, 1, -1
    assert f[1] < -FEASIBLE_BOUND  # two folds with 1 trade (minimum 3): infeasible despite Sharpe 9
    assert fitness(allis[:1], FitnessConfig(fold_aggregate="min"), folds[:1])[0] == -1.0
    assert fitness(allis[:1], FitnessConfig(fold_aggregate="median"), folds[:1])[0] == 1.0
    words = describe_violations(allis[1], FitnessConfig(), folds[1])
    assert words == ["1 trade in in-sample fold 2 (minimum 3)", "1 trade in in-sample fold 3 (minimum 3)"]
    assert describe_violations(row(n_trades=3, max_drawdown=0.62), FitnessConfig()) == [
        "3 trades in sample (minimum 10)",
        "max drawdown 62.0% in sample (limit 50%)",
    ]


def test_non_finite_metrics_map_to_the_floor_and_results_are_finite():
    m = np.stack([
        row(sharpe=np.nan, n_trades=20),
        row(sharpe=1.0, cagr=np.inf, n_trades=20),  # any non-finite metric poisons the row
        row(sharpe=-np.inf, n_trades=20),
        row(sharpe=1e300, n_trades=20),
        row(sharpe=0.3, n_trades=20),
    ])  # fmt: skip
    f = fitness(m)
    assert np.isfinite(f).all()
    assert f.tolist() == [FITNESS_FLOOR, FITNESS_FLOOR, FITNESS_FLOOR, FEASIBLE_BOUND, 0.3]
    assert fitness(row(sharpe=0.1, n_trades=10)).shape == (1,)


def test_config_is_validated():
    with pytest.raises(ValueError, match="metric must be one of"):
        FitnessConfig(metric="profit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_trades must be an integer >= 0"):
        FitnessConfig(min_trades=-1)
    with pytest.raises(ValueError, match="min_trades_per_fold must be an integer >= 0"):
        FitnessConfig(min_trades_per_fold=1.5)
    with pytest.raises(ValueError, match=r"max_drawdown must be in \(0, 1\]"):
        FitnessConfig(max_drawdown=0.0)
    with pytest.raises(ValueError, match="min_exposure <= max_exposure"):
        FitnessConfig(min_exposure=0.5, max_exposure=0.2)
    with pytest.raises(ValueError, match="fold_aggregate must be one of"):
        FitnessConfig(fold_aggregate="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"metrics must have {len(METRIC_NAMES)} metric columns"):
        fitness(np.zeros((2, 3)))
