"""``PostgresStore`` — the ``neon`` backend: canonical bars in PostgreSQL / Neon / TimescaleDB.

Write path (``write_bars``): the batch is encoded in PostgreSQL's binary COPY format by NumPy
(:mod:`.copy_binary`; floats travel as their exact bits) in chunks streamed into ``COPY … FROM STDIN`` on
the *direct* engine. When the
batch's key range holds no rows yet, the COPY goes straight into ``ohlcv_bars``; otherwise into a temp
staging table followed by ``INSERT … ON CONFLICT (symbol, "timestamp") DO UPDATE``. Either way it is ONE
transaction (no partial batch is ever visible) retried as a whole on transient errors — safe because it is
idempotent. Daily partitions are ensured first, in their own short transaction.

Read path: ``COPY (SELECT …) TO STDOUT`` CSV parsed by pyarrow (``extra_float_digits=3``, timestamps as
UTC). Ranges archived to the cold tier (``cold_tier_ranges`` rows with ``dropped_at`` set) are read back
from their Parquet files and merged in; on a key present in both, the Postgres row wins.

Every error leaves as a :class:`StorageError` whose message is redacted (never a password).
"""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from qt_pipeline.config import Settings
from qt_pipeline.market.contract import (
    BAR_COLUMNS,
    BAR_DTYPES,
    KEY,
    REJECT_COLUMNS,
    ContractError,
    empty_bars,
    empty_rejects,
    select_bar_columns,
    to_canonical,
    to_canonical_rejects,
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
from qt_pipeline.storage.postgres.capabilities import Capabilities, detect_capabilities
from qt_pipeline.storage.postgres.connection import ConnectionConfig, make_engine
from qt_pipeline.storage.postgres.copy_binary import BinaryCopyStream
from qt_pipeline.storage.postgres.errors import translate_error
from qt_pipeline.storage.postgres.layout import BARS_TABLE, ensure_partitions, table_layout
from qt_pipeline.storage.postgres.retry import retrying
from qt_pipeline.storage.postgres.schema import check_identifier, qi, upgrade

log = logging.getLogger("qt_pipeline.storage.postgres")

T = TypeVar("T")

DATA_COLUMNS: tuple[str, ...] = BAR_COLUMNS
_COLS_SQL = ", ".join(qi(c) for c in DATA_COLUMNS)
_UPDATE_COLS = [c for c in DATA_COLUMNS if c not in KEY]
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
_DB_ERRORS: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError,)
try:  # psycopg2 errors raised by raw cursors (copy_expert)
    import psycopg2

    _DB_ERRORS = (sa.exc.SQLAlchemyError, psycopg2.Error)
except ImportError:  # pragma: no cover
    psycopg2 = None  # type: ignore[assignment]


def _bars_to_arrow(bars: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(bars[list(DATA_COLUMNS)], preserve_index=False)


def _day_list(bars: pd.DataFrame) -> list[date]:
    days = bars["timestamp"].dt.floor("D").unique()
    return sorted(pd.Timestamp(d).date() for d in days)


class PostgresStore(DataStorageInterface):
    """Canonical OHLCV bars in PostgreSQL (Neon / TimescaleDB where present). See the module docstring."""

    backend_name = "neon"

    def __init__(self, url: str, settings: Settings, *, schema: str | None = None):
        self.settings = settings
        self._config = ConnectionConfig.from_url(url, settings)
        self._schema = check_identifier(schema or settings.pg_schema)
        self._engine: sa.Engine | None = None
        self._direct_engine: sa.Engine | None = None
        self._caps: Capabilities | None = None
        self._layout: str | None = None
        self._ready = False
        self._lock = threading.RLock()
        self._known_partition_days: set[date] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresStore:
        """``NEON_DATABASE_URL`` if set, else the embedded PostgreSQL under ``QT_DATA_DIR/postgres``."""
        url = settings.database_url
        if url is None:
            from qt_pipeline.storage.postgres.embedded import ensure_embedded_postgres

            url = ensure_embedded_postgres(settings)
        return cls(url, settings, schema=settings.pg_schema)

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
                self._engine = make_engine(self._config)
            return self._engine

    @property
    def direct_engine(self) -> sa.Engine:
        """Direct engine (DDL and bulk COPY); the pooled engine when both URLs are the same."""
        with self._lock:
            if self._direct_engine is None:
                if self._config.direct_url == self._config.url:
                    return self.engine
                self._direct_engine = make_engine(self._config, direct=True)
            return self._direct_engine

    @property
    def capabilities(self) -> Capabilities:
        with self._lock:
            if self._caps is None:
                self._caps = self._run("detect server capabilities", self._detect)
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

    def _run(self, action: str, fn: Callable[[], T], *, attempts: int | None = None) -> T:
        """Run ``fn`` with retries on transient errors; translate database errors (redacted, no cause)."""
        err: StorageError | None = None
        try:
            for attempt in retrying(self.settings, action, attempts=attempts):
                with attempt:
                    return fn()
        except StorageError:
            raise
        except _DB_ERRORS as exc:
            err = translate_error(exc, self._config, action, schema=self._schema)
        assert err is not None
        raise err from None

    def ensure_schema(self) -> None:
        """Create/upgrade the schema (Alembic heads) and today's partitions. Idempotent; run on first use."""
        with self._lock:
            if self._ready:
                return
            mode = self.settings.pg_timescaledb
            self._run(
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

            self._layout = self._run("create the partitions ahead", _finish)
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

        self._run(f"create daily partitions for {len(missing)} day(s)", _do)
        self._known_partition_days.update(missing)

    # --- validation ---------------------------------------------------------------------------------
    @staticmethod
    def _prepare(frame: pd.DataFrame) -> pd.DataFrame:
        bars = to_canonical(frame)
        if bars.empty:
            return bars
        nulls = [c for c in BAR_COLUMNS if bars[c].isna().any()]
        if nulls:
            raise ContractError(
                f"bar batch has missing values in column(s) {nulls} (e.g. row {int(bars[nulls[0]].isna().argmax())}); "
                "nothing was written — validate the input with qt_pipeline.market.validation first"
            )
        dup = bars.duplicated(list(KEY), keep=False)
        if dup.any():
            first = bars[dup].iloc[0]
            raise ContractError(
                f"bar batch has {int(dup.sum())} rows with duplicate (symbol, timestamp) keys, e.g. "
                f"({first['symbol']}, {first['timestamp']}); nothing was written — deduplicate the batch"
            )
        return bars

    # --- writes -------------------------------------------------------------------------------------
    def write_bars(
        self, bars: pd.DataFrame, *, mode: Literal["auto", "upsert", "append"] = "auto"
    ) -> WriteResult:
        """Idempotent upsert of a canonical batch, atomic (one transaction), retried as a whole.

        ``mode='auto'`` copies straight into the table when the batch's key range holds no rows yet
        (checked in the same transaction; a unique violation from a concurrent writer falls back to the
        upsert), ``'upsert'`` always stages, ``'append'`` always tries the direct COPY first.
        """
        if mode not in ("auto", "upsert", "append"):
            raise ValueError(f"write_bars mode must be 'auto', 'upsert' or 'append', not {mode!r}")
        batch = self._prepare(bars)
        if batch.empty:
            return WriteResult(0, self.backend_name, self.location, 0.0, {"path": "noop"})
        self.ensure_schema()
        t0 = time.perf_counter()
        days = _day_list(batch)
        self._ensure_partitions(days)
        table = _bars_to_arrow(batch)
        try:
            path, changed = self._write_table(table, batch, mode)
        except StorageError as exc:
            if getattr(exc, "sqlstate", None) != "23514" or self._layout != "partitioned":
                raise
            # a partition we knew of was dropped meanwhile (cold tier): re-check and write again
            self._known_partition_days.clear()
            self._ensure_partitions(days)
            path, changed = self._write_table(table, batch, mode)
        secs = time.perf_counter() - t0
        details: dict[str, Any] = {"path": path, "rows_per_s": round(len(batch) / secs) if secs else None}
        if changed is not None:
            details["rows_inserted_or_changed"] = changed
        return WriteResult(len(batch), self.backend_name, self.location, secs, details)

    def _write_table(self, table: pa.Table, batch: pd.DataFrame, mode: str) -> tuple[str, int | None]:
        action = f"write {len(batch)} bars to {self._schema}.{BARS_TABLE}"
        path = "upsert"
        if mode in ("auto", "append"):
            path = self._run(action, lambda: self._copy_direct(table, batch, check_empty=(mode == "auto")))
        changed = None
        if path in ("upsert", "conflict"):
            changed = self._run(action, lambda: self._upsert(table))
            path = "upsert" if path == "upsert" else "append→upsert"
        return path, changed

    def copy_bars_append(self, bars: pd.DataFrame) -> WriteResult:
        """COPY straight into ``ohlcv_bars`` (the caller knows the range is empty); on a unique violation
        the batch is upserted instead, so the result is the same as :meth:`write_bars`."""
        return self.write_bars(bars, mode="append")

    def _copy_in(self, conn: sa.Connection, target: str, table: pa.Table) -> int:
        dbapi = conn.connection.dbapi_connection
        with dbapi.cursor() as cur:
            stream = BinaryCopyStream(table)
            try:
                cur.copy_expert(
                    f"COPY {target} ({_COLS_SQL}) FROM STDIN WITH (FORMAT binary)", stream, size=1 << 20
                )
            finally:
                stream.close()
            return stream.bytes

    def _range_has_rows(self, conn: sa.Connection, batch: pd.DataFrame) -> bool:
        syms = sorted(batch["symbol"].unique().tolist())
        lo, hi = batch["timestamp"].min(), batch["timestamp"].max()
        return bool(
            conn.exec_driver_sql(
                f"SELECT EXISTS (SELECT 1 FROM {self.qualified(BARS_TABLE)} WHERE symbol = ANY(%s) "
                f'AND "timestamp" >= %s AND "timestamp" <= %s)',
                (syms, lo.to_pydatetime(), hi.to_pydatetime()),
            ).scalar()
        )

    def _copy_direct(self, table: pa.Table, batch: pd.DataFrame, *, check_empty: bool) -> str:
        try:
            with self.direct_engine.begin() as conn:
                if check_empty and self._range_has_rows(conn, batch):
                    return "upsert"
                self._copy_in(conn, self.qualified(BARS_TABLE), table)
            return "copy"
        except sa.exc.IntegrityError as exc:
            if getattr(exc.orig, "pgcode", None) == "23505":
                return "conflict"
            raise
        except _DB_ERRORS as exc:
            if (
                getattr(exc, "pgcode", None) == "23505"
                or getattr(getattr(exc, "orig", None), "pgcode", None) == "23505"
            ):
                return "conflict"
            raise

    def _upsert_sql(self, stage: str) -> str:
        sets = ", ".join(f"{qi(c)} = EXCLUDED.{qi(c)}" for c in _UPDATE_COLS)
        old = ", ".join(f"t.{qi(c)}" for c in _UPDATE_COLS)
        new = ", ".join(f"EXCLUDED.{qi(c)}" for c in _UPDATE_COLS)
        return (
            f"INSERT INTO {self.qualified(BARS_TABLE)} AS t ({_COLS_SQL}) SELECT {_COLS_SQL} FROM {stage} "
            f'ON CONFLICT (symbol, "timestamp") DO UPDATE SET {sets}, ingested_at = now() '
            f"WHERE ({old}) IS DISTINCT FROM ({new})"
        )

    def _create_stage(self, conn: sa.Connection) -> str:
        stage = f"qt_stage_{uuid.uuid4().hex[:12]}"
        conn.exec_driver_sql(
            f'CREATE TEMP TABLE {stage} (symbol text, "timestamp" timestamptz, open float8, high float8, '
            "low float8, close float8, volume float8, vwap float8, trade_count bigint) ON COMMIT DROP"
        )
        return stage

    def _upsert(self, table: pa.Table) -> int:
        with self.direct_engine.begin() as conn:
            stage = self._create_stage(conn)
            self._copy_in(conn, stage, table)
            return conn.exec_driver_sql(self._upsert_sql(stage)).rowcount

    def delete_range(
        self,
        symbol: str,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> int:
        """Delete ``symbol``'s bars in ``[start, end)`` from Postgres; returns the rows deleted."""
        self.ensure_schema()
        where, params = self._where([symbol], as_utc(start), as_utc(end))

        def _do() -> int:
            with self.direct_engine.begin() as conn:
                return conn.exec_driver_sql(
                    f"DELETE FROM {self.qualified(BARS_TABLE)} WHERE {where}", params
                ).rowcount

        return self._run(f"delete bars of {symbol} in [{start}, {end})", _do)

    def replace_range(
        self,
        symbol: str,
        start: datetime | pd.Timestamp | None,
        end: datetime | pd.Timestamp | None,
        bars: pd.DataFrame,
    ) -> WriteResult:
        """Make ``symbol``'s bars in ``[start, end)`` exactly ``bars`` (delete + insert, one transaction)."""
        batch = self._prepare(bars)
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
        if not batch.empty:
            self._ensure_partitions(_day_list(batch))
        table = _bars_to_arrow(batch) if not batch.empty else None
        where, params = self._where([symbol], lo, hi)

        def _do() -> int:
            with self.direct_engine.begin() as conn:
                deleted = conn.exec_driver_sql(
                    f"DELETE FROM {self.qualified(BARS_TABLE)} WHERE {where}", params
                ).rowcount
                if table is not None:
                    self._copy_in(conn, self.qualified(BARS_TABLE), table)
                return deleted

        action = f"replace bars of {symbol} in [{start}, {end})"
        try:
            deleted = self._run(action, _do)
        except StorageError as exc:
            if getattr(exc, "sqlstate", None) != "23514" or batch.empty or self._layout != "partitioned":
                raise
            self._known_partition_days.clear()  # a partition was dropped meanwhile: re-create, write again
            self._ensure_partitions(_day_list(batch))
            deleted = self._run(action, _do)
        secs = time.perf_counter() - t0
        return WriteResult(
            len(batch), self.backend_name, self.location, secs, {"deleted": deleted, "path": "replace"}
        )

    # --- reads --------------------------------------------------------------------------------------
    @staticmethod
    def _where(
        symbols: Sequence[str] | None, lo: pd.Timestamp | None, hi: pd.Timestamp | None
    ) -> tuple[str, tuple[Any, ...]]:
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
            params.append(_pg_ts(lo))
        if hi is not None:
            parts.append('"timestamp" < %s')
            params.append(_pg_ts(hi))
        return (" AND ".join(parts) or "TRUE"), tuple(params)

    def _copy_out(
        self, conn: sa.Connection, query: str, params: tuple[Any, ...], columns: Sequence[str]
    ) -> pd.DataFrame:
        dbapi = conn.connection.dbapi_connection
        buf = io.BytesIO()
        with dbapi.cursor() as cur:
            sql = cur.mogrify(query, params).decode()
            cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", buf, size=1 << 20)
        return _parse_bars_csv(buf.getvalue(), columns)

    def _select_bars(self, cols: Sequence[str]) -> str:
        exprs = []
        for c in cols:
            exprs.append("(\"timestamp\" AT TIME ZONE 'UTC')" if c == "timestamp" else qi(c))
        return ", ".join(exprs)

    def _cold_ranges(
        self, conn: sa.Connection, lo: pd.Timestamp | None, hi: pd.Timestamp | None
    ) -> list[tuple[datetime, datetime, str]]:
        parts, params = ["dropped_at IS NOT NULL"], []
        if lo is not None:
            parts.append("range_end > %s")
            params.append(_pg_ts(lo))
        if hi is not None:
            parts.append("range_start < %s")
            params.append(_pg_ts(hi))
        rows = conn.exec_driver_sql(
            f"SELECT range_start, range_end, location FROM {self.qualified('cold_tier_ranges')} "
            f"WHERE {' AND '.join(parts)} ORDER BY range_start",
            tuple(params),
        ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def _cold_extra(
        self,
        conn: sa.Connection,
        symbols: Sequence[str] | None,
        lo: pd.Timestamp | None,
        hi: pd.Timestamp | None,
    ) -> pd.DataFrame | None:
        """Archived (dropped) rows of the cold tier in the range whose key is not in Postgres."""
        ranges = self._cold_ranges(conn, lo, hi)
        if not ranges:
            return None
        frames = []
        for rs, re_, location in ranges:
            a = (
                pd.Timestamp(rs).tz_convert("UTC")
                if lo is None
                else max(pd.Timestamp(rs).tz_convert("UTC"), lo)
            )
            b = (
                pd.Timestamp(re_).tz_convert("UTC")
                if hi is None
                else min(pd.Timestamp(re_).tz_convert("UTC"), hi)
            )
            frames.append(_read_cold_file(location, symbols, a, b))
        frames = [f for f in frames if len(f)]
        if not frames:
            return None
        cold = pd.concat(frames, ignore_index=True).drop_duplicates(list(KEY), keep="last")
        # keys already back in Postgres win
        syms = sorted(cold["symbol"].unique().tolist())
        where, params = self._where(
            syms, cold["timestamp"].min(), cold["timestamp"].max() + pd.Timedelta(1, "us")
        )
        pg_keys = self._copy_out(
            conn,
            f"SELECT symbol, {self._select_bars(['timestamp'])} FROM {self.qualified(BARS_TABLE)} WHERE {where}",
            params,
            ["symbol", "timestamp"],
        )
        if len(pg_keys):
            idx = pd.MultiIndex.from_frame(cold[list(KEY)])
            taken = pd.MultiIndex.from_frame(pg_keys[list(KEY)])
            cold = cold[~idx.isin(taken)]
        return cold.reset_index(drop=True)

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
        where, params = self._where(symbols, lo, hi)
        direction = "DESC" if from_end else "ASC"
        order = f'symbol, "timestamp" {direction}' if order_by_symbol else f'"timestamp" {direction}'

        def _do() -> pd.DataFrame:
            with self.engine.begin() as conn:
                cold = self._cold_extra(conn, symbols, lo, hi)
                cols = list(BAR_COLUMNS) if cold is not None else want
                q = f"SELECT {self._select_bars(cols)} FROM {self.qualified(BARS_TABLE)} WHERE {where} ORDER BY {order}"
                if limit is not None:
                    q += f" LIMIT {int(limit)}"
                df = self._copy_out(conn, q, params, cols)
            if cold is not None and len(cold):
                df = pd.concat([df, cold], ignore_index=True)
                df = df.sort_values(
                    ["symbol", "timestamp"] if order_by_symbol else ["timestamp"],
                    ascending=not from_end,
                    kind="stable",
                )
                if limit is not None:
                    df = df.head(limit)
            if from_end:
                df = df.iloc[::-1]
            if cold is not None or from_end:
                return to_canonical(df, columns=want)
            return df  # already canonical (parsed with the canonical types)

        return self._run("read bars", _do)

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
            return _symbol_days_frame([], [], [])
        self.ensure_schema()
        where, params = self._where(list(symbols) if symbols is not None else None, lo, hi)

        def _do() -> pd.DataFrame:
            with self.engine.begin() as conn:
                rows = conn.exec_driver_sql(
                    f"SELECT symbol, (\"timestamp\" AT TIME ZONE 'UTC')::date AS day, count(*) "
                    f"FROM {self.qualified(BARS_TABLE)} WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2",
                    params,
                ).all()
                cold = self._cold_extra(conn, symbols, lo, hi)
            out = pd.DataFrame(rows, columns=["symbol", "day", "rows"]) if rows else None
            if cold is not None and len(cold):
                extra = (
                    cold.assign(day=cold["timestamp"].dt.floor("D").dt.date)
                    .groupby(["symbol", "day"], sort=True)
                    .size()
                    .rename("rows")
                    .reset_index()
                )
                out = (
                    extra
                    if out is None
                    else pd.concat([out, extra])
                    .groupby(["symbol", "day"], sort=True)["rows"]
                    .sum()
                    .reset_index()
                )
            if out is None:
                return _symbol_days_frame([], [], [])
            out = out.sort_values(["symbol", "day"])
            return _symbol_days_frame(out["symbol"].tolist(), out["day"].tolist(), out["rows"].tolist())

        return self._run("count bars per symbol-day", _do)

    def list_symbols(self) -> pd.DataFrame:
        self.ensure_schema()

        def _do() -> pd.DataFrame:
            with self.engine.begin() as conn:
                rows = conn.exec_driver_sql(
                    f'SELECT symbol, count(*), min("timestamp"), max("timestamp") FROM {self.qualified(BARS_TABLE)} '
                    "GROUP BY symbol ORDER BY symbol"
                ).all()
                cold = self._cold_extra(conn, None, None, None)
            df = pd.DataFrame(rows, columns=list(SYMBOL_SUMMARY_COLUMNS))
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
            return pd.DataFrame(
                {
                    "symbol": pd.Series(df["symbol"].tolist(), dtype=BAR_DTYPES["symbol"]),
                    "rows": pd.Series(df["rows"].tolist(), dtype="int64"),
                    "first_timestamp": pd.Series(
                        pd.to_datetime(df["first_timestamp"].tolist(), utc=True),
                        dtype=BAR_DTYPES["timestamp"],
                    ),
                    "last_timestamp": pd.Series(
                        pd.to_datetime(df["last_timestamp"].tolist(), utc=True), dtype=BAR_DTYPES["timestamp"]
                    ),
                }
            )

        return self._run("list symbols", _do)

    # --- rejects ------------------------------------------------------------------------------------
    def write_rejects(self, rejects: pd.DataFrame) -> int:
        rej = to_canonical_rejects(rejects)
        if rej.empty:
            return 0
        rej = rej.assign(line=rej["line"].fillna(-1)).drop_duplicates(
            ["source", "line", "reason"], keep="last"
        )
        missing = [c for c in ("source", "reason", "rejected_at") if rej[c].isna().any()]
        if missing:
            raise ContractError(
                f"reject rows have missing {missing}; every reject needs source, reason and rejected_at"
            )
        self.ensure_schema()

        def _val(v: Any) -> Any:
            return None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v

        records = [
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
        cols = ", ".join(qi(c) for c in REJECT_COLUMNS)
        sets = ", ".join(
            f"{qi(c)} = EXCLUDED.{qi(c)}" for c in ("symbol", "timestamp", "detail", "raw", "rejected_at")
        )
        sql = (
            f"INSERT INTO {self.qualified('ohlcv_rejects')} ({cols}) VALUES %s "
            f"ON CONFLICT (source, line, reason) DO UPDATE SET {sets}"
        )

        def _do() -> int:
            from psycopg2.extras import execute_values

            with self.engine.begin() as conn, conn.connection.dbapi_connection.cursor() as cur:
                execute_values(cur, sql, records, page_size=1000)
            return len(records)

        return self._run(f"write {len(records)} rejects", _do)

    def read_rejects(self, source: str | None = None) -> pd.DataFrame:
        self.ensure_schema()
        cols = ", ".join(qi(c) for c in REJECT_COLUMNS)
        where, params = ("WHERE source = %s", (source,)) if source is not None else ("", ())

        def _do() -> pd.DataFrame:
            with self.engine.begin() as conn:
                rows = conn.exec_driver_sql(
                    f"SELECT {cols} FROM {self.qualified('ohlcv_rejects')} {where} ORDER BY source, line, reason",
                    params,
                ).all()
            if not rows:
                return empty_rejects()
            df = pd.DataFrame(rows, columns=list(REJECT_COLUMNS))
            df["line"] = pd.array([None if v == -1 else v for v in df["line"]], dtype="Int64")
            return to_canonical_rejects(df)

        return self._run("read rejects", _do)

    # --- health -------------------------------------------------------------------------------------
    def health(self) -> HealthStatus:
        """Connect latency, ``SELECT 1`` latency, pool use, server/TimescaleDB facts. Never raises."""
        details: dict[str, Any] = {"schema": self._schema, "sslmode": self._config.sslmode}
        try:
            import psycopg2 as pg

            t0 = time.perf_counter()
            raw = pg.connect(self._config.dsn(), connect_timeout=self._config.connect_timeout_s)
            connect_ms = (time.perf_counter() - t0) * 1000
            raw.close()
            details["connect_ms"] = round(connect_ms, 2)
            with self.engine.connect() as conn:
                t0 = time.perf_counter()
                conn.exec_driver_sql("SELECT 1").scalar()
                query_ms = (time.perf_counter() - t0) * 1000
                details["query_ms"] = round(query_ms, 3)
                caps = detect_capabilities(conn)
                details["database_bytes"] = int(
                    conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
                )
                conn.rollback()
            if self._config.is_neon:
                caps = Capabilities(**{**caps.__dict__, "is_neon": True})
            self._caps = self._caps or caps
            details.update(caps.as_dict())
            details.update(self._pool_details())
            return HealthStatus(
                True,
                self.backend_name,
                self.location,
                latency_ms=round(query_ms, 3),
                message=f"PostgreSQL {caps.server_version} reachable ({details['connect_ms']} ms to connect)",
                details=details,
            )
        except Exception as exc:  # noqa: BLE001 - health never raises
            err = (
                translate_error(exc, self._config, "health check", schema=self._schema)
                if isinstance(exc, _DB_ERRORS)
                else StorageError(redact(f"health check failed: {type(exc).__name__}: {exc}"))
            )
            details.update(self._pool_details())
            return HealthStatus(False, self.backend_name, self.location, None, redact(str(err)), details)

    def _pool_details(self) -> dict[str, Any]:
        if self._engine is None:
            return {}
        pool = self._engine.pool
        out: dict[str, Any] = {}
        for name in ("checkedout", "size", "overflow", "checkedin"):
            fn = getattr(pool, name, None)
            if callable(fn):
                out[
                    f"pool_{name.replace('checkedout', 'checked_out').replace('checkedin', 'checked_in')}"
                ] = fn()
        return out

    def forget_partitions(self, days: Iterable[date]) -> None:
        """Drop ``days`` from the cache of partitions known to exist (the cold tier dropped them), so the
        next write into one of those days creates its partition again. Other processes recover through the
        SQLSTATE 23514 retry in the write path."""
        self._known_partition_days.difference_update(days)

    def close(self) -> None:
        with self._lock:
            for eng in (self._direct_engine, self._engine):
                if eng is not None:
                    eng.dispose()
            self._engine = None
            self._direct_engine = None
            self._ready = False
            self._known_partition_days.clear()

    def __repr__(self) -> str:
        return f"PostgresStore({self.location})"


def _pg_ts(t: pd.Timestamp) -> datetime:
    """A bound for PostgreSQL (microsecond resolution): rounding *up* keeps both ``>= lo`` and ``< hi``
    exact for stored (whole-microsecond) timestamps."""
    return t.ceil("us").to_pydatetime()


def _symbol_days_frame(symbols: list, days: list, rows: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": pd.Series(symbols, dtype=BAR_DTYPES["symbol"]),
            "day": pd.Series(days, dtype="object"),
            "rows": pd.Series(rows, dtype="int64"),
        }
    )


def _parse_bars_csv(data: bytes, columns: Sequence[str]) -> pd.DataFrame:
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
    df = table.to_pandas()
    return to_canonical(df, columns=list(columns))


def _read_cold_file(
    location: str, symbols: Sequence[str] | None, lo: pd.Timestamp, hi: pd.Timestamp
) -> pd.DataFrame:
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
    filt = (pc.field("timestamp") >= pa.scalar(_pg_ts(lo), type=ts_type)) & (
        pc.field("timestamp") < pa.scalar(_pg_ts(hi), type=ts_type)
    )
    if symbols is not None:
        filt = filt & pc.field("symbol").isin(list(symbols))
    table = dataset.to_table(filter=filt)
    if table.num_rows == 0:
        return empty_bars()
    return to_canonical(table.to_pandas())


def from_settings(settings: Settings) -> PostgresStore:
    """Factory entry (``STORAGE_BACKEND=neon``)."""
    return PostgresStore.from_settings(settings)


__all__ = ["PostgresStore", "from_settings"]
