"""Dagster wiring for the ingestion domain: the ``raw_ohlcv`` asset (per day and symbol), its Great
Expectations quality check, the daily schedule, the landing-directory sensor with its quarantine job, and
the ``market_source`` resource. ``local_store`` comes from the shared resources (defs/resources.py)."""

import dagster as dg

from qt_pipeline.defs.ingestion.assets import raw_ohlcv
from qt_pipeline.defs.ingestion.checks import raw_ohlcv_bar_quality
from qt_pipeline.defs.ingestion.resources import MarketSourceResource
from qt_pipeline.defs.ingestion.schedules import raw_ohlcv_daily_schedule, raw_ohlcv_job
from qt_pipeline.defs.ingestion.sensors import landing_directory_sensor, landing_quarantine_job

ingestion_resources = {"market_source": MarketSourceResource()}

defs = dg.Definitions(
    assets=[raw_ohlcv],
    asset_checks=[raw_ohlcv_bar_quality],
    jobs=[raw_ohlcv_job, landing_quarantine_job],
    schedules=[raw_ohlcv_daily_schedule],
    sensors=[landing_directory_sensor],
    resources=ingestion_resources,
)
