"""``ingestion_job`` and its daily schedule: after midnight UTC, the day that just closed for every symbol
in ONE run (the newest ``date`` partition × all symbols as a partition key range; ``raw_ohlcv`` runs a
range in one step). ``central_ohlcv`` follows by its automation condition (defs/central/assets.py)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from qt_pipeline.config import get_settings
from qt_pipeline.defs.ingestion.assets import raw_ohlcv
from qt_pipeline.defs.ingestion.partitions import newest_closed_day, partition_key_for

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.assets(raw_ohlcv),  # includes its checks (bar quality); partitioned like it
    description="Fetch, validate and store raw OHLCV bars of (day, symbol) partitions, with the bar quality "
    "check of each partition.",
    tags={"qt/domain": "ingestion"},
)


def day_range_tags(first_day, last_day, symbols) -> dict[str, str]:
    """Run tags that make one run cover ``first_day..last_day`` × ``symbols`` (a partition key range).
    ``symbols`` must be contiguous in the partition order (QT_SYMBOLS): a range is a rectangle."""
    syms = list(symbols)
    return {
        "dagster/asset_partition_range_start": str(partition_key_for(first_day, syms[0])),
        "dagster/asset_partition_range_end": str(partition_key_for(last_day, syms[-1])),
    }


@dg.schedule(
    name="raw_ohlcv_daily_schedule",
    job=ingestion_job,
    cron_schedule="15 0 * * *",  # a few minutes of slack for late bars of the closed day
    execution_timezone="UTC",
    description="Daily at 00:15 UTC: ingest the day that just closed for every symbol, in one run.",
)
def raw_ohlcv_daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    when = context.scheduled_execution_time
    day = newest_closed_day(None if when is None else pd.Timestamp(when))
    return dg.RunRequest(
        run_key=f"ingest-{day.isoformat()}",
        tags={**day_range_tags(day, day, get_settings().symbols), "qt/trigger": "schedule"},
    )
