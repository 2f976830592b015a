"""Assets of the central store: ``central_ohlcv`` (per-partition migration) and ``central_cold_tier``."""

import warnings
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd

from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.ingestion.partitions import RAW_OHLCV_PARTITIONS, partition_window
from qt_pipeline.defs.ranges import (
    SINGLE_RUN,
    asset_selected,
    check_selected,
    compact_keys,
    selected_partitions,
    with_target,
)
from qt_pipeline.defs.resources import DUCKDB_WRITER_POOL, LocalStoreResource
from qt_pipeline.redaction import redact

RAW_OHLCV_KEY = dg.AssetKey("raw_ohlcv")
CENTRAL_OHLCV_KEY = dg.AssetKey("central_ohlcv")
GROUP = "central"


def partition_symbol_day(key: Any) -> tuple[str, date]:
    """``(symbol, day)`` of a ``raw_ohlcv`` partition key (``"2024-01-03|BTCUSD"`` or a MultiPartitionKey)."""
    symbol, start, _ = partition_window(key)
    return symbol, start.date()


class CentralOhlcvConfig(dg.Config):
    force: bool = False  # copy even when the ledger says this symbol-day is already migrated


# Follow raw_ohlcv without a human: a partition is requested when its raw_ohlcv partition was updated (or
# it is missing while raw_ohlcv has it), in EVERY time window — eager() alone only looks at the latest day,
# so a backfill of older days would never reach Postgres — and never while raw_ohlcv is missing or running.
MIGRATION_CONDITION = dg.AutomationCondition.eager().without(
    dg.AutomationCondition.in_latest_time_window()
) & dg.AutomationCondition.all_deps_blocking_checks_passed().with_label("upstream blocking checks passed")

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)
    CENTRAL_OHLCV_CONSISTENCY = dg.AssetCheckSpec(
        "central_ohlcv_consistency",
        asset=CENTRAL_OHLCV_KEY,
        blocking=True,
        partitions_def=RAW_OHLCV_PARTITIONS,
        description=(
            "Same row count and same order-independent checksum over every column in DuckDB and Postgres "
            "for this symbol-day; on failure the differing keys (first 20) are listed. Blocks downstream "
            "assets."
        ),
    )
central_ohlcv_consistency = CENTRAL_OHLCV_CONSISTENCY.key


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            CENTRAL_OHLCV_KEY,
            deps=[RAW_OHLCV_KEY],
            group_name=GROUP,
            kinds={"postgres"},
            automation_condition=MIGRATION_CONDITION,
            skippable=True,  # not materialised while the cost governor backs off (QT_COST_BACKOFF)
            description=(
                "One symbol-day of canonical bars copied from the local DuckDB store into the central "
                "PostgreSQL (idempotent COPY upsert; recorded in migration_ledger)."
            ),
        )
    ],
    check_specs=[CENTRAL_OHLCV_CONSISTENCY],
    partitions_def=RAW_OHLCV_PARTITIONS,
    backfill_policy=SINGLE_RUN,
    can_subset=True,
    pool=DUCKDB_WRITER_POOL,  # it opens the local DuckDB file (one process per file)
    name="central_ohlcv",
)
def central_ohlcv(
    context: dg.AssetExecutionContext,
    config: CentralOhlcvConfig,
    local_store: LocalStoreResource,
    central_store: CentralStoreResource,
):
    """Every partition of the step's range: copy, then prove it with the blocking consistency check
    (inside this step, so a ranged backfill checks each partition it wrote)."""
    from qt_pipeline.storage.migration import migrate_partition

    keys = selected_partitions(context)
    local = local_store.get_store()
    central = central_store.get_store()
    if asset_selected(context, CENTRAL_OHLCV_KEY) and _backs_off(context, keys, central_store):
        return  # nothing copied, so nothing to check: the partitions stay missing, not green with 0 rows
    if asset_selected(context, CENTRAL_OHLCV_KEY):
        _require_upstream(context, local, keys)
        central.ensure_schema()
        totals: dict[str, Any] = {"rows": 0, "seconds": 0.0, "copied": 0}
        for key in keys:
            symbol, day = partition_symbol_day(key)
            stats = migrate_partition(local, central, symbol, day, resume=not config.force)
            context.log.info(
                f"{symbol} {day}: {stats.rows} rows "
                f"{'skipped (ledger up to date)' if stats.skipped else 'copied'} in {stats.seconds:.3f}s"
            )
            totals["rows"] += stats.rows
            totals["seconds"] += stats.seconds
            totals["copied"] += 0 if stats.skipped else 1
            context.add_asset_metadata(
                {
                    "rows": dg.MetadataValue.int(stats.rows),
                    "bytes": dg.MetadataValue.int(stats.bytes),
                    "seconds": dg.MetadataValue.float(round(stats.seconds, 4)),
                    "rows_per_s": dg.MetadataValue.float(round(stats.rows_per_s, 1)),
                    "method": dg.MetadataValue.text(stats.method),
                    "skipped": dg.MetadataValue.bool(stats.skipped),
                    "checksum": dg.MetadataValue.text(str(stats.checksum)),
                    "dagster/row_count": dg.MetadataValue.int(stats.rows),
                },
                asset_key=CENTRAL_OHLCV_KEY,
                partition_key=key,
            )
        yield dg.MaterializeResult(
            asset_key=CENTRAL_OHLCV_KEY,
            metadata={
                "location": dg.MetadataValue.text(redact(central.location)),
                "layout": dg.MetadataValue.text(central.layout),
                "partitions_in_run": dg.MetadataValue.int(len(keys)),
                "partitions_copied_in_run": dg.MetadataValue.int(totals["copied"]),
                "rows_in_run": dg.MetadataValue.int(totals["rows"]),
                "copy_seconds_in_run": dg.MetadataValue.float(round(totals["seconds"], 3)),
            },
        )
    if check_selected(context, central_ohlcv_consistency):
        from qt_pipeline.defs.central.checks import consistency_evaluation

        for key in keys:
            yield with_target(context, consistency_evaluation(context, key, local, central))


def _backs_off(
    context: dg.AssetExecutionContext, keys: list[str], central_store: CentralStoreResource
) -> bool:
    """The cost governor's switch (``QT_COST_BACKOFF``): when the budget status says back off, the step
    copies nothing and materialises nothing — the partitions stay *missing* (not green with 0 rows, and the
    blocking consistency check is not evaluated against a store that was never written). The run succeeds
    (the budget check has already alerted); each skipped partition gets an observation saying why, and
    `qt migrate` / a backfill of the missing partitions catches up once the budget allows it."""
    from qt_pipeline.monitoring.cost import backoff_reason

    reason = backoff_reason(central_store.settings(), "migration")
    if reason is None:
        return False
    context.log.warning(f"{reason}; {len(keys)} partition(s) left missing: {compact_keys(keys)}")
    for key in keys:
        context.log_event(
            dg.AssetObservation(
                asset_key=CENTRAL_OHLCV_KEY,
                partition=key,
                metadata={"backed_off": dg.MetadataValue.text(reason)},
            )
        )
    return True


def _require_upstream(context: dg.AssetExecutionContext, local: Any, keys: list[str]) -> None:
    """Fail (before writing anything) when a partition has no bars in the local store: migrating it would
    turn the partition green with 0 rows. Says whether raw_ohlcv never ran for it or rejected everything."""
    windows = [partition_window(k) for k in keys]
    by_day = local.symbol_days(min(w[1] for w in windows), max(w[2] for w in windows))
    present = {
        f"{pd.Timestamp(d).date().isoformat()}|{s}"
        for s, d in zip(by_day["symbol"], by_day["day"], strict=True)
    }
    empty = [k for k in keys if k not in present]
    if not empty:
        return
    ingested = context.instance.get_materialized_partitions(RAW_OHLCV_KEY)
    never = [k for k in empty if k not in ingested]
    rejected = [k for k in empty if k in ingested]
    parts = []
    if never:
        parts.append(
            f"{len(never)} partition(s) were never ingested: {compact_keys(never)} — materialise raw_ohlcv "
            "for them first (`qt run --start … --end …`, or the ingestion_job)"
        )
    if rejected:
        parts.append(
            f"{len(rejected)} partition(s) hold no accepted bars (every row was rejected): "
            f"{compact_keys(rejected)} — see the rejects (`qt status`, raw_ohlcv metadata) and fix the source"
        )
    raise dg.Failure(
        description=f"nothing to migrate: the local store {redact(local.location)} has no bars for "
        + "; ".join(parts),
        metadata={"partitions_without_bars": dg.MetadataValue.json(empty[:100])},
    )


class ColdTierConfig(dg.Config):
    older_than_days: int | None = None  # default QT_COLD_AFTER_DAYS
    mode: str = "auto"  # auto (by capabilities) | parquet | compression


@dg.asset(
    deps=[CENTRAL_OHLCV_KEY],
    group_name=GROUP,
    kinds={"postgres", "parquet"},
    description=(
        "Old central bars moved to the cold tier: TimescaleDB compression where licensed, else verified "
        "zstd Parquet archives + dropped partitions (reads still return them)."
    ),
)
def central_cold_tier(
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
