"""Quarantine of landing files: every reject of a file, including rows no ``raw_ohlcv`` partition covers.

Partition runs only see the rows of their (symbol, UTC day). Whatever belongs to no valid partition — a
file with no placeable row (empty, wrong delimiter, all timestamps naive…), rows of an unknown symbol, bars
before ``QT_PARTITIONS_START`` — would otherwise vanish. :func:`quarantine_file` validates the whole file
and returns its reject records, plus one ``outside_partitions`` record per accepted bar that lies before
the first partition, so nothing is silently dropped. Storing the records is idempotent on
``(source, line, reason)``, so records that a partition run also stores are not duplicated.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import empty_rejects, to_canonical_rejects
from qt_pipeline.market.validation import ValidationResult

# Reject reason for a valid bar that no partition covers (plain string, like ``future_timestamp``).
OUTSIDE_PARTITIONS = "outside_partitions"


def outside_partition_rejects(result: ValidationResult, partitions_start: date) -> pd.DataFrame:
    """Reject records for accepted bars dated before ``partitions_start``."""
    acc = result.accepted
    if acc.empty:
        return empty_rejects()
    start = pd.Timestamp(partitions_start, tz="UTC")
    mask = (acc["timestamp"] < start).to_numpy()
    if not mask.any():
        return empty_rejects()
    sub = acc[mask]
    now = pd.Timestamp.now(tz="UTC")
    return to_canonical_rejects(
        pd.DataFrame(
            {
                "source": result.accepted_source[mask],
                "line": np.asarray(result.accepted_line, dtype=np.int64)[mask],
                "symbol": sub["symbol"].to_numpy(dtype=object),
                "timestamp": [t.isoformat() for t in sub["timestamp"]],
                "reason": OUTSIDE_PARTITIONS,
                "detail": (
                    f"bar lies before QT_PARTITIONS_START={partitions_start.isoformat()}, so no raw_ohlcv "
                    "partition can store it (lower QT_PARTITIONS_START to ingest it, or drop the bar)"
                ),
                "raw": [json.dumps({k: str(v) for k, v in rec.items()}) for rec in sub.to_dict("records")],
                "rejected_at": now,
            }
        )
    )


@dataclass(frozen=True)
class QuarantineResult:
    accepted: int  # rows of the file that are valid bars (stored by their partitions' runs, if any)
    warnings: tuple[str, ...] = ()


def quarantine_file(
    source,
    path: str | Path,
    *,
    interval: timedelta | pd.Timedelta | str,
    known_symbols: Collection[str] | None,
    partitions_start: date,
) -> tuple[QuarantineResult, pd.DataFrame]:
    """Validate the whole landing file ``path`` read by ``source`` (a ``LandingDirectorySource``).

    Returns ``(result, rejects)``: the count of valid rows of the file on its own, and every reject record
    to store (validation rejects + file-level problems + ``outside_partitions`` records). The file is
    streamed chunk by chunk.
    """
    from qt_pipeline.market.sources import validate_batch

    parts: list[pd.DataFrame] = []
    accepted = 0
    notes: dict[str, None] = {}
    for chunk in source.iter_chunks(path):  # streamed: memory follows the chunk, not the file
        res = validate_batch(chunk, interval=interval, known_symbols=known_symbols)
        parts.extend(p for p in (res.rejected, outside_partition_rejects(res, partitions_start)) if len(p))
        accepted += len(res.accepted)  # only counted: the rejects are what a quarantine stores
        notes.update(dict.fromkeys(res.warnings))
        del chunk, res  # before the next chunk is read: one chunk alive at a time
    rejects = to_canonical_rejects(pd.concat(parts, ignore_index=True)) if parts else empty_rejects()
    return QuarantineResult(accepted=accepted, warnings=tuple(notes)), rejects


__all__ = ["OUTSIDE_PARTITIONS", "QuarantineResult", "outside_partition_rejects", "quarantine_file"]
