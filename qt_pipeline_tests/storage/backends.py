"""Backends under the storage contract test suite, and a deterministic bar-frame builder.

``BACKENDS`` maps a backend name to a factory ``(request, tmp_path) -> DataStorageInterface``. The
``store`` fixture (conftest.py) runs every contract test once per entry. A factory may pull other
fixtures through ``request.getfixturevalue`` (e.g. ``pg_url``) and must return a fresh, empty store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.market.contract import to_canonical
from qt_pipeline.storage.interface import DataStorageInterface


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> DataStorageInterface:
    from qt_pipeline.storage.duckdb_store import DuckDBStore

    return DuckDBStore(tmp_path / "contract.duckdb")


def _sharedfs(request: pytest.FixtureRequest, tmp_path: Path) -> DataStorageInterface:
    from qt_pipeline.storage.sharedfs import SharedFSStore

    return SharedFSStore(tmp_path / "sharedfs")


def _hybrid(request: pytest.FixtureRequest, tmp_path: Path) -> DataStorageInterface:
    # the hybrid store: a DuckDB cache + outbox under tmp_path in front of a fresh Postgres schema
    from qt_pipeline.storage.duckdb_store import DuckDBStore
    from qt_pipeline.storage.hybrid import HybridStore, central_settings
    from qt_pipeline.storage.outbox import Outbox
    from qt_pipeline.storage.postgres.store import PostgresStore

    settings = request.getfixturevalue("settings")
    url, schema = request.getfixturevalue("pg_schema")
    central = PostgresStore(url, central_settings(settings), schema=schema)
    local = DuckDBStore(tmp_path / "hybrid_cache.duckdb")
    return HybridStore(local, central, settings, outbox=Outbox(tmp_path / "outbox"))


def _neon(request: pytest.FixtureRequest, tmp_path: Path) -> DataStorageInterface:
    from qt_pipeline.config import Settings
    from qt_pipeline.storage.postgres.store import PostgresStore

    url, schema = request.getfixturevalue("pg_schema")  # machine's PostgreSQL, fresh schema per test
    return PostgresStore(url, Settings(QT_DATA_DIR=tmp_path / "data"), schema=schema)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], DataStorageInterface]] = {
    "local": _local,
    "sharedfs": _sharedfs,
    "neon": _neon,
    "hybrid": _hybrid,
    # other backends register here: one entry per backend name (factories above)
}


def make_bars(
    symbols: Sequence[str] = ("AAA",),
    start: str | pd.Timestamp = "2024-01-01",
    n: int = 100,
    seed: int = 0,
    freq: str = "1min",
) -> pd.DataFrame:
    """``n`` valid canonical bars per symbol from ``start`` (UTC) every ``freq``; deterministic in ``seed``.

    high >= max(open, close), low <= min(open, close), vwap in [low, high], volume >= 0, trade_count >= 0.
    """
    rng = np.random.default_rng(seed)
    ts = pd.date_range(
        pd.Timestamp(start, tz="UTC") if pd.Timestamp(start).tzinfo is None else start, periods=n, freq=freq
    )
    frames = []
    for i, sym in enumerate(symbols):
        close = 100.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
        open_ = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(rng.normal(0, 2e-3, n)) * close
        high = np.maximum(open_, close) + spread
        low = np.minimum(open_, close) - spread
        w = rng.uniform(0, 1, n)
        vwap = np.clip(low + w * (high - low), low, high)
        frames.append(
            pd.DataFrame(
                {
                    "symbol": sym,
                    "timestamp": ts,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": rng.uniform(0, 1000, n),
                    "vwap": vwap,
                    "trade_count": rng.integers(0, 500, n),
                }
            )
        )
    return to_canonical(pd.concat(frames, ignore_index=True))


def make_rejects(
    source: str = "landing/a.csv", lines: Sequence[int | None] = (2, 3), reason: str = "not_finite"
):
    """A canonical reject frame with one row per entry of ``lines`` (``None`` = file-level problem)."""
    from qt_pipeline.market.contract import to_canonical_rejects

    n = len(lines)
    return to_canonical_rejects(
        pd.DataFrame(
            {
                "source": [source] * n,
                "line": pd.array(list(lines), dtype="Int64"),
                "symbol": ["AAA"] * n,
                "timestamp": ["2024-01-01T00:00:00Z"] * n,
                "reason": [reason] * n,
                "detail": [f"detail {i}" for i in range(n)],
                "raw": ['{"open": "nan"}'] * n,
                "rejected_at": [pd.Timestamp("2024-02-01", tz="UTC")] * n,
            }
        )
    )
