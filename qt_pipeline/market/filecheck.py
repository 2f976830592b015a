"""Validate one landing file in bounded memory: what ``qt validate`` prints and the benchmark measures.

The file is streamed chunk by chunk (:meth:`LandingDirectorySource.iter_chunks`); each chunk is validated
and only counts, the first messages per (file, reason) and the keys of accepted bars (for duplicate
detection across chunks, as runs of consecutive bars: :class:`SeenKeys`) are kept.
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


class SeenKeys:
    """The ``(symbol, timestamp)`` keys accepted so far, held as runs of consecutive bars: per symbol and
    phase (timestamp modulo the bar interval), sorted disjoint intervals of bar numbers. A file whose
    bars follow one another costs one run (16 bytes) per gap in its data, not 8 bytes per bar, so the
    memory of a file's duplicate check does not grow with its length; data with a hole after every other
    bar costs as much as a set of its keys would."""

    def __init__(self, interval: timedelta | pd.Timedelta | str):
        self.step = max(int(pd.Timedelta(interval).value), 1)  # nanoseconds
        self.runs: dict[tuple[object, int], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_runs(self) -> int:
        return sum(len(s) for s, _ in self.runs.values())

    def add(self, symbols: np.ndarray, ts_ns: np.ndarray) -> np.ndarray:
        """Remember the keys; True where a key was remembered by an earlier call."""
        ts_ns = np.asarray(ts_ns, dtype=np.int64)
        seen_before = np.zeros(len(ts_ns), dtype=bool)
        if not len(ts_ns):
            return seen_before
        codes, names = pd.factorize(np.asarray(symbols, dtype=object))
        phase, k = ts_ns % self.step, ts_ns // self.step
        order = np.lexsort((k, phase, codes))
        c, p, kk = codes[order], phase[order], k[order]
        cut = np.flatnonzero((np.diff(c) != 0) | (np.diff(p) != 0)) + 1
        empty = np.empty(0, dtype=np.int64)
        for a, b in zip(np.concatenate([[0], cut]), np.concatenate([cut, [len(kk)]]), strict=True):
            key = (names[c[a]], int(p[a]))
            ks = kk[a:b]
            starts, ends = self.runs.get(key, (empty, empty))
            if len(starts):
                pos = np.searchsorted(starts, ks, side="right") - 1
                old = (pos >= 0) & (ks <= ends[np.maximum(pos, 0)])
                seen_before[order[a:b]] = old
                ks = ks[~old]
            new = np.unique(ks)
            if not len(new):
                continue
            brk = np.flatnonzero(np.diff(new) != 1) + 1
            s2 = np.concatenate([starts, new[np.concatenate([[0], brk])]])
            e2 = np.concatenate([ends, new[np.concatenate([brk - 1, [len(new) - 1]])]])
            o = np.argsort(s2, kind="stable")
            s2, e2 = s2[o], e2[o]
            head = np.concatenate([[True], s2[1:] != e2[:-1] + 1])  # a run not continuing the one before
            last = np.concatenate([np.flatnonzero(head)[1:] - 1, [len(e2) - 1]])
            self.runs[key] = (s2[head], e2[last])
        return seen_before


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
    seen = SeenKeys(interval)
    shown: Counter = Counter()
    more: Counter = Counter()
    for chunk in source.iter_chunks(path):
        report.chunks += 1
        res = validate_batch(chunk, interval=interval, known_symbols=known_symbols, now=now)
        report.warnings.extend(w for w in res.warnings if w not in report.warnings)
        acc = res.accepted
        dup_lines: list[int] = []
        if len(acc):
            ts = np.asarray(acc["timestamp"].dt.as_unit("ns").array.asi8, dtype=np.int64)
            dup = seen.add(acc["symbol"].to_numpy(dtype=object), ts)
            if dup.any():
                dup_lines = [int(x) for x in res.accepted_line[dup]]
                acc = acc[~dup]
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


__all__ = ["FileReport", "SeenKeys", "check_file"]
