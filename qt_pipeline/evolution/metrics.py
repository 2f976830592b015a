"""Performance metrics of a per-bar return series.

``compute_metrics(returns, position, periods_per_year)`` returns one float64 row in the order of
:data:`METRIC_NAMES`. Definitions (n = number of bars, r = net per-bar returns):

* ``total_return`` = prod(1 + r) - 1; equity starts at 1.
* ``cagr`` = (1 + total_return) ** (periods_per_year / n) - 1 (-1 when equity is wiped out).
* ``sharpe`` = mean(r) / std(r, ddof=1) * sqrt(periods_per_year) (risk-free rate 0; 0 when the
  returns do not vary). The variance is taken from running sums (sum r, sum r^2) — exact enough for
  returns, whose mean is tiny next to their spread.
* ``sortino`` = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods_per_year) (target 0; 0 when no bar
  lost money).
* ``max_drawdown`` = max_t (1 - equity_t / max(1, max_{s<=t} equity_s)), a fraction >= 0.
* ``calmar`` = cagr / max_drawdown (0 when there was no drawdown).
* ``n_trades``: a trade is a maximal run of bars holding the same non-zero position (a position still
  open at the end counts). ``win_rate`` = share of trades whose compounded net return over their bars
  (all their costs included) is > 0; 0 without trades.
* ``exposure`` = share of bars with a non-zero position.
* ``turnover`` = traded notional over the window as a multiple of equity (entries, exits and the
  rebalancing that keeps a fractional or short position at its target fraction; see
  ``docs/execution_model.md``). :func:`compute_metrics` takes it as given (it is not derivable from net
  returns and positions).
* ``skew`` / ``kurtosis``: sample skewness and (non-excess, normal = 3) kurtosis of the per-bar returns,
  used by the probabilistic and deflated Sharpe ratios.
* ``n_bars``: number of bars; ``trade_key``: a fingerprint (< 2**52) of the bars on which the side
  (long/flat/short) changed — equal keys mean the same trades, whatever the position size.
* ``sum_r`` .. ``sum_r4``, ``sum_down2``: the power sums of the returns (and of min(r, 0)) from which the
  moments are derived; rows of separately backtested segments pool exactly by adding them.

The same accumulator code runs inside the fused backtest kernel, so the metrics of
``evaluate_population`` equal ``compute_metrics(simulate(...).returns, simulate(...).position)`` bit for bit.
"""

from __future__ import annotations

import numpy as np

from qt_pipeline.evolution import _kernels as K

METRIC_NAMES: tuple[str, ...] = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "n_trades",
    "win_rate",
    "exposure",
    "turnover",
    "skew",
    "kurtosis",
    "n_bars",
    "trade_key",
    "sum_r",
    "sum_r2",
    "sum_r3",
    "sum_r4",
    "sum_down2",
)
METRIC_INDEX: dict[str, int] = {m: i for i, m in enumerate(METRIC_NAMES)}
assert len(METRIC_NAMES) == K.N_METRICS


def compute_metrics(returns: np.ndarray, position: np.ndarray, periods_per_year: float,
                    turnover: float = 0.0) -> np.ndarray:  # fmt: skip
    """The metric row (float64, ``len(METRIC_NAMES)``) of one per-bar return series and its positions."""
    r = np.ascontiguousarray(returns, dtype=np.float64)
    p = np.ascontiguousarray(position, dtype=np.float64)
    if r.ndim != 1 or p.shape != r.shape:
        raise ValueError(
            f"returns and position must be 1-D arrays of the same length, got {np.shape(returns)} and "
            f"{np.shape(position)}"
        )
    if not (np.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    if not np.isfinite(r).all():
        raise ValueError("returns hold non-finite values; pass net per-bar returns (0 where flat)")
    out = np.empty(K.N_METRICS)
    K.metrics_from_arrays(r, p, float(periods_per_year), float(turnover), out)
    return out


def metrics_to_dict(row: np.ndarray) -> dict[str, float]:
    """``{metric name: value}`` of one metric row (``n_trades`` as int)."""
    a = np.asarray(row, dtype=np.float64)
    if a.shape != (len(METRIC_NAMES),):
        raise ValueError(f"a metric row has {len(METRIC_NAMES)} values {METRIC_NAMES}, got shape {a.shape}")
    d = {m: float(v) for m, v in zip(METRIC_NAMES, a, strict=True)}
    d["n_trades"] = int(d["n_trades"])
    d["n_bars"] = int(d["n_bars"])
    d["trade_key"] = int(d["trade_key"])
    return d
