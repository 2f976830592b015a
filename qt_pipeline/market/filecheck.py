"""Validate one landing file in bounded memory: what ``qt validate`` prints and the benchmark measures.

The file is streamed chunk by chunk (:meth:`LandingDirectorySource.iter_chunks`); each chunk is validated
and only counts, the first messages per (file, reason) and the keys of accepted bars (8 bytes per bar, for
duplicate detection across chunks) are kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import RejectReason


def release_arrow_memory() -> None:
    """Hand Arrow's freed buffers back to the OS (its allocator keeps them for reuse otherwise, so the
    process's memory would stay at its high-water mark after a chunk)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


@dataclass
class FileReport:
    path: str
    accepted: int = 0
    rejected_rows: int = 0
    by_reason: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    chunks: int = 0

    @property
    def reject_records(self) -> int:
        return sum(self.by_reason.values())


def _key_hash(bars: pd.DataFrame) -> np.ndarray:
    return pd.util.hash_pandas_object(bars[["symbol", "timestamp"]], index=False).to_numpy(dtype=np.uint64)


def check_file(
    source,
    path: str | Path,
    *,
    interval: timedelta | pd.Timedelta | str,
    known_symbols: Collection[str] | None = None,
    now: pd.Timestamp | None = None,
    messages_per_reason: int = 3,
    max_messages: int = 50,
) -> FileReport:
    """Validate ``path`` (read by ``source``, a LandingDirectorySource) chunk by chunk."""
    from qt_pipeline.market.sources import validate_batch

    report = FileReport(str(path))
    seen = np.empty(0, dtype=np.uint64)  # sorted hashes of the accepted keys so far (8 bytes per bar)
    shown: Counter = Counter()
    more: Counter = Counter()
    for chunk in source.iter_chunks(path):
        report.chunks += 1
        res = validate_batch(chunk, interval=interval, known_symbols=known_symbols, now=now)
        report.warnings.extend(w for w in res.warnings if w not in report.warnings)
        acc = res.accepted
        dup_lines: list[int] = []
        if len(acc):
            keys = _key_hash(acc)
            if len(seen):
                pos = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
                dup = seen[pos] == keys
                if dup.any():
                    dup_lines = [int(x) for x in res.accepted_line[dup]]
                    keep = ~dup
                    acc = acc[keep]
                    keys = keys[keep]
            # merged in place (np.union1d would hold three copies of the set at its peak)
            seen = np.concatenate([seen, np.unique(keys)])
            seen.sort()
        report.accepted += len(acc)
        if len(acc):
            lo, hi = acc["timestamp"].min(), acc["timestamp"].max()
            report.first = lo if report.first is None else min(report.first, lo)
            report.last = hi if report.last is None else max(report.last, hi)
        rej = res.rejected
        summary = res.summary()
        report.rejected_rows += int(summary["rejected_rows"]) + len(dup_lines)
        report.by_reason.update(summary["by_reason"])
        if dup_lines:
            report.by_reason[RejectReason.DUPLICATE_KEY.value] += len(dup_lines)
        for rec in rej.itertuples(index=False):
            reason = str(rec.reason)
            if shown[reason] < messages_per_reason and len(report.messages) < max_messages:
                where = rec.source if pd.isna(rec.line) else f"{rec.source}:{int(rec.line)}"
                report.messages.append(f"{where}: {reason}: {rec.detail}")
                shown[reason] += 1
            else:
                more[reason] += 1
        for ln in dup_lines:
            reason = RejectReason.DUPLICATE_KEY.value
            if shown[reason] < messages_per_reason and len(report.messages) < max_messages:
                report.messages.append(
                    f"{path}:{ln}: {reason}: the same (symbol, timestamp) appears earlier in the file; the "
                    "first occurrence is kept (keep exactly one row per (symbol, timestamp))"
                )
                shown[reason] += 1
            else:
                more[reason] += 1
        # the chunk and its result go before the reader makes the next one (one chunk alive, not two)
        del chunk, res, acc, rej
        release_arrow_memory()
    for reason, n in sorted(more.items()):
        report.messages.append(f"{path}: … {n} more {reason} like the above")
    return report


__all__ = ["FileReport", "check_file"]
