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
    for leaf in batch.leaves():
        if len(leaf.problems):
            problems.append(leaf.problems)
        if len(leaf.frame) == 0:
            continue
        results.append(
            validate_bars(
                leaf.frame,
                source=leaf.source,
                interval=interval,
                known_symbols=known_symbols,
                source_timezone=leaf.timezone,
                line_numbers=leaf.line_numbers,
                now=now,
            )
        )
    return merge_results(results, problems)


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

        return LandingDirectorySource(
            settings.resolved_landing_dir,
            column_mapping=settings.landing_column_map,
            timezone=settings.landing_timezone,
        )
    raise ValueError(f"unknown QT_MARKET_SOURCE={settings.market_source!r}; use 'synthetic' or 'landing'")
