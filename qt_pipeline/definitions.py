"""The one Definitions object of the qt_pipeline code location (workspace.yaml loads this module).

Keep this module cheap to import: heavy libraries (Great Expectations, Ray, numba kernels) are imported
inside the functions that need them.
"""

import os

import dagster as dg

from qt_pipeline.defs import central, evolution, hybrid, ingestion, monitoring, signals
from qt_pipeline.defs.resources import shared_resources

# A ranged run (single-run backfill policy) materialises hundreds of partitions in one step. With event
# batching Dagster writes their events (planned, materialised) in batches: one INSERT per batch on
# PostgreSQL run storage instead of one round trip per partition (benchmarks/bench_dagster_pipeline.py).
# The run worker loads this module, so the default reaches it; a deployment's own value wins.
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "100")

# Declarative automation, ON by default: central_ohlcv follows raw_ohlcv (every ingested partition reaches
# Postgres and its blocking check, whether the schedule, the landing sensor, a UI backfill or `qt run`
# ingested it), and the hybrid cache follows the central store where the hybrid backend is configured. Safe
# to run unattended: it only requests partitions whose upstream data is present and not being written, and
# emits backfills, so many partitions become one ranged run (single-run backfill policy).
automation_sensor = dg.AutomationConditionSensorDefinition(
    "qt_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    emit_backfills=True,
    description="Evaluates the assets' automation conditions (central_ohlcv follows raw_ohlcv; the hybrid "
    "cache follows the central store).",
)

defs = dg.Definitions.merge(
    ingestion.defs,
    central.defs,
    hybrid.defs,
    evolution.defs,
    signals.defs,
    monitoring.defs,
    dg.Definitions(resources=shared_resources, sensors=[automation_sensor]),
)
