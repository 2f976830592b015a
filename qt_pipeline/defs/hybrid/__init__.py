"""Dagster wiring for the hybrid domain: cache warming asset + schedule, outbox replay job, Neon health
sensor observing the ``central_health`` asset. Business logic lives in ``qt_pipeline.storage.hybrid``."""

import dagster as dg

from qt_pipeline.defs.hybrid.assets import central_health, local_cache_warm
from qt_pipeline.defs.hybrid.jobs import local_cache_warm_job, outbox_replay_job
from qt_pipeline.defs.hybrid.schedules import local_cache_warm_schedule
from qt_pipeline.defs.hybrid.sensors import central_health_sensor
from qt_pipeline.defs.resources import StorageResource

defs = dg.Definitions(
    assets=[local_cache_warm, central_health],
    jobs=[local_cache_warm_job, outbox_replay_job],
    schedules=[local_cache_warm_schedule],
    sensors=[central_health_sensor],
    resources={"hybrid_store": StorageResource(backend="hybrid")},
)
