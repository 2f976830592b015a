"""Fitness: a risk-adjusted metric aggregated across walk-forward folds, under hard constraints.

``fitness(metrics, cfg, folds)`` scores each genome from its in-sample portfolio metric rows:

* ``base`` = the chosen metric (``sharpe`` | ``sortino`` | ``calmar`` | ``cagr``) of every in-sample fold,
  aggregated by ``fold_aggregate`` (``mean`` | ``median`` | ``min``);
* **constraints** (Deb's feasibility rules): at least ``min_trades`` trades in sample (all folds and symbols
  together) and ``min_trades_per_fold`` in every fold, a maximum drawdown of at most ``max_drawdown`` in
  every fold, an exposure (share of bars in a position) within ``[min_exposure, max_exposure]``.

A feasible genome's fitness is ``base`` clipped to ``[-FEASIBLE_BOUND, FEASIBLE_BOUND]``; an infeasible
one gets ``INFEASIBLE - violation`` (``violation`` > 0 sums the normalised shortfalls, capped), which is
below every feasible fitness, so the GA never prefers a strategy that breaks a constraint, and among
infeasible ones prefers the one closest to feasibility. Non-finite metrics get :data:`FITNESS_FLOOR`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from qt_pipeline.evolution.metrics import METRIC_INDEX, METRIC_NAMES

FITNESS_FLOOR = -1e6
FEASIBLE_BOUND = 1e4
INFEASIBLE = -1e5
FITNESS_METRICS = ("sharpe", "sortino", "calmar", "cagr")
HORIZON_METRICS = ("calmar", "cagr")  # extrapolate to a year: need a minimum horizon
FOLD_AGGREGATES = ("mean", "median", "min")


@dataclass(frozen=True)
class FitnessConfig:
    metric: Literal["sharpe", "sortino", "calmar", "cagr"] = "sharpe"
    min_trades: int = 10
    min_trades_per_fold: int = 3
    max_drawdown: float = 0.5
    min_exposure: float = 0.0
    max_exposure: float = 1.0
    fold_aggregate: Literal["mean", "median", "min"] = "mean"

    def __post_init__(self) -> None:
        if self.metric not in FITNESS_METRICS:
            raise ValueError(f"FitnessConfig.metric must be one of {FITNESS_METRICS}, got {self.metric!r}")
        if self.fold_aggregate not in FOLD_AGGREGATES:
            raise ValueError(
                f"FitnessConfig.fold_aggregate must be one of {FOLD_AGGREGATES}, got {self.fold_aggregate!r}"
            )
        for name in ("min_trades", "min_trades_per_fold"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise ValueError(f"FitnessConfig.{name} must be an integer >= 0, got {v!r}")
        if not (math.isfinite(self.max_drawdown) and 0 < self.max_drawdown <= 1):
            raise ValueError(f"FitnessConfig.max_drawdown must be in (0, 1], got {self.max_drawdown!r}")
        if not (0.0 <= self.min_exposure <= self.max_exposure <= 1.0):
            raise ValueError(
                "FitnessConfig exposure limits must satisfy 0 <= min_exposure <= max_exposure <= 1, got "
                f"{self.min_exposure!r} and {self.max_exposure!r}"
            )


def _rows(a: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(a, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.shape[-1] != len(METRIC_NAMES):
        raise ValueError(
            f"{what} must have {len(METRIC_NAMES)} metric columns {METRIC_NAMES}, got shape {np.shape(a)}"
        )
    return m


def violation(metrics: np.ndarray, cfg: FitnessConfig, folds: np.ndarray | None = None) -> np.ndarray:
    """Constraint violation (n,) >= 0 (0 = feasible): the sum of normalised shortfalls."""
    m = _rows(metrics, "metrics")
    f = m[:, None, :] if folds is None else _rows(folds, "folds")
    if f.ndim != 3 or f.shape[0] != m.shape[0]:
        raise ValueError(
            f"folds must have shape (n, k, {len(METRIC_NAMES)}) for n={m.shape[0]}, got {f.shape}"
        )
    ix = METRIC_INDEX
    with np.errstate(invalid="ignore"):
        v = np.zeros(m.shape[0])
        if cfg.min_trades > 0:
            v += np.maximum(0.0, cfg.min_trades - m[:, ix["n_trades"]]) / cfg.min_trades
        if cfg.min_trades_per_fold > 0:
            short = (
                np.maximum(0.0, cfg.min_trades_per_fold - f[:, :, ix["n_trades"]]) / cfg.min_trades_per_fold
            )
            v += short.mean(axis=1)
        mdd = np.maximum(f[:, :, ix["max_drawdown"]].max(axis=1), m[:, ix["max_drawdown"]])
        v += np.maximum(0.0, mdd - cfg.max_drawdown) / cfg.max_drawdown
        exp = m[:, ix["exposure"]]
        v += np.maximum(0.0, cfg.min_exposure - exp) + np.maximum(0.0, exp - cfg.max_exposure)
    return v


def aggregate(folds: np.ndarray, metric: str, how: str) -> np.ndarray:
    """The ``metric`` column of fold rows (n, k, m) aggregated over folds -> (n,)."""
    col = np.asarray(folds, dtype=np.float64)[:, :, METRIC_INDEX[metric]]
    if how == "min":
        return col.min(axis=1)
    if how == "median":
        return np.median(col, axis=1)
    return col.mean(axis=1)


def fitness(
    metrics: np.ndarray, cfg: FitnessConfig | None = None, folds: np.ndarray | None = None
) -> np.ndarray:
    """Fitness (n,) of in-sample portfolio rows ``metrics`` (n, m) and their folds (n, k, m); finite.

    Without ``folds`` the whole in-sample window is the only fold."""
    cfg = cfg or FitnessConfig()
    m = _rows(metrics, "metrics")
    f = m[:, None, :] if folds is None else _rows(folds, "folds")
    v = violation(m, cfg, f)
    base = aggregate(f, cfg.metric, cfg.fold_aggregate)
    out = np.where(
        v > 0, INFEASIBLE - np.minimum(v, FEASIBLE_BOUND), np.clip(base, -FEASIBLE_BOUND, FEASIBLE_BOUND)
    )
    bad = (
        ~np.isfinite(m).all(axis=1) | ~np.isfinite(f).all(axis=(1, 2)) | ~np.isfinite(base) | ~np.isfinite(v)
    )
    return np.where(bad, FITNESS_FLOOR, out)


def describe_violations(
    metrics: np.ndarray, cfg: FitnessConfig, folds: np.ndarray | None = None
) -> list[str]:
    """The constraints one genome (a metric row and its fold rows) breaks, in words."""
    m = _rows(metrics, "metrics")[0]
    f = m[None, :] if folds is None else _rows(folds, "folds").reshape(-1, len(METRIC_NAMES))
    ix = METRIC_INDEX
    out = []
    tr = int(m[ix["n_trades"]])
    if tr < cfg.min_trades:
        out.append(f"{tr} trade{'s' * (tr != 1)} in sample (minimum {cfg.min_trades})")
    if len(f) > 1 or folds is not None:
        for k, row in enumerate(f, start=1):
            t = int(row[ix["n_trades"]])
            if t < cfg.min_trades_per_fold:
                out.append(
                    f"{t} trade{'s' * (t != 1)} in in-sample fold {k} (minimum {cfg.min_trades_per_fold})"
                )
    mdd = max(float(f[:, ix["max_drawdown"]].max()), float(m[ix["max_drawdown"]]))
    if mdd > cfg.max_drawdown:
        out.append(f"max drawdown {mdd:.1%} in sample (limit {cfg.max_drawdown:.0%})")
    e = float(m[ix["exposure"]])
    if e < cfg.min_exposure:
        out.append(f"in the market {e:.1%} of the time (minimum {cfg.min_exposure:.0%})")
    if e > cfg.max_exposure:
        out.append(f"in the market {e:.1%} of the time (maximum {cfg.max_exposure:.0%})")
    return out
