"""Jobs of the central store: whole-history consistency, reconcile (repair), cold tier."""

from typing import Any

import dagster as dg

from qt_pipeline.defs.central.assets import CENTRAL_OHLCV_KEY, central_cold_tier, central_ohlcv
from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.ingestion.partitions import is_valid_partition, partition_key_for
from qt_pipeline.defs.resources import DUCKDB_WRITER_POOL, LocalStoreResource
from qt_pipeline.redaction import redact


class HistoryRangeConfig(dg.Config):
    symbols: list[str] | None = None
    start: str | None = None  # ISO date/timestamp (UTC), inclusive
    end: str | None = None  # exclusive


class ReconcileConfig(HistoryRangeConfig):
    dry_run: bool = False


@dg.op(
    pool=DUCKDB_WRITER_POOL,
    description="Compare per-symbol-day (rows, checksum) of DuckDB and Postgres over the whole history.",
)
def compare_history_op(
    context: dg.OpExecutionContext,
    config: HistoryRangeConfig,
    local_store: LocalStoreResource,
    central_store: CentralStoreResource,
) -> dg.Output[int]:
    from qt_pipeline.storage.consistency import compare_history

    central = central_store.get_store()
    res = compare_history(
        local_store.get_store(), central, symbols=config.symbols, start=config.start, end=config.end
    )
    md = res.metadata()
    md["location"] = redact(central.location)
    for d in res.differing:
        context.log.error(f"differs: {d.describe()}")
    metadata = {k: dg.MetadataValue.json(v) if isinstance(v, list) else v for k, v in md.items()}
    if not res.ok:
        raise dg.Failure(
            description=(
                f"{len(res.differing)} of {res.compared} symbol-day(s) differ between DuckDB and "
                f"{redact(central.location)}; run `qt reconcile` or the reconcile_job to repair them"
            ),
            metadata=metadata,
        )
    context.log.info(f"{res.compared} symbol-day(s) consistent ({res.rows_local} rows)")
    return dg.Output(res.compared, metadata=metadata)


def repair_materializations(actions: list, location: str) -> list[dg.AssetMaterialization]:
    """One central_ohlcv materialisation per symbol-day reconcile re-copied (``qt reconcile`` reports them to
    the instance as runless events; ``reconcile_op`` yields them)."""
    return [
        dg.AssetMaterialization(
            asset_key=CENTRAL_OHLCV_KEY,
            partition=str(partition_key_for(a.day, a.symbol)),
            description="re-copied from DuckDB by reconcile",
            metadata={
                "rows": dg.MetadataValue.int(a.local_rows),
                "rows_deleted": dg.MetadataValue.int(a.central_rows_deleted or 0),
                "method": dg.MetadataValue.text("reconcile (replace_range)"),
                "location": dg.MetadataValue.text(redact(location)),
            },
        )
        for a in actions
        if a.applied and is_valid_partition(a.day, a.symbol)
    ]


@dg.op(
    pool=DUCKDB_WRITER_POOL,
    description="Re-copy only the symbol-days that differ (replace_range), then verify them again; each "
    "repaired symbol-day is recorded as a materialisation of its central_ohlcv partition.",
)
def reconcile_op(
    context: dg.OpExecutionContext,
    config: ReconcileConfig,
    local_store: LocalStoreResource,
    central_store: CentralStoreResource,
):
    from qt_pipeline.storage.consistency import reconcile_history

    out = reconcile_history(
        local_store.get_store(),
        central_store.get_store(),
        symbols=config.symbols,
        start=config.start,
        end=config.end,
        dry_run=config.dry_run,
    )
    summary = out.summary
    for a in summary.actions:
        verb = "would re-copy" if config.dry_run else "re-copied"
        context.log.info(f"{verb} {a.day.isoformat()}|{a.symbol}: {a.local_rows} local row(s)")
    metadata: dict[str, Any] = {
        "dry_run": config.dry_run,
        "symbol_days_differing": len(out.before.differing),
        "repaired": summary.repaired,
        "rows_copied": summary.rows_copied,
        "symbol_days": dg.MetadataValue.json(
            [f"{a.day.isoformat()}|{a.symbol}" for a in summary.actions[:50]]
        ),
    }
    if not config.dry_run:
        # Postgres changed for these partitions: the asset's history must say so
        yield from repair_materializations(summary.actions, central_store.get_store().location)
    if out.after is not None:
        metadata["symbol_days_still_differing"] = len(out.after.differing)
    if not out.ok:
        raise dg.Failure(
            description=f"{len(out.still_differing)} symbol-day(s) still differ after reconcile: "
            + "; ".join(d.describe() for d in out.still_differing[:20]),
            metadata=metadata,
        )
    yield dg.Output(summary.repaired, metadata=metadata)


@dg.job(description="Whole-history consistency of DuckDB vs Postgres; fails listing differing symbol-days.")
def consistency_job() -> None:
    compare_history_op()


@dg.job(
    description="Repair: re-copy the differing symbol-days from DuckDB into Postgres (dry_run: list only)."
)
def reconcile_job() -> None:
    reconcile_op()


cold_tier_job = dg.define_asset_job("cold_tier_job", selection=[central_cold_tier])

migration_job = dg.define_asset_job(
    "migration_job",
    selection=dg.AssetSelection.assets(central_ohlcv),  # with its blocking consistency check
    description="Copy (day, symbol) partitions from the local DuckDB into the central PostgreSQL and prove "
    "each one consistent (ranged: one run for a whole backfill).",
    tags={"qt/domain": "central"},
)
