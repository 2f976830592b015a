"""Rejected rows in the central store (``ohlcv_rejects``): idempotent on ``(source, line, reason)``.

A missing line is stored as ``-1`` (the key column is NOT NULL) and read back as NA.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from qt_pipeline.market.contract import REJECT_COLUMNS, ContractError, empty_rejects, to_canonical_rejects
from qt_pipeline.storage.postgres.schema import qi

REJECTS_TABLE = "ohlcv_rejects"
_COLS_SQL = ", ".join(qi(c) for c in REJECT_COLUMNS)
_NO_LINE = -1


def _val(v: Any) -> Any:
    return None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v


def reject_records(rejects: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Canonical, de-duplicated rows ready for ``INSERT`` (validated: source, reason, rejected_at)."""
    rej = to_canonical_rejects(rejects)
    if rej.empty:
        return []
    rej = rej.assign(line=rej["line"].fillna(_NO_LINE)).drop_duplicates(
        ["source", "line", "reason"], keep="last"
    )
    missing = [c for c in ("source", "reason", "rejected_at") if rej[c].isna().any()]
    if missing:
        raise ContractError(
            f"reject rows have missing {missing}; every reject needs source, reason and rejected_at"
        )
    return [
        (
            r.source,
            int(r.line),
            _val(r.symbol),
            _val(r.timestamp),
            r.reason,
            _val(r.detail),
            _val(r.raw),
            r.rejected_at.to_pydatetime(),
        )
        for r in rej.itertuples(index=False)
    ]


def insert_rejects(engine: sa.Engine, rejects_table: str, records: list[tuple[Any, ...]]) -> int:
    """Upsert ``records`` (from :func:`reject_records`) in one transaction; returns how many."""
    from psycopg2.extras import execute_values

    sets = ", ".join(
        f"{qi(c)} = EXCLUDED.{qi(c)}" for c in ("symbol", "timestamp", "detail", "raw", "rejected_at")
    )
    sql = (
        f"INSERT INTO {rejects_table} ({_COLS_SQL}) VALUES %s "
        f"ON CONFLICT (source, line, reason) DO UPDATE SET {sets}"
    )
    with engine.begin() as conn:
        dbapi: Any = conn.connection.dbapi_connection
        with dbapi.cursor() as cur:
            execute_values(cur, sql, records, page_size=1000)
    return len(records)


def select_rejects(engine: sa.Engine, rejects_table: str, source: str | None) -> pd.DataFrame:
    """The stored rejects (of ``source``), canonical, ordered by ``source, line, reason``."""
    where, params = ("WHERE source = %s", (source,)) if source is not None else ("", ())
    with engine.begin() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT {_COLS_SQL} FROM {rejects_table} {where} ORDER BY source, line, reason", params
        ).all()
    if not rows:
        return empty_rejects()
    df = pd.DataFrame(rows, columns=list(REJECT_COLUMNS))
    df["line"] = pd.array([None if v == _NO_LINE else v for v in df["line"]], dtype="Int64")
    return to_canonical_rejects(df)


__all__ = ["REJECTS_TABLE", "insert_rejects", "reject_records", "select_rejects"]
