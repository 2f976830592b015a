"""Dagster wiring for the signals domain: the dbt_timescale models (dagster-dbt), the signal engine assets
(``correlation_signals``, ``market_regimes``) with their checks, jobs and schedules.

``defs`` is built on first access: importing :mod:`qt_pipeline.defs.signals.keys` (as the evolution wiring
does) does not import dbt."""

from typing import Any


def _build() -> Any:
    import dagster as dg

    from qt_pipeline.defs.signals.assets import signal_engines, signals_job, signals_schedule
    from qt_pipeline.defs.signals.dbt import (
        dbt_resource,
        dbt_rollups_job,
        dbt_rollups_schedule,
        dbt_timescale_models,
    )

    return dg.Definitions(
        assets=[dbt_timescale_models, signal_engines],
        jobs=[dbt_rollups_job, signals_job],
        schedules=[dbt_rollups_schedule, signals_schedule],
        resources={"dbt": dbt_resource()},
    )


def __getattr__(name: str) -> Any:
    if name == "defs":
        value = globals()["defs"] = _build()
        return value
    raise AttributeError(name)
