"""Dagster wiring for the evolution domain: ``evolved_strategies`` asset, ``evolution_job``, and the
``ray_cluster`` / ``evolution_state`` resources (bars come through the shared ``bar_store``)."""

import dagster as dg

from qt_pipeline.defs.evolution.assets import evolved_strategies
from qt_pipeline.defs.evolution.jobs import evolution_job
from qt_pipeline.defs.evolution.resources import evolution_resources

defs = dg.Definitions(assets=[evolved_strategies], jobs=[evolution_job], resources=evolution_resources)
