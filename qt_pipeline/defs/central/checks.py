"""Blocking consistency check of ``neon_ohlcv``: per partition, Postgres holds exactly what DuckDB holds."""

import warnings
from datetime import timedelta

import dagster as dg

from qt_pipeline.defs.central.assets import neon_ohlcv, partition_symbol_day
from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.ingestion.partitions import RAW_OHLCV_PARTITIONS
from qt_pipeline.defs.resources import DUCKDB_WRITER_POOL, StorageResource
from qt_pipeline.redaction import redact

# Partitioned asset checks are a Dagster preview feature: the check runs per (date, symbol) partition in the
# same run as the partition's materialisation, which is exactly what a blocking per-partition check needs.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)


@dg.asset_check(
    asset=neon_ohlcv,
    name="neon_ohlcv_consistency",
    blocking=True,
    pool=DUCKDB_WRITER_POOL,  # it opens the local DuckDB file (one process per file)
    partitions_def=RAW_OHLCV_PARTITIONS,
    description=(
        "Same row count and same order-independent checksum over every column in DuckDB and Postgres for "
        "this symbol-day; on failure the differing keys (first 20) are listed. Blocks downstream assets."
    ),
)
def neon_ohlcv_consistency(
    context: dg.AssetCheckExecutionContext, local_store: StorageResource, central_store: CentralStoreResource
) -> dg.AssetCheckResult:
    from qt_pipeline.storage.consistency import check_partition

    symbol, day = partition_symbol_day(context.partition_key)
    central = central_store.get_store()
    result = check_partition(local_store.get_store(), central, symbol, day)
    md = result.metadata()
    md["location"] = redact(central.location)
    if not result.ok:
        md["fix"] = (
            "re-copy this symbol-day: `qt reconcile --symbols "
            f"{symbol} --start {day.isoformat()} --end {(day + timedelta(days=1)).isoformat()}`, the reconcile_job, "
            "or materialise neon_ohlcv for this partition with config force=true"
        )
        context.log.error(
            f"{symbol} {day}: Postgres differs from DuckDB — " + "; ".join(md.get("differing_keys", []))
        )
    metadata = {k: dg.MetadataValue.json(v) if isinstance(v, list) else v for k, v in md.items()}
    return dg.AssetCheckResult(passed=result.ok, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)
