"""The ``evolved_strategies`` asset: one evolution run (GA on Ray, checkpointed every generation) with
its out-of-sample report as metadata. Thin: validation, evolution and reporting live in
:mod:`qt_pipeline.evolution`."""

import base64
from typing import TYPE_CHECKING, Any

import dagster as dg

from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.evolution.resources import EvolutionStateResource, RayClusterResource
from qt_pipeline.defs.model_config import config_class
from qt_pipeline.defs.resources import StorageResource
from qt_pipeline.defs.signals.keys import SIGNAL_KEYS
from qt_pipeline.evolution.config import EvolutionConfig

# The launchpad's run config is generated from the domain model (one declaration of every field, default
# and description); the domain validates the dumped config before any work (parse_config).
if TYPE_CHECKING:
    EvolutionRunConfig = Any
else:
    EvolutionRunConfig = config_class(EvolutionConfig, "EvolutionRunConfig")


def _fitness_curve_md(png: bytes) -> str:
    return f"![fitness per generation](data:image/png;base64,{base64.b64encode(png).decode()})"


def _make_evaluator(config: Any, ray_cluster: RayClusterResource, context: Any) -> Any:
    """The run's evaluator (not started; ``run_evolution`` starts it after validating the input). Ray
    runs in a driver process owned by the evaluator, not in this step process: a Ray that dies (raylet
    killed, node lost) fails the step with a one-line cause instead of ending the process silently."""
    from qt_pipeline.evolution.ray_eval import RayEvaluator, make_evaluator

    if config.use_ray and not config.ray_address and ray_cluster.address:
        # the RayClusterResource names a cluster: connect to it (probed before any work)
        config = config.model_copy(update={"ray_address": ray_cluster.address})
    # serial when a local run is too small to pay for Ray's start-up (the choice is in the `evaluator`
    # metadata); a named cluster always runs on Ray
    evaluator = make_evaluator(config)
    if isinstance(evaluator, RayEvaluator):
        context.log.info(f"evaluator: {evaluator.describe()}")
    return evaluator


def bars_asset_key() -> dg.AssetKey:
    """The asset whose bars ``bar_store`` reads (STORAGE_BACKEND): the central copy for neon/hybrid, the
    local DuckDB ingestion for local/sharedfs."""
    from qt_pipeline.config import get_settings

    backend = get_settings().storage_backend
    return dg.AssetKey("central_ohlcv" if backend in ("central", "neon", "hybrid") else "raw_ohlcv")


@dg.asset(
    # lineage: evolution reads these bars (every partition in its window) and the regime / correlation
    # series the filter genes act on (read from the signal store)
    deps=[bars_asset_key(), *SIGNAL_KEYS],
    group_name="evolution",
    kinds={"ray", "python"},
    description="Trading strategies evolved by the GA on the training window (hall of fame), re-scored "
    "out of sample; state checkpointed every generation (resume = same run_id).",
)
def evolved_strategies(
    context: dg.AssetExecutionContext,
    config: EvolutionRunConfig,
    bar_store: StorageResource,
    ray_cluster: RayClusterResource,
    evolution_state: EvolutionStateResource,
    central_store: CentralStoreResource,
) -> dg.MaterializeResult:
    from qt_pipeline.config import get_settings
    from qt_pipeline.evolution.config import EvolutionConfigError, parse_config
    from qt_pipeline.evolution.ray_eval import EvaluatorError
    from qt_pipeline.evolution.report import plot_fitness_curve
    from qt_pipeline.evolution.runner import run_evolution
    from qt_pipeline.evolution.state import StateStoreError
    from qt_pipeline.redaction import redact

    try:
        evo_cfg = parse_config(config.model_dump())
    except EvolutionConfigError as exc:
        raise dg.Failure(description=str(exc)) from None

    def progress(stats: Any, total: int) -> None:
        # generations are numbered 0..total-1 everywhere (plot, `qt evolution show`, checkpoints)
        context.log.info(
            f"generation {stats.generation} (of 0..{total - 1}): best {stats.best_fitness:.4f} mean "
            f"{stats.mean_fitness:.4f} std {stats.std_fitness:.4f} diversity {stats.diversity:.3f} "
            f"({stats.evaluations} evaluations, {stats.seconds:.2f} s) — committed"
        )

    def on_start(info: dict[str, Any]) -> None:
        # the bars are in memory now: free the store (the DuckDB file lock) for the rest of the run
        bar_store.release()
        context.log.info(f"evolution run {info['run_id']}: {redact(info)}")

    import pandas as pd

    from qt_pipeline.signals.feed import SignalFeed
    from qt_pipeline.signals.store import SignalStore

    signals = SignalFeed.from_store(
        SignalStore.from_settings(get_settings()), pd.Timestamp(evo_cfg.start), pd.Timestamp(evo_cfg.end)
    )
    if signals is None:
        context.log.warning(
            "no materialised signals (correlation_signals / market_regimes) cover this range: the regime and "
            "correlation genes stay inert; materialise signals_job for these days first"
        )
    state_store = evolution_state.get_state_store(central_store)
    evaluator = _make_evaluator(evo_cfg, ray_cluster, context)
    try:
        result = run_evolution(
            evo_cfg,
            bar_store.get_store(),
            state_store,
            evaluator,
            progress,
            on_start=on_start,
            signals=signals,
        )
    except (EvolutionConfigError, StateStoreError, EvaluatorError) as exc:
        raise dg.Failure(description=redact(exc), metadata={"run_id": evo_cfg.run_id}) from None
    except Exception as exc:
        # anything else (Ray died, the store went away): the committed generations survive — say how to resume
        raise dg.Failure(
            description=f"evolution run {evo_cfg.run_id} stopped: {type(exc).__name__}: {redact(exc)}; "
            f"its committed generations are kept — resume with run_id: {evo_cfg.run_id}",
            metadata={"run_id": evo_cfg.run_id},
        ) from exc
    finally:
        evaluator.close()  # stops the Ray this run started (driver process, workers, agents)
        state_store.close()

    out_dir = get_settings().data_dir / "evolution" / result.run_id
    png_path = out_dir / "fitness_curve.png"
    png = plot_fitness_curve(result.stats, png_path, title=f"run {result.run_id}")
    report = result.report
    from qt_pipeline.signals.ablation import ablation_markdown, filter_ablation

    ablation = filter_ablation(
        result.best_genome, result.extra["test_data"], result.extra["costs"], result.extra["periods_per_year"]
    )
    return dg.MaterializeResult(
        metadata={
            "run_id": result.run_id,
            "generations": result.last_generation + 1,
            "generations_this_run": result.generations_run,
            "resumed": result.resumed_from is not None,
            **({"resumed_after_generation": result.resumed_from} if result.resumed_from is not None else {}),
            "resume_with": dg.MetadataValue.md(
                f"run id `{result.run_id}`: launch evolution_job again with `run_id: {result.run_id}` "
                f"(or `qt run --run-id {result.run_id}` / `qt evolve --run-id {result.run_id} --resume`)"
            ),
            "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
            "evolve_seconds": dg.MetadataValue.float(round(result.evolve_seconds, 3)),
            "evaluations": result.evaluations,
            "evaluations_per_s": dg.MetadataValue.float(round(result.evaluations_per_s, 2)),
            "strategy_bars_per_s": dg.MetadataValue.float(round(result.strategy_bars_per_s, 1)),
            "ray_startup_s": dg.MetadataValue.float(
                round(float(result.extra.get("startup_seconds", 0.0)), 3)
            ),
            "best_fitness": dg.MetadataValue.float(round(result.best_fitness, 6)),
            "best_strategy": dg.MetadataValue.md(result.best_description),
            "best_strategy_filters": dg.MetadataValue.text(str(ablation["filters"].iloc[0])),
            "filters_oos": dg.MetadataValue.md(ablation_markdown(ablation)),
            "signals": dg.MetadataValue.text(
                "materialised" if signals is not None else "none (filters inert)"
            ),
            "is_vs_oos": dg.MetadataValue.md(report.to_markdown()),
            "flagged_strategies": report.n_flagged,
            "fitness_curve": dg.MetadataValue.md(_fitness_curve_md(png)),
            "fitness_curve_path": dg.MetadataValue.path(str(png_path)),
            "evaluator": result.evaluator,
            "state_store": redact(result.state_location),
        }
    )
