"""The cold tier: what happens to central bars older than ``QT_COLD_AFTER_DAYS``.

Capabilities decide (DESIGN.md matrix), they are detected, never assumed:

* **TimescaleDB with the full (``timescale``) license** — native compression: compression is enabled on
  ``ohlcv_bars`` (segment by ``symbol``, order by ``timestamp``) and every chunk older than the cutoff is
  compressed with ``compress_chunk``. Compressed chunks stay readable through plain SQL; upserts into
  them work but are slower. Bytes before/after come from ``chunk_compression_stats``.
* **Otherwise** (Neon's Apache build, vanilla PostgreSQL) — Parquet archive: each partition/chunk older
  than the cutoff (all symbols of that day) is written to zstd Parquet under
  ``settings.resolved_cold_tier_dir / "ohlcv_bars/date=YYYY-MM-DD/part-<uuid>.parquet"`` (temp name +
  fsync + rename), **verified** (read back: row count and ``frame_checksum`` equal to what Postgres holds),
  catalogued in ``cold_tier_ranges`` with ``dropped_at`` NULL, and only then dropped — the drop and the
  ``dropped_at`` update happen in one transaction that first re-counts the partition's rows, so rows
  written meanwhile are never lost. ``PostgresStore.read_bars`` merges archived ranges back in.

Crash safety of the archive path, step by step: a crash before the catalog row leaves an orphan file
and an intact partition; a crash after it (``dropped_at`` NULL) leaves the partition intact and readers
ignore the archive; the drop + ``dropped_at`` update commit together or not at all.

Plain Python: no Dagster imports.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from qt_pipeline.market.contract import to_canonical
from qt_pipeline.redaction import redact
from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.interface import StorageError

log = logging.getLogger(__name__)

BARS_TABLE = "ohlcv_bars"
CATALOG_TABLE = "cold_tier_ranges"


class ColdTierError(StorageError):
    """The cold tier could not archive/compress some partition (nothing was dropped for it)."""


class ArchiveVerificationError(ColdTierError):
    """A Parquet archive read back differs from what Postgres holds; the partition was not dropped."""


@dataclass(frozen=True)
class PartitionResult:
    """What happened to one partition/chunk."""

    name: str
    range_start: pd.Timestamp
    range_end: pd.Timestamp
    action: str  # "compressed" | "archived" | "dropped_empty" | "failed"
    rows: int = 0
    bytes_before: int | None = None
    bytes_after: int | None = None
    location: str | None = None
    checksum: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "range_start": self.range_start.isoformat(),
            "range_end": self.range_end.isoformat(),
            "action": self.action,
            "rows": self.rows,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "location": self.location,
            "error": self.error,
        }


@dataclass
class ColdTierReport:
    mode: str  # "compression" | "parquet"
    cutoff: pd.Timestamp
    partitions: list[PartitionResult] = field(default_factory=list)

    @property
    def failed(self) -> list[PartitionResult]:
        return [p for p in self.partitions if p.action == "failed"]

    @property
    def done(self) -> list[PartitionResult]:
        return [p for p in self.partitions if p.action != "failed"]

    @property
    def bytes_before(self) -> int:
        return sum(p.bytes_before or 0 for p in self.done)

    @property
    def bytes_after(self) -> int:
        return sum(p.bytes_after or 0 for p in self.done)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.done)


# --- helpers -----------------------------------------------------------------------------------------
def cold_cutoff(older_than_days: int, now: datetime | pd.Timestamp | None = None) -> pd.Timestamp:
    """Partitions ending at or before this instant are "older than N days" (UTC midnight based)."""
    if older_than_days < 0:
        raise ValueError(f"QT_COLD_AFTER_DAYS must be >= 0, got {older_than_days}")
    t = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.floor("D") - pd.Timedelta(days=older_than_days)


def _ts(v: Any) -> pd.Timestamp:
    t = pd.Timestamp(v)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _settings(central: Any, settings: Any | None) -> Any:
    if settings is not None:
        return settings
    s = getattr(central, "settings", None)
    if s is not None:
        return s
    from qt_pipeline.config import get_settings

    return get_settings()


def run_cold_tier(
    central: Any,
    settings: Any | None = None,
    *,
    older_than_days: int | None = None,
    now: datetime | pd.Timestamp | None = None,
    raise_on_error: bool = True,
    on_archive_written: Callable[[Path], None] | None = None,
    mode: str = "auto",
) -> ColdTierReport:
    """Compress (TimescaleDB TSL) or archive to Parquet + drop (everything else) every partition/chunk
    of ``ohlcv_bars`` older than ``older_than_days`` (default ``settings.cold_after_days``).

    With ``raise_on_error`` a :class:`ColdTierError` naming every failed partition is raised after the
    others were processed. ``on_archive_written(path)`` runs between writing and verifying each archive
    (a hook for fault-injection tests). ``mode`` ``auto`` follows the detected capabilities; ``parquet``
    archives even where compression is available (e.g. to move old data out of the database).
    """
    settings = _settings(central, settings)
    days = settings.cold_after_days if older_than_days is None else older_than_days
    cutoff = cold_cutoff(days, now)
    central.ensure_schema()
    if mode not in ("auto", "compression", "parquet"):
        raise ValueError(f"cold tier mode must be 'auto', 'compression' or 'parquet', not {mode!r}")
    caps = central.capabilities
    if mode == "compression" and not caps.can_compress:
        raise ColdTierError(
            f"{redact(central.location)} cannot compress (TimescaleDB {caps.timescaledb_version or 'absent'}, "
            f"license {caps.license or 'none'}); use mode 'auto' or 'parquet'"
        )
    if mode == "compression" or (mode == "auto" and caps.can_compress):
        report = compress_old_chunks(central, cutoff)
    else:
        report = archive_old_partitions(central, settings, cutoff, on_archive_written=on_archive_written)
    if report.failed and raise_on_error:
        raise ColdTierError(
            f"cold tier ({report.mode}) failed for {len(report.failed)} partition(s) of "
            f"{redact(central.location)}; nothing was dropped for them: "
            + "; ".join(f"{p.name}: {p.error}" for p in report.failed)
        )
    return report


# --- TimescaleDB compression -------------------------------------------------------------------------
def enable_compression(conn: Any, schema: str) -> bool:
    """Enable compression on ``<schema>.ohlcv_bars`` if it is not yet; returns True if it changed."""
    from sqlalchemy import text

    enabled = conn.execute(
        text(
            "SELECT compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = :s AND hypertable_name = :t"
        ),
        {"s": schema, "t": BARS_TABLE},
    ).scalar_one_or_none()
    if enabled is None:
        raise ColdTierError(
            f"{schema}.{BARS_TABLE} is not a hypertable; cannot enable TimescaleDB compression on it"
        )
    if enabled:
        return False
    conn.execute(
        text(
            f"ALTER TABLE {_quote_ident(schema)}.{BARS_TABLE} SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'symbol', timescaledb.compress_orderby = '\"timestamp\"')"
        )
    )
    return True


def compress_old_chunks(central: Any, cutoff: pd.Timestamp) -> ColdTierReport:
    """Compress every uncompressed chunk of ``ohlcv_bars`` whose range ends at or before ``cutoff``."""
    from sqlalchemy import text

    schema = central.schema
    report = ColdTierReport(mode="compression", cutoff=cutoff)
    ht = f"{_quote_ident(schema)}.{BARS_TABLE}"
    with central.direct_engine.begin() as conn:
        enable_compression(conn, schema)
    with central.direct_engine.connect() as conn:
        chunks = conn.execute(
            text(
                "SELECT chunk_schema, chunk_name, range_start, range_end, is_compressed "
                "FROM timescaledb_information.chunks WHERE hypertable_schema = :s AND hypertable_name = :t "
                "AND range_end <= :cutoff ORDER BY range_start"
            ),
            {"s": schema, "t": BARS_TABLE, "cutoff": cutoff.to_pydatetime()},
        ).fetchall()
        conn.rollback()
    for chunk_schema, chunk_name, rs, re_, is_compressed in chunks:
        qualified = f"{_quote_ident(chunk_schema)}.{_quote_ident(chunk_name)}"
        if is_compressed:
            continue
        t0 = time.perf_counter()
        try:
            with central.direct_engine.begin() as conn:
                rows = conn.execute(text(f"SELECT count(*) FROM {qualified}")).scalar_one()
                conn.execute(
                    text("SELECT compress_chunk(CAST(:c AS regclass), if_not_compressed => true)"),
                    {"c": qualified},
                )
            with central.direct_engine.connect() as conn:
                stats = conn.execute(
                    text(
                        "SELECT before_compression_total_bytes, after_compression_total_bytes "
                        "FROM chunk_compression_stats(CAST(:ht AS regclass)) "
                        "WHERE chunk_schema = :cs AND chunk_name = :cn"
                    ),
                    {"ht": ht, "cs": chunk_schema, "cn": chunk_name},
                ).fetchone()
                conn.rollback()
        except Exception as exc:  # one chunk failing must not stop the others
            report.partitions.append(
                PartitionResult(chunk_name, _ts(rs), _ts(re_), "failed", error=redact(exc))
            )
            continue
        before, after = (int(stats[0]), int(stats[1])) if stats and stats[0] is not None else (None, None)
        log.info(
            "compressed chunk %s [%s, %s): %s rows, %s -> %s bytes in %.2fs",
            chunk_name, rs, re_, rows, before, after, time.perf_counter() - t0,
        )  # fmt: skip
        report.partitions.append(
            PartitionResult(chunk_name, _ts(rs), _ts(re_), "compressed", int(rows), before, after, qualified)
        )
    return report


# --- Parquet archive ---------------------------------------------------------------------------------
def archive_path(root: Path, day: date) -> Path:
    return root / BARS_TABLE / f"date={day.isoformat()}" / f"part-{uuid.uuid4().hex}.parquet"


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> int:
    """Write ``frame`` as zstd Parquet to ``path`` atomically and durably; returns its size."""
    import pyarrow as pa

    from qt_pipeline.storage.files import atomic_write_parquet

    return atomic_write_parquet(pa.Table.from_pandas(frame, preserve_index=False), path)


def verify_archive(path: Path, rows: int, checksum: int) -> None:
    """Read ``path`` back and check its row count and checksum; raise :class:`ArchiveVerificationError`."""
    import pyarrow.parquet as pq

    try:
        back = to_canonical(pq.read_table(path).to_pandas())
    except Exception as exc:
        raise ArchiveVerificationError(
            f"archive {path} cannot be read back ({type(exc).__name__}: {redact(exc)}); the partition was "
            "NOT dropped — check the disk/QT_COLD_TIER_DIR and run the cold tier again"
        ) from None
    got_rows, got_sum = frame_checksum(back)
    if (got_rows, got_sum) != (rows, checksum):
        raise ArchiveVerificationError(
            f"archive {path} does not match Postgres: {got_rows} rows / checksum {got_sum} read back, "
            f"{rows} rows / checksum {checksum} expected; the partition was NOT dropped — run the cold "
            "tier again (a new archive is written)"
        )


def _forget_partition(central: Any, start: pd.Timestamp) -> None:
    """Tell the store the daily partition is gone, so a later write into that day recreates it."""
    central.forget_partitions([start.date()])


def _partition_stats(conn: Any, schema: str, start: pd.Timestamp, end: pd.Timestamp) -> tuple[int, Any]:
    from sqlalchemy import text

    row = conn.execute(
        text(
            f"SELECT count(*), max(ingested_at) FROM {_quote_ident(schema)}.{BARS_TABLE} "
            'WHERE "timestamp" >= :a AND "timestamp" < :b'
        ),
        {"a": start.to_pydatetime(), "b": end.to_pydatetime()},
    ).one()
    return int(row[0]), row[1]


def archive_old_partitions(
    central: Any,
    settings: Any,
    cutoff: pd.Timestamp,
    *,
    on_archive_written: Callable[[Path], None] | None = None,
) -> ColdTierReport:
    """Archive + drop every time partition/chunk of ``ohlcv_bars`` ending at or before ``cutoff``."""
    from qt_pipeline.storage.postgres.layout import list_time_partitions

    report = ColdTierReport(mode="parquet", cutoff=cutoff)
    with central.direct_engine.connect() as conn:
        parts = list_time_partitions(conn, central.schema)
        conn.rollback()
    for part in sorted(parts, key=lambda p: _ts(p.range_start)):
        if _ts(part.range_end) > cutoff:
            continue
        try:
            report.partitions.append(
                archive_partition(central, settings, part, on_archive_written=on_archive_written)
            )
        except Exception as exc:
            log.error("cold tier: partition %s not archived: %s", part.name, redact(exc))
            report.partitions.append(
                PartitionResult(
                    part.name, _ts(part.range_start), _ts(part.range_end), "failed", error=redact(exc)
                )
            )
    return report


def archive_partition(
    central: Any,
    settings: Any,
    part: Any,
    *,
    on_archive_written: Callable[[Path], None] | None = None,
) -> PartitionResult:
    """Archive one partition/chunk to Parquet, verify, catalogue, then drop it (see module doc)."""
    from sqlalchemy import text

    from qt_pipeline.storage.postgres.layout import drop_time_partition

    schema = central.schema
    start, end = _ts(part.range_start), _ts(part.range_end)
    catalog = central.qualified(CATALOG_TABLE)
    bytes_before = getattr(part, "bytes", None)
    with central.direct_engine.connect() as conn:
        pg_rows, pg_last_ingest = _partition_stats(conn, schema, start, end)
        conn.rollback()
    if pg_rows == 0:
        with central.direct_engine.begin() as conn:
            rows_now, _ = _partition_stats(conn, schema, start, end)
            if rows_now != 0:
                raise ColdTierError(f"partition {part.name} received rows while being dropped; run again")
            drop_time_partition(conn, schema, part)
        _forget_partition(central, start)
        return PartitionResult(part.name, start, end, "dropped_empty", 0, bytes_before, 0)

    # What readers see for this range (Postgres rows + any earlier archive of the same range).
    frame = central.read_range(None, start, end)
    rows, checksum = frame_checksum(frame)
    path = archive_path(Path(settings.resolved_cold_tier_dir), start.date())
    size = write_parquet_atomic(frame, path)
    try:
        if on_archive_written is not None:
            on_archive_written(path)
        verify_archive(path, rows, checksum)
    except Exception:
        path.unlink(missing_ok=True)  # a bad archive is never catalogued
        raise
    params = {
        "a": start.to_pydatetime(),
        "b": end.to_pydatetime(),
        "loc": str(path),
        "rows": rows,
        "sum": int(checksum),
    }
    with central.engine.begin() as conn:
        previous = conn.execute(
            text(f"SELECT location FROM {catalog} WHERE range_start = :a AND range_end = :b"), params
        ).scalar_one_or_none()
        conn.execute(
            text(
                f"INSERT INTO {catalog} (range_start, range_end, location, rows, checksum, archived_at) "
                "VALUES (:a, :b, :loc, :rows, :sum, now()) ON CONFLICT (range_start, range_end) DO UPDATE "
                "SET location = excluded.location, rows = excluded.rows, checksum = excluded.checksum, "
                "archived_at = excluded.archived_at"
            ),
            params,
        )
    with central.direct_engine.begin() as conn:
        # block writers of ohlcv_bars (readers go on) so nothing lands in the partition between the
        # re-count and the drop; the drop itself takes its stronger lock on the same table.
        conn.execute(text(f"LOCK TABLE {_quote_ident(schema)}.{BARS_TABLE} IN SHARE ROW EXCLUSIVE MODE"))
        rows_now, last_now = _partition_stats(conn, schema, start, end)
        if (rows_now, last_now) != (pg_rows, pg_last_ingest):
            raise ColdTierError(
                f"partition {part.name} changed while being archived ({pg_rows} -> {rows_now} rows); "
                "it was not dropped — run the cold tier again"
            )
        drop_time_partition(conn, schema, part)
        conn.execute(
            text(f"UPDATE {catalog} SET dropped_at = now() WHERE range_start = :a AND range_end = :b"), params
        )
    _forget_partition(central, start)
    if previous and previous != str(path):
        Path(previous).unlink(missing_ok=True)
    log.info(
        "archived %s [%s, %s): %d rows, %s -> %d bytes at %s",
        part.name, start.isoformat(), end.isoformat(), rows, bytes_before, size, path,
    )  # fmt: skip
    return PartitionResult(part.name, start, end, "archived", rows, bytes_before, size, str(path), checksum)


def list_archives(central: Any) -> pd.DataFrame:
    """The ``cold_tier_ranges`` catalogue as a frame."""
    from sqlalchemy import text

    with central.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT range_start, range_end, location, rows, checksum, archived_at, dropped_at "
                f"FROM {central.qualified(CATALOG_TABLE)} ORDER BY range_start"
            )
        ).fetchall()
    cols = ["range_start", "range_end", "location", "rows", "checksum", "archived_at", "dropped_at"]
    return pd.DataFrame([tuple(r) for r in rows], columns=cols)


__all__ = [
    "ArchiveVerificationError",
    "ColdTierError",
    "ColdTierReport",
    "PartitionResult",
    "archive_old_partitions",
    "archive_partition",
    "cold_cutoff",
    "compress_old_chunks",
    "enable_compression",
    "list_archives",
    "run_cold_tier",
    "verify_archive",
    "write_parquet_atomic",
]
