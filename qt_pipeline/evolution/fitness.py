"""Fitness: one risk-adjusted metric with penalties, always finite.

``fitness = base - trade_penalty * shortfall - drawdown_penalty * excess`` where

* ``base`` is the chosen metric (``sharpe`` | ``sortino`` | ``calmar`` | ``cagr``);
* ``shortfall = max(0, min_trades - n_trades) / min_trades`` (0..1; 0 when ``min_trades == 0``);
* ``excess = max(0, max_drawdown_metric - cfg.max_drawdown) / cfg.max_drawdown``.

Any row with a non-finite metric gets :data:`FITNESS_FLOOR` (a large negative value), and finite results
are clipped to ``[FITNESS_FLOOR, -FITNESS_FLOOR]``, so the GA can always rank every individual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from qt_pipeline.evolution.metrics import METRIC_INDEX, METRIC_NAMES

FITNESS_FLOOR = -1e6
FITNESS_METRICS = ("sharpe", "sortino", "calmar", "cagr")


@dataclass(frozen=True)
class FitnessConfig:
    metric: Literal["sharpe", "sortino", "calmar", "cagr"] = "sharpe"
    min_trades: int = 10
    max_drawdown: float = 0.5
    trade_penalty: float = 1.0
    drawdown_penalty: float = 2.0

    def __post_init__(self) -> None:
        if self.metric not in FITNESS_METRICS:
            raise ValueError(f"FitnessConfig.metric must be one of {FITNESS_METRICS}, got {self.metric!r}")
        if (
            isinstance(self.min_trades, bool)
            or int(self.min_trades) != self.min_trades
            or self.min_trades < 0
        ):
            raise ValueError(f"FitnessConfig.min_trades must be an integer >= 0, got {self.min_trades!r}")
        if not (math.isfinite(self.max_drawdown) and 0 < self.max_drawdown <= 1):
            raise ValueError(f"FitnessConfig.max_drawdown must be in (0, 1], got {self.max_drawdown!r}")
        for name in ("trade_penalty", "drawdown_penalty"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"FitnessConfig.{name} must be a finite number >= 0, got {v!r}")


def fitness(metrics: np.ndarray, cfg: FitnessConfig | None = None) -> np.ndarray:
    """Fitness (n,) of metric rows (n, len(METRIC_NAMES)); finite for every row."""
    cfg = cfg or FitnessConfig()
    m = np.asarray(metrics, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[1] != len(METRIC_NAMES):
        raise ValueError(
            f"metrics must have shape (n, {len(METRIC_NAMES)}) with columns {METRIC_NAMES}, got {np.shape(metrics)}"
        )
    base = m[:, METRIC_INDEX[cfg.metric]]
    n_trades = m[:, METRIC_INDEX["n_trades"]]
    mdd = m[:, METRIC_INDEX["max_drawdown"]]
    with np.errstate(invalid="ignore", over="ignore"):
        if cfg.min_trades > 0:
            shortfall = np.clip((cfg.min_trades - n_trades) / cfg.min_trades, 0.0, 1.0)
        else:
            shortfall = np.zeros_like(base)
        excess = np.maximum(0.0, mdd - cfg.max_drawdown) / cfg.max_drawdown
        f = base - cfg.trade_penalty * shortfall - cfg.drawdown_penalty * excess
    bad = ~np.isfinite(m).all(axis=1) | ~np.isfinite(f)
    f = np.where(bad, FITNESS_FLOOR, f)
    return np.clip(f, FITNESS_FLOOR, -FITNESS_FLOOR)
