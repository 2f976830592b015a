"""Does a strategy's signal filter earn its keep? The same strategy out of sample with and without its
regime / correlation filters (everything else unchanged), averaged over the symbols."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from qt_pipeline.signals.feed import describe_filters

ABLATION_METRICS: tuple[str, ...] = ("sharpe", "total_return", "max_drawdown", "n_trades")


def filter_ablation(
    genome: np.ndarray, test_data: Sequence[Any], costs: Any, periods_per_year: float
) -> pd.DataFrame:
    """Rows ``with filters`` / ``without filters``: the mean over ``test_data`` (MarketData per symbol)
    of :data:`ABLATION_METRICS`, plus the filters in words."""
    from qt_pipeline.evolution.backtest import evaluate_strategies
    from qt_pipeline.evolution.genome import decode
    from qt_pipeline.evolution.metrics import METRIC_NAMES

    best = decode(np.asarray(genome))
    bare = dataclasses.replace(best, regime_mask=0, correlation_max=0.0)
    rows = np.stack([evaluate_strategies([best, bare], d, costs, periods_per_year) for d in test_data]).mean(
        axis=0
    )
    idx = [METRIC_NAMES.index(m) for m in ABLATION_METRICS]
    out = pd.DataFrame(rows[:, idx], columns=list(ABLATION_METRICS))
    out.insert(0, "variant", ["with filters", "without filters"])
    out["filters"] = [describe_filters(best.regime_mask, best.correlation_max), "none"]
    return out


def ablation_markdown(table: pd.DataFrame) -> str:
    lines = [
        "| variant | sharpe | total return | max drawdown | trades | filters |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.variant} | {r.sharpe:.3f} | {r.total_return:.2%} | {r.max_drawdown:.2%} | {r.n_trades:.1f} | {r.filters} |"
        )
    return "\n".join(lines)
