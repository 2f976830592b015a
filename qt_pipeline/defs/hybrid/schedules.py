"""Hybrid-domain schedules: warm the local cache (default every 15 minutes, QT_WARM_CRON)."""

import dagster as dg

from qt_pipeline.config import get_settings
from qt_pipeline.defs.hybrid.jobs import local_cache_warm_job
from qt_pipeline.defs.schedules import utc_schedule


def _default_status() -> dg.DefaultScheduleStatus:
    # running by default where the hybrid backend is configured; elsewhere it can be switched on in the UI
    if get_settings().storage_backend == "hybrid":
        return dg.DefaultScheduleStatus.RUNNING
    return dg.DefaultScheduleStatus.STOPPED


local_cache_warm_schedule = utc_schedule(
    local_cache_warm_job,
    get_settings().warm_cron,
    "Warm this machine's DuckDB cache of the hot window from the central store.",
    default_status=_default_status(),
)
