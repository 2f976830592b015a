"""The COPY writer of ``ohlcv_bars``: binary COPY straight into the table, or into a temp staging table
followed by ``INSERT … ON CONFLICT DO UPDATE``; delete and replace of a symbol's range.

Each function is one transaction on the *direct* engine (DDL-capable, not the PgBouncer pool) and holds
no state: :class:`~qt_pipeline.storage.postgres.store.PostgresStore` decides which path to take, ensures
partitions and retries the whole transaction on transient errors (every path is idempotent).
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from qt_pipeline.market.contract import BAR_COLUMNS, KEY
from qt_pipeline.storage.postgres.copy_binary import BinaryCopyStream
from qt_pipeline.storage.postgres.errors import DB_ERRORS
from qt_pipeline.storage.postgres.schema import qi

COLS_SQL = ", ".join(qi(c) for c in BAR_COLUMNS)
_UPDATE_COLS = [c for c in BAR_COLUMNS if c not in KEY]
UNIQUE_VIOLATION = "23505"


def bars_to_arrow(bars: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(bars[list(BAR_COLUMNS)], preserve_index=False)


def day_list(bars: pd.DataFrame) -> list[date]:
    """The UTC days a canonical batch touches, sorted."""
    days = bars["timestamp"].dt.floor("D").unique()
    return sorted(pd.Timestamp(d).date() for d in days)


def copy_in(conn: sa.Connection, target: str, table: pa.Table) -> int:
    """Binary ``COPY target FROM STDIN`` of ``table``'s bar columns; returns the bytes streamed."""
    dbapi: Any = conn.connection.dbapi_connection
    with dbapi.cursor() as cur:
        stream = BinaryCopyStream(table)
        try:
            cur.copy_expert(
                f"COPY {target} ({COLS_SQL}) FROM STDIN WITH (FORMAT binary)", stream, size=1 << 20
            )
        finally:
            stream.close()
        return stream.bytes


def _range_has_rows(conn: sa.Connection, bars_table: str, batch: pd.DataFrame) -> bool:
    syms = sorted(batch["symbol"].unique().tolist())
    lo, hi = batch["timestamp"].min(), batch["timestamp"].max()
    return bool(
        conn.exec_driver_sql(
            f"SELECT EXISTS (SELECT 1 FROM {bars_table} WHERE symbol = ANY(%s) "
            f'AND "timestamp" >= %s AND "timestamp" <= %s)',
            (syms, lo.to_pydatetime(), hi.to_pydatetime()),
        ).scalar()
    )


def _is_unique_violation(exc: BaseException) -> bool:
    return UNIQUE_VIOLATION in (
        getattr(exc, "pgcode", None),
        getattr(getattr(exc, "orig", None), "pgcode", None),
    )


def copy_direct(
    engine: sa.Engine, bars_table: str, table: pa.Table, batch: pd.DataFrame, *, check_empty: bool
) -> str:
    """COPY straight into ``bars_table``: ``"copy"``; ``"upsert"`` when ``check_empty`` found rows in the
    batch's key range (nothing written); ``"conflict"`` on a unique violation (rolled back)."""
    try:
        with engine.begin() as conn:
            if check_empty and _range_has_rows(conn, bars_table, batch):
                return "upsert"
            copy_in(conn, bars_table, table)
        return "copy"
    except DB_ERRORS as exc:
        if _is_unique_violation(exc):
            return "conflict"
        raise


def _upsert_sql(bars_table: str, stage: str) -> str:
    sets = ", ".join(f"{qi(c)} = EXCLUDED.{qi(c)}" for c in _UPDATE_COLS)
    old = ", ".join(f"t.{qi(c)}" for c in _UPDATE_COLS)
    new = ", ".join(f"EXCLUDED.{qi(c)}" for c in _UPDATE_COLS)
    return (
        f"INSERT INTO {bars_table} AS t ({COLS_SQL}) SELECT {COLS_SQL} FROM {stage} "
        f'ON CONFLICT (symbol, "timestamp") DO UPDATE SET {sets}, ingested_at = now() '
        f"WHERE ({old}) IS DISTINCT FROM ({new})"
    )


def upsert(engine: sa.Engine, bars_table: str, table: pa.Table) -> int:
    """COPY into a temp staging table, then ``INSERT … ON CONFLICT DO UPDATE`` (only changed rows);
    returns the rows inserted or changed."""
    with engine.begin() as conn:
        stage = f"qt_stage_{uuid.uuid4().hex[:12]}"
        conn.exec_driver_sql(
            f'CREATE TEMP TABLE {stage} (symbol text, "timestamp" timestamptz, open float8, high float8, '
            "low float8, close float8, volume float8, vwap float8, trade_count bigint) ON COMMIT DROP"
        )
        copy_in(conn, stage, table)
        return conn.exec_driver_sql(_upsert_sql(bars_table, stage)).rowcount


def replace_where(
    engine: sa.Engine, bars_table: str, where: str, params: tuple[Any, ...], table: pa.Table | None
) -> int:
    """``DELETE … WHERE where`` then (when ``table``) COPY ``table`` in — one transaction; returns the
    rows deleted."""
    with engine.begin() as conn:
        deleted = conn.exec_driver_sql(f"DELETE FROM {bars_table} WHERE {where}", params).rowcount
        if table is not None:
            copy_in(conn, bars_table, table)
        return deleted


__all__ = ["bars_to_arrow", "copy_direct", "copy_in", "day_list", "replace_where", "upsert"]
