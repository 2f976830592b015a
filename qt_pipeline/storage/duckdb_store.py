"""The ``local`` backend: canonical bars in one DuckDB file (+ Parquet export).

* One long-lived connection per store object (a new connection per query costs ~48 ms against 6–10 ms
  for a query on an open one). The connection's session time zone is pinned to UTC so ``TIMESTAMPTZ``
  values can never be shifted by the machine's time zone.
* This module owns the DuckDB DDL of ``ohlcv_bars`` and ``ohlcv_rejects``. The DDL is versioned: the
  ``schema_version`` table holds one row per component (this module's component is ``"bars"``) and
  :data:`MIGRATIONS` lists the steps; a later change is a new step, never an edited ``CREATE``.
  Other modules that keep tables in the same file may register their own component row.
* Writes are ``INSERT … ON CONFLICT (symbol, timestamp) DO UPDATE`` from the registered pandas frame,
  inside one transaction: all rows of a call become visible, or none do.
* DuckDB allows one writer *process* per file. If another process holds the file,
  :class:`~qt_pipeline.storage.interface.StorageError` says which file and what to do.
* The connection is guarded by a lock, so one store object may be shared by threads (calls serialise).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from qt_pipeline.market.contract import (
    BAR_COLUMNS,
    BAR_DTYPES,
    REJECT_COLUMNS,
    ContractError,
    check_bar_batch,
    empty_bars,
    empty_rejects,
    select_bar_columns,
    to_canonical,
    to_canonical_rejects,
)
from qt_pipeline.storage.interface import (
    SYMBOL_SUMMARY_COLUMNS,
    DataStorageInterface,
    HealthStatus,
    StorageError,
    WriteResult,
    as_utc,
    as_utc_us,
)

BARS_TABLE = "ohlcv_bars"
REJECTS_TABLE = "ohlcv_rejects"
SCHEMA_COMPONENT = "bars"
NULL_LINE = -1  # how a NULL reject line is stored, so (source, line, reason) dedupes with a NULL line

# Versioned DDL of this module's tables: (version, statements). Append a step to change the schema.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"""CREATE TABLE {BARS_TABLE} (
                symbol VARCHAR NOT NULL,
                timestamp TIMESTAMPTZ NOT NULL,
                open DOUBLE NOT NULL,
                high DOUBLE NOT NULL,
                low DOUBLE NOT NULL,
                close DOUBLE NOT NULL,
                volume DOUBLE NOT NULL,
                vwap DOUBLE NOT NULL,
                trade_count BIGINT NOT NULL,
                PRIMARY KEY (symbol, timestamp)
            )""",
            f"""CREATE TABLE {REJECTS_TABLE} (
                source VARCHAR NOT NULL,
                line BIGINT NOT NULL,  -- {NULL_LINE} = no line (file-level problem)
                symbol VARCHAR,
                timestamp VARCHAR,
                reason VARCHAR NOT NULL,
                detail VARCHAR,
                raw VARCHAR,
                rejected_at TIMESTAMPTZ,
                PRIMARY KEY (source, line, reason)
            )""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_BAR_COLS_SQL = ", ".join(BAR_COLUMNS)
_BAR_UPDATE_SQL = ", ".join(f"{c} = excluded.{c}" for c in BAR_COLUMNS if c not in ("symbol", "timestamp"))
_REJECT_UPDATE_SQL = ", ".join(
    f"{c} = excluded.{c}" for c in REJECT_COLUMNS if c not in ("source", "line", "reason")
)
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<holder>.+?)(?:\. See also|$)")


def _bound(ts: datetime | pd.Timestamp | None) -> datetime | None:
    """A tz-aware UTC bound as a microsecond ``datetime`` (what DuckDB stores); see :func:`as_utc_us`."""
    t = as_utc_us(ts)
    return None if t is None else t.to_pydatetime()


def _where(symbol_sql: str, start: datetime | None, end: datetime | None, params: list[Any]) -> str:
    clauses = [symbol_sql]
    if start is not None:
        clauses.append("timestamp >= ?")
        params.append(start)
    if end is not None:
        clauses.append("timestamp < ?")
        params.append(end)
    return " AND ".join(clauses)


def _fast_canonical(df: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """DuckDB's ``.df()`` already yields canonical dtypes; only convert when something differs."""
    if all(df.dtypes.iloc[i] == BAR_DTYPES[c] for i, c in enumerate(df.columns)):
        return df
    return to_canonical(df, columns=columns)


class DuckDBStore(DataStorageInterface):
    """Canonical bars in a DuckDB file. ``read_only=True`` opens the file shared (no writes, no DDL)."""

    backend_name = "local"

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False):
        self._path = Path(path).expanduser().resolve()
        self._read_only = read_only
        self._lock = threading.RLock()
        if not read_only:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        elif not self._path.exists():
            raise StorageError(f"DuckDB file {self._path} does not exist; cannot open it read-only")
        try:
            self._con: duckdb.DuckDBPyConnection | None = duckdb.connect(str(self._path), read_only=read_only)
        except duckdb.IOException as exc:
            raise self._open_error(exc) from None
        try:
            self._con.execute("SET TimeZone = 'UTC'")
            self._migrate()
        except Exception:
            self._con.close()
            self._con = None
            raise

    # --- connection / schema -----------------------------------------------------------------------
    def _open_error(self, exc: Exception) -> StorageError:
        msg = str(exc)
        if "lock" in msg.lower():
            m = _LOCK_HOLDER.search(msg)
            holder = f" (held by {m['holder']})" if m else ""
            return StorageError(
                f"DuckDB file {self._path} is locked by another process{holder}. DuckDB allows one "
                "writer process per file: wait for or stop the other process (e.g. a running Dagster run "
                "or `dagster dev`), or point QT_DUCKDB_PATH at another file."
            )
        return StorageError(f"cannot open DuckDB file {self._path}: {msg}")

    def _migrate(self) -> None:
        con = self._require()
        if self._read_only:
            found = self._schema_version()
            if found != SCHEMA_VERSION:
                raise StorageError(
                    f"DuckDB file {self._path} has bar schema version {found}, this code needs "
                    f"{SCHEMA_VERSION}; open it once read-write to migrate it"
                )
            return
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "component VARCHAR PRIMARY KEY, version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        current = self._schema_version() or 0
        if current > SCHEMA_VERSION:
            raise StorageError(
                f"DuckDB file {self._path} has bar schema version {current}, newer than this code's "
                f"{SCHEMA_VERSION}; upgrade qt_pipeline or use another QT_DUCKDB_PATH"
            )
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            with self._transaction() as tx:
                for sql in statements:
                    tx.execute(sql)
                tx.execute(
                    "INSERT INTO schema_version VALUES (?, ?, now()) ON CONFLICT (component) "
                    "DO UPDATE SET version = excluded.version, applied_at = excluded.applied_at",
                    [SCHEMA_COMPONENT, version],
                )

    def _schema_version(self) -> int | None:
        con = self._require()
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchall()[0][0]
        if not exists:
            return None
        rows = con.execute(
            "SELECT version FROM schema_version WHERE component = ?", [SCHEMA_COMPONENT]
        ).fetchall()
        return int(rows[0][0]) if rows else None

    def _require(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StorageError(f"DuckDB store {self._path} is closed; build a new store with get_storage()")
        # DuckDB 2 refuses new work while a result is half-fetched (e.g. someone's ``.fetchone()`` on
        # ``connection``); discard such a leftover result. Costs well under a microsecond.
        self._con.abort()
        return self._con

    def _require_writable(self) -> None:
        if self._read_only:
            raise StorageError(f"DuckDB store {self._path} was opened read-only; writes are not allowed")
        if self._con is None:
            raise StorageError(f"DuckDB store {self._path} is closed; build a new store with get_storage()")

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            con = self._require()
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(con)
                raise StorageError(
                    f"DuckDB operation on {self._path} failed and was rolled back (nothing of it was "
                    f"written): {exc}"
                ) from exc
            except BaseException:
                _rollback(con)
                raise

    @property
    def path(self) -> Path:
        return self._path

    @property
    def location(self) -> str:
        return str(self._path)

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The store's DuckDB connection, for read-only advanced queries (session time zone is UTC).

        Do not write the store's tables through it. It is shared with the store: do not use it from
        another thread while the store is in use, and do not keep a half-fetched result across store
        calls (the store discards it). A ``connection.cursor()`` is a separate session: run
        ``SET TimeZone = 'UTC'`` on it first.
        """
        with self._lock:
            return self._require()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._schema_version() or 0

    # --- bars --------------------------------------------------------------------------------------
    def _prepare_bars(self, bars: pd.DataFrame) -> pd.DataFrame:
        try:
            canon = to_canonical(bars)
        except ContractError as exc:
            raise ContractError(f"write_bars to {self._path}: {exc}") from None
        # duplicate keys are checked in SQL on the registered batch (_check_unique)
        check_bar_batch(canon, f"write_bars to {self._path}", unique_keys=False)
        return canon

    def _check_unique(self, con: duckdb.DuckDBPyConnection, view: str, where: str) -> None:
        dups = con.execute(
            f"SELECT symbol, timestamp, count(*) AS n FROM {view} GROUP BY symbol, timestamp "
            f"HAVING count(*) > 1 ORDER BY symbol, timestamp LIMIT 5"
        ).fetchall()
        if dups:
            shown = ", ".join(f"({s}, {t.isoformat()}) x{n}" for s, t, n in dups)
            raise ContractError(
                f"{where}: the batch holds duplicate (symbol, timestamp) keys, e.g. {shown}; "
                "deduplicate it (validate_bars reports duplicates as rejects) — nothing was written"
            )

    @contextmanager
    def _registered(self, frame: pd.DataFrame, prefix: str) -> Iterator[str]:
        """Register ``frame`` as a uniquely named view for the duration (outside any transaction)."""
        view = f"_qt_{prefix}_{uuid.uuid4().hex}"
        with self._lock:
            con = self._require()
            con.register(view, frame)
            try:
                yield view
            finally:
                con.unregister(view)

    def _insert(self, con: duckdb.DuckDBPyConnection, view: str, expected: int) -> None:
        affected = con.execute(
            f"INSERT INTO {BARS_TABLE} ({_BAR_COLS_SQL}) SELECT {_BAR_COLS_SQL} FROM {view} "
            f"ON CONFLICT (symbol, timestamp) DO UPDATE SET {_BAR_UPDATE_SQL}"
        ).fetchall()[0][0]
        # DuckDB counts one affected row per distinct key; fewer than the batch means duplicate keys in it
        # (DuckDB would silently keep one of them). Name them; the caller's transaction rolls back.
        if affected != expected:
            self._check_unique(con, view, f"write_bars to {self._path}")
            raise StorageError(
                f"write_bars to {self._path}: DuckDB upserted {affected} rows for a batch of {expected}; "
                "nothing was written"
            )

    def write_bars(self, bars: pd.DataFrame) -> WriteResult:
        t0 = time.perf_counter()
        canon = self._prepare_bars(bars)
        self._require_writable()
        if len(canon):
            with self._registered(canon, "bars") as view, self._transaction() as con:
                self._insert(con, view, len(canon))
        return WriteResult(
            rows=len(canon),
            backend=self.backend_name,
            location=self.location,
            seconds=time.perf_counter() - t0,
        )

    def read_bars(
        self,
        symbol: str,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
        *,
        limit: int | None = None,
        from_end: bool = False,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        lo, hi = _bound(start), _bound(end)
        cols = tuple(select_bar_columns(columns))
        if limit is not None and limit < 0:
            raise ValueError(f"read_bars: limit must be >= 0, got {limit}")
        col_sql = ", ".join(cols)
        params: list[Any] = [symbol]
        where = _where("symbol = ?", lo, hi, params)
        if limit:
            with self._transaction() as con:  # one snapshot for the statistics and the read
                df = self._read_limited(con, col_sql, where, params, int(limit), from_end)
        else:
            sql = f"SELECT {col_sql} FROM {BARS_TABLE} WHERE {where} ORDER BY timestamp"
            if limit is not None:  # limit=0
                sql += " LIMIT 0"
            with self._lock:
                df = self._require().execute(sql, params).df()
        return _fast_canonical(df, cols)

    def _read_limited(
        self,
        con: duckdb.DuckDBPyConnection,
        col_sql: str,
        where: str,
        params: list[Any],
        limit: int,
        from_end: bool,
    ) -> pd.DataFrame:
        """The first/last ``limit`` rows of a range without a top-N sort over the whole range.

        ``ORDER BY timestamp DESC LIMIT n`` over a symbol's history costs ~4x a plain range read of the
        same rows (DuckDB sorts/materialises every candidate). Instead: count/min/max of the range (cheap:
        zonemaps + two columns), estimate a sub-window holding ~1.25x ``limit`` rows assuming even density,
        read it as a plain range and slice. If the window holds fewer than ``limit`` rows (uneven
        density) fall back to the exact top-N query. Either way the result is exact.
        """
        n, lo, hi = con.execute(
            f"SELECT count(*), min(timestamp), max(timestamp) FROM {BARS_TABLE} WHERE {where}", params
        ).fetchall()[0]
        if n == 0:
            return con.execute(f"SELECT {col_sql} FROM {BARS_TABLE} WHERE FALSE").df()
        if n <= limit:
            return con.execute(
                f"SELECT {col_sql} FROM {BARS_TABLE} WHERE {where} ORDER BY timestamp", params
            ).df()
        span = (hi - lo) * min(1.0, 1.25 * limit / n)
        if from_end:
            window, cut = f"{where} AND timestamp >= ?", hi - span
        else:
            window, cut = f"{where} AND timestamp <= ?", lo + span
        df = con.execute(
            f"SELECT {col_sql} FROM {BARS_TABLE} WHERE {window} ORDER BY timestamp", [*params, cut]
        ).df()
        if len(df) >= limit:
            df = df.iloc[len(df) - limit :] if from_end else df.iloc[:limit]
            return df.reset_index(drop=True)
        order = "DESC" if from_end else "ASC"
        return con.execute(
            f"SELECT {col_sql} FROM (SELECT {_BAR_COLS_SQL} FROM {BARS_TABLE} WHERE {where} "
            f"ORDER BY timestamp {order} LIMIT {limit}) ORDER BY timestamp",
            params,
        ).df()

    def read_range(
        self,
        symbols: Sequence[str] | None = None,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        lo, hi = _bound(start), _bound(end)
        if symbols is not None and not len(symbols):
            return empty_bars()
        params: list[Any] = []
        if symbols is None:
            symbol_sql = "TRUE"
        else:
            symbol_sql = "list_contains(?, symbol)"
            params.append(sorted(set(symbols)))
        where = _where(symbol_sql, lo, hi, params)
        sql = f"SELECT {_BAR_COLS_SQL} FROM {BARS_TABLE} WHERE {where} ORDER BY symbol, timestamp"
        with self._lock:
            df = self._require().execute(sql, params).df()
        return _fast_canonical(df)

    def list_symbols(self) -> pd.DataFrame:
        with self._lock:
            df = (
                self._require()
                .execute(
                    f"SELECT symbol, count(*)::BIGINT AS rows, min(timestamp) AS first_timestamp, "
                    f"max(timestamp) AS last_timestamp FROM {BARS_TABLE} GROUP BY symbol ORDER BY symbol"
                )
                .df()
            )
        return pd.DataFrame(
            {
                "symbol": df["symbol"].astype(BAR_DTYPES["symbol"]),
                "rows": df["rows"].astype("int64"),
                "first_timestamp": df["first_timestamp"].astype(BAR_DTYPES["timestamp"]),
                "last_timestamp": df["last_timestamp"].astype(BAR_DTYPES["timestamp"]),
            },
            columns=list(SYMBOL_SUMMARY_COLUMNS),
        )

    # --- helpers for later code (documented in .coord/NOTES.md) ------------------------------------
    def symbol_days(
        self,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
        symbols: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """What the store holds per UTC symbol-day in ``[start, end)`` (of ``symbols``, default all):
        ``symbol, day (datetime.date), rows (int64)``, sorted by ``(symbol, day)``."""
        lo, hi = _bound(start), _bound(end)
        params: list[Any] = []
        symbol_sql = "TRUE"
        if symbols is not None:
            symbol_sql = "list_contains(?, symbol)"
            params.append(sorted(set(symbols)))
        where = _where(symbol_sql, lo, hi, params)
        with self._lock:
            df = (
                self._require()
                .execute(
                    f"SELECT symbol, CAST(timestamp AS DATE) AS day, count(*)::BIGINT AS rows "
                    f"FROM {BARS_TABLE} WHERE {where} GROUP BY ALL ORDER BY symbol, day",
                    params,
                )
                .fetchnumpy()
            )
        return pd.DataFrame(
            {
                "symbol": pd.Series(df["symbol"], dtype=BAR_DTYPES["symbol"]),
                "day": pd.Series(
                    [d.date() for d in pd.to_datetime(df["day"])] if len(df["day"]) else [], dtype="object"
                ),
                "rows": pd.Series(df["rows"], dtype="int64"),
            }
        )

    def delete_range(
        self,
        symbol: str,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> int:
        """Delete ``symbol``'s bars in ``[start, end)`` in one transaction; returns the rows deleted."""
        lo, hi = _bound(start), _bound(end)
        self._require_writable()
        params: list[Any] = [symbol]
        where = _where("symbol = ?", lo, hi, params)
        with self._transaction() as con:
            return int(con.execute(f"DELETE FROM {BARS_TABLE} WHERE {where}", params).fetchall()[0][0])

    def replace_range(
        self,
        symbol: str,
        start: datetime | pd.Timestamp | None,
        end: datetime | pd.Timestamp | None,
        bars: pd.DataFrame,
    ) -> WriteResult:
        """Make ``symbol``'s bars in ``[start, end)`` exactly ``bars`` (delete + insert, one transaction).

        Every row of ``bars`` must be of ``symbol`` and inside the range, else nothing changes.
        """
        t0 = time.perf_counter()
        canon = self._prepare_bars(bars)
        lo, hi = as_utc(start), as_utc(end)
        where = f"replace_range({symbol!r}, {lo}, {hi}) on {self._path}"
        other = canon["symbol"] != symbol
        if other.any():
            raise ContractError(
                f"{where}: {int(other.sum())} row(s) are of another symbol, e.g. "
                f"{canon.loc[other, 'symbol'].iloc[0]!r}; pass only {symbol!r} bars — nothing was written"
            )
        outside = pd.Series(False, index=canon.index)
        if lo is not None:
            outside |= canon["timestamp"] < lo
        if hi is not None:
            outside |= canon["timestamp"] >= hi
        if outside.any():
            raise ContractError(
                f"{where}: {int(outside.sum())} row(s) lie outside [start, end), e.g. "
                f"{canon.loc[outside, 'timestamp'].iloc[0].isoformat()}; nothing was written"
            )
        self._require_writable()
        params: list[Any] = [symbol]
        sql_where = _where("symbol = ?", _bound(lo), _bound(hi), params)
        with self._registered(canon, "bars") as view, self._transaction() as con:
            deleted = int(con.execute(f"DELETE FROM {BARS_TABLE} WHERE {sql_where}", params).fetchall()[0][0])
            if len(canon):
                self._insert(con, view, len(canon))
        return WriteResult(
            rows=len(canon),
            backend=self.backend_name,
            location=self.location,
            seconds=time.perf_counter() - t0,
            details={"deleted": deleted},
        )

    def export_parquet(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Export the bars and rejects to ``<directory>/ohlcv_bars.parquet`` and
        ``<directory>/ohlcv_rejects.parquet`` (zstd; bars sorted by symbol, timestamp).

        Each file is written under a temporary name and renamed, so a reader never sees half a file.
        Returns ``{table: path}``.
        """
        out_dir = Path(directory).expanduser().resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        targets = {
            BARS_TABLE: f"SELECT {_BAR_COLS_SQL} FROM {BARS_TABLE} ORDER BY symbol, timestamp",
            REJECTS_TABLE: f"SELECT * REPLACE (CASE WHEN line = {NULL_LINE} THEN NULL ELSE line END AS line) "
            f"FROM {REJECTS_TABLE} ORDER BY source, line, reason",
        }
        written: dict[str, Path] = {}
        with self._lock:
            con = self._require()
            for table, query in targets.items():
                final = out_dir / f"{table}.parquet"
                tmp = out_dir / f".{table}.{uuid.uuid4().hex}.tmp"
                try:
                    con.execute(f"COPY ({query}) TO '{_sql_path(tmp)}' (FORMAT parquet, COMPRESSION zstd)")
                    os.replace(tmp, final)
                finally:
                    tmp.unlink(missing_ok=True)
                written[table] = final
        return written

    # --- rejects -----------------------------------------------------------------------------------
    def write_rejects(self, rejects: pd.DataFrame) -> int:
        try:
            canon = to_canonical_rejects(rejects)
        except (ContractError, ValueError, TypeError) as exc:
            raise ContractError(f"write_rejects to {self._path}: {exc}") from None
        if canon.empty:
            return 0
        _check_rejects(canon, f"write_rejects to {self._path}")
        canon["line"] = canon["line"].fillna(NULL_LINE).astype("int64")
        canon = canon.drop_duplicates(subset=["source", "line", "reason"], keep="last")
        self._require_writable()
        cols = ", ".join(REJECT_COLUMNS)
        with self._registered(canon, "rejects") as view, self._transaction() as con:
            con.execute(
                f"INSERT INTO {REJECTS_TABLE} ({cols}) SELECT {cols} FROM {view} "
                f"ON CONFLICT (source, line, reason) DO UPDATE SET {_REJECT_UPDATE_SQL}"
            )
        return len(canon)

    def read_rejects(self, source: str | None = None) -> pd.DataFrame:
        params: list[Any] = []
        where = "TRUE"
        if source is not None:
            where = "source = ?"
            params.append(source)
        with self._lock:
            df = (
                self._require()
                .execute(f"SELECT * FROM {REJECTS_TABLE} WHERE {where} ORDER BY source, line, reason", params)
                .df()
            )
        if df.empty:
            return empty_rejects()
        df["line"] = df["line"].astype("Int64").mask(df["line"] == NULL_LINE)
        return to_canonical_rejects(df)

    # --- health / lifecycle ------------------------------------------------------------------------
    def health(self) -> HealthStatus:
        try:
            t0 = time.perf_counter()
            with self._lock:
                con = self._require()
                con.execute("SELECT 1").fetchall()
                latency = (time.perf_counter() - t0) * 1000
                rows = con.execute(f"SELECT count(*) FROM {BARS_TABLE}").fetchall()[0][0]
                version = self._schema_version()
            size = self._path.stat().st_size if self._path.exists() else 0
            return HealthStatus(
                healthy=True,
                backend=self.backend_name,
                location=self.location,
                latency_ms=latency,
                message=f"DuckDB file open ({'read-only' if self._read_only else 'read-write'})",
                details={
                    "rows": int(rows),
                    "file_bytes": size,
                    "schema_version": version,
                    "read_only": self._read_only,
                },
            )
        except Exception as exc:  # health never raises
            return HealthStatus(
                healthy=False,
                backend=self.backend_name,
                location=self.location,
                message=f"{type(exc).__name__}: {exc}",
            )

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __repr__(self) -> str:
        return f"DuckDBStore({str(self._path)!r}{', read_only=True' if self._read_only else ''})"


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):  # already rolled back by DuckDB
        con.execute("ROLLBACK")


def _sql_path(p: Path) -> str:
    return str(p).replace("'", "''")


def _check_rejects(canon: pd.DataFrame, where: str) -> None:
    """Rejects need a source and a reason; a line, when given, is a non-negative position."""
    for col in ("source", "reason"):
        if canon[col].isna().any():
            raise ContractError(f"{where}: column {col!r} holds nulls; every reject needs a {col}")
    neg = canon["line"].notna() & (canon["line"].fillna(0) < 0)
    if neg.any():
        raise ContractError(
            f"{where}: 'line' must be a 1-based file line or 0-based row position, got "
            f"{int(canon.loc[neg, 'line'].iloc[0])}; use NA for file-level problems"
        )


def from_settings(settings: Any) -> DuckDBStore:
    """The factory's entry: the store at ``settings.resolved_duckdb_path``."""
    return DuckDBStore(settings.resolved_duckdb_path)


__all__ = [
    "BARS_TABLE",
    "MIGRATIONS",
    "REJECTS_TABLE",
    "SCHEMA_VERSION",
    "DuckDBStore",
    "from_settings",
]
