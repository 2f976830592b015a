"""Hybrid-domain assets: the local cache warming asset and the observed ``central_health`` asset."""

from typing import Any

import dagster as dg

from qt_pipeline.config import get_settings
from qt_pipeline.defs.resources import DUCKDB_WRITER_POOL, StorageResource

# Observed (never materialised) by central_health_sensor: each tick's health is an AssetObservation, so the
# UI shows the history of latency, pool use, versions and healthy/unhealthy transitions.
central_health = dg.AssetSpec(
    "central_health",
    group_name="hybrid",
    description="Health of the central PostgreSQL/Neon store, observed by central_health_sensor every tick.",
)


def _warm_condition() -> dg.AutomationCondition | None:
    """Where the hybrid backend is configured, the cache follows the central store: warmed as soon as new
    central partitions passed their blocking consistency check. Elsewhere there is no hybrid cache to warm
    (the asset would fail), so no automation."""
    if get_settings().storage_backend != "hybrid":
        return None
    return dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


@dg.asset(
    group_name="hybrid",
    deps=[dg.AssetKey("central_ohlcv")],  # it copies central partitions into this machine's cache
    automation_condition=_warm_condition(),
    pool=DUCKDB_WRITER_POOL,
    description=(
        "This machine's DuckDB cache of the hot window: pulls the missing/newer hot days (QT_HOT_DAYS) of "
        "QT_SYMBOLS from the central store and evicts what fell out of the warm window (QT_WARM_DAYS)."
    ),
)
def local_cache_warm(
    context: dg.AssetExecutionContext, hybrid_store: StorageResource
) -> dg.MaterializeResult:
    from qt_pipeline.storage.hybrid import HybridStore

    store = hybrid_store.get_store()
    if not isinstance(store, HybridStore):
        raise dg.Failure(
            f"local_cache_warm needs the hybrid store, got backend {store.backend_name!r}; "
            "set the hybrid_store resource's backend to 'hybrid'"
        )
    settings = get_settings()
    from qt_pipeline.monitoring.cost import backoff_reason

    backoff = backoff_reason(settings, "cache warming")  # the cost governor's switch (QT_COST_BACKOFF)
    if backoff is not None:
        context.log.warning(backoff)
        return dg.MaterializeResult(metadata={"backed_off": backoff, "rows_pulled": 0})
    report = store.warm_cache(settings.symbols)
    context.log.info(
        f"warmed {report.days_fetched} symbol-day(s), pulled {report.rows_pulled} row(s), "
        f"evicted {report.rows_evicted} row(s) in {report.seconds:.2f} s"
    )
    if report.evict_blocked_reason:
        context.log.warning(f"eviction skipped: {report.evict_blocked_reason}")
    metadata: dict[str, Any] = {
        "rows_pulled": report.rows_pulled,
        "rows_evicted": report.rows_evicted,
        "days_fetched": report.days_fetched,
        "days_evicted": report.days_evicted,
        "hot_days": store.policy.hot_days,
        "warm_days": store.policy.warm_days,
        "seconds": round(report.seconds, 3),
        "coverage": dg.MetadataValue.md(report.coverage_markdown()),
    }
    for c in report.coverage:
        if c.freshness_lag_s is not None:
            metadata[f"freshness_lag_s/{c.symbol}"] = round(c.freshness_lag_s, 1)
    if report.evict_blocked_reason:
        metadata["evict_blocked_reason"] = report.evict_blocked_reason
    return dg.MaterializeResult(metadata=metadata)
