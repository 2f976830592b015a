"""Dagster wiring of monitoring: the observed ``platform_metrics`` (sensor), the ``platform_cost`` asset with
its budget check, freshness checks of the bars in the local and the central store, webhook alerts on run
and check failures. Domain code: :mod:`qt_pipeline.monitoring`."""

import dagster as dg

from qt_pipeline.defs.monitoring.assets import (
    bars_fresh_central,
    bars_fresh_local,
    central_bars_freshness,
    local_bars_freshness,
    platform_cost,
    platform_metrics,
)
from qt_pipeline.defs.monitoring.jobs import (
    freshness_checks_job,
    freshness_checks_schedule,
    platform_cost_job,
    platform_cost_schedule,
)
from qt_pipeline.defs.monitoring.sensors import (
    platform_metrics_sensor,
    qt_check_failure_alert,
    qt_run_failure_alert,
)

defs = dg.Definitions(
    assets=[platform_metrics, platform_cost, local_bars_freshness, central_bars_freshness],
    asset_checks=[bars_fresh_local, bars_fresh_central],
    jobs=[platform_cost_job, freshness_checks_job],
    schedules=[platform_cost_schedule, freshness_checks_schedule],
    sensors=[platform_metrics_sensor, qt_run_failure_alert, qt_check_failure_alert],
)

__all__ = ["defs"]
