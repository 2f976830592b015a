"""The ``sharedfs`` backend: a Parquet dataset on a shared mount (EFS/NFS), one file per symbol-day.

Layout under the root::

    bars/symbol=<SYM>/date=<YYYY-MM-DD>/part.parquet     zstd, sorted by timestamp, all canonical columns
    rejects/source=<SOURCE>.parquet                       one file per reject source
    .health/                                              probe files of health()

``<SYM>`` and ``<SOURCE>`` are percent-encoded (``BTC/USD`` → ``BTC%2FUSD``), the hive convention pyarrow
decodes. Each symbol-day file is written as follows: take the symbol-day's lock file
(``.part.parquet.lock`` beside it, :mod:`filelock`), read the existing file, merge the incoming rows
(upsert on timestamp: incoming wins), write the result to a unique temporary name in the same directory,
``fsync`` it, ``os.replace`` it over ``part.parquet`` and ``fsync`` the directory. Hence:

* a reader in another process/machine sees the old file or the new one, never half a file;
* writers of *different* symbol-days never touch each other's files;
* readers must open each file once and read through that handle (this module does): ``pq.read_table(path)``
  opens the path twice and can combine the footer of one version with the pages of the next;
* writers of the *same* symbol-day are serialised by the lock, so no update is lost.

**Atomicity is per symbol-day** — that is what a shared file system can offer without a coordinator. A
``write_bars`` call that spans several symbol-days validates the whole batch before writing anything,
then commits the symbol-days one after another; if it fails midway, the symbol-days already committed
stay (complete and correct — a retry of the same batch is idempotent and finishes the job).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

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
from qt_pipeline.storage.files import atomic_write_parquet
from qt_pipeline.storage.interface import (
    SYMBOL_SUMMARY_COLUMNS,
    DataStorageInterface,
    HealthStatus,
    StorageError,
    WriteResult,
    as_utc,
)

PART_NAME = "part.parquet"
LOCK_NAME = ".part.parquet.lock"
COMPRESSION = "zstd"
DEFAULT_LOCK_TIMEOUT_S = 120.0
# Bounded reads over at most this many days probe the day directories directly; longer ranges list them.
_MAX_PROBED_DAYS = 400
_TS_TYPE = pa.timestamp("us", tz="UTC")

BAR_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("vwap", pa.float64(), nullable=False),
        pa.field("trade_count", pa.int64(), nullable=False),
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("line", pa.int64()),
        pa.field("symbol", pa.string()),
        pa.field("timestamp", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("rejected_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _enc(value: str) -> str:
    return quote(value, safe="")


def _arrow_to_bars(table: pa.Table, columns: Sequence[str]) -> pd.DataFrame:
    if table.num_rows == 0:
        return empty_bars()[list(columns)]
    df = table.to_pandas()
    return to_canonical(df, columns=list(columns))


class SharedFSStore(DataStorageInterface):
    """Canonical bars as a Parquet dataset under ``root`` (a shared mount)."""

    backend_name = "sharedfs"

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S):
        self._root = Path(root).expanduser().resolve()
        self._lock_timeout_s = lock_timeout_s
        try:
            self.bars_dir.mkdir(parents=True, exist_ok=True)
            self.rejects_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the shared-FS store at {self._root}: {exc}; check QT_SHAREDFS_ROOT points "
                "at a mounted, writable directory"
            ) from None

    # --- layout ------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self._root

    @property
    def bars_dir(self) -> Path:
        return self._root / "bars"

    @property
    def rejects_dir(self) -> Path:
        return self._root / "rejects"

    @property
    def location(self) -> str:
        return str(self._root)

    def symbol_dir(self, symbol: str) -> Path:
        return self.bars_dir / f"symbol={_enc(symbol)}"

    def day_file(self, symbol: str, day: date) -> Path:
        return self.symbol_dir(symbol) / f"date={day.isoformat()}" / PART_NAME

    def _reject_file(self, source: str) -> Path:
        name = _enc(source)
        if len(name) > 200:  # keep under NAME_MAX; the source column inside the file is authoritative
            name = name[:150] + "-" + hashlib.sha256(source.encode()).hexdigest()[:16]
        return self.rejects_dir / f"source={name}.parquet"

    def _lock(self, target: Path) -> FileLock:
        return FileLock(str(target.parent / f".{target.name}.lock"), timeout=self._lock_timeout_s)

    def _days_of(self, symbol: str, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> list[date]:
        """The stored days of ``symbol`` that can hold rows in ``[lo, hi)``, ascending."""
        if lo is not None and hi is not None:
            if hi <= lo:
                return []
            first = lo.floor("D").date()
            last = (hi - pd.Timedelta(1, "us")).floor("D").date()
            n = (last - first).days + 1
            if n <= _MAX_PROBED_DAYS:
                days = [first + timedelta(days=i) for i in range(n)]
                return [d for d in days if self.day_file(symbol, d).exists()]
        sdir = self.symbol_dir(symbol)
        try:
            names = os.listdir(sdir)
        except FileNotFoundError:
            return []
        days = []
        for name in names:
            if not name.startswith("date="):
                continue
            try:
                d = date.fromisoformat(name[5:])
            except ValueError:
                continue
            if lo is not None and d < lo.floor("D").date():
                continue
            if hi is not None and d > (hi - pd.Timedelta(1, "us")).floor("D").date():
                continue
            if (sdir / name / PART_NAME).exists():
                days.append(d)
        return sorted(days)

    def _stored_symbols(self) -> list[str]:
        try:
            names = os.listdir(self.bars_dir)
        except FileNotFoundError:
            return []
        return sorted(unquote(n[7:]) for n in names if n.startswith("symbol="))

    # --- bars --------------------------------------------------------------------------------------
    def write_bars(self, bars: pd.DataFrame) -> WriteResult:
        t0 = time.perf_counter()
        where = f"write_bars to {self._root}"
        try:
            canon = to_canonical(bars)
        except ContractError as exc:
            raise ContractError(f"{where}: {exc}") from None
        check_bar_batch(canon, where)
        if canon.empty:
            return WriteResult(rows=0, backend=self.backend_name, location=self.location)
        days = canon["timestamp"].dt.floor("D")
        written = 0
        for (symbol, day), part in canon.groupby([canon["symbol"], days], sort=True):
            self._upsert_day(str(symbol), day.date(), part)
            written += 1
        return WriteResult(
            rows=len(canon),
            backend=self.backend_name,
            location=self.location,
            seconds=time.perf_counter() - t0,
            details={"symbol_days": written},
        )

    def _upsert_day(self, symbol: str, day: date, part: pd.DataFrame) -> None:
        final = self.day_file(symbol, day)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._lock(final):
                incoming = pa.Table.from_pandas(part, schema=BAR_SCHEMA, preserve_index=False)
                existing = _read_file(final, list(BAR_COLUMNS))
                if existing is not None:
                    # Incoming wins: keep existing rows whose timestamp is not in the batch.
                    keep = pc.invert(pc.is_in(existing["timestamp"], value_set=incoming["timestamp"]))
                    merged = pa.concat_tables([existing.filter(keep), incoming])
                else:
                    merged = incoming
                merged = merged.sort_by("timestamp")
                atomic_write_parquet(merged, final, compression=COMPRESSION)
        except Timeout:
            raise StorageError(
                f"timed out after {self._lock_timeout_s:.0f}s waiting for the lock of {final}; another "
                "writer holds it (or a crashed writer on a mount without lock recovery left it): retry, "
                "or remove the stale lock file if no writer is running"
            ) from None

    def _files_for(
        self, symbols: Iterable[str], lo: pd.Timestamp | None, hi: pd.Timestamp | None
    ) -> list[tuple[str, Path]]:
        return [(s, self.day_file(s, d)) for s in symbols for d in self._days_of(s, lo, hi)]

    @staticmethod
    def _row_mask(ts: pa.ChunkedArray, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> pa.ChunkedArray:
        # Stored timestamps are whole microseconds: rounding a bound up to the microsecond keeps
        # ``t >= lo`` and ``t < hi`` exact.
        mask = None
        for bound, fn in ((lo, pc.greater_equal), (hi, pc.less)):
            if bound is None:
                continue
            b = pa.scalar((bound.ceil("us") if bound.nanosecond else bound).to_pydatetime(), _TS_TYPE)
            m = fn(ts, b)
            mask = m if mask is None else pc.and_(mask, m)
        return mask

    def _scan(
        self, paths: list[Path], columns: Sequence[str], lo: pd.Timestamp | None, hi: pd.Timestamp | None
    ) -> pa.Table:
        """Read ``columns`` of the rows in ``[lo, hi)`` from ``paths`` (in order), one file handle each."""
        cols = list(columns)
        need = cols if "timestamp" in cols or (lo is None and hi is None) else [*cols, "timestamp"]
        pieces = []
        for p in paths:
            t = _read_file(p, need)
            if t is None:
                continue
            mask = self._row_mask(t["timestamp"], lo, hi) if (lo is not None or hi is not None) else None
            if mask is not None:
                t = t.filter(mask)
            pieces.append(t.select(cols))
        if not pieces:
            return BAR_SCHEMA.empty_table().select(cols)
        return pa.concat_tables(pieces)

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
        lo, hi = as_utc(start), as_utc(end)
        cols = select_bar_columns(columns)
        if limit is not None and limit < 0:
            raise ValueError(f"read_bars: limit must be >= 0, got {limit}")
        paths = [p for _, p in self._files_for([symbol], lo, hi)]
        if limit is None:
            table = self._scan(paths, cols, lo, hi)
        else:
            # Day files hold disjoint, sorted days: read from the wanted end until the limit is reached.
            order = list(reversed(paths)) if from_end else paths
            pieces: list[pa.Table] = []
            got = 0
            for p in order:
                if got >= limit:
                    break
                t = self._scan([p], cols, lo, hi)
                pieces.append(t)
                got += t.num_rows
            if from_end:
                pieces.reverse()
            table = pa.concat_tables(pieces) if pieces else BAR_SCHEMA.empty_table().select(cols)
            table = table.slice(max(0, table.num_rows - limit)) if from_end else table.slice(0, limit)
        return _arrow_to_bars(table, cols)

    def read_range(
        self,
        symbols: Sequence[str] | None = None,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        lo, hi = as_utc(start), as_utc(end)
        wanted = self._stored_symbols() if symbols is None else sorted(set(symbols))
        paths = [p for _, p in self._files_for(wanted, lo, hi)]
        # Paths come sorted by (symbol, day) and each file is sorted by timestamp: no sort needed.
        return _arrow_to_bars(self._scan(paths, BAR_COLUMNS, lo, hi), BAR_COLUMNS)

    def list_symbols(self) -> pd.DataFrame:
        """From Parquet footers only: row counts and timestamp min/max statistics (no data pages read)."""
        rows_out: list[tuple[str, int, Any, Any]] = []
        for symbol in self._stored_symbols():
            days = self._days_of(symbol, None, None)
            if not days:
                continue
            total = 0
            for d in days:
                total += pq.ParquetFile(self.day_file(symbol, d)).metadata.num_rows
            first = _ts_stat(self.day_file(symbol, days[0]), "min")
            last = _ts_stat(self.day_file(symbol, days[-1]), "max")
            if total:
                rows_out.append((symbol, total, first, last))
        return pd.DataFrame(
            {
                "symbol": pd.Series([r[0] for r in rows_out], dtype=BAR_DTYPES["symbol"]),
                "rows": pd.Series([r[1] for r in rows_out], dtype="int64"),
                "first_timestamp": pd.Series([r[2] for r in rows_out], dtype="datetime64[us, UTC]"),
                "last_timestamp": pd.Series([r[3] for r in rows_out], dtype="datetime64[us, UTC]"),
            },
            columns=list(SYMBOL_SUMMARY_COLUMNS),
        )

    # --- rejects -----------------------------------------------------------------------------------
    def write_rejects(self, rejects: pd.DataFrame) -> int:
        where = f"write_rejects to {self._root}"
        try:
            canon = to_canonical_rejects(rejects)
        except (ContractError, ValueError, TypeError) as exc:
            raise ContractError(f"{where}: {exc}") from None
        if canon.empty:
            return 0
        for col in ("source", "reason"):
            if canon[col].isna().any():
                raise ContractError(f"{where}: column {col!r} holds nulls; every reject needs a {col}")
        canon = canon.drop_duplicates(subset=["source", "line", "reason"], keep="last")
        for source, part in canon.groupby("source", sort=True):
            final = self._reject_file(str(source))
            try:
                with self._lock(final):
                    merged = part
                    if final.exists():
                        existing = _read_rejects_file(final)
                        merged = pd.concat([existing, part], ignore_index=True).drop_duplicates(
                            subset=["source", "line", "reason"], keep="last"
                        )
                    merged = merged.sort_values(["line", "reason"], na_position="first", kind="stable")
                    table = pa.Table.from_pandas(merged, schema=REJECT_SCHEMA, preserve_index=False)
                    atomic_write_parquet(table, final, compression=COMPRESSION)
            except Timeout:
                raise StorageError(
                    f"timed out after {self._lock_timeout_s:.0f}s waiting for the lock of {final}; retry"
                ) from None
        return len(canon)

    def read_rejects(self, source: str | None = None) -> pd.DataFrame:
        if source is not None:
            files = [self._reject_file(source)]
        else:
            files = sorted(self.rejects_dir.glob("source=*.parquet"))
        frames = [_read_rejects_file(f) for f in files if f.exists()]
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty_rejects()
        df = pd.concat(frames, ignore_index=True)
        if source is not None:
            df = df[df["source"] == source]
        df = df.sort_values(["source", "line", "reason"], na_position="first", kind="stable")
        return to_canonical_rejects(df)

    # --- health ------------------------------------------------------------------------------------
    def health(self) -> HealthStatus:
        probe_dir = self._root / ".health"
        probe = probe_dir / f"probe-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            t0 = time.perf_counter()
            probe_dir.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as fh:
                fh.write(b"ok")
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
            latency = (time.perf_counter() - t0) * 1000
            stat = os.statvfs(self._root)
            return HealthStatus(
                healthy=True,
                backend=self.backend_name,
                location=self.location,
                latency_ms=latency,
                message="shared mount writable",
                details={
                    "symbols": len(self._stored_symbols()),
                    "free_bytes": stat.f_bavail * stat.f_frsize,
                },
            )
        except Exception as exc:  # health never raises
            with contextlib.suppress(Exception):  # best effort cleanup
                probe.unlink(missing_ok=True)
            return HealthStatus(
                healthy=False,
                backend=self.backend_name,
                location=self.location,
                message=f"shared mount not writable: {type(exc).__name__}: {exc}",
            )

    def __repr__(self) -> str:
        return f"SharedFSStore({str(self._root)!r})"


def _read_file(path: Path, columns: list[str]) -> pa.Table | None:
    """Read ``columns`` of one Parquet file through a single open file handle, or ``None`` if absent.

    One handle matters: a writer may ``os.replace`` the path at any moment. An open handle keeps reading
    the version it opened, whereas ``pq.read_table(path)`` opens the path twice (footer, then data) and
    can mix two versions ("Unexpected end of stream") — other readers of the dataset must do the same.
    """
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with fh:
        return pq.ParquetFile(fh).read(columns=columns)


def _ts_stat(path: Path, which: str) -> pd.Timestamp:
    """min/max of the timestamp column from the footer statistics (falls back to reading the column)."""
    meta = pq.ParquetFile(path).metadata
    idx = BAR_SCHEMA.get_field_index("timestamp")
    values = []
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(idx).statistics
        if stats is None or not stats.has_min_max:
            values = None
            break
        values.append(stats.min if which == "min" else stats.max)
    if values:
        v = min(values) if which == "min" else max(values)
        return pd.Timestamp(v).tz_convert("UTC") if pd.Timestamp(v).tzinfo else pd.Timestamp(v, tz="UTC")
    table = _read_file(path, ["timestamp"])
    if table is None:
        raise FileNotFoundError(path)
    col = table["timestamp"]
    v = pc.min(col) if which == "min" else pc.max(col)
    return pd.Timestamp(v.as_py())


def _read_rejects_file(path: Path) -> pd.DataFrame:
    with open(path, "rb") as fh:
        df = pq.ParquetFile(fh).read().cast(REJECT_SCHEMA).to_pandas()
    df["line"] = df["line"].astype("Int64")
    return to_canonical_rejects(df[list(REJECT_COLUMNS)])


def from_settings(settings: Any) -> SharedFSStore:
    """The factory's entry: the store rooted at ``settings.resolved_sharedfs_root``."""
    return SharedFSStore(settings.resolved_sharedfs_root)


__all__ = ["SharedFSStore", "from_settings"]
