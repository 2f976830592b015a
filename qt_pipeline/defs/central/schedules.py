"""Daily schedules of the central store (Dagster owns scheduling; Neon has no background workers)."""

from __future__ import annotations

import dagster as dg

from qt_pipeline.defs.central.jobs import cold_tier_job, consistency_job

consistency_schedule = dg.ScheduleDefinition(
    name="consistency_schedule",
    job=consistency_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    description="Daily whole-history DuckDB vs Postgres consistency check.",
)

cold_tier_schedule = dg.ScheduleDefinition(
    name="cold_tier_schedule",
    job=cold_tier_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    description="Daily cold tier: compress (TimescaleDB TSL) or archive + drop partitions older than QT_COLD_AFTER_DAYS.",
)
