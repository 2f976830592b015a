"""Daily schedules of the central store (Dagster owns scheduling; Neon has no background workers)."""

from __future__ import annotations

from qt_pipeline.defs.central.jobs import cold_tier_job, consistency_job
from qt_pipeline.defs.schedules import utc_schedule

consistency_schedule = utc_schedule(
    consistency_job, "0 3 * * *", "Daily whole-history DuckDB vs Postgres consistency check."
)

cold_tier_schedule = utc_schedule(
    cold_tier_job,
    "30 3 * * *",
    "Daily cold tier: compress (TimescaleDB TSL) or archive + drop partitions older than QT_COLD_AFTER_DAYS.",
)
