"""Correlation engine: rolling cross-asset return correlations and a correlation-regime signal.

Input: hourly (or any fixed-interval) log returns as a bucket x symbol table (:func:`~qt_pipeline.signals.rollup.wide`
of :func:`~qt_pipeline.signals.rollup.log_returns`). Everything is causal: the value at bucket ``t`` uses
returns of buckets ``<= t`` only (pandas rolling windows are computed forwards, so changing a later return
changes nothing at or before ``t``; a test perturbs the future to prove it).

* :func:`pair_correlations` — Pearson correlation of every pair over each trailing window (in buckets);
  NaN until the window holds ``window`` joint observations (the warm-up).
* :func:`correlation_signals` — per bucket: the average pairwise correlation over the regime window, a
  correlation regime with hysteresis (``coupled`` once the average rises above ``enter_coupled``,
  ``decoupled`` once it falls below ``exit_coupled``; the state holds in between), a ``break`` flag when the
  short-window average departs from the long-window one by more than ``break_threshold``, and per symbol
  its mean correlation to the others (the series the evolution's ``correlation_max`` gene filters on).
* :func:`correlation_matrix` — the symbol x symbol matrix at one bucket (for heat maps).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

CORRELATION_REGIMES: tuple[str, ...] = ("decoupled", "coupled")
UNKNOWN = -1


@dataclass(frozen=True)
class CorrelationParams:
    windows: tuple[int, ...] = (24, 168)  # trailing windows in buckets (1 day, 1 week of hours)
    regime_window: int = 24  # window of the average that drives the regime (must be in ``windows``)
    enter_coupled: float = 0.35
    exit_coupled: float = 0.2
    break_threshold: float = 0.3  # |short-window average - long-window average| that flags a break

    def __post_init__(self) -> None:
        if not self.windows or any(int(w) < 3 for w in self.windows):
            raise ValueError(f"correlation windows must be >= 3 buckets, got {self.windows!r}")
        if self.regime_window not in self.windows:
            raise ValueError(f"regime_window {self.regime_window} must be one of windows {self.windows}")
        if not -1.0 <= self.exit_coupled <= self.enter_coupled <= 1.0:
            raise ValueError(
                f"need -1 <= exit_coupled ({self.exit_coupled}) <= enter_coupled ({self.enter_coupled}) <= 1"
            )

    @property
    def warmup(self) -> int:
        return max(self.windows)


def pair_correlations(returns: pd.DataFrame, window: int) -> pd.DataFrame:
    """Trailing ``window``-bucket correlation of every symbol pair: a bucket x ``"A|B"`` table (A < B)."""
    cols = sorted(returns.columns)
    out = {}
    for a, b in combinations(cols, 2):
        c = returns[a].rolling(window, min_periods=window).corr(returns[b])
        out[f"{a}|{b}"] = c.clip(-1.0, 1.0)  # rounding can leave |corr| a hair above 1
    return pd.DataFrame(out, index=returns.index)


def _hysteresis(avg: np.ndarray, enter: float, exit_: float) -> np.ndarray:
    state = np.full(len(avg), UNKNOWN, dtype=np.int8)
    cur = UNKNOWN
    for i, x in enumerate(avg):
        if np.isnan(x):
            cur = UNKNOWN
        elif cur == UNKNOWN:
            cur = 1 if x >= (enter + exit_) / 2 else 0
        elif cur == 0 and x > enter:
            cur = 1
        elif cur == 1 and x < exit_:
            cur = 0
        state[i] = cur
    return state


def correlation_signals(
    returns: pd.DataFrame, params: CorrelationParams | None = None
) -> dict[str, pd.DataFrame]:
    """Run the engine on a bucket x symbol table of log returns. Returns three frames:

    ``market``: ``bucket, avg_corr_<w>`` for each window, ``corr_regime`` (0 decoupled, 1 coupled,
    -1 warm-up), ``corr_regime_name``, ``corr_break`` (bool);
    ``pairs``: ``bucket, window, symbol_a, symbol_b, correlation`` (long form);
    ``symbols``: ``bucket, symbol, mean_corr`` (mean correlation to the other symbols, regime window).
    """
    p = params or CorrelationParams()
    returns = returns.sort_index()
    if returns.shape[1] < 2:
        raise ValueError(
            f"the correlation engine needs at least two symbols, got {list(returns.columns)}; "
            "ingest more symbols (QT_SYMBOLS)"
        )
    idx = returns.index
    market = pd.DataFrame({"bucket": idx})
    pairs_long = []
    per_window = {}
    for w in p.windows:
        pc = pair_correlations(returns, int(w))
        per_window[w] = pc
        market[f"avg_corr_{w}"] = pc.mean(axis=1, skipna=False).to_numpy()
        long = pc.reset_index(names="bucket").melt(
            id_vars="bucket", var_name="pair", value_name="correlation"
        )
        ab = long["pair"].str.split("|", n=1, expand=True)
        pairs_long.append(
            pd.DataFrame(
                {
                    "bucket": long["bucket"],
                    "window": np.int32(w),
                    "symbol_a": ab[0].astype("str"),
                    "symbol_b": ab[1].astype("str"),
                    "correlation": long["correlation"].to_numpy(),
                }
            )
        )
    avg = market[f"avg_corr_{p.regime_window}"].to_numpy()
    market["corr_regime"] = _hysteresis(avg, p.enter_coupled, p.exit_coupled)
    names = np.array(("unknown", *CORRELATION_REGIMES), dtype=object)
    market["corr_regime_name"] = names[market["corr_regime"].to_numpy() + 1].astype(str)
    short, long_w = min(p.windows), max(p.windows)
    gap = (market[f"avg_corr_{short}"] - market[f"avg_corr_{long_w}"]).abs()
    market["corr_break"] = (gap > p.break_threshold).to_numpy()

    pcw = per_window[p.regime_window]
    sym_rows = []
    for s in sorted(returns.columns):
        cols = [c for c in pcw.columns if s in c.split("|")]
        sym_rows.append(
            pd.DataFrame(
                {"bucket": idx, "symbol": s, "mean_corr": pcw[cols].mean(axis=1, skipna=False).to_numpy()}
            )
        )
    pairs = pd.concat(pairs_long, ignore_index=True).sort_values(["bucket", "window", "symbol_a", "symbol_b"])
    symbols = pd.concat(sym_rows, ignore_index=True).sort_values(["bucket", "symbol"])
    symbols["symbol"] = symbols["symbol"].astype("str")
    return {
        "market": market.reset_index(drop=True),
        "pairs": pairs.reset_index(drop=True),
        "symbols": symbols.reset_index(drop=True),
    }


def correlation_matrix(pairs: pd.DataFrame, bucket: pd.Timestamp, window: int) -> pd.DataFrame:
    """The symbol x symbol correlation matrix at ``bucket`` for ``window`` (1 on the diagonal)."""
    sel = pairs[(pairs["bucket"] == bucket) & (pairs["window"] == window)]
    syms = sorted(set(sel["symbol_a"]) | set(sel["symbol_b"]))
    m = pd.DataFrame(np.eye(len(syms)), index=syms, columns=syms)
    for a, b, c in sel[["symbol_a", "symbol_b", "correlation"]].itertuples(index=False):
        m.loc[a, b] = m.loc[b, a] = c
    return m
