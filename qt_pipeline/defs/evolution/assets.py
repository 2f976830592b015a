"""The ``evolved_strategies`` asset: one evolution run (GA on Ray, checkpointed every generation) with
its out-of-sample report as metadata. Thin: validation, evolution and reporting live in
:mod:`qt_pipeline.evolution`."""

import base64
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.evolution.resources import EvolutionStateResource, RayClusterResource
from qt_pipeline.defs.resources import StorageResource
from qt_pipeline.defs.signals.keys import SIGNAL_KEYS


class FitnessRunConfig(dg.Config):
    metric: Literal["sharpe", "sortino", "calmar", "cagr"] = "sharpe"
    min_trades: int = 10
    min_trades_per_fold: int = 3
    max_drawdown: float = 0.5
    min_exposure: float = 0.0
    max_exposure: float = 1.0
    fold_aggregate: Literal["mean", "median", "min"] = "mean"
    min_horizon_days: float = 365.0


class CostsRunConfig(dg.Config):
    fee_bps: float = 1.0
    slippage_bps: float = 1.0
    borrow_bps_per_year: float = 0.0


class EvolutionRunConfig(dg.Config):
    """Mirrors :class:`qt_pipeline.evolution.config.EvolutionConfig` (validated there, before any work).
    Dates are ISO strings (naive = UTC). Empty ``run_id`` = generated."""

    symbols: list[str] = Field(description="Symbols to evolve on (must be in the bar store)")
    start: str = Field(description="First bar time (inclusive), e.g. 2024-01-01")
    end: str = Field(description="End of the data (exclusive)")
    train_end: str | None = Field(
        default=None, description="End of the training window; default: start + train_fraction*(end-start)"
    )
    test_start: str | None = Field(
        default=None, description="Start of the out-of-sample window (>= train_end); default: train_end"
    )
    train_fraction: float = 0.7
    min_bars: int = 200
    periods_per_year: float | None = None
    weights: dict[str, float] | None = Field(default=None, description="Capital per symbol; empty: equal")
    folds: int = Field(default=3, description="Walk-forward folds (1 = one train/test split)")
    scheme: Literal["rolling", "anchored"] = "rolling"
    purge_bars: int = 0
    embargo_bars: int = 0
    population_size: int = 50
    generations: int = 10
    seed: int = 0
    tournament_size: int = 3
    crossover_prob: float = 0.9
    mutation_prob: float = 0.3
    gene_mutation_prob: float = 0.2
    sbx_eta: float = 15.0
    mutation_eta: float = 20.0
    elite: int = 2
    hall_of_fame_size: int = 10
    oos_collapse_threshold: float = 0.5
    fitness: FitnessRunConfig = Field(default_factory=FitnessRunConfig)
    costs: CostsRunConfig = Field(default_factory=CostsRunConfig)
    use_ray: bool = True
    ray_address: str | None = Field(
        default=None, description="Existing Ray cluster (ray://host:10001); empty: local Ray"
    )
    num_workers: int = 2
    batch_size: int | None = None
    run_id: str | None = Field(
        default=None, description="Run id; an existing id with the same config resumes it"
    )
    resume: bool = False


def _fitness_curve_md(png: bytes) -> str:
    return f"![fitness per generation](data:image/png;base64,{base64.b64encode(png).decode()})"


def _make_evaluator(config: Any, ray_cluster: RayClusterResource, context: Any) -> Any:
    """The run's evaluator (not started; ``run_evolution`` starts it after validating the input). Ray
    runs in a driver process owned by the evaluator, not in this step process: a Ray that dies (raylet
    killed, node lost) fails the step with a one-line cause instead of ending the process silently."""
    from qt_pipeline.evolution.ray_eval import RayEvaluator, make_evaluator

    evaluator = make_evaluator(config)
    if isinstance(evaluator, RayEvaluator) and not config.ray_address and ray_cluster.address:
        evaluator.address = ray_cluster.address
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
