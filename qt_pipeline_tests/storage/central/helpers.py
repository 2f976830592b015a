"""Helpers for the central-store tests: deterministic canonical bars and small SQL probes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd
import psycopg2

from qt_pipeline.market.contract import to_canonical

DAY0 = date(2024, 1, 2)


def make_bars(
    symbols: Sequence[str] = ("BTCUSD", "ETHUSD"),
    days: int = 3,
    per_day: int = 30,
    *,
    start: date = DAY0,
    seed: int = 7,
    minutes_apart: int = 1,
) -> pd.DataFrame:
    """Canonical bars: ``per_day`` bars per symbol-day for ``days`` consecutive UTC days. Prices are
    awkward floats (full 53-bit mantissas) so any float truncation would change the checksum."""
    rng = np.random.default_rng(seed)
    frames = []
    for s_i, sym in enumerate(symbols):
        for d in range(days):
            day0 = pd.Timestamp(start + timedelta(days=d), tz="UTC")
            ts = day0 + pd.to_timedelta(np.arange(per_day) * minutes_apart, unit="min")
            base = 100.0 * (s_i + 1) + rng.random(per_day) * 10 + 1 / 3
            o = base
            c = base * (1 + rng.normal(0, 1e-3, per_day))
            h = np.maximum(o, c) * (1 + rng.random(per_day) * 1e-3)
            lo = np.minimum(o, c) * (1 - rng.random(per_day) * 1e-3)
            frames.append(
                pd.DataFrame(
                    {
                        "symbol": sym,
                        "timestamp": ts,
                        "open": o,
                        "high": h,
                        "low": lo,
                        "close": c,
                        "volume": rng.random(per_day) * 1000 + 0.1,
                        "vwap": (h + lo) / 2,
                        "trade_count": rng.integers(1, 500, per_day),
                    }
                )
            )
    return to_canonical(pd.concat(frames, ignore_index=True))


def sql(url: str, query: str, params: Sequence[object] | None = None) -> list[tuple]:
    """Run one statement on a fresh autocommit connection; return its rows (if any)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def table_fingerprint(url: str, schema: str) -> tuple:
    """Row count, sum of xmin (changes on any insert/update) and max(ingested_at) of ohlcv_bars."""
    return sql(
        url,
        f'SELECT count(*), sum(xmin::text::bigint), max(ingested_at) FROM "{schema}".ohlcv_bars',
    )[0]


def sort_bars(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["symbol", "timestamp"]).reset_index(drop=True)
