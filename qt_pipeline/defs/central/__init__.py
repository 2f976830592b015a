"""Dagster wiring for the central domain (PostgreSQL / Neon): migration asset, blocking consistency
check, whole-history consistency and reconcile jobs, the cold tier asset and their schedules."""

import dagster as dg

from qt_pipeline.defs.central.assets import neon_cold_tier, neon_ohlcv
from qt_pipeline.defs.central.checks import neon_ohlcv_consistency
from qt_pipeline.defs.central.jobs import cold_tier_job, consistency_job, reconcile_job
from qt_pipeline.defs.central.resources import central_resources
from qt_pipeline.defs.central.schedules import cold_tier_schedule, consistency_schedule

defs = dg.Definitions(
    assets=[neon_ohlcv, neon_cold_tier],
    asset_checks=[neon_ohlcv_consistency],
    jobs=[consistency_job, reconcile_job, cold_tier_job],
    schedules=[consistency_schedule, cold_tier_schedule],
    resources=central_resources,
)
