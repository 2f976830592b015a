"""Dagster wiring for the signals domain: the dbt_timescale models (dagster-dbt), the signal engine assets
(``correlation_signals``, ``market_regimes``) with their checks, jobs and schedules."""

import dagster as dg

from qt_pipeline.defs.signals.assets import signal_engines, signals_job, signals_schedule
from qt_pipeline.defs.signals.dbt import (
    dbt_resource,
    dbt_rollups_job,
    dbt_rollups_schedule,
    dbt_timescale_models,
)

defs = dg.Definitions(
    assets=[dbt_timescale_models, signal_engines],
    jobs=[dbt_rollups_job, signals_job],
    schedules=[dbt_rollups_schedule, signals_schedule],
    resources={"dbt": dbt_resource()},
)
