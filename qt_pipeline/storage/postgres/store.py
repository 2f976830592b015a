"""``PostgresStore`` — the central store's implementation: canonical bars in PostgreSQL / Neon / TimescaleDB.

This class holds the store's state (connection config, engines, schema readiness, known partitions) and
the decisions; each responsibility lives in its own module of this package:

* engines and connection settings: :mod:`.connection` (engines come from an ``EngineRegistry``);
* schema (Alembic) and partitions: :mod:`.schema`, :mod:`.layout`;
* the COPY writer: :mod:`.writer` — binary COPY straight into ``ohlcv_bars`` when the batch's key range
  holds no rows yet, else COPY into a temp staging table + ``INSERT … ON CONFLICT DO UPDATE``; ONE
  transaction either way (no partial batch is ever visible), retried as a whole on transient errors —
  safe because it is idempotent. Daily partitions are ensured first, in their own short transaction;
* the reader: :mod:`.reader` — ``COPY (SELECT …) TO STDOUT`` CSV parsed by pyarrow;
* the cold-archive merge: :mod:`.cold_merge` — ranges the cold tier dropped are read back from Parquet;
* rejects: :mod:`.rejects`; health and pool figures: :mod:`.health`;
* retries and error translation: :func:`.errors.run_db` — every error leaves as a redacted
  :class:`StorageError` (never a password).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar

import pandas as pd
import sqlalchemy as sa

from qt_pipeline.config import Settings
from qt_pipeline.market.contract import (
    BAR_COLUMNS,
    ContractError,
    check_bar_batch,
    empty_bars,
    select_bar_columns,
    to_canonical,
)
from qt_pipeline.redaction import redact
from qt_pipeline.storage.interface import (
    SYMBOL_SUMMARY_COLUMNS,
    DataStorageInterface,
    HealthStatus,
    StorageError,
    WriteResult,
    as_utc,
)
from qt_pipeline.storage.postgres import cold_merge, reader, rejects, writer
from qt_pipeline.storage.postgres.capabilities import Capabilities, detect_capabilities
from qt_pipeline.storage.postgres.connection import ConnectionConfig, EngineRegistry
from qt_pipeline.storage.postgres.errors import DB_ERRORS, run_db, translate_error
from qt_pipeline.storage.postgres.health import pool_stats, server_health
from qt_pipeline.storage.postgres.layout import BARS_TABLE, ensure_partitions, table_layout
from qt_pipeline.storage.postgres.schema import check_identifier, qi, upgrade

T = TypeVar("T")

WriteMode = Literal["auto", "upsert", "append"]
NO_PARTITION = "23514"  # check_violation: no partition of a partitioned table holds the row


class PostgresStore(DataStorageInterface):
    """Canonical OHLCV bars in PostgreSQL (Neon / TimescaleDB where present). See the module docstring.

    Build it with :func:`qt_pipeline.storage.central.open_central` (settings, embedded fallback) or
    directly from a URL. ``engines``: a registry shared with other stores (its owner disposes it); by
    default the store owns one and :meth:`close` disposes it."""

    backend_name = "neon"

    def __init__(
        self,
        url: str,
        settings: Settings,
        *,
        schema: str | None = None,
        engines: EngineRegistry | None = None,
    ):
        self.settings = settings
        self._config = ConnectionConfig.from_url(url, settings)
        self._schema = check_identifier(schema or settings.pg_schema)
        self._engines = engines if engines is not None else EngineRegistry()
        self._owns_engines = engines is None
        self._engine: sa.Engine | None = None
        self._direct_engine: sa.Engine | None = None
        self._caps: Capabilities | None = None
        self._layout: str | None = None
        self._ready = False
        self._lock = threading.RLock()
        self._known_partition_days: set[date] = set()
        self._bars = self.qualified(BARS_TABLE)

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresStore:
        """``NEON_DATABASE_URL`` if set, else the embedded PostgreSQL (see :mod:`qt_pipeline.storage.central`)."""
        from qt_pipeline.storage.central import open_central

        return open_central(settings)

    # --- plumbing -----------------------------------------------------------------------------------
    @property
    def config(self) -> ConnectionConfig:
        return self._config

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def location(self) -> str:
        return f"{self._config.location} (schema {self._schema})"

    @property
    def engine(self) -> sa.Engine:
        """Pooled engine (queries; the Neon ``-pooler`` host)."""
        with self._lock:
            if self._engine is None:
                self._engine = self._engines.engine(self._config)
            return self._engine

    @property
    def direct_engine(self) -> sa.Engine:
        """Direct engine (DDL and bulk COPY); the pooled engine when both URLs are the same."""
        with self._lock:
            if self._direct_engine is None:
                self._direct_engine = self._engines.engine(self._config, direct=True)
            return self._direct_engine

    @property
    def capabilities(self) -> Capabilities:
        with self._lock:
            if self._caps is None:
                self._caps = self.run_db("detect server capabilities", self._detect)
            return self._caps

    def _detect(self) -> Capabilities:
        with self.engine.connect() as conn:
            caps = detect_capabilities(conn)
            conn.rollback()
        if self._config.is_neon and not caps.is_neon:
            caps = Capabilities(**{**caps.__dict__, "is_neon": True})
        return caps

    @property
    def layout(self) -> str:
        """Actual layout of ``ohlcv_bars``: ``hypertable`` or ``partitioned``."""
        self.ensure_schema()
        assert self._layout is not None
        return self._layout

    def qualified(self, table: str) -> str:
        """``"schema"."table"`` for SQL."""
        return f"{qi(self._schema)}.{qi(check_identifier(table, 'table'))}"

    def run_db(self, action: str, fn: Callable[[], T], *, attempts: int | None = None) -> T:
        """Run ``fn`` (idempotent database work, one transaction) with this store's retry policy; database
        errors come out as redacted :class:`StorageError` naming ``action`` (see :func:`.errors.run_db`)."""
        return run_db(
            action, fn, settings=self.settings, config=self._config, schema=self._schema, attempts=attempts
        )

    def ensure_schema(self) -> None:
        """Create/upgrade the schema (Alembic heads) and today's partitions. Idempotent; run on first use."""
        with self._lock:
            if self._ready:
                return
            mode = self.settings.pg_timescaledb
            self.run_db(
                f"set up the central-store schema {self._schema!r}",
                lambda: upgrade(self.direct_engine, self._schema, timescaledb=mode),
            )

            def _finish() -> str:
                with self.direct_engine.begin() as conn:
                    layout = table_layout(conn, self._schema)
                    if layout == "partitioned":
                        ensure_partitions(
                            conn,
                            self._schema,
                            [datetime.now(UTC).date()],
                            self.settings.pg_partitions_ahead_days,
                            layout=layout,
                        )
                    return layout

            self._layout = self.run_db("create the partitions ahead", _finish)
            self._ready = True

    def _ensure_partitions(self, days: Sequence[date]) -> None:
        if self._layout != "partitioned":
            return
        missing = [d for d in days if d not in self._known_partition_days]
        if not missing:
            return

        def _do() -> None:
            with self.direct_engine.begin() as conn:
                ensure_partitions(
                    conn, self._schema, missing, self.settings.pg_partitions_ahead_days, layout="partitioned"
                )

        self.run_db(f"create daily partitions for {len(missing)} day(s)", _do)
        self._known_partition_days.update(missing)

    def _with_partitions(self, action: str, days: list[date], fn: Callable[[], T]) -> T:
        """Ensure ``days``' partitions, then ``run_db(action, fn)``; when a partition known to exist was
        dropped meanwhile (the cold tier; SQLSTATE 23514), re-create it and run ``fn`` once more."""
        self._ensure_partitions(days)
        try:
            return self.run_db(action, fn)
        except StorageError as exc:
            if exc.sqlstate != NO_PARTITION or not days or self._layout != "partitioned":
                raise
            self._known_partition_days.clear()
            self._ensure_partitions(days)
            return self.run_db(action, fn)

    # --- writes -------------------------------------------------------------------------------------
    def _prepare(self, frame: pd.DataFrame, action: str) -> pd.DataFrame:
        bars = to_canonical(frame)
        check_bar_batch(bars, f"{action} to {self.location}")
        return bars

    def write_bars(self, bars: pd.DataFrame, *, mode: WriteMode = "auto") -> WriteResult:
        """Idempotent upsert of a canonical batch, atomic (one transaction), retried as a whole.

        ``mode='auto'`` copies straight into the table when the batch's key range holds no rows yet
        (checked in the same transaction; a unique violation from a concurrent writer falls back to the
        upsert), ``'upsert'`` always stages, ``'append'`` always tries the direct COPY first.
        """
        if mode not in ("auto", "upsert", "append"):
            raise ValueError(f"write_bars mode must be 'auto', 'upsert' or 'append', not {mode!r}")
        batch = self._prepare(bars, "write_bars")
        if batch.empty:
            return WriteResult(0, self.backend_name, self.location, 0.0, {"path": "noop"})
        self.ensure_schema()
        t0 = time.perf_counter()
        table = writer.bars_to_arrow(batch)
        action = f"write {len(batch)} bars to {self._schema}.{BARS_TABLE}"
        path = "upsert"
        if mode in ("auto", "append"):
            path = self._with_partitions(
                action,
                writer.day_list(batch),
                lambda: writer.copy_direct(
                    self.direct_engine, self._bars, table, batch, check_empty=(mode == "auto")
                ),
            )
        changed = None
        if path in ("upsert", "conflict"):
            changed = self._with_partitions(
                action, writer.day_list(batch), lambda: writer.upsert(self.direct_engine, self._bars, table)
            )
            path = "upsert" if path == "upsert" else "append→upsert"
        secs = time.perf_counter() - t0
        details: dict[str, Any] = {"path": path, "rows_per_s": round(len(batch) / secs) if secs else None}
        if changed is not None:
            details["rows_inserted_or_changed"] = changed
        return WriteResult(len(batch), self.backend_name, self.location, secs, details)

    def copy_bars_append(self, bars: pd.DataFrame) -> WriteResult:
        """COPY straight into ``ohlcv_bars`` (the caller knows the range is empty); on a unique violation
        the batch is upserted instead, so the result is the same as :meth:`write_bars`."""
        return self.write_bars(bars, mode="append")

    def delete_range(
        self,
        symbol: str,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> int:
        """Delete ``symbol``'s bars in ``[start, end)`` from Postgres; returns the rows deleted."""
        self.ensure_schema()
        where, params = reader.where_bars([symbol], as_utc(start), as_utc(end))
        return self.run_db(
            f"delete bars of {symbol} in [{start}, {end})",
            lambda: writer.replace_where(self.direct_engine, self._bars, where, params, None),
        )

    def replace_range(
        self,
        symbol: str,
        start: datetime | pd.Timestamp | None,
        end: datetime | pd.Timestamp | None,
        bars: pd.DataFrame,
    ) -> WriteResult:
        """Make ``symbol``'s bars in ``[start, end)`` exactly ``bars`` (delete + insert, one transaction)."""
        batch = self._prepare(bars, "replace_range")
        lo, hi = as_utc(start), as_utc(end)
        if not batch.empty:
            wrong_sym = batch["symbol"] != symbol
            outside = pd.Series(False, index=batch.index)
            if lo is not None:
                outside |= batch["timestamp"] < lo
            if hi is not None:
                outside |= batch["timestamp"] >= hi
            if wrong_sym.any() or outside.any():
                raise ContractError(
                    f"replace_range({symbol}, {start}, {end}) got {int(wrong_sym.sum())} row(s) of another "
                    f"symbol and {int(outside.sum())} row(s) outside the range; nothing was written"
                )
        self.ensure_schema()
        t0 = time.perf_counter()
        table = writer.bars_to_arrow(batch) if not batch.empty else None
        where, params = reader.where_bars([symbol], lo, hi)
        deleted = self._with_partitions(
            f"replace bars of {symbol} in [{start}, {end})",
            writer.day_list(batch) if not batch.empty else [],
            lambda: writer.replace_where(self.direct_engine, self._bars, where, params, table),
        )
        secs = time.perf_counter() - t0
        return WriteResult(
            len(batch), self.backend_name, self.location, secs, {"deleted": deleted, "path": "replace"}
        )

    # --- reads --------------------------------------------------------------------------------------
    def _cold_rows(
        self,
        conn: sa.Connection,
        symbols: Sequence[str] | None,
        lo: pd.Timestamp | None,
        hi: pd.Timestamp | None,
    ) -> pd.DataFrame | None:
        ranges = self.qualified(cold_merge.COLD_RANGES_TABLE)
        return cold_merge.cold_rows(conn, self._bars, ranges, symbols, lo, hi)

    def _read(
        self,
        symbols: Sequence[str] | None,
        start: datetime | pd.Timestamp | None,
        end: datetime | pd.Timestamp | None,
        *,
        limit: int | None = None,
        from_end: bool = False,
        columns: Sequence[str] | None = None,
        order_by_symbol: bool = False,
    ) -> pd.DataFrame:
        want = select_bar_columns(columns)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        lo, hi = as_utc(start), as_utc(end)
        if (
            (lo is not None and hi is not None and lo >= hi)
            or limit == 0
            or (symbols is not None and not symbols)
        ):
            return empty_bars()[want]
        self.ensure_schema()
        where, params = reader.where_bars(symbols, lo, hi)
        direction = "DESC" if from_end else "ASC"
        order = f'symbol, "timestamp" {direction}' if order_by_symbol else f'"timestamp" {direction}'

        def _do() -> pd.DataFrame:
            with self.engine.begin() as conn:
                cold = self._cold_rows(conn, symbols, lo, hi)
                cols = list(BAR_COLUMNS) if cold is not None else want
                q = f"SELECT {reader.select_list(cols)} FROM {self._bars} WHERE {where} ORDER BY {order}"
                if limit is not None:
                    q += f" LIMIT {int(limit)}"
                df = reader.copy_out(conn, q, params, cols)
            if cold is not None and len(cold):
                df = cold_merge.merge_bars(
                    df, cold, order_by_symbol=order_by_symbol, from_end=from_end, limit=limit
                )
            if from_end:
                df = df.iloc[::-1]
            if cold is not None or from_end:
                return to_canonical(df, columns=want)
            return df  # already canonical (parsed with the canonical types)

        return self.run_db("read bars", _do)

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
        return self._read([symbol], start, end, limit=limit, from_end=from_end, columns=columns)

    def read_range(
        self,
        symbols: Sequence[str] | None = None,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        syms = sorted(set(symbols)) if symbols is not None else None
        return self._read(syms, start, end, order_by_symbol=True)

    def symbol_days(
        self,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
        symbols: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Rows per UTC symbol-day in ``[start, end)``: ``symbol, day (datetime.date), rows (int64)``,
        sorted; archived cold-tier rows included."""
        lo, hi = as_utc(start), as_utc(end)
        if symbols is not None and not len(symbols):
            return reader.symbol_days_frame([], [], [])
        self.ensure_schema()
        where, params = reader.where_bars(list(symbols) if symbols is not None else None, lo, hi)

        def _do() -> pd.DataFrame:
            with self.engine.begin() as conn:
                counted = reader.count_symbol_days(conn, self._bars, where, params)
                cold = self._cold_rows(conn, symbols, lo, hi)
            out = cold_merge.merge_symbol_days(counted, cold)
            if out is None:
                return reader.symbol_days_frame([], [], [])
            out = out.sort_values(["symbol", "day"])
            return reader.symbol_days_frame(out["symbol"].tolist(), out["day"].tolist(), out["rows"].tolist())

        return self.run_db("count bars per symbol-day", _do)

    def list_symbols(self) -> pd.DataFrame:
        self.ensure_schema()

        def _do() -> pd.DataFrame:
            with self.engine.begin() as conn:
                rows = reader.summarise_symbols(conn, self._bars)
                cold = self._cold_rows(conn, None, None, None)
            summary = pd.DataFrame(rows, columns=list(SYMBOL_SUMMARY_COLUMNS))
            return cold_merge.merge_symbol_summary(summary, cold)

        return self.run_db("list symbols", _do)

    # --- rejects ------------------------------------------------------------------------------------
    def write_rejects(self, rejects_frame: pd.DataFrame) -> int:
        records = rejects.reject_records(rejects_frame)
        if not records:
            return 0
        self.ensure_schema()
        table = self.qualified(rejects.REJECTS_TABLE)
        return self.run_db(
            f"write {len(records)} rejects", lambda: rejects.insert_rejects(self.engine, table, records)
        )

    def read_rejects(self, source: str | None = None) -> pd.DataFrame:
        self.ensure_schema()
        table = self.qualified(rejects.REJECTS_TABLE)
        return self.run_db("read rejects", lambda: rejects.select_rejects(self.engine, table, source))

    # --- health -------------------------------------------------------------------------------------
    def health(self) -> HealthStatus:
        """Connect latency, ``SELECT 1`` latency, pool use, server/TimescaleDB facts. Never raises."""
        details: dict[str, Any] = {"schema": self._schema, "sslmode": self._config.sslmode}
        try:
            caps, measured = server_health(self._config, self.engine)
            details.update(measured)
            self._caps = self._caps or caps
            details.update(caps.as_dict())
            details.update(pool_stats(self._engine))
            return HealthStatus(
                True,
                self.backend_name,
                self.location,
                latency_ms=details["query_ms"],
                message=f"PostgreSQL {caps.server_version} reachable ({details['connect_ms']} ms to connect)",
                details=details,
            )
        except Exception as exc:  # noqa: BLE001 - health never raises
            err = (
                translate_error(exc, self._config, "health check", schema=self._schema)
                if isinstance(exc, DB_ERRORS)
                else StorageError(redact(f"health check failed: {type(exc).__name__}: {exc}"))
            )
            details.update(pool_stats(self._engine))
            return HealthStatus(False, self.backend_name, self.location, None, redact(str(err)), details)

    def forget_partitions(self, days: Iterable[date]) -> None:
        """Drop ``days`` from the cache of partitions known to exist (the cold tier dropped them), so the
        next write into one of those days creates its partition again. Other processes recover through the
        SQLSTATE 23514 retry in the write path."""
        self._known_partition_days.difference_update(days)

    def close(self) -> None:
        with self._lock:
            if self._owns_engines:
                self._engines.dispose()
            self._engine = None
            self._direct_engine = None
            self._ready = False
            self._known_partition_days.clear()

    def __repr__(self) -> str:
        return f"PostgresStore({self.location})"


__all__ = ["PostgresStore"]
