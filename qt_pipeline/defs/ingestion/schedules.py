"""``raw_ohlcv_job`` and its daily schedule: after midnight UTC, one run per symbol for the day that
just closed (the newest ``date`` partition; ``build_schedule_from_partitioned_job`` yields one RunRequest
per ``MultiPartitionKey`` of that day)."""

from __future__ import annotations

import dagster as dg

from qt_pipeline.defs.ingestion.assets import raw_ohlcv

raw_ohlcv_job = dg.define_asset_job(
    "raw_ohlcv_job",
    selection=dg.AssetSelection.assets(raw_ohlcv),  # includes its checks (bar quality); partitioned like it
    description="Fetch, validate and store raw OHLCV bars of one (day, symbol) partition.",
)

raw_ohlcv_daily_schedule = dg.build_schedule_from_partitioned_job(
    raw_ohlcv_job,
    name="raw_ohlcv_daily_schedule",
    hour_of_day=0,
    minute_of_hour=15,  # a few minutes of slack for late bars of the closed day
    description="Daily at 00:15 UTC: ingest the day that just closed, one run per symbol.",
)
