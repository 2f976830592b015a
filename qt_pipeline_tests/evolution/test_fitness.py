from __future__ import annotations

import numpy as np
import pytest

from qt_pipeline.evolution.fitness import FITNESS_FLOOR, FitnessConfig, fitness
from qt_pipeline.evolution.metrics import METRIC_INDEX, METRIC_NAMES


def row(**kv) -> np.ndarray:
    r = np.zeros(len(METRIC_NAMES))
    for k, v in kv.items():
        r[METRIC_INDEX[k]] = v
    return r


def test_base_metric_and_penalties_hand_computed():
    m = np.stack([
        row(sharpe=1.5, sortino=2.0, calmar=3.0, cagr=0.2, n_trades=20, max_drawdown=0.1),
        row(sharpe=1.5, n_trades=5, max_drawdown=0.1),  # half the minimum trades -> -0.5 * 1.0
        row(sharpe=1.5, n_trades=20, max_drawdown=0.75),  # 0.25 over 0.5 -> -2.0 * 0.5
        row(sharpe=2.0, n_trades=0, max_drawdown=1.0),  # -1.0 - 2.0 * 1.0
    ])  # fmt: skip
    f = fitness(m, FitnessConfig())
    np.testing.assert_allclose(f, [1.5, 1.0, 0.5, -1.0], rtol=0, atol=1e-15)
    assert fitness(m[:1], FitnessConfig(metric="sortino"))[0] == 2.0
    assert fitness(m[:1], FitnessConfig(metric="calmar"))[0] == 3.0
    assert fitness(m[:1], FitnessConfig(metric="cagr"))[0] == 0.2
    cfg = FitnessConfig(min_trades=0, trade_penalty=5.0, drawdown_penalty=0.0)
    np.testing.assert_allclose(fitness(m, cfg), [1.5, 1.5, 1.5, 2.0])
    # fewer missing trades is always better, all else equal
    more = fitness(np.stack([row(sharpe=1.0, n_trades=k) for k in range(12)]))
    assert np.all(np.diff(more[:11]) > 0) and more[10] == more[11]


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
    assert f.tolist() == [FITNESS_FLOOR, FITNESS_FLOOR, FITNESS_FLOOR, -FITNESS_FLOOR, 0.3]
    assert fitness(row(sharpe=0.1, n_trades=10)).shape == (1,)


def test_config_is_validated():
    with pytest.raises(ValueError, match="metric must be one of"):
        FitnessConfig(metric="profit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_trades must be an integer >= 0"):
        FitnessConfig(min_trades=-1)
    with pytest.raises(ValueError, match=r"max_drawdown must be in \(0, 1\]"):
        FitnessConfig(max_drawdown=0.0)
    with pytest.raises(ValueError, match="trade_penalty must be a finite number"):
        FitnessConfig(trade_penalty=float("nan"))
    with pytest.raises(ValueError, match=r"metrics must have shape \(n, 9\)"):
        fitness(np.zeros((2, 3)))
