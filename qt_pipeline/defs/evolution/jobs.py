"""``evolution_job``: materialises ``evolved_strategies``. Launch it from the Launchpad or with
``dagster job launch -w workspace.yaml -j evolution_job --config configs/evolution.example.yaml``."""

import dagster as dg

from qt_pipeline.defs.evolution.assets import evolved_strategies

evolution_job = dg.define_asset_job(
    "evolution_job",
    selection=[evolved_strategies],
    description="Evolve trading strategies (GA on Ray, checkpointed per generation) and report them out of sample.",
)
