"""Monitoring assets: the observed ``platform_metrics``, the ``platform_cost`` asset with its budget check,
and the freshness checks of the bars in the local and the central store."""

from typing import Any

import dagster as dg

from qt_pipeline.config import get_settings
from qt_pipeline.defs.central.resources import CentralStoreResource

# Observed (never materialised) by platform_metrics_sensor: every tick is an AssetObservation whose numeric
# metadata the UI plots (pool, latency percentiles, outbox, failover, cache, bytes read, consistency, …).
platform_metrics = dg.AssetSpec(
    "platform_metrics",
    group_name="monitoring",
    description="Metrics of the platform (the same as `qt metrics serve` exposes), observed by "
    "platform_metrics_sensor every QT_METRICS_INTERVAL_S.",
)

BUDGET_CHECK = "platform_cost_budget"


class PlatformCostConfig(dg.Config):
    period: str = "30d"  # the observed window: 30d, 12h, 2w


@dg.asset(
    group_name="monitoring",
    check_specs=[
        dg.AssetCheckSpec(
            BUDGET_CHECK,
            asset="platform_cost",
            description="WARN when the projected monthly cost reaches budget × warn ratio, ERROR above the "
            "budget (configs/cost.yaml, QT_BUDGET_MONTHLY_USD, QT_BUDGET_WARN_RATIO)",
        )
    ],
    description="Estimated monthly bill of the platform from measured inputs (on-disk sizes incl. compressed "
    "chunks and the cold tier, compute hours from the Neon API or measured active time, bytes read from "
    "the central store) and the prices of configs/cost.yaml; projection, EFS/local-only comparison, "
    "recommendations. Records the budget status the back-off switch (QT_COST_BACKOFF) reads.",
)
def platform_cost(
    context: dg.AssetExecutionContext, config: PlatformCostConfig, central_store: CentralStoreResource
) -> dg.MaterializeResult:
    from qt_pipeline.monitoring.cost import estimate_cost, parse_period, record_budget
    from qt_pipeline.monitoring.report import cost_markdown, recommendations_markdown

    settings = central_store.settings()
    report = estimate_cost(settings, central_store.get_store(), parse_period(config.period))
    record_budget(settings, report)
    context.log.info(report.status_message())
    metadata: dict[str, Any] = {
        "projected_monthly": dg.MetadataValue.float(round(report.projected_monthly, 6)),
        "period_total": dg.MetadataValue.float(round(report.period_total, 6)),
        "budget_monthly": dg.MetadataValue.float(report.budget_monthly),
        "status": report.status,
        "currency": report.currency,
        "observed_days": round(report.observed_days, 3),
        "cost": dg.MetadataValue.md(cost_markdown(report)),
        "recommendations": dg.MetadataValue.md(recommendations_markdown(report)),
    }
    for line in report.lines + report.alternatives:
        metadata[f"monthly/{line.component}"] = dg.MetadataValue.float(round(line.monthly, 6))
    for key in ("central_bytes", "compressed_bytes", "cold_tier_bytes", "central_bytes_read", "cu_hours"):
        metadata[f"input/{key}"] = float(report.inputs[key] or 0)
    check = dg.AssetCheckResult(
        check_name=BUDGET_CHECK,
        passed=report.status == "ok",
        severity=dg.AssetCheckSeverity.WARN if report.status != "over" else dg.AssetCheckSeverity.ERROR,
        description=report.status_message(),
        metadata={
            "projected_monthly": round(report.projected_monthly, 6),
            "budget_monthly": report.budget_monthly,
            "warn_at": round(report.warn_at, 4),
            "status": report.status,
        },
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


def _freshness_result(summary: Any, store: str, check: str) -> dg.AssetCheckResult:
    from qt_pipeline.monitoring.alerts import repair_command
    from qt_pipeline.monitoring.freshness import check_freshness

    settings = get_settings()
    result = check_freshness(
        summary, settings.symbols, settings.freshness_max_lag_h, store=store, settings=settings
    )
    stale = ",".join(s.symbol for s in result.stale)
    metadata: dict[str, Any] = {
        "max_lag_h": settings.freshness_max_lag_h,
        "stale_symbols": stale or "-",
        "symbols": dg.MetadataValue.md(result.markdown()),
    }
    for s in result.symbols:
        if s.lag_h is not None:
            metadata[f"lag_h/{s.symbol}"] = round(s.lag_h, 2)
        if s.due_open is not None:
            metadata[f"due_session_open/{s.symbol}"] = s.due_open.isoformat()
    if not result.ok:
        metadata["repair"] = repair_command(check, symbols=stale)
    return dg.AssetCheckResult(passed=result.ok, description=result.describe(), metadata=metadata)


# The freshness checks target these two specs (downstream of the bar assets) instead of raw_ohlcv and
# central_ohlcv themselves: a check on an asset runs inside every job that selects the asset, and the
# ingestion/migration runs (`qt run`) treat any failed check of theirs as a failed partition — a stale
# symbol elsewhere must not fail the migration of an old day. They run in freshness_checks_job.
def _freshness_check(store: str, upstream: str, resource_key: str) -> tuple[dg.AssetSpec, Any]:
    """The spec ``<store>_bars_freshness`` (downstream of ``upstream``) and its check ``bars_fresh_<store>``
    reading the newest bar per symbol from the resource ``resource_key``."""
    spec = dg.AssetSpec(
        f"{store}_bars_freshness",
        deps=[dg.AssetKey(upstream)],
        group_name="monitoring",
        description=f"Freshness of the bars in the {store} store (checked by bars_fresh_{store}).",
    )
    name = f"bars_fresh_{store}"

    @dg.asset_check(
        asset=spec.key,
        name=name,
        required_resource_keys={resource_key},
        description=f"Every symbol of QT_SYMBOLS has bars in the {store} store from its last due session "
        "on its market calendar (a session is due QT_FRESHNESS_MAX_LAG_H after the start of its UTC day: the "
        "daily ingestion's allowance), so weekends and holidays of exchange calendars pass; a symbol without "
        "bars fails too.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        resource = getattr(context.resources, resource_key)
        return _freshness_result(resource.get_store().list_symbols(), store, name)

    return spec, _check


local_bars_freshness, bars_fresh_local = _freshness_check("local", "raw_ohlcv", "local_store")
central_bars_freshness, bars_fresh_central = _freshness_check("central", "central_ohlcv", "central_store")


__all__ = [
    "BUDGET_CHECK",
    "bars_fresh_central",
    "bars_fresh_local",
    "central_bars_freshness",
    "local_bars_freshness",
    "platform_cost",
    "platform_metrics",
]
