"""Dagster wiring for the ingestion domain: the ``raw_ohlcv`` asset (per day and symbol, ranged backfills)
with its Great Expectations quality check, ``ingestion_job`` and its daily schedule, the landing-directory
sensor with its quarantine job, and the ``market_source`` resource. ``local_store`` comes from the shared
resources (defs/resources.py)."""

import dagster as dg

from qt_pipeline.defs.ingestion.assets import raw_ohlcv
from qt_pipeline.defs.ingestion.checks import raw_ohlcv_bar_quality
from qt_pipeline.defs.ingestion.resources import MarketSourceResource, market_source_resource
from qt_pipeline.defs.ingestion.schedules import ingestion_job, raw_ohlcv_daily_schedule
from qt_pipeline.defs.ingestion.sensors import landing_directory_sensor, landing_quarantine_job

ingestion_resources = {"market_source": market_source_resource()}

defs = dg.Definitions(
    assets=[raw_ohlcv],
    jobs=[ingestion_job, landing_quarantine_job],
    schedules=[raw_ohlcv_daily_schedule],
    sensors=[landing_directory_sensor],
    resources=ingestion_resources,
)

__all__ = [
    "MarketSourceResource",
    "defs",
    "ingestion_job",
    "landing_directory_sensor",
    "landing_quarantine_job",
    "raw_ohlcv",
    "raw_ohlcv_bar_quality",
    "raw_ohlcv_daily_schedule",
]
