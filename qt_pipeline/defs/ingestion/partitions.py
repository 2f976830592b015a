"""Partitions of ``raw_ohlcv``: one per (UTC day, symbol).

The daily dimension uses ``end_offset=0``: a day's partition exists once that day has *closed* (a daily
time window is complete at midnight UTC), so the newest partition is yesterday. A bar may only be stored
after it closed (validation rejects future bars), so an open day is never a partition; landing files that
touch the current day are held back by the landing sensor until the day closes.
"""

from __future__ import annotations

from datetime import date

import dagster as dg
import pandas as pd

from qt_pipeline.config import Settings, get_settings

DATE_DIM = "date"
SYMBOL_DIM = "symbol"


def raw_ohlcv_partitions(settings: Settings | None = None) -> dg.MultiPartitionsDefinition:
    settings = settings or get_settings()
    return dg.MultiPartitionsDefinition(
        {
            DATE_DIM: dg.DailyPartitionsDefinition(
                start_date=settings.partitions_start.isoformat(), end_offset=0, timezone="UTC"
            ),
            SYMBOL_DIM: dg.StaticPartitionsDefinition(list(settings.symbols)),
        }
    )


RAW_OHLCV_PARTITIONS = raw_ohlcv_partitions()


def partition_key_for(day: date | str, symbol: str) -> dg.MultiPartitionKey:
    day_s = day if isinstance(day, str) else day.isoformat()
    return dg.MultiPartitionKey({DATE_DIM: day_s, SYMBOL_DIM: symbol})


def partition_window(key: str | dg.MultiPartitionKey) -> tuple[str, pd.Timestamp, pd.Timestamp]:
    """``(symbol, start, end)`` of a raw_ohlcv partition key: the UTC day ``[start, end)``."""
    if not isinstance(key, dg.MultiPartitionKey):
        parts = str(key).split("|")
        if len(parts) != 2:
            raise ValueError(f"raw_ohlcv partition key {key!r} is not '<YYYY-MM-DD>|<SYMBOL>'")
        key = dg.MultiPartitionKey({DATE_DIM: parts[0], SYMBOL_DIM: parts[1]})
    dims = key.keys_by_dimension
    start = pd.Timestamp(dims[DATE_DIM], tz="UTC")
    return dims[SYMBOL_DIM], start, start + pd.Timedelta(days=1)


def newest_closed_day(now: pd.Timestamp | None = None) -> date:
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")
    return (now.normalize() - pd.Timedelta(days=1)).date()


def is_valid_partition(day: date, symbol: str, settings: Settings | None = None, now=None) -> bool:
    """True when ``(day, symbol)`` is a partition of raw_ohlcv (closed day >= start, known symbol)."""
    settings = settings or get_settings()
    return settings.partitions_start <= day <= newest_closed_day(now) and symbol in settings.symbols
