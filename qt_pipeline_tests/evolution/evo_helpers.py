"""Helpers for the evolution runtime tests (GA, Ray evaluator, state stores, resume, config, job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import to_canonical

START = pd.Timestamp("2024-03-01", tz="UTC")


def synthetic_bars(
    symbol: str, n: int, *, seed: int = 7, start: pd.Timestamp = START, freq: str = "1min"
) -> pd.DataFrame:
    """A canonical bar frame: a random walk with slowly switching drift (so rules can find trends)."""
    rng = np.random.default_rng(seed)
    drift = np.repeat(rng.normal(0, 4e-4, n // 240 + 1), 240)[:n]
    r = drift + rng.normal(0, 1.5e-3, n)
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, 8e-4, n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    vol = rng.uniform(1.0, 10.0, n)
    df = pd.DataFrame(
        {
            "symbol": symbol,
            "timestamp": pd.date_range(start, periods=n, freq=freq),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": vol,
            "vwap": (high + low + close) / 3.0,
            "trade_count": rng.integers(1, 100, n),
        }
    )
    return to_canonical(df)


def write_bars(settings: Any, symbols: dict[str, int], *, seed: int = 7) -> None:
    """Write synthetic bars for ``{symbol: n_bars}`` into the local DuckDB store of ``settings``."""
    from qt_pipeline.storage import get_storage

    store = get_storage("local", settings)
    try:
        for i, (sym, n) in enumerate(symbols.items()):
            store.write_bars(synthetic_bars(sym, n, seed=seed + i))
    finally:
        store.close()


def small_config(**overrides: Any) -> dict[str, Any]:
    """A small, fast run config over ``3 days`` of minute bars starting at START: two walk-forward folds
    of 1.5 days, each 70% in sample."""
    cfg = {
        "symbols": ["BTCUSD"],
        "start": "2024-03-01",
        "end": "2024-03-04",
        "folds": 2,
        "population_size": 12,
        "generations": 4,
        "seed": 11,
        "min_bars": 100,
        "hall_of_fame_size": 5,
        "use_ray": False,
        "fitness": {"min_trades": 3, "min_trades_per_fold": 1},
    }
    cfg.update(overrides)
    return cfg


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path
