"""Bar rollups and log returns with the same semantics as the dbt models in ``dbt_timescale/``.

A bucket is ``date_bin(every, timestamp, 2000-01-01 00:00 UTC)`` — the bar-open time floored to a
multiple of ``every`` — so 5 min, 1 h and 1 day buckets line up with the SQL models. Per
``(symbol, bucket)``: first open, max high, min low, last close, summed volume and trade count, vwap
weighted by volume (mean vwap when the bucket traded no volume), the number of source bars, and the
realized variance (sum of squared log close-to-close returns of the source bars inside the bucket; the
first bar's return is taken from the previous bar's close). The engines read bars through the storage
interface and roll them up here, so their output is the same on every backend; a test checks this
module against the dbt tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import BAR_COLUMNS

# a rollup row: the bar's value columns (market.contract) keyed by bucket instead of timestamp
ROLLUP_COLUMNS: tuple[str, ...] = ("symbol", "bucket", *BAR_COLUMNS[2:], "bar_count", "realized_var")
ORIGIN = pd.Timestamp("2000-01-01", tz="UTC")


def bucket_of(ts: pd.Series | pd.DatetimeIndex, every: str | pd.Timedelta) -> pd.Series:
    """``date_bin(every, ts, 2000-01-01)``: each timestamp floored to its bucket start."""
    step = pd.Timedelta(every)
    t = pd.Series(pd.to_datetime(ts, utc=True)).dt.as_unit("us")
    off = (t - ORIGIN) // step
    return ORIGIN + off * step


def rollup_bars(bars: pd.DataFrame, every: str | pd.Timedelta = "1h") -> pd.DataFrame:
    """Roll canonical bars (any symbols, any order) up to ``every`` buckets; see the module docstring.

    Returns :data:`ROLLUP_COLUMNS` sorted by ``(symbol, bucket)``.
    """
    if bars.empty:
        return pd.DataFrame({c: [] for c in ROLLUP_COLUMNS}).astype(
            {"symbol": "str", "bucket": "datetime64[us, UTC]", "trade_count": "int64", "bar_count": "int64"}
        )
    df = bars.sort_values(["symbol", "timestamp"], kind="stable")
    sym = df["symbol"].astype(str).to_numpy()
    bucket = bucket_of(df["timestamp"], every).to_numpy()
    opn, high, low, close = (df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close"))
    volume = df["volume"].to_numpy(dtype=np.float64)
    vwap_src = df["vwap"].to_numpy(dtype=np.float64)
    trades = df["trade_count"].to_numpy(dtype=np.int64)
    n = len(df)
    new_sym = np.ones(n, dtype=bool)
    new_sym[1:] = sym[1:] != sym[:-1]
    starts = new_sym.copy()
    starts[1:] |= bucket[1:] != bucket[:-1]
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [n]]) - 1
    logc = np.log(close)
    ret = np.diff(logc, prepend=np.nan)
    ret[new_sym] = 0.0  # no previous close of this symbol: contributes nothing
    vol = np.add.reduceat(volume, first)
    pv = np.add.reduceat(vwap_src * volume, first)
    counts = last - first + 1
    vwap_mean = np.add.reduceat(vwap_src, first) / counts
    h, lo = np.maximum.reduceat(high, first), np.minimum.reduceat(low, first)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(vol > 0, pv / np.where(vol > 0, vol, 1.0), vwap_mean)
    out = pd.DataFrame(
        {
            "symbol": pd.array(sym[first], dtype="str"),
            "bucket": pd.to_datetime(bucket[first], utc=True).as_unit("us"),
            "open": opn[first],
            "high": h,
            "low": lo,
            "close": close[last],
            "volume": vol,
            "vwap": np.clip(vwap, lo, h),
            "trade_count": np.add.reduceat(trades, first).astype(np.int64),
            "bar_count": counts.astype(np.int64),
            "realized_var": np.add.reduceat(ret * ret, first),
        }
    )
    return out[list(ROLLUP_COLUMNS)]


def log_returns(rollup: pd.DataFrame) -> pd.DataFrame:
    """``symbol, bucket, log_return``: ``ln(close / previous close)`` per symbol (NaN for the first bucket)."""
    r = rollup.sort_values(["symbol", "bucket"], kind="stable")
    prev = r.groupby("symbol", observed=True)["close"].shift()
    out = r[["symbol", "bucket"]].copy()
    out["log_return"] = np.log(r["close"] / prev)
    return out.reset_index(drop=True)


def wide(frame: pd.DataFrame, value: str, *, index: pd.DatetimeIndex | None = None) -> pd.DataFrame:
    """A long ``symbol, bucket, <value>`` frame as a bucket x symbol table (columns sorted)."""
    w = frame.pivot(index="bucket", columns="symbol", values=value).sort_index()
    w = w[sorted(w.columns)]
    w.columns.name = None
    if index is not None:
        w = w.reindex(index)
    return w
