"""The migration ledger of the central store (``migration_ledger``, created by Alembic revision
``0001_central_store``): one row per migrated symbol-day with the rows and checksum that were copied.

:mod:`qt_pipeline.storage.migration` decides *what* to copy and records it here; this module owns the
SQL. Every statement runs through the store's retry-and-translate path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import bindparam, text

from qt_pipeline.redaction import redact

if TYPE_CHECKING:
    from qt_pipeline.storage.postgres.store import PostgresStore

LEDGER_TABLE = "migration_ledger"
STATUS_DONE = "done"


class LedgerEntry(Protocol):
    """What one ledger row records (a :class:`qt_pipeline.storage.migration.MigrationStats`)."""

    @property
    def partition_key(self) -> str: ...

    symbol: str
    day: date
    rows: int
    bytes: int
    seconds: float
    checksum: int


def read_ledger(central: PostgresStore, keys: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
    """``{partition_key: (rows, checksum)}`` of completed ledger entries (all, or only ``keys``)."""
    table = central.qualified(LEDGER_TABLE)
    wanted = None if keys is None else sorted(set(keys))
    if wanted is not None and not wanted:
        return {}
    if wanted is None:
        stmt = text(f"SELECT partition_key, rows, checksum FROM {table} WHERE status = :s")
        params: dict[str, Any] = {"s": STATUS_DONE}
    else:
        stmt = text(
            f"SELECT partition_key, rows, checksum FROM {table} WHERE status = :s AND partition_key IN :keys"
        ).bindparams(bindparam("keys", expanding=True))
        params = {"s": STATUS_DONE, "keys": wanted}

    def _read() -> list[Any]:
        with central.engine.connect() as conn:
            return list(conn.execute(stmt, params).fetchall())

    rows = central.run_db(f"read {LEDGER_TABLE}", _read)
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def record_ledger(
    central: PostgresStore, entries: Sequence[LedgerEntry], *, source: str | None = None
) -> None:
    """Upsert ledger rows for migrated symbol-days (one transaction, retried on transient errors)."""
    if not entries:
        return
    table = central.qualified(LEDGER_TABLE)
    stmt = text(
        f"INSERT INTO {table} (partition_key, symbol, day, rows, checksum, bytes, seconds, status, source, "
        "migrated_at) VALUES (:k, :symbol, :day, :rows, :checksum, :bytes, :seconds, :status, :source, now()) "
        "ON CONFLICT (partition_key) DO UPDATE SET symbol = excluded.symbol, day = excluded.day, "
        "rows = excluded.rows, checksum = excluded.checksum, bytes = excluded.bytes, "
        "seconds = excluded.seconds, status = excluded.status, source = excluded.source, "
        "migrated_at = excluded.migrated_at"
    )
    params = [
        {
            "k": s.partition_key,
            "symbol": s.symbol,
            "day": s.day,
            "rows": s.rows,
            "checksum": int(s.checksum),
            "bytes": s.bytes,
            "seconds": s.seconds,
            "status": STATUS_DONE,
            "source": redact(source) if source else None,
        }
        for s in entries
    ]

    def _record() -> None:
        with central.engine.begin() as conn:
            conn.execute(stmt, params)

    central.run_db(f"record {len(params)} row(s) in {LEDGER_TABLE}", _record)


def ledger_counts(central: PostgresStore) -> dict[str, int]:
    """``{status: count}`` plus ``rows`` (sum of migrated rows) of the ledger."""
    table = central.qualified(LEDGER_TABLE)

    def _count() -> dict[str, int]:
        with central.engine.connect() as conn:
            out = {
                str(r[0]): int(r[1])
                for r in conn.execute(
                    text(f"SELECT status, count(*) FROM {table} GROUP BY status")
                ).fetchall()
            }
            out["rows"] = int(conn.execute(text(f"SELECT coalesce(sum(rows), 0) FROM {table}")).scalar_one())
        return out

    return central.run_db(f"count {LEDGER_TABLE}", _count)


__all__ = ["LEDGER_TABLE", "STATUS_DONE", "LedgerEntry", "ledger_counts", "read_ledger", "record_ledger"]
