"""Freshness of the bars per symbol (plain Python): the newest bar of every configured symbol against the
allowed lag (``QT_FRESHNESS_MAX_LAG_H``: the daily ingestion at 00:15 UTC of the closed day, plus run time)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd


@dataclass(frozen=True)
class SymbolFreshness:
    symbol: str
    last_bar: pd.Timestamp | None
    lag_h: float | None

    def stale(self, max_lag_h: float) -> bool:
        return self.lag_h is None or self.lag_h > max_lag_h


@dataclass
class FreshnessResult:
    store: str
    max_lag_h: float
    symbols: list[SymbolFreshness]

    @property
    def stale(self) -> list[SymbolFreshness]:
        return [s for s in self.symbols if s.stale(self.max_lag_h)]

    @property
    def ok(self) -> bool:
        return not self.stale

    def describe(self) -> str:
        if self.ok:
            return f"every symbol's newest bar in the {self.store} store is within {self.max_lag_h:g} h"
        parts = [
            f"{s.symbol} (no bars)"
            if s.last_bar is None
            else f"{s.symbol} (newest {s.last_bar.isoformat()}, {s.lag_h:.1f} h old)"
            for s in self.stale
        ]
        return f"stale in the {self.store} store (allowed {self.max_lag_h:g} h): " + ", ".join(parts)

    def markdown(self) -> str:
        lines = ["| symbol | newest bar | lag (h) | fresh |", "|---|---|---|---|"]
        for s in self.symbols:
            newest = s.last_bar.isoformat() if s.last_bar is not None else "-"
            lag = f"{s.lag_h:.1f}" if s.lag_h is not None else "-"
            lines.append(f"| {s.symbol} | {newest} | {lag} | {'no' if s.stale(self.max_lag_h) else 'yes'} |")
        return "\n".join(lines)


def check_freshness(
    summary: pd.DataFrame,
    symbols: Sequence[str],
    max_lag_h: float,
    *,
    store: str,
    now: datetime | None = None,
) -> FreshnessResult:
    """``summary``: a store's ``list_symbols()`` (symbol, rows, first_timestamp, last_timestamp)."""
    now_ts = pd.Timestamp(now or datetime.now(UTC))
    last = {str(r.symbol): r.last_timestamp for r in summary.itertuples(index=False)}
    out = []
    for s in symbols:
        ts = last.get(s)
        lag = None if ts is None or pd.isna(ts) else (now_ts - pd.Timestamp(ts)) / timedelta(hours=1)
        out.append(SymbolFreshness(s, None if lag is None else pd.Timestamp(ts), lag))
    return FreshnessResult(store, max_lag_h, out)


__all__ = ["FreshnessResult", "SymbolFreshness", "check_freshness"]
