"""Monitoring jobs and schedules: the daily cost estimate and the hourly freshness checks."""

import dagster as dg

from qt_pipeline.defs.monitoring.assets import bars_fresh_central, bars_fresh_local, platform_cost

platform_cost_job = dg.define_asset_job(
    "platform_cost_job",
    selection=dg.AssetSelection.assets(platform_cost),
    description="Estimate the monthly bill, check it against the budget, record the budget status.",
)
freshness_checks_job = dg.define_asset_job(
    "freshness_checks_job",
    selection=dg.AssetSelection.checks(bars_fresh_local, bars_fresh_central),
    description="Freshness of the newest bar per symbol in the local and the central store.",
)
platform_cost_schedule = dg.ScheduleDefinition(
    name="platform_cost_schedule", job=platform_cost_job, cron_schedule="0 4 * * *", execution_timezone="UTC"
)
freshness_checks_schedule = dg.ScheduleDefinition(
    name="freshness_checks_schedule",
    job=freshness_checks_job,
    cron_schedule="20 * * * *",
    execution_timezone="UTC",
)
