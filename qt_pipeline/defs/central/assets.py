"""Assets of the central store: ``neon_ohlcv`` (per-partition migration) and ``neon_cold_tier``."""

from datetime import date
from typing import Any

import dagster as dg

from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.ingestion.partitions import RAW_OHLCV_PARTITIONS, partition_window
from qt_pipeline.defs.resources import DUCKDB_WRITER_POOL, StorageResource
from qt_pipeline.redaction import redact

RAW_OHLCV_KEY = dg.AssetKey("raw_ohlcv")
GROUP = "central"


def partition_symbol_day(key: Any) -> tuple[str, date]:
    """``(symbol, day)`` of a ``raw_ohlcv`` partition key (``"2024-01-03|BTCUSD"`` or a MultiPartitionKey)."""
    symbol, start, _ = partition_window(key)
    return symbol, start.date()


class NeonOhlcvConfig(dg.Config):
    force: bool = False  # copy even when the ledger says this symbol-day is already migrated


@dg.asset(
    partitions_def=RAW_OHLCV_PARTITIONS,
    deps=[RAW_OHLCV_KEY],
    group_name=GROUP,
    kinds={"postgres"},
    pool=DUCKDB_WRITER_POOL,  # it opens the local DuckDB file (one process per file)
    description=(
        "One symbol-day of canonical bars copied from the local DuckDB store into the central PostgreSQL "
        "(idempotent COPY upsert; recorded in migration_ledger)."
    ),
)
def neon_ohlcv(
    context: dg.AssetExecutionContext,
    config: NeonOhlcvConfig,
    local_store: StorageResource,
    central_store: CentralStoreResource,
) -> dg.MaterializeResult:
    from qt_pipeline.storage.migration import migrate_partition

    symbol, day = partition_symbol_day(context.partition_key)
    local = local_store.get_store()
    central = central_store.get_store()
    central.ensure_schema()
    stats = migrate_partition(local, central, symbol, day, resume=not config.force)
    context.log.info(
        f"{symbol} {day}: {stats.rows} rows {'skipped (ledger up to date)' if stats.skipped else 'copied'} "
        f"to {redact(central.location)} in {stats.seconds:.3f}s"
    )
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(stats.rows),
            "bytes": dg.MetadataValue.int(stats.bytes),
            "seconds": dg.MetadataValue.float(round(stats.seconds, 4)),
            "rows_per_s": dg.MetadataValue.float(round(stats.rows_per_s, 1)),
            "location": dg.MetadataValue.text(redact(central.location)),
            "layout": dg.MetadataValue.text(central.layout),
            "method": dg.MetadataValue.text(stats.method),
            "skipped": dg.MetadataValue.bool(stats.skipped),
            "checksum": dg.MetadataValue.text(str(stats.checksum)),
        }
    )


class ColdTierConfig(dg.Config):
    older_than_days: int | None = None  # default QT_COLD_AFTER_DAYS
    mode: str = "auto"  # auto (by capabilities) | parquet | compression


@dg.asset(
    deps=[neon_ohlcv],
    group_name=GROUP,
    kinds={"postgres", "parquet"},
    description=(
        "Old central bars moved to the cold tier: TimescaleDB compression where licensed, else verified "
        "zstd Parquet archives + dropped partitions (reads still return them)."
    ),
)
def neon_cold_tier(
    context: dg.AssetExecutionContext, config: ColdTierConfig, central_store: CentralStoreResource
) -> dg.MaterializeResult:
    from qt_pipeline.storage.cold_tier import run_cold_tier

    central = central_store.get_store()
    report = run_cold_tier(central, older_than_days=config.older_than_days, mode=config.mode)
    lines = [
        "| partition | range | action | rows | bytes before | bytes after |",
        "|---|---|---|---|---|---|",
    ]
    for p in report.partitions:
        lines.append(
            f"| {p.name} | {p.range_start.date()} | {p.action} | {p.rows} | {p.bytes_before} | {p.bytes_after} |"
        )
        context.log.info(
            f"cold tier {p.action} {p.name} [{p.range_start.isoformat()}, {p.range_end.isoformat()}): "
            f"{p.rows} rows, {p.bytes_before} -> {p.bytes_after} bytes"
        )
    return dg.MaterializeResult(
        metadata={
            "mode": dg.MetadataValue.text(report.mode),
            "cutoff": dg.MetadataValue.text(report.cutoff.isoformat()),
            "partitions": dg.MetadataValue.int(len(report.done)),
            "rows": dg.MetadataValue.int(report.rows),
            "bytes_before": dg.MetadataValue.int(report.bytes_before),
            "bytes_after": dg.MetadataValue.int(report.bytes_after),
            "location": dg.MetadataValue.text(redact(central.location)),
            "details": dg.MetadataValue.md("\n".join(lines)),
        }
    )
