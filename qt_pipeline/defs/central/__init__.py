"""Dagster wiring for the central domain (PostgreSQL / Neon): migration asset (automated: it follows
raw_ohlcv) with its blocking consistency check, the migration, whole-history consistency and reconcile
jobs, the cold tier asset and their schedules."""

import dagster as dg

from qt_pipeline.defs.central.assets import central_cold_tier, central_ohlcv, central_ohlcv_consistency
from qt_pipeline.defs.central.jobs import cold_tier_job, consistency_job, migration_job, reconcile_job
from qt_pipeline.defs.central.resources import central_resources
from qt_pipeline.defs.central.schedules import cold_tier_schedule, consistency_schedule

defs = dg.Definitions(
    assets=[central_ohlcv, central_cold_tier],
    jobs=[migration_job, consistency_job, reconcile_job, cold_tier_job],
    schedules=[consistency_schedule, cold_tier_schedule],
    resources=central_resources,
)

__all__ = ["defs", "central_cold_tier", "central_ohlcv", "central_ohlcv_consistency"]
