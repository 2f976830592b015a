"""Tests of the evolution domain. ``synthetic_market`` builds small, realistic OHLCV arrays for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qt_pipeline.evolution.backtest import MarketData

MINUTE_NS = 60_000_000_000
MINUTES_PER_YEAR = 365.25 * 24 * 60
REPO_ROOT = Path(__file__).resolve().parents[2]


def synthetic_market(n: int, seed: int = 0, *, vol: float = 2e-3, symbol: str = "TEST") -> MarketData:
    """A geometric random walk of ``n`` one-minute bars with consistent open/high/low/close."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.empty(n)
    open_[0] = 100.0
    open_[1:] = close[:-1] * np.exp(rng.normal(0.0, vol / 4, n - 1))
    wick = np.abs(rng.normal(0.0, vol / 2, (2, n)))
    high = np.maximum(open_, close) * (1.0 + wick[0])
    low = np.minimum(open_, close) * (1.0 - wick[1])
    volume = rng.uniform(1.0, 100.0, n)
    ts = 1_704_067_200 * 1_000_000_000 + np.arange(n, dtype=np.int64) * MINUTE_NS
    return MarketData(ts, open_, high, low, close, volume, symbol=symbol)
