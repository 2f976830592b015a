"""Align bucketed signals to bars without look-ahead.

A signal of bucket ``b`` (interval ``step``) is known once the bucket has closed, at ``b + step``. The
evolution's filters are evaluated at the close of bar ``t`` (time ``t + bar_step``), so bar ``t`` gets the
value of the latest bucket with ``b + step <= t + bar_step`` — never a bucket that is still open.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def infer_step(timestamps: np.ndarray | pd.Series) -> pd.Timedelta:
    """The bar interval: the most common difference of consecutive timestamps."""
    ts = pd.to_datetime(pd.Series(np.asarray(timestamps)), utc=True)
    d = ts.diff().dropna()
    if d.empty:
        raise ValueError("cannot infer the bar interval from fewer than two bars")
    return pd.Timedelta(d.mode().iloc[0])


def align_to_bars(
    bucket: pd.Series | np.ndarray,
    values: pd.Series | np.ndarray,
    bar_timestamps: pd.Series | np.ndarray,
    step: str | pd.Timedelta,
    *,
    bar_step: pd.Timedelta | None = None,
    fill: float | int = np.nan,
    max_age: pd.Timedelta | None = None,
) -> np.ndarray:
    """The value in force at the close of each bar (see the module docstring); ``fill`` where no bucket has
    closed yet, or where the latest closed bucket is older than ``max_age`` (default: 2 buckets)."""
    step = pd.Timedelta(step)
    bars = pd.to_datetime(pd.Series(np.asarray(bar_timestamps)), utc=True).dt.as_unit("us")
    bar_step = bar_step if bar_step is not None else infer_step(bars)
    known_at = (pd.to_datetime(pd.Series(np.asarray(bucket)), utc=True) + step).dt.as_unit("us")
    v = np.asarray(values)
    order = np.argsort(known_at.to_numpy(), kind="stable")
    k = known_at.to_numpy()[order]
    v = v[order]
    decide = (bars + bar_step).to_numpy()
    idx = np.searchsorted(k, decide, side="right") - 1
    out_dtype = np.result_type(v.dtype, np.asarray(fill).dtype) if v.dtype.kind in "iu" else np.float64
    out = np.full(len(bars), fill, dtype=out_dtype)
    ok = idx >= 0
    age_limit = np.timedelta64(max_age if max_age is not None else 2 * step)
    ok[ok] &= (decide[ok] - k[idx[ok]]) <= age_limit
    out[ok] = v[idx[ok]]
    return out
