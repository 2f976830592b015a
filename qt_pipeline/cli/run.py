"""``qt run``: the main job with embedded defaults.

Stages run in order over one :class:`RunContext` (:data:`STAGES`): ingest, report, migrate, evolve. A stage is ``fn(ctx) -> None`` and raises :class:`StageError` with a clear message to
stop the run (exit code 1).

Ingestion materialises the ``raw_ohlcv`` partitions (synthetic bars unless QT_MARKET_SOURCE says otherwise)
through Dagster, so the runs show in the UI when ``DAGSTER_HOME`` is set (else an ephemeral instance).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qt_pipeline.redaction import redact


class StageError(RuntimeError):
    """A stage failed; the message says what failed and how to fix it (already redacted)."""


@dataclass
class RunContext:
    settings: Any
    console: Console
    days: list[date]
    symbols: list[str]
    checks: bool = True
    population: int = 24
    generations: int = 5
    use_ray: bool = True
    min_bars: int | None = None  # evolution: bars per symbol needed in each window (None = config default)
    log_level: str = "WARNING"  # Dagster console log level during materialisations
    instance: Any = None
    defs: Any = None
    results: dict[str, Any] = field(default_factory=dict)


def _progress(console: Console, label: str) -> Progress:
    """A progress bar ``label <item> [bar] done/total elapsed`` that stays on screen."""
    return Progress(
        TextColumn(f"[bold]{label}[/bold] {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def ingestion_days(n_days: int, partitions_start: date, newest: date) -> list[date]:
    """The last ``n_days`` closed days ending ``newest``, never before ``partitions_start``."""
    if n_days < 1:
        raise StageError(f"--days must be >= 1, got {n_days}")
    if partitions_start > newest:
        raise StageError(
            f"QT_PARTITIONS_START={partitions_start} is after the newest closed day {newest}: there is no "
            "partition to ingest yet; set QT_PARTITIONS_START to an earlier date"
        )
    first = max(newest - timedelta(days=n_days - 1), partitions_start)
    return [first + timedelta(days=i) for i in range((newest - first).days + 1)]


def explicit_days(
    start: date, end: date | None, n_days: int, partitions_start: date, newest: date
) -> list[date]:
    """Days ``start..end`` (inclusive; ``end`` defaults to ``start + n_days - 1``), inside the partition
    range ``[partitions_start, newest]``."""
    if n_days < 1:
        raise StageError(f"--days must be >= 1, got {n_days}")
    last = end if end is not None else start + timedelta(days=n_days - 1)
    if last < start:
        raise StageError(f"--end {last} is before --start {start}; give the first and last day to ingest")
    if start < partitions_start:
        raise StageError(
            f"--start {start} is before QT_PARTITIONS_START={partitions_start}, the first raw_ohlcv partition; "
            "set QT_PARTITIONS_START earlier or start later"
        )
    if last > newest:
        raise StageError(
            f"--end {last} is after the newest closed UTC day {newest} (a day is ingested once it has closed)"
        )
    return [start + timedelta(days=i) for i in range((last - start).days + 1)]


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


def _root_cause(err) -> str:
    """First line of the innermost cause of a Dagster ``SerializableErrorInfo`` (the op's wrapper error
    says only "Error occurred while executing op …"), without the exception's module path."""
    while getattr(err, "cause", None) is not None:
        err = err.cause
    first = (err.message or "").strip().splitlines()[0] if (err.message or "").strip() else ""
    head, sep, rest = first.partition(": ")
    if sep and "." in head and " " not in head:  # "qt_pipeline.storage.interface.StorageError: …"
        first = f"{head.rsplit('.', 1)[-1]}: {rest}"
    return first


def _failure_message(result) -> str:
    msgs: list[str] = []
    for ev in result.all_events:
        if ev.is_step_failure:
            err = getattr(ev.event_specific_data, "error", None)
            msg = _root_cause(err) if err is not None else (ev.message or "")
            if msg and msg not in msgs:
                msgs.append(msg)
    return redact("; ".join(msgs) or "run failed (see the Dagster event log)")


def _materialize_partitions(
    ctx: RunContext, label: str, assets: list[Any], resource_keys: tuple[str, ...], on_result: Callable
) -> None:
    """Materialise ``assets`` (and the checks among them) for every (day, symbol) partition, one Dagster
    run each, with a progress bar; ``on_result(key, result)`` collects metadata. Stops at the first
    failure with the run's error (redacted)."""
    import dagster as dg

    from qt_pipeline.defs.ingestion.partitions import partition_key_for

    resources = {k: v for k, v in ctx.defs.resources.items() if k in resource_keys}
    keys = [partition_key_for(d, s) for d in ctx.days for s in ctx.symbols]
    with _progress(ctx.console, label) as progress:
        task = progress.add_task(label, total=len(keys))
        for key in keys:
            progress.update(task, description=str(key))
            try:
                result = dg.materialize(
                    assets,
                    partition_key=key,
                    instance=ctx.instance,
                    resources=resources,
                    raise_on_error=False,
                    tags={"qt/command": "qt run"},
                    # keep the terminal for the progress bar; the full event log is in the instance
                    run_config={"loggers": {"console": {"config": {"log_level": ctx.log_level}}}},
                )
            except Exception as exc:  # noqa: BLE001 - definition/config errors: report and stop
                raise StageError(f"{label} {key}: {redact(exc)}") from None
            if not result.success:
                raise StageError(f"{label} {key} failed: {_failure_message(result)}")
            on_result(key, result)
            progress.advance(task)


def stage_ingest(ctx: RunContext) -> None:
    """Materialise raw_ohlcv (and its bar quality check) for every (day, symbol)."""
    from qt_pipeline.defs.ingestion.assets import raw_ohlcv
    from qt_pipeline.defs.ingestion.checks import raw_ohlcv_bar_quality

    totals = {"partitions": 0, "accepted": 0, "rejected": 0}
    quality: dict[str, bool] = {}

    def collect(key: Any, result: Any) -> None:
        totals["partitions"] += 1
        for mat in result.asset_materializations_for_node("raw_ohlcv"):
            totals["accepted"] += int(mat.metadata["rows_accepted"].value)
            totals["rejected"] += int(mat.metadata["rows_rejected"].value)
        for ev in result.get_asset_check_evaluations():
            quality[str(key)] = bool(ev.passed)

    assets: list[Any] = [raw_ohlcv] + ([raw_ohlcv_bar_quality] if ctx.checks else [])
    _materialize_partitions(ctx, "ingest", assets, ("market_source", "local_store"), collect)
    ctx.results["ingest"] = {**totals, "quality_failed": sorted(k for k, ok in quality.items() if not ok)}


def stage_quarantine(ctx: RunContext) -> None:
    """With the landing source: store the rejects of every landing file that (partly) fits no partition
    of this run's range — empty, garbage, unknown symbols, no placeable row — and say so, as the landing
    sensor's quarantine job does. Without it such files were ignored silently."""
    if ctx.settings.market_source != "landing":
        return
    from rich.markup import escape

    from qt_pipeline.defs.ingestion.sensors import plan_landing_file
    from qt_pipeline.market.quarantine import quarantine_file
    from qt_pipeline.market.sources.landing import LandingDirectorySource
    from qt_pipeline.storage import get_storage

    src = LandingDirectorySource.from_settings(ctx.settings)
    store = get_storage("local", ctx.settings)
    days, symbols = set(ctx.days), set(ctx.symbols)
    quarantined = 0
    try:
        for f in src.scan():
            insp = src.inspect(f.path)
            _, needs, _ = plan_landing_file(insp)
            outside = [(s, d) for s, d in insp.partition_keys if s not in symbols or d not in days]
            if not needs and not outside:
                continue
            if not needs:
                ctx.console.print(
                    f"{escape(redact(f.path))}: {len(outside)} partition(s) outside this run "
                    f"({outside[0][1]}..{outside[-1][1]}); ingest them with --start/--end or the landing sensor"
                )
                continue
            result, rejects = quarantine_file(
                src,
                f.path,
                interval=ctx.settings.interval,
                known_symbols=ctx.settings.symbols,
                partitions_start=ctx.settings.partitions_start,
            )
            if len(rejects):
                store.write_rejects(rejects)
            quarantined += 1
            reasons = rejects["reason"].value_counts().sort_index().to_dict()
            first = f"{rejects['detail'].iloc[0]}" if len(rejects) else "no rows fit a partition of this run"
            ctx.console.print(
                f"[yellow]{escape(redact(f.path))}: quarantined[/yellow] {len(rejects)} reject record(s) "
                f"{escape(str(reasons))}; first: {escape(redact(first))}"
            )
    finally:
        store.close()
    ctx.results["quarantine"] = {"files": quarantined}


def stage_migrate(ctx: RunContext) -> None:
    """Copy each partition into the central PostgreSQL (neon_ohlcv) and prove it with the blocking
    consistency check. Without NEON_DATABASE_URL the central store is an embedded server under the data
    directory."""
    from qt_pipeline.defs.central.assets import neon_ohlcv
    from qt_pipeline.defs.central.checks import neon_ohlcv_consistency

    totals = {"partitions": 0, "rows": 0, "seconds": 0.0, "consistent": 0}

    def collect(key: Any, result: Any) -> None:
        totals["partitions"] += 1
        for mat in result.asset_materializations_for_node("neon_ohlcv"):
            totals["rows"] += int(mat.metadata["rows"].value)
            totals["seconds"] += float(mat.metadata["seconds"].value)
            totals["location"] = mat.metadata["location"].value
            totals["layout"] = mat.metadata["layout"].value
        for ev in result.get_asset_check_evaluations():
            if not ev.passed:  # blocking check: the run has failed already; be explicit anyway
                raise StageError(f"consistency check failed for {key}; run `qt reconcile`")
            totals["consistent"] += 1

    _materialize_partitions(
        ctx, "migrate", [neon_ohlcv, neon_ohlcv_consistency], ("local_store", "central_store"), collect
    )
    ctx.results["migrate"] = totals
    ctx.console.print(
        f"migrated {totals['rows']} bar(s) in {totals['partitions']} partition(s) to "
        f"[bold]{redact(totals.get('location', '?'))}[/bold] ({totals.get('layout', '?')}); "
        f"consistency check passed for {totals['consistent']} partition(s)"
    )


def stage_evolve(ctx: RunContext) -> None:
    """Evolve strategies on local Ray over the ingested days (bars through STORAGE_BACKEND, state in the
    central store), then print the best strategies with in- and out-of-sample metrics."""
    from datetime import UTC, datetime

    from qt_pipeline.evolution.config import EvolutionConfigError, parse_config
    from qt_pipeline.evolution.runner import print_summary, run_evolution
    from qt_pipeline.evolution.state import PostgresStateStore
    from qt_pipeline.storage import get_storage
    from qt_pipeline.storage.central import open_central

    if ctx.generations < 1:
        ctx.console.print("evolution skipped (--generations 0)")
        return
    start = datetime.combine(ctx.days[0], datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(ctx.days[-1] + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    try:
        config = parse_config(
            {
                "symbols": list(ctx.symbols),
                "start": start,
                "end": end,
                "train_fraction": 2 / 3 if len(ctx.days) > 1 else 0.5,
                "folds": 3 if len(ctx.days) >= 6 else 1,  # walk-forward: 3 blocks of >= 2 days
                "population_size": ctx.population,
                "generations": ctx.generations,
                "seed": ctx.settings.synthetic_seed,
                "use_ray": ctx.use_ray,
                "ray_address": ctx.settings.ray_address,
                "num_workers": 2,
                **({"min_bars": ctx.min_bars} if ctx.min_bars is not None else {}),
            }
        )
    except EvolutionConfigError as exc:
        raise StageError(str(exc)) from None
    state = PostgresStateStore(open_central(ctx.settings), owns_central=True)
    bars = get_storage(settings=ctx.settings)
    with _progress(ctx.console, "evolve") as progress:
        where = "local Ray" if ctx.use_ray and not ctx.settings.ray_address else "serial"
        task = progress.add_task(f"starting ({where})", total=config.generations)

        def on_generation(stats: Any, total: int) -> None:
            progress.update(
                task, completed=stats.generation + 1, description=f"best {stats.best_fitness:.3f}"
            )

        try:
            result = run_evolution(config, bars, state, progress=on_generation)
        except EvolutionConfigError as exc:
            raise StageError(str(exc)) from None
        finally:
            state.close()
            bars.close()
    print_summary(result, ctx.console, top=3)
    ctx.results["evolve"] = {"run_id": result.run_id, "best_fitness": result.best_fitness}


def stage_report(ctx: RunContext) -> None:
    """Print what the local store holds for the ingested symbols, where, and the rejects count."""
    from qt_pipeline.storage import get_storage

    store = get_storage("local", ctx.settings)
    try:
        summary = store.list_symbols()
        rejects = len(store.read_rejects())
        location = store.location
    finally:
        store.close()
    table = Table(title="raw_ohlcv in the local store")
    for col in ("symbol", "rows", "first", "last"):
        table.add_column(col)
    for rec in summary[summary["symbol"].isin(ctx.symbols)].itertuples(index=False):
        table.add_row(
            str(rec.symbol), str(rec.rows), rec.first_timestamp.isoformat(), rec.last_timestamp.isoformat()
        )
    ctx.console.print(table)
    ing = ctx.results.get("ingest", {})
    ctx.console.print(f"stored in [bold]{redact(location)}[/bold]")
    ctx.console.print(
        f"this run: {ing.get('partitions', 0)} partition(s), {ing.get('accepted', 0)} bar(s) accepted, "
        f"{ing.get('rejected', 0)} row(s) rejected; rejects kept in the store: {rejects}"
    )
    failed = ing.get("quality_failed") or []
    if failed:
        ctx.console.print(f"[yellow]bar quality check failed for: {', '.join(failed)}[/yellow]")


Stage = Callable[[RunContext], None]
# (name, function) in execution order.
STAGES: list[tuple[str, Stage]] = [
    ("ingest", stage_ingest),
    ("quarantine", stage_quarantine),
    ("report", stage_report),
    ("migrate", stage_migrate),
    ("evolve", stage_evolve),
]


def run_command(
    days: Annotated[int, typer.Option(help="Closed UTC days to ingest, ending yesterday.")] = 14,
    symbols: Annotated[
        str | None,
        typer.Option(help="Comma-separated symbols (a subset of QT_SYMBOLS); default all."),
    ] = None,
    checks: Annotated[bool, typer.Option(help="Run the bar quality check on each partition.")] = True,
    population: Annotated[int, typer.Option(help="Evolution: strategies per generation.")] = 40,
    generations: Annotated[int, typer.Option(help="Evolution: generations (0 skips evolution).")] = 8,
    ray: Annotated[
        bool, typer.Option(help="Evolution: evaluate on Ray (local unless QT_RAY_ADDRESS).")
    ] = True,
    start: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="First day to ingest (instead of the last --days days)."),
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Last day to ingest, inclusive (with --start)."),
    ] = None,
    min_bars: Annotated[
        int | None,
        typer.Option(
            min=10,
            help="Evolution: bars per symbol needed in each of the train and test windows (default 200; "
            "lower it for daily bars).",
        ),
    ] = None,
) -> None:
    """Run the main job on embedded defaults: ingest the last N days of bars (synthetic by default)
    through Dagster, migrate them into the central PostgreSQL (an embedded server when NEON_DATABASE_URL
    is unset) proving each partition consistent, then evolve strategies on local Ray and print the best
    with in- and out-of-sample metrics."""
    from qt_pipeline.cli import is_verbose
    from qt_pipeline.config import get_settings
    from qt_pipeline.defs.ingestion.partitions import newest_closed_day

    settings = get_settings()
    console = Console(highlight=False, soft_wrap=True)
    verbose = is_verbose()
    try:
        if end is not None and start is None:
            raise StageError("--end needs --start (without them the last --days closed days are ingested)")
        chosen = list(settings.symbols)
        if symbols is not None:
            chosen = [s.strip().upper() for s in symbols.split(",") if s.strip()]
            unknown = [s for s in chosen if s not in settings.symbols]
            if unknown or not chosen:
                raise StageError(
                    f"--symbols {symbols!r}: {unknown or 'none given'} not in QT_SYMBOLS "
                    f"{list(settings.symbols)}; add them to QT_SYMBOLS (they are the raw_ohlcv partitions)"
                )
        ctx = RunContext(
            settings=settings,
            console=console,
            days=(
                explicit_days(
                    start.date(),
                    end.date() if end else None,
                    days,
                    settings.partitions_start,
                    newest_closed_day(),
                )
                if start is not None
                else ingestion_days(days, settings.partitions_start, newest_closed_day())
            ),
            symbols=chosen,
            checks=checks,
            population=population,
            generations=generations,
            use_ray=ray,
            # Dagster prints a step failure with its whole stack at ERROR: the one-line cause is ours
            log_level="WARNING" if verbose else "CRITICAL",
            min_bars=min_bars,
        )
        from qt_pipeline.definitions import defs

        ctx.defs = defs
        ctx.instance = _instance()
        console.print(
            f"qt run: {len(ctx.days)} day(s) {ctx.days[0]}..{ctx.days[-1]} x {len(chosen)} symbol(s) "
            f"from source '{settings.market_source}'"
        )
        for name, stage in STAGES:
            try:
                stage(ctx)
            except StageError:
                raise
            except Exception as exc:  # noqa: BLE001 - any unexpected failure: say which stage, redacted
                raise StageError(f"stage {name!r} failed: {type(exc).__name__}: {redact(exc)}") from None
    except StageError as exc:
        console.print(f"[red]qt run failed:[/red] {redact(exc)}")
        raise typer.Exit(code=1) from None


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
