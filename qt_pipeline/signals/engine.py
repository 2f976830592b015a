"""Run both engines from the bar store: one entry point for Dagster, the benchmark and tests.

:func:`compute_signals` reads canonical bars through :class:`~qt_pipeline.storage.DataStorageInterface`
(``read_range``), so the same call gives identical output on every backend (``local``, ``sharedfs``,
``neon``, ``hybrid``). It reads ``lookback`` of history before ``start`` (the engines' warm-up and the
regime model's training window) and returns only the buckets in ``[start, end)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from qt_pipeline.signals.correlation import CorrelationParams, correlation_signals
from qt_pipeline.signals.regime import RegimeParams, regimes
from qt_pipeline.signals.rollup import bucket_of, log_returns, rollup_bars, wide

_READ_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume", "vwap", "trade_count")


@dataclass(frozen=True)
class SignalParams:
    interval: str = "1h"  # bucket of both engines (the regime model's hours are buckets)
    correlation: CorrelationParams = field(default_factory=CorrelationParams)
    regime: RegimeParams = field(default_factory=RegimeParams)

    @property
    def lookback(self) -> pd.Timedelta:
        step = pd.Timedelta(self.interval)
        corr = step * (self.correlation.warmup + 1)
        reg = self.regime.lookback * (step / pd.Timedelta(hours=1))
        return max(corr, reg)


@dataclass(frozen=True)
class SignalFrames:
    market: pd.DataFrame  # bucket, avg_corr_<w>..., corr_regime, corr_regime_name, corr_break
    pairs: pd.DataFrame  # bucket, window, symbol_a, symbol_b, correlation
    symbols: pd.DataFrame  # bucket, symbol, mean_corr
    regimes: pd.DataFrame  # REGIME_COLUMNS
    rollup: pd.DataFrame  # the hourly rollup the engines ran on (only [start, end))

    def empty(self) -> bool:
        return self.regimes.empty and self.market.empty


def _clip(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    b = frame["bucket"]
    return frame[(b >= start) & (b < end)].reset_index(drop=True)


def compute_signals(
    store,
    symbols: Sequence[str] | None,
    start: pd.Timestamp | str,
    end: pd.Timestamp | str,
    params: SignalParams | None = None,
) -> SignalFrames:
    """Correlation and regime signals for the buckets in ``[start, end)`` (see the module docstring).

    ``symbols`` ``None`` = every symbol in the store. Raises ``ValueError`` with a clear message when
    fewer than two symbols have bars (correlation needs pairs).
    """
    p = params or SignalParams()
    start_ts = pd.Timestamp(start)
    end_ts = pd.Timestamp(end)
    start_ts = start_ts.tz_localize("UTC") if start_ts.tzinfo is None else start_ts.tz_convert("UTC")
    end_ts = end_ts.tz_localize("UTC") if end_ts.tzinfo is None else end_ts.tz_convert("UTC")
    # whole buckets only: read from the start of the bucket holding (start - lookback)
    read_from = bucket_of(pd.Series([start_ts - p.lookback]), p.interval).iloc[0]
    bars = store.read_range(symbols, read_from, end_ts)
    bars = bars[list(_READ_COLUMNS)]
    have = sorted(bars["symbol"].astype(str).unique()) if len(bars) else []
    if len(have) < 2:
        where = getattr(store, "location", "the bar store")
        raise ValueError(
            f"signals need bars of at least two symbols in [{read_from:%Y-%m-%d %H:%M}, {end_ts:%Y-%m-%d %H:%M}) "
            f"but {where} has {have or 'none'}; ingest (and migrate) those days first"
        )
    roll = rollup_bars(bars, p.interval)
    rets = wide(log_returns(roll), "log_return")
    corr = correlation_signals(rets, p.correlation)
    reg = regimes(roll, p.regime, corr["market"])
    return SignalFrames(
        market=_clip(corr["market"], start_ts, end_ts),
        pairs=_clip(corr["pairs"], start_ts, end_ts),
        symbols=_clip(corr["symbols"], start_ts, end_ts),
        regimes=_clip(reg, start_ts, end_ts),
        rollup=_clip(roll, start_ts, end_ts),
    )
