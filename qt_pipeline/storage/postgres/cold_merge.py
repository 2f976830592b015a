"""Reading back what the cold tier archived: ranges recorded in ``cold_tier_ranges`` with ``dropped_at``
set were dropped from PostgreSQL and live in Parquet files; reads merge them in. On a key present in
both, the PostgreSQL row wins (it was written after the archive).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from qt_pipeline.market.contract import BAR_DTYPES, KEY, empty_bars, to_canonical
from qt_pipeline.storage.interface import StorageError
from qt_pipeline.storage.postgres.reader import copy_out, pg_ts, select_list, where_bars

COLD_RANGES_TABLE = "cold_tier_ranges"


def _dropped_ranges(
    conn: sa.Connection, ranges_table: str, lo: pd.Timestamp | None, hi: pd.Timestamp | None
) -> list[tuple[datetime, datetime, str]]:
    parts, params = ["dropped_at IS NOT NULL"], []
    if lo is not None:
        parts.append("range_end > %s")
        params.append(pg_ts(lo))
    if hi is not None:
        parts.append("range_start < %s")
        params.append(pg_ts(hi))
    rows = conn.exec_driver_sql(
        f"SELECT range_start, range_end, location FROM {ranges_table} "
        f"WHERE {' AND '.join(parts)} ORDER BY range_start",
        tuple(params),
    ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def read_cold_file(
    location: str, symbols: Sequence[str] | None, lo: pd.Timestamp, hi: pd.Timestamp
) -> pd.DataFrame:
    """The archived bars of ``symbols`` in ``[lo, hi)`` from one cold-tier Parquet file (or directory)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(location, format="parquet")
    except (FileNotFoundError, OSError, pa.ArrowInvalid) as exc:
        raise StorageError(
            f"cold-tier file {location!r} (archived range [{lo}, {hi})) cannot be read: {exc}. The range was "
            "dropped from PostgreSQL, so restore the file from backup (or re-migrate the range from the local "
            "cache) before reading it"
        ) from None
    ts_type = dataset.schema.field("timestamp").type
    filt = (pc.field("timestamp") >= pa.scalar(pg_ts(lo), type=ts_type)) & (
        pc.field("timestamp") < pa.scalar(pg_ts(hi), type=ts_type)
    )
    if symbols is not None:
        filt = filt & pc.field("symbol").isin(list(symbols))
    table = dataset.to_table(filter=filt)
    if table.num_rows == 0:
        return empty_bars()
    return to_canonical(table.to_pandas())


def cold_rows(
    conn: sa.Connection,
    bars_table: str,
    ranges_table: str,
    symbols: Sequence[str] | None,
    lo: pd.Timestamp | None,
    hi: pd.Timestamp | None,
) -> pd.DataFrame | None:
    """Archived (dropped) rows of the cold tier in ``[lo, hi)`` whose key is not in PostgreSQL; ``None``
    when no archived range overlaps."""
    ranges = _dropped_ranges(conn, ranges_table, lo, hi)
    if not ranges:
        return None
    frames = []
    for rs, re_, location in ranges:
        a = pd.Timestamp(rs).tz_convert("UTC")
        b = pd.Timestamp(re_).tz_convert("UTC")
        frames.append(
            read_cold_file(
                location, symbols, a if lo is None else max(a, lo), b if hi is None else min(b, hi)
            )
        )
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    cold = pd.concat(frames, ignore_index=True).drop_duplicates(list(KEY), keep="last")
    # keys already back in Postgres win
    syms = sorted(cold["symbol"].unique().tolist())
    where, params = where_bars(syms, cold["timestamp"].min(), cold["timestamp"].max() + pd.Timedelta(1, "us"))
    pg_keys = copy_out(
        conn,
        f"SELECT symbol, {select_list(['timestamp'])} FROM {bars_table} WHERE {where}",
        params,
        ["symbol", "timestamp"],
    )
    if len(pg_keys):
        idx = pd.MultiIndex.from_frame(cold[list(KEY)])
        taken = pd.MultiIndex.from_frame(pg_keys[list(KEY)])
        cold = cold[~idx.isin(taken)]
    return cold.reset_index(drop=True)


def merge_bars(
    hot: pd.DataFrame, cold: pd.DataFrame, *, order_by_symbol: bool, from_end: bool, limit: int | None
) -> pd.DataFrame:
    """PostgreSQL rows plus archived rows, in the read's order, cut to ``limit``."""
    df = pd.concat([hot, cold], ignore_index=True)
    df = df.sort_values(
        ["symbol", "timestamp"] if order_by_symbol else ["timestamp"], ascending=not from_end, kind="stable"
    )
    return df.head(limit) if limit is not None else df


def merge_symbol_days(
    counted: list[tuple[str, object, int]], cold: pd.DataFrame | None
) -> pd.DataFrame | None:
    """Rows per symbol-day counted in PostgreSQL plus those of archived rows; ``None`` when both are empty."""
    out = pd.DataFrame(counted, columns=["symbol", "day", "rows"]) if counted else None
    if cold is None or not len(cold):
        return out
    extra = (
        cold.assign(day=cold["timestamp"].dt.floor("D").dt.date)
        .groupby(["symbol", "day"], sort=True)
        .size()
        .rename("rows")
        .reset_index()
    )
    if out is None:
        return extra
    return pd.concat([out, extra]).groupby(["symbol", "day"], sort=True)["rows"].sum().reset_index()


def merge_symbol_summary(summary: pd.DataFrame, cold: pd.DataFrame | None) -> pd.DataFrame:
    """``symbol, rows, first_timestamp, last_timestamp`` of PostgreSQL plus archived rows, canonical types."""
    df = summary
    if cold is not None and len(cold):
        extra = (
            cold.groupby("symbol")
            .agg(
                rows=("timestamp", "size"),
                first_timestamp=("timestamp", "min"),
                last_timestamp=("timestamp", "max"),
            )
            .reset_index()
        )
        df = pd.concat([df, extra], ignore_index=True)
        df["first_timestamp"] = pd.to_datetime(df["first_timestamp"], utc=True)
        df["last_timestamp"] = pd.to_datetime(df["last_timestamp"], utc=True)
        df = (
            df.groupby("symbol", sort=True)
            .agg(
                rows=("rows", "sum"),
                first_timestamp=("first_timestamp", "min"),
                last_timestamp=("last_timestamp", "max"),
            )
            .reset_index()
        )
    ts = BAR_DTYPES["timestamp"]
    return pd.DataFrame(
        {
            "symbol": pd.Series(df["symbol"].tolist(), dtype=BAR_DTYPES["symbol"]),
            "rows": pd.Series(df["rows"].tolist(), dtype="int64"),
            "first_timestamp": pd.Series(pd.to_datetime(df["first_timestamp"].tolist(), utc=True), dtype=ts),
            "last_timestamp": pd.Series(pd.to_datetime(df["last_timestamp"].tolist(), utc=True), dtype=ts),
        }
    )


__all__ = [
    "COLD_RANGES_TABLE",
    "cold_rows",
    "merge_bars",
    "merge_symbol_days",
    "merge_symbol_summary",
    "read_cold_file",
]
