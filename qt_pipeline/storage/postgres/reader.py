"""The reader of ``ohlcv_bars``: ``COPY (SELECT …) TO STDOUT`` CSV parsed by pyarrow into canonical
frames (``extra_float_digits=3`` makes floats round-trip exactly; timestamps are selected as UTC text).

Stateless functions on an open connection; the store adds the cold-tier merge (:mod:`.cold_merge`) and
retries.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from qt_pipeline.market.contract import BAR_DTYPES, empty_bars, to_canonical
from qt_pipeline.storage.postgres.schema import qi

_ARROW_TYPES: dict[str, pa.DataType] = {
    "symbol": pa.string(),
    "timestamp": pa.timestamp("us"),  # selected AT TIME ZONE 'UTC' (naive text), re-tagged UTC
    "open": pa.float64(),
    "high": pa.float64(),
    "low": pa.float64(),
    "close": pa.float64(),
    "volume": pa.float64(),
    "vwap": pa.float64(),
    "trade_count": pa.int64(),
}


def pg_ts(t: pd.Timestamp) -> datetime:
    """A bound for PostgreSQL (microsecond resolution): rounding *up* keeps both ``>= lo`` and ``< hi``
    exact for stored (whole-microsecond) timestamps."""
    return t.ceil("us").to_pydatetime()


def where_bars(
    symbols: Sequence[str] | None, lo: pd.Timestamp | None, hi: pd.Timestamp | None
) -> tuple[str, tuple[Any, ...]]:
    """``WHERE`` clause and parameters for ``symbols`` (all if ``None``) in ``[lo, hi)``."""
    parts: list[str] = []
    params: list[Any] = []
    if symbols is not None:
        if len(symbols) == 1:
            parts.append("symbol = %s")
            params.append(symbols[0])
        else:
            parts.append("symbol = ANY(%s)")
            params.append(list(symbols))
    if lo is not None:
        parts.append('"timestamp" >= %s')
        params.append(pg_ts(lo))
    if hi is not None:
        parts.append('"timestamp" < %s')
        params.append(pg_ts(hi))
    return (" AND ".join(parts) or "TRUE"), tuple(params)


def select_list(columns: Sequence[str]) -> str:
    """The select list of bar ``columns`` (the timestamp as UTC text, which the CSV parser re-tags)."""
    return ", ".join("(\"timestamp\" AT TIME ZONE 'UTC')" if c == "timestamp" else qi(c) for c in columns)


def copy_out(
    conn: sa.Connection, query: str, params: tuple[Any, ...], columns: Sequence[str]
) -> pd.DataFrame:
    """Run ``query`` (selecting ``columns``) through ``COPY … TO STDOUT`` and parse it canonically."""
    dbapi: Any = conn.connection.dbapi_connection
    buf = io.BytesIO()
    with dbapi.cursor() as cur:
        sql = cur.mogrify(query, params).decode()
        cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", buf, size=1 << 20)
    return parse_bars_csv(buf.getvalue(), columns)


def parse_bars_csv(data: bytes, columns: Sequence[str]) -> pd.DataFrame:
    if not data:
        return empty_bars()[list(columns)]
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=list(columns), use_threads=False),
        convert_options=pacsv.ConvertOptions(
            column_types={c: _ARROW_TYPES[c] for c in columns},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    if "timestamp" in columns:
        i = table.schema.get_field_index("timestamp")
        table = table.set_column(i, "timestamp", table.column(i).cast(pa.timestamp("us", tz="UTC")))
    return to_canonical(table.to_pandas(), columns=list(columns))


def count_symbol_days(conn: sa.Connection, bars_table: str, where: str, params: tuple[Any, ...]) -> list[Any]:
    """``(symbol, day, rows)`` per UTC symbol-day matching ``where``, sorted."""
    return list(
        conn.exec_driver_sql(
            f"SELECT symbol, (\"timestamp\" AT TIME ZONE 'UTC')::date AS day, count(*) "
            f"FROM {bars_table} WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2",
            params,
        ).all()
    )


def summarise_symbols(conn: sa.Connection, bars_table: str) -> list[Any]:
    """``(symbol, rows, first_timestamp, last_timestamp)`` per stored symbol, sorted."""
    return list(
        conn.exec_driver_sql(
            f'SELECT symbol, count(*), min("timestamp"), max("timestamp") FROM {bars_table} '
            "GROUP BY symbol ORDER BY symbol"
        ).all()
    )


def symbol_days_frame(symbols: list[str], days: list[date], rows: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": pd.Series(symbols, dtype=BAR_DTYPES["symbol"]),
            "day": pd.Series(days, dtype="object"),
            "rows": pd.Series(rows, dtype="int64"),
        }
    )


__all__ = [
    "copy_out",
    "count_symbol_days",
    "parse_bars_csv",
    "pg_ts",
    "select_list",
    "summarise_symbols",
    "symbol_days_frame",
    "where_bars",
]
