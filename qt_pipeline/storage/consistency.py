"""Consistency between the local DuckDB store and the central PostgreSQL store, and its repair.

* :func:`check_partition` proves (or disproves) that one symbol-day holds exactly the same rows on both
  sides: same row count and the same order-independent checksum over every column
  (:func:`qt_pipeline.storage.checksum.frame_checksum`). When they differ it computes a key-level diff:
  keys missing on either side and keys whose values differ (exact float comparison, by bits).
* :func:`compare_history` compares per-symbol-day checksums over the whole history (or a range), in
  windows so memory stays bounded.
* :func:`reconcile` re-copies only the differing symbol-days with ``central.replace_range`` (so rows that
  exist only in Postgres are removed too) and refreshes their ledger entries.

Plain Python: no Dagster imports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import BAR_COLUMNS, KEY, day_bounds, to_canonical
from qt_pipeline.redaction import redact
from qt_pipeline.storage.checksum import frame_checksum, symbol_day_checksums
from qt_pipeline.storage.interface import DataStorageInterface
from qt_pipeline.storage.migration import (
    DEFAULT_BATCH_ROWS,
    MigrationStats,
    _as_date,
    _bound,
    plan_batches,
    record_ledger,
)

if TYPE_CHECKING:
    from qt_pipeline.storage.postgres.store import PostgresStore

log = logging.getLogger(__name__)

VALUE_COLUMNS: tuple[str, ...] = tuple(c for c in BAR_COLUMNS if c not in KEY)
DEFAULT_MAX_KEYS = 20


@dataclass(frozen=True)
class KeyDiff:
    """One differing key: ``kind`` is ``missing_in_central`` (only local has it), ``extra_in_central``
    (only Postgres has it) or ``values_differ`` (``columns`` name the differing columns)."""

    symbol: str
    timestamp: pd.Timestamp
    kind: str
    columns: tuple[str, ...] = ()
    local: dict[str, Any] | None = None
    central: dict[str, Any] | None = None

    def describe(self) -> str:
        base = f"{self.symbol} @ {self.timestamp.isoformat()}: {self.kind}"
        if self.kind == "values_differ":
            pairs = ", ".join(
                f"{c} local={self.local[c]!r} central={self.central[c]!r}"  # type: ignore[index]
                for c in self.columns
            )
            return f"{base} ({pairs})"
        return base


@dataclass(frozen=True)
class FrameDiff:
    missing_in_central: int
    extra_in_central: int
    values_differ: int
    keys: tuple[KeyDiff, ...]  # the first ``max_keys``, sorted by (symbol, timestamp)

    @property
    def total(self) -> int:
        return self.missing_in_central + self.extra_in_central + self.values_differ


def diff_frames(local: pd.DataFrame, central: pd.DataFrame, *, max_keys: int = DEFAULT_MAX_KEYS) -> FrameDiff:
    """Key-level diff of two canonical frames (floats compared exactly, by their bit patterns)."""
    a = to_canonical(local)
    b = to_canonical(central)
    merged = a.merge(b, on=list(KEY), how="outer", suffixes=("_l", "_c"), indicator=True)
    only_l = merged["_merge"] == "left_only"
    only_c = merged["_merge"] == "right_only"
    both = merged["_merge"] == "both"
    differs_cols: dict[str, np.ndarray] = {}
    any_diff = np.zeros(len(merged), dtype=bool)
    for c in VALUE_COLUMNS:
        left, right = merged[f"{c}_l"], merged[f"{c}_c"]
        if c == "trade_count":
            d = both.to_numpy() & (left.to_numpy(dtype="float64") != right.to_numpy(dtype="float64"))
        else:
            lb = left.to_numpy(dtype="float64").view(np.uint64)
            rb = right.to_numpy(dtype="float64").view(np.uint64)
            d = both.to_numpy() & (lb != rb)
        differs_cols[c] = d
        any_diff |= d
    differ = pd.Series(any_diff, index=merged.index)
    flagged = merged[only_l | only_c | differ].sort_values(list(KEY)).head(max_keys)
    keys: list[KeyDiff] = []
    for idx, row in flagged.iterrows():
        if row["_merge"] == "left_only":
            keys.append(KeyDiff(row["symbol"], row["timestamp"], "missing_in_central"))
        elif row["_merge"] == "right_only":
            keys.append(KeyDiff(row["symbol"], row["timestamp"], "extra_in_central"))
        else:
            cols = tuple(c for c in VALUE_COLUMNS if differs_cols[c][merged.index.get_loc(idx)])
            keys.append(
                KeyDiff(
                    row["symbol"],
                    row["timestamp"],
                    "values_differ",
                    cols,
                    {c: _py(row[f"{c}_l"]) for c in cols},
                    {c: _py(row[f"{c}_c"]) for c in cols},
                )
            )
    return FrameDiff(int(only_l.sum()), int(only_c.sum()), int(differ.sum()), tuple(keys))


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


@dataclass(frozen=True)
class _SymbolDaySums:
    """``(rows, checksum)`` of one symbol-day on both sides."""

    symbol: str
    day: date
    local_rows: int
    central_rows: int
    local_checksum: int
    central_checksum: int


@dataclass(frozen=True)
class PartitionConsistency(_SymbolDaySums):
    """Result of :func:`check_partition` for one symbol-day."""

    diff: FrameDiff | None = None  # only computed when the checksums differ

    @property
    def ok(self) -> bool:
        return self.local_rows == self.central_rows and self.local_checksum == self.central_checksum

    def metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {
            "symbol": self.symbol,
            "day": self.day.isoformat(),
            "local_rows": self.local_rows,
            "central_rows": self.central_rows,
            "local_checksum": str(self.local_checksum),
            "central_checksum": str(self.central_checksum),
        }
        if self.diff is not None:
            md.update(
                {
                    "missing_in_central": self.diff.missing_in_central,
                    "extra_in_central": self.diff.extra_in_central,
                    "values_differ": self.diff.values_differ,
                    "differing_keys": [k.describe() for k in self.diff.keys],
                }
            )
        return md


def check_partition(
    local: DataStorageInterface,
    central: DataStorageInterface,
    symbol: str,
    day: date | str,
    *,
    max_keys: int = DEFAULT_MAX_KEYS,
) -> PartitionConsistency:
    """Compare one symbol-day on both sides; compute the key-level diff only when they differ."""
    day = _as_date(day)
    start, end = day_bounds(day)
    lf = local.read_bars(symbol, start, end)
    cf = central.read_bars(symbol, start, end)
    lr, lc = frame_checksum(lf)
    cr, cc = frame_checksum(cf)
    diff = None
    if (lr, lc) != (cr, cc):
        diff = diff_frames(lf, cf, max_keys=max_keys)
    return PartitionConsistency(symbol, day, lr, cr, lc, cc, diff)


# --- whole history ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SymbolDayDiff(_SymbolDaySums):
    """A symbol-day whose ``(rows, checksum)`` differ between the local store and the central store."""

    @property
    def reason(self) -> str:
        if self.central_rows == 0:
            return "missing_in_central"
        if self.local_rows == 0:
            return "only_in_central"
        if self.local_rows != self.central_rows:
            return "row_count_differs"
        return "checksum_differs"

    def describe(self) -> str:
        return (
            f"{self.day.isoformat()}|{self.symbol}: {self.reason} "
            f"(local {self.local_rows} rows, central {self.central_rows} rows)"
        )


@dataclass
class HistoryConsistency:
    compared: int = 0  # symbol-days compared (union of both sides)
    rows_local: int = 0
    rows_central: int = 0
    differing: list[SymbolDayDiff] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differing

    def metadata(self, max_keys: int = DEFAULT_MAX_KEYS) -> dict[str, Any]:
        return {
            "symbol_days_compared": self.compared,
            "rows_local": self.rows_local,
            "rows_central": self.rows_central,
            "symbol_days_differing": len(self.differing),
            "differing": [d.describe() for d in self.differing[:max_keys]],
        }


def _sums(frame: pd.DataFrame) -> pd.DataFrame:
    s = symbol_day_checksums(frame)
    s["day"] = [_as_date(d) for d in s["day"]]
    # Python ints in an object column: an outer merge with a symbol-day missing on one side would turn
    # an int64/uint64 column into float64 and round 64-bit checksums (false checksum_differs).
    s["checksum"] = pd.Series([int(c) for c in s["checksum"]], index=s.index, dtype=object)
    return s


def compare_history(
    local: DataStorageInterface,
    central: PostgresStore,
    *,
    symbols: Sequence[str] | None = None,
    start: date | datetime | pd.Timestamp | str | None = None,
    end: date | datetime | pd.Timestamp | str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> HistoryConsistency:
    """Compare per-symbol-day ``(rows, checksum)`` of both sides over ``[start, end)``.

    Symbol-days present on only one side count as differing. Data is read in windows of about
    ``batch_rows`` rows per side.
    """
    lo, hi = _bound(start), _bound(end)
    wanted = None if symbols is None else [s.upper() for s in symbols]
    lsd = local.symbol_days(lo, hi)
    csd = central.symbol_days(start=lo, end=hi, symbols=wanted)
    both = pd.concat([lsd[["symbol", "day", "rows"]], csd[["symbol", "day", "rows"]]], ignore_index=True)
    if wanted is not None:
        both = both[both["symbol"].isin(set(wanted))]
    if both.empty:
        return HistoryConsistency()
    both = both.assign(day=[_as_date(d) for d in both["day"]])
    union = both.groupby(["symbol", "day"], as_index=False)["rows"].max()
    result = HistoryConsistency(compared=len(union))
    for batch in plan_batches(union, batch_rows=batch_rows):
        syms = list(batch.symbols)
        ls = _sums(local.read_range(syms, batch.start, batch.end))
        cs = _sums(central.read_range(syms, batch.start, batch.end))
        m = ls.merge(cs, on=["symbol", "day"], how="outer", suffixes=("_l", "_c"))
        for row in m.itertuples(index=False):
            if (row.symbol, row.day) not in batch.days:
                continue
            lr = 0 if pd.isna(row.rows_l) else int(row.rows_l)
            cr = 0 if pd.isna(row.rows_c) else int(row.rows_c)
            lc = 0 if pd.isna(row.checksum_l) else int(row.checksum_l)
            cc = 0 if pd.isna(row.checksum_c) else int(row.checksum_c)
            result.rows_local += lr
            result.rows_central += cr
            if (lr, lc) != (cr, cc):
                result.differing.append(SymbolDayDiff(row.symbol, row.day, lr, cr, lc, cc))
    result.differing.sort(key=lambda d: (d.day, d.symbol))
    if result.differing:
        log.warning(
            "%d of %d symbol-day(s) differ between %s and %s: %s",
            len(result.differing),
            result.compared,
            redact(local.location),
            redact(central.location),
            "; ".join(d.describe() for d in result.differing[:DEFAULT_MAX_KEYS]),
        )
    return result


# --- repair ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReconcileAction:
    symbol: str
    day: date
    local_rows: int
    central_rows_before: int | None
    central_rows_deleted: int | None = None
    applied: bool = False


@dataclass
class ReconcileSummary:
    dry_run: bool
    actions: list[ReconcileAction] = field(default_factory=list)

    @property
    def repaired(self) -> int:
        return sum(a.applied for a in self.actions)

    @property
    def rows_copied(self) -> int:
        return sum(a.local_rows for a in self.actions if a.applied)


def _as_symbol_day(item: Any) -> tuple[str, date]:
    if isinstance(item, SymbolDayDiff | PartitionConsistency):
        return item.symbol, item.day
    if isinstance(item, str):
        from qt_pipeline.storage.migration import parse_partition_key

        return parse_partition_key(item)
    symbol, day = item
    return str(symbol), _as_date(day)


def reconcile(
    local: DataStorageInterface,
    central: PostgresStore,
    differing: Iterable[SymbolDayDiff | PartitionConsistency | tuple[str, date] | str],
    *,
    dry_run: bool = False,
) -> ReconcileSummary:
    """Make each given symbol-day in ``central`` exactly what ``local`` holds (``replace_range``: one
    transaction per symbol-day, so rows only Postgres had are removed too) and refresh its ledger row.

    ``differing`` items are :class:`SymbolDayDiff`, :class:`PartitionConsistency`, ``(symbol, day)``
    pairs or ledger keys ``"YYYY-MM-DD|SYMBOL"``. With ``dry_run`` nothing is written: the summary lists
    what would be re-copied.
    """
    summary = ReconcileSummary(dry_run=dry_run)
    seen: set[tuple[str, date]] = set()
    for item in differing:
        symbol, day = _as_symbol_day(item)
        if (symbol, day) in seen:
            continue
        seen.add((symbol, day))
        start, end = day_bounds(day)
        frame = local.read_bars(symbol, start, end)
        before = getattr(item, "central_rows", None)
        if dry_run:
            summary.actions.append(ReconcileAction(symbol, day, len(frame), before))
            continue
        result = central.replace_range(symbol, start, end, frame)
        deleted = (getattr(result, "details", None) or {}).get("deleted")
        rows, checksum = frame_checksum(frame)
        record_ledger(
            central,
            [
                MigrationStats(
                    symbol,
                    day,
                    rows,
                    0,
                    float(getattr(result, "seconds", 0.0)),
                    0.0,
                    checksum,
                    False,
                    "replace",
                )
            ],
            source=local.location,
        )
        log.info("reconciled %s %s: %d local row(s) copied", symbol, day.isoformat(), rows)
        summary.actions.append(ReconcileAction(symbol, day, rows, before, deleted, True))
    return summary


@dataclass
class ReconcileOutcome:
    """What :func:`reconcile_history` found and did: the comparison before, the repair, and the
    comparison after (``None`` when nothing was re-copied: all consistent, or a dry run)."""

    before: HistoryConsistency
    summary: ReconcileSummary
    after: HistoryConsistency | None = None

    @property
    def still_differing(self) -> list[SymbolDayDiff]:
        return self.after.differing if self.after is not None else []

    @property
    def ok(self) -> bool:
        """Nothing differs any more (a dry run is ok: it only reports)."""
        return self.summary.dry_run or self.before.ok or (self.after is not None and self.after.ok)


class HistoryRange(TypedDict, total=False):
    """Which symbol-days a history comparison covers (see :func:`compare_history`)."""

    symbols: Sequence[str] | None
    start: date | datetime | pd.Timestamp | str | None
    end: date | datetime | pd.Timestamp | str | None


def reconcile_history(
    local: DataStorageInterface,
    central: PostgresStore,
    *,
    dry_run: bool = False,
    **history: Unpack[HistoryRange],
) -> ReconcileOutcome:
    """The reconcile workflow of ``qt reconcile`` and the ``reconcile_job``: compare the ``history``
    range, re-copy the differing symbol-days (:func:`reconcile`), then compare again to verify."""
    before = compare_history(local, central, **history)
    if before.ok:
        return ReconcileOutcome(before, ReconcileSummary(dry_run=dry_run))
    summary = reconcile(local, central, before.differing, dry_run=dry_run)
    if dry_run:
        return ReconcileOutcome(before, summary)
    return ReconcileOutcome(before, summary, compare_history(local, central, **history))


__all__ = [
    "FrameDiff",
    "HistoryConsistency",
    "KeyDiff",
    "PartitionConsistency",
    "ReconcileAction",
    "ReconcileOutcome",
    "ReconcileSummary",
    "SymbolDayDiff",
    "check_partition",
    "compare_history",
    "diff_frames",
    "reconcile",
    "reconcile_history",
]
