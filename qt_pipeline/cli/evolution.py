"""``qt evolve`` (run or resume an evolution with a progress bar) and ``qt evolution runs|show RUN_ID``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from qt_pipeline.redaction import redact

evolution_app = typer.Typer(
    help="Inspect evolution runs (state store: central Postgres or local DuckDB).", no_args_is_help=True
)


def _fail(console: Console, msg: object, code: int = 1) -> NoReturn:
    console.print(f"[red]error:[/red] {redact(msg)}")
    raise typer.Exit(code)


def evolve_command(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="Run config (YAML/JSON): EvolutionConfig fields, "
            "or the Dagster run-config shape of configs/evolution.example.yaml.",
        ),
    ],
    run_id: Annotated[
        str | None, typer.Option(help="Run id (an existing id with the same config resumes).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Require the run id to exist and resume it.")
    ] = False,
    serial: Annotated[
        bool, typer.Option("--serial", help="Evaluate in this process instead of on Ray.")
    ] = False,
    generations: Annotated[int | None, typer.Option(help="Override 'generations'.")] = None,
    population: Annotated[int | None, typer.Option(help="Override 'population_size'.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override 'seed'.")] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Existing Ray cluster (default QT_RAY_ADDRESS; empty: local).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Override 'num_workers'.")] = None,
    top: Annotated[int, typer.Option(help="Strategies shown in the summary.")] = 5,
) -> None:
    """Run (or resume) an evolution: bars through the storage interface (STORAGE_BACKEND), state
    checkpointed after every generation, then the out-of-sample report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from qt_pipeline.config import get_settings
    from qt_pipeline.evolution.config import EvolutionConfigError, load_config
    from qt_pipeline.evolution.ray_eval import EvaluatorError
    from qt_pipeline.evolution.runner import print_summary, run_evolution
    from qt_pipeline.evolution.state import StateStoreError, state_store_from_settings
    from qt_pipeline.storage import StorageError, get_storage

    console = Console(highlight=False)
    overrides = {
        "run_id": run_id,
        "generations": generations,
        "population_size": population,
        "seed": seed,
        "ray_address": ray_address,
        "num_workers": workers,
    }
    if resume:
        overrides["resume"] = True
    if serial:
        overrides["use_ray"] = False
    try:
        cfg = load_config(config, **overrides)
    except EvolutionConfigError as exc:
        _fail(console, exc, 2)
    settings = get_settings()
    store = state = None
    try:
        store = get_storage(settings=settings)
        state = state_store_from_settings(settings)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(f"evolving {cfg.run_id}", total=cfg.generations, info="starting…")

            def on_start(info: dict) -> None:
                done = 0 if info["resumed_from"] is None else info["resumed_from"] + 1
                bar.update(
                    task,
                    completed=done,
                    info=f"{info['evaluator']}"
                    + (f", resumed after generation {info['resumed_from']}" if done else ""),
                )

            def progress(stats, total) -> None:  # noqa: ANN001
                bar.update(
                    task,
                    completed=stats.generation + 1,
                    info=f"best {stats.best_fitness:.3f} mean {stats.mean_fitness:.3f} "
                    f"div {stats.diversity:.3f}",
                )

            result = run_evolution(cfg, store, state, progress=progress, on_start=on_start)
        print_summary(result, console, top=top)
    except EvolutionConfigError as exc:
        _fail(console, exc, 2)
    except (StateStoreError, EvaluatorError, StorageError) as exc:
        _fail(console, exc, 1)
    finally:
        if state is not None:
            state.close()
        if store is not None:
            store.close()


@evolution_app.command("runs")
def runs_command(limit: Annotated[int, typer.Option(help="Most recent runs shown.")] = 20) -> None:
    """List evolution runs: status, generations, best fitness."""
    from qt_pipeline.evolution.state import StateStoreError, state_store_from_settings

    console = Console(highlight=False)
    try:
        with state_store_from_settings() as state:
            records = state.list_runs(limit)
            best = {}
            for r in records:
                ck = state.generation_stats(r.run_id)
                best[r.run_id] = float(ck["best_fitness"].max()) if len(ck) else None
            location = state.location
    except StateStoreError as exc:
        _fail(console, exc)
    table = Table(title=f"evolution runs in {redact(location)}")
    for col in ("run id", "status", "generations", "best fitness", "symbols", "created", "updated"):
        table.add_column(col)
    for r in records:
        gens = "-" if r.last_generation is None else f"{r.last_generation + 1}/{r.config.get('generations')}"
        b = best[r.run_id]
        table.add_row(
            r.run_id,
            r.status,
            gens,
            "-" if b is None else f"{b:.4f}",
            ",".join(r.config.get("symbols", [])),
            f"{r.created_at:%Y-%m-%d %H:%M:%S}",
            f"{r.updated_at:%Y-%m-%d %H:%M:%S}",
        )
    console.print(table)


@evolution_app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    top: Annotated[int, typer.Option(help="Strategies shown.")] = 5,
) -> None:
    """Show one run: record, per-generation statistics and its evolved strategies (IS vs OOS)."""
    from qt_pipeline.evolution.state import StateStoreError, state_store_from_settings

    console = Console(highlight=False)
    try:
        with state_store_from_settings() as state:
            rec = state.get_run(run_id)
            if rec is None:
                _fail(
                    console,
                    f"no evolution run {run_id!r} in {state.location}; list runs with `qt evolution runs`",
                )
            stats = state.generation_stats(run_id)
            strategies = state.load_strategies(run_id)
    except StateStoreError as exc:
        _fail(console, exc)
    console.print(
        f"[bold]{rec.run_id}[/bold] status={rec.status} last_generation={rec.last_generation} "
        f"seed={rec.seed} created={rec.created_at:%Y-%m-%d %H:%M:%S}"
        + (f" error={redact(rec.error)}" if rec.error else "")
    )
    gt = Table(title="generations")
    for col in ("gen", "best", "mean", "std", "diversity", "evaluations", "seconds"):
        gt.add_column(col, justify="right")
    for r in stats.itertuples(index=False):
        gt.add_row(
            str(r.generation),
            f"{r.best_fitness:.4f}",
            f"{r.mean_fitness:.4f}",
            f"{r.std_fitness:.4f}",
            f"{r.diversity:.3f}",
            str(r.evaluations),
            f"{r.seconds:.2f}",
        )
    console.print(gt)
    if len(strategies) == 0:
        console.print("no evolved strategies stored yet (the run has not completed)")
        return
    st = Table(title="evolved strategies (in-sample | out-of-sample)")
    for col in ("#", "fitness IS", "fitness OOS", "Sharpe IS", "Sharpe OOS", "trades OOS", "flags"):
        st.add_column(col)

    def _f(d: dict | None, k: str, fmt: str) -> str:
        v = (d or {}).get(k)
        return "-" if v is None else format(v, fmt)

    for r in strategies.head(top).itertuples(index=False):
        st.add_row(
            str(r.rank),
            f"{r.fitness:.3f}",
            "-" if r.oos_fitness is None else f"{r.oos_fitness:.3f}",
            _f(r.is_metrics, "sharpe", ".2f"),
            _f(r.oos_metrics, "sharpe", ".2f"),
            _f(r.oos_metrics, "n_trades", ".0f"),
            r.flags or "-",
        )
    console.print(st)
    console.print(f"[bold]best:[/bold] {strategies.iloc[0]['description']}")


def register(app: typer.Typer) -> None:
    app.command("evolve")(evolve_command)
    app.add_typer(evolution_app, name="evolution")
