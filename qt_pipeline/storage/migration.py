"""DuckDB (local) → PostgreSQL (central) migration of canonical bars, with a ledger for resume.

* The unit is one **symbol-day** (UTC). Its ledger key is ``"YYYY-MM-DD|SYMBOL"`` in the central
  ``migration_ledger`` table, holding the rows and the order-independent checksum
  (:func:`qt_pipeline.storage.checksum.frame_checksum`) of what was copied.
* :func:`migrate_partition` copies one symbol-day; :func:`migrate_all` walks every local symbol-day and
  skips those whose ledger checksum equals the local checksum — a second run is a no-op and an
  interrupted run resumes where it stopped. Small symbol-days are batched into larger COPYs, and the
  next batch is read from DuckDB while the current one is being copied.
* Writes use the central store's ``write_bars``: a plain COPY straight into the table when the batch's
  range holds no rows yet (checked inside the write transaction; a unique violation falls back), else
  the idempotent COPY-to-staging + upsert. The
  ledger row is written right after the data in its own transaction: a crash between the two only
  causes a harmless re-copy of that symbol-day on the next run.

Plain Python: no Dagster imports. The central store is duck-typed against
``qt_pipeline.storage.postgres.store.PostgresStore`` (``engine``, ``qualified``, ``write_bars``,
``ensure_schema``, ``settings``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from qt_pipeline.market.contract import day_bounds
from qt_pipeline.redaction import redact
from qt_pipeline.storage.checksum import frame_checksum, symbol_day_checksums
from qt_pipeline.storage.interface import DataStorageInterface
from qt_pipeline.storage.postgres.ledger import (
    LEDGER_TABLE,
    STATUS_DONE,
    ledger_counts,
    read_ledger,
    record_ledger,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 100_000
DEFAULT_WRITERS = 2


# --- keys and day bounds -----------------------------------------------------------------------------
def partition_key(symbol: str, day: date) -> str:
    """The ledger key of a symbol-day, e.g. ``"2024-01-03|BTCUSD"``."""
    return f"{_as_date(day).isoformat()}|{symbol}"


def parse_partition_key(key: str) -> tuple[str, date]:
    """``"2024-01-03|BTCUSD"`` → ``("BTCUSD", date(2024, 1, 3))``."""
    try:
        day_s, symbol = key.split("|", 1)
        return symbol, date.fromisoformat(day_s)
    except ValueError:
        raise ValueError(f"bad migration partition key {key!r}; expected 'YYYY-MM-DD|SYMBOL'") from None


def _as_date(day: date | datetime | pd.Timestamp | str) -> date:
    if isinstance(day, pd.Timestamp | datetime):
        return day.date()
    if isinstance(day, str):
        return date.fromisoformat(day)
    return day


def _bound(ts: date | datetime | pd.Timestamp | str | None) -> pd.Timestamp | None:
    """A range bound: dates/naive strings are read as UTC midnight; tz-aware values are converted."""
    if ts is None:
        return None
    if isinstance(ts, date) and not isinstance(ts, datetime):
        return pd.Timestamp(ts).tz_localize("UTC")
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


# --- results -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MigrationStats:
    """What happened to one symbol-day."""

    symbol: str
    day: date
    rows: int
    bytes: int
    seconds: float
    rows_per_s: float
    checksum: int
    skipped: bool
    method: str = "upsert"  # the store's write path ("copy" | "upsert" | "append→upsert"), or "skipped"

    @property
    def partition_key(self) -> str:
        return partition_key(self.symbol, self.day)


@dataclass
class MigrationSummary:
    """Totals of a :func:`migrate_all` run (rows/bytes count migrated symbol-days only)."""

    migrated: int = 0
    skipped: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    batches: int = 0
    partitions: list[MigrationStats] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def total(self) -> int:
        return self.migrated + self.skipped

    def as_dict(self) -> dict[str, Any]:
        return {
            "partitions_migrated": self.migrated,
            "partitions_skipped": self.skipped,
            "rows": self.rows,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "batches": self.batches,
        }


ProgressCallback = Callable[[int, int, MigrationStats], None]
"""``progress(done_partitions, total_partitions, stats_of_the_last_one)``."""


# --- writing -----------------------------------------------------------------------------------------
def _frame_bytes(frame: pd.DataFrame) -> int:
    """Approximate payload size: the in-memory size of the canonical columns (strings counted)."""
    return int(frame.memory_usage(index=False, deep=True).sum()) if len(frame) else 0


def _write(central: Any, frame: pd.DataFrame) -> str:
    """Write a batch; the store COPYs straight into the table when the batch's range is empty (checked in
    the write transaction) and otherwise stages + upserts. Returns the path taken."""
    if not len(frame):
        return "none"
    result = central.write_bars(frame)
    return str((getattr(result, "details", None) or {}).get("path", "upsert"))


def migrate_partition(
    local: DataStorageInterface,
    central: Any,
    symbol: str,
    day: date | str,
    *,
    resume: bool = True,
) -> MigrationStats:
    """Copy one symbol-day from ``local`` into ``central`` and record it in the ledger.

    With ``resume`` (default) the copy is skipped when the ledger already holds the same rows and
    checksum for that symbol-day. Idempotent: running it twice leaves Postgres unchanged.
    """
    day = _as_date(day)
    start, end = day_bounds(day)
    t0 = time.perf_counter()
    frame = local.read_bars(symbol, start, end)
    rows, checksum = frame_checksum(frame)
    key = partition_key(symbol, day)
    if resume:
        done = read_ledger(central, [key]).get(key)
        if done == (rows, checksum):
            secs = time.perf_counter() - t0
            return MigrationStats(symbol, day, rows, 0, secs, 0.0, checksum, True, "skipped")
    method = _write(central, frame)
    secs = time.perf_counter() - t0
    stats = MigrationStats(
        symbol=symbol,
        day=day,
        rows=rows,
        bytes=_frame_bytes(frame),
        seconds=secs,
        rows_per_s=rows / secs if secs > 0 else 0.0,
        checksum=checksum,
        skipped=False,
        method=method,
    )
    record_ledger(central, [stats], source=local.location)
    return stats


# --- migrate everything ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Batch:
    symbols: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp
    days: frozenset[tuple[str, date]]  # the wanted symbol-days inside the window
    rows: int


def plan_batches(symbol_days: pd.DataFrame, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> list[_Batch]:
    """Group symbol-days (``symbol, day, rows``) into windows of consecutive days holding about
    ``batch_rows`` rows over all their symbols (at least one day per window)."""
    if symbol_days.empty:
        return []
    sd = symbol_days.assign(day=[_as_date(d) for d in symbol_days["day"]])
    per_day = sd.groupby("day", sort=True)
    batches: list[_Batch] = []
    cur: list[tuple[date, pd.DataFrame]] = []
    cur_rows = 0

    def flush() -> None:
        nonlocal cur, cur_rows
        if not cur:
            return
        parts = pd.concat([g for _, g in cur])
        first, last = cur[0][0], cur[-1][0]
        batches.append(
            _Batch(
                symbols=tuple(sorted(set(parts["symbol"]))),
                start=day_bounds(first)[0],
                end=day_bounds(last)[1],
                days=frozenset(zip(parts["symbol"], parts["day"], strict=True)),
                rows=int(parts["rows"].sum()),
            )
        )
        cur, cur_rows = [], 0

    prev: date | None = None
    for day, group in per_day:
        n = int(group["rows"].sum())
        contiguous = prev is not None and day == prev + timedelta(days=1)
        if cur and (not contiguous or cur_rows + n > batch_rows):
            flush()
        cur.append((day, group))
        cur_rows += n
        prev = day
    flush()
    return batches


def _keep_days(
    frame: pd.DataFrame, wanted: set[tuple[str, date]] | frozenset[tuple[str, date]]
) -> pd.DataFrame:
    """Rows of ``frame`` whose (symbol, UTC day) is in ``wanted`` (vectorised via a key index)."""
    keys = pd.MultiIndex.from_arrays(
        [frame["symbol"].astype(object), frame["timestamp"].dt.floor("D").dt.date]
    )
    wanted_idx = pd.MultiIndex.from_tuples(sorted(wanted)) if wanted else None
    mask = keys.isin(wanted_idx) if wanted_idx is not None else pd.Series(False, index=frame.index).to_numpy()
    return frame[mask].reset_index(drop=True)


def _read_batch(
    local: DataStorageInterface, batch: _Batch
) -> tuple[pd.DataFrame, dict[tuple[str, date], tuple[int, int]]]:
    """Read one window from the local store and compute its per-symbol-day ``(rows, checksum)``
    (runs in the prefetch thread, overlapping the previous batch's COPY)."""
    frame = local.read_range(list(batch.symbols), batch.start, batch.end)
    if len(frame) != batch.rows:  # the window holds symbol-days outside the plan (store changed meanwhile)
        frame = _keep_days(frame, batch.days)
    sums = symbol_day_checksums(frame)
    found = {(s, _as_date(d)): (int(r), int(c)) for s, d, r, c in sums.itertuples(index=False)}
    return frame, found


@dataclass
class _InFlight:
    skipped: list[MigrationStats]
    todo: list[tuple[str, date, int, int]]
    future: Future[tuple[str, float]] | None
    rows: int
    nbytes: int


def _timed_write(central: Any, frame: pd.DataFrame) -> tuple[str, float]:
    t0 = time.perf_counter()
    method = _write(central, frame)
    return method, time.perf_counter() - t0


def migrate_all(
    local: DataStorageInterface,
    central: Any,
    *,
    symbols: Sequence[str] | None = None,
    start: date | datetime | pd.Timestamp | str | None = None,
    end: date | datetime | pd.Timestamp | str | None = None,
    progress: ProgressCallback | None = None,
    resume: bool = True,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    writers: int = DEFAULT_WRITERS,
) -> MigrationSummary:
    """Migrate every local symbol-day in ``[start, end)`` (of ``symbols``, default all) to ``central``.

    Symbol-days whose ledger entry matches the local rows and checksum are skipped (``resume``).
    Returns totals; ``progress`` is called after every symbol-day (migrated or skipped), in order.
    Batches are read (and checksummed) one ahead in a background thread and written by ``writers``
    concurrent COPY streams (own pooled connections); ledger rows are recorded in batch order after
    each write committed, so an interruption never records a symbol-day that was not written.
    """
    if writers < 1:
        raise ValueError(f"migrate_all: writers must be >= 1, got {writers}")
    if batch_rows < 1:
        raise ValueError(f"migrate_all: batch_rows must be >= 1, got {batch_rows}")
    lo, hi = _bound(start), _bound(end)
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(f"migrate_all: start {lo.isoformat()} must be before end {hi.isoformat()}")
    central.ensure_schema()
    t_run = time.perf_counter()
    sd = local.symbol_days(lo, hi)  # type: ignore[attr-defined]
    if symbols is not None:
        wanted = {s.upper() for s in symbols}
        sd = sd[sd["symbol"].isin(wanted)]
    summary = MigrationSummary()
    total = len(sd)
    if total == 0:
        summary.seconds = time.perf_counter() - t_run
        return summary
    ledger = read_ledger(central) if resume else {}
    batches = plan_batches(sd, batch_rows=batch_rows)
    log.info(
        "migrating %d symbol-day(s) in %d batch(es) from %s to %s",
        total,
        len(batches),
        redact(local.location),
        redact(central.location),
    )
    done = 0

    def finish(item: _InFlight) -> None:
        """Wait for one batch's write (in order), record its ledger rows, report progress."""
        nonlocal done
        migrated: list[MigrationStats] = []
        if item.future is not None:
            method, secs = item.future.result()
            batch_total = max(item.rows, 1)
            for sym, day, rows, checksum in item.todo:
                share = rows / batch_total
                migrated.append(
                    MigrationStats(
                        symbol=sym,
                        day=day,
                        rows=rows,
                        bytes=int(item.nbytes * share),
                        seconds=secs * share,
                        rows_per_s=item.rows / secs if secs > 0 else 0.0,
                        checksum=checksum,
                        skipped=False,
                        method=method,
                    )
                )
            record_ledger(central, migrated, source=local.location)
            summary.rows += item.rows
            summary.bytes += item.nbytes
            summary.batches += 1
        summary.migrated += len(migrated)
        summary.skipped += len(item.skipped)
        for st in item.skipped + migrated:
            summary.partitions.append(st)
            done += 1
            if progress is not None:
                progress(done, total, st)

    inflight: deque[_InFlight] = deque()
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="qt-migrate-read") as reader,
        ThreadPoolExecutor(max_workers=writers, thread_name_prefix="qt-migrate-write") as pool,
    ):
        try:
            for batch, (frame, found) in _prefetch(reader, local, batches):
                skipped: list[MigrationStats] = []
                todo: list[tuple[str, date, int, int]] = []
                for sym, day in sorted(batch.days, key=lambda k: (k[1], k[0])):
                    rows, checksum = found.get((sym, day), (0, 0))
                    if resume and ledger.get(partition_key(sym, day)) == (rows, checksum):
                        skipped.append(MigrationStats(sym, day, rows, 0, 0.0, 0.0, checksum, True, "skipped"))
                    else:
                        todo.append((sym, day, rows, checksum))
                future = None
                if todo:
                    if skipped:
                        frame = _keep_days(frame, {(s, d) for s, d, _, _ in todo})
                    future = pool.submit(_timed_write, central, frame)
                inflight.append(
                    _InFlight(
                        skipped, todo, future, len(frame) if todo else 0, _frame_bytes(frame) if todo else 0
                    )
                )
                while len(inflight) > writers:
                    finish(inflight.popleft())
            while inflight:
                finish(inflight.popleft())
        except BaseException:
            for item in inflight:  # not yet started writes are dropped; running ones finish (idempotent)
                if item.future is not None:
                    item.future.cancel()
            raise
    summary.seconds = time.perf_counter() - t_run
    return summary


def _prefetch(
    pool: ThreadPoolExecutor, local: DataStorageInterface, batches: Sequence[_Batch]
) -> Iterator[tuple[_Batch, Any]]:
    """Yield ``(batch, _read_batch(...))`` while the next batch is already being read in the background."""
    pending: Future[Any] | None = None
    for i, batch in enumerate(batches):
        frame = pending.result() if pending is not None else _read_batch(local, batch)
        pending = pool.submit(_read_batch, local, batches[i + 1]) if i + 1 < len(batches) else None
        try:
            yield batch, frame
        except BaseException:
            if pending is not None:
                pending.cancel()
            raise
    return


__all__ = [
    "LEDGER_TABLE",
    "STATUS_DONE",
    "MigrationStats",
    "MigrationSummary",
    "day_bounds",
    "ledger_counts",
    "migrate_all",
    "migrate_partition",
    "parse_partition_key",
    "partition_key",
    "plan_batches",
    "read_ledger",
    "record_ledger",
]
