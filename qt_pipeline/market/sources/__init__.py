"""Market data sources and the fetch-then-validate helper the ingestion asset calls.

Callers only see :class:`MarketDataSource` / :class:`RawBatch` and :func:`ingest_batches`; a new source
(e.g. an exchange API) is a new subclass plus a branch in :func:`source_from_settings`.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

import pandas as pd

from qt_pipeline.market.sources.base import MarketDataSource, RawBatch
from qt_pipeline.market.validation import DEFAULT_INTERVAL, ValidationResult, merge_results, validate_bars

__all__ = [
    "MarketDataSource",
    "RawBatch",
    "ingest_batches",
    "source_from_settings",
    "validate_batch",
]


def validate_batch(
    batch: RawBatch,
    *,
    interval: timedelta | pd.Timedelta | str = DEFAULT_INTERVAL,
    known_symbols: Collection[str] | None = None,
    now: pd.Timestamp | None = None,
) -> ValidationResult:
    """Validate every single-source part of ``batch`` on its own (own columns, time zone and lines) and
    merge the results; duplicate keys across parts follow the same rule as within one (identical → the
    first is kept, conflicting → all rejected). File-level problems of the parts are included."""
    results = []
    problems = []
    notes: list[str] = []
    for leaf in batch.leaves():
        notes.extend(leaf.warnings)
        if len(leaf.problems):
            problems.append(leaf.problems)
        if len(leaf.frame) == 0:
            continue
        results.append(
            validate_bars(
                leaf.frame,
                source=leaf.source,
                known_symbols=known_symbols,
                source_timezone=leaf.timezone,
                line_numbers=leaf.line_numbers,
                now=now,
                **layout_options(leaf.layout, interval),
            )
        )
    return merge_results(results, problems, notes)


def layout_options(layout, interval) -> dict:
    """validate_bars keyword arguments of a landing source layout (format, calendar, derived columns,
    bounds, interval); just the interval for sources without a layout."""
    if layout is None:
        return {"interval": interval}
    from qt_pipeline.market.calendars import get_calendar

    derived = {}
    if layout.vwap in ("auto", "typical", "close"):
        derived["vwap"] = "close" if layout.vwap == "close" else "typical"
    if layout.trade_count in ("auto", "zero"):
        derived["trade_count"] = "zero"
    return {
        "interval": layout.interval or interval,
        "timestamp_format": layout.timestamp.format,
        "calendar": get_calendar(layout.calendar) if layout.calendar else None,
        "derived": derived,
        "bounds": layout.bounds,
    }


def ingest_batches(
    source: MarketDataSource,
    symbol: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    interval: timedelta | pd.Timedelta | str = DEFAULT_INTERVAL,
    known_symbols: Collection[str] | None = None,
    now: pd.Timestamp | None = None,
) -> ValidationResult:
    """Fetch ``symbol`` in ``[start, end)`` from ``source`` and validate it (see :func:`validate_batch`).

    Accepted rows outside ``[start, end)`` cannot occur: sources only return rows of the range (landing
    files may add their unplaceable rows, which validation always rejects)."""
    return validate_batch(
        source.fetch(symbol, start, end), interval=interval, known_symbols=known_symbols, now=now
    )


def source_from_settings(settings=None) -> MarketDataSource:
    """The source named by ``QT_MARKET_SOURCE`` (``synthetic`` | ``landing``), configured from settings."""
    from qt_pipeline.config import get_settings

    settings = settings or get_settings()
    if settings.market_source == "synthetic":
        from qt_pipeline.market.sources.synthetic import SyntheticMarket

        return SyntheticMarket(settings.synthetic_seed, symbols=settings.symbols, interval=settings.interval)
    if settings.market_source == "landing":
        from qt_pipeline.market.sources.landing import LandingDirectorySource

        return LandingDirectorySource.from_settings(settings)
    if settings.market_source == "exchange":
        from qt_pipeline.market.sources.exchange import ExchangeSource

        return ExchangeSource.from_settings(settings)
    raise ValueError(
        f"unknown QT_MARKET_SOURCE={settings.market_source!r}; use 'synthetic', 'landing' or 'exchange'"
    )
