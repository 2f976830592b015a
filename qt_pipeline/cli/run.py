"""``qt run``: the main job with embedded defaults.

Stages run in order over one :class:`RunContext` (:data:`STAGES`): preflight, ingest, report, migrate,
signals, evolve. A stage is ``fn(ctx) -> None`` and raises :class:`StageError` with a clear message to stop the run
(exit code 1).

Ingest, migrate, signals and evolve execute the code location's named jobs (``ingestion_job``,
``migration_job``, ``signals_job``, ``evolution_job``) on the Dagster instance (``DAGSTER_HOME``, else an ephemeral one), so everything shows
in the UI under the assets it produced. The partitioned jobs run a whole day range per run (partition key
range; the assets' single-run backfill policy), not one run per partition.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
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
    log_level: str = "CRITICAL"  # Dagster console log level during runs (summaries are printed instead)
    run_id: str | None = None  # evolution run name: an existing one is resumed
    instance: Any = None
    defs: Any = None
    results: dict[str, Any] = field(default_factory=dict)


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


def symbol_blocks(chosen: list[str], universe: list[str]) -> list[list[str]]:
    """``chosen`` split into blocks contiguous in the partition order (``universe``, QT_SYMBOLS): one
    partition key range (one Dagster run) per block."""
    order = sorted(chosen, key=universe.index)
    blocks: list[list[str]] = []
    for sym in order:
        if blocks and universe.index(sym) == universe.index(blocks[-1][-1]) + 1:
            blocks[-1].append(sym)
        else:
            blocks.append([sym])
    return blocks


def _run_job(ctx: RunContext, job_name: str, label: str, *, ranged: bool, **kwargs: Any) -> list[Any]:
    """Execute the named job of the code location on the instance (so it shows in the UI under that
    name): with ``ranged``, one run per contiguous block of symbols over all the days (a partition key
    range: the assets run it in one step). Stops at the first failure with the run's error, one line."""
    from qt_pipeline.defs.ingestion.schedules import day_range_tags

    job = ctx.defs.resolve_job_def(job_name)
    if kwargs.get("without_checks"):
        job = job.get_subset(
            asset_selection=set(job.asset_layer.executable_asset_keys), asset_check_selection=set()
        )
    blocks: list[list[str] | None] = (
        list(symbol_blocks(ctx.symbols, list(ctx.settings.symbols))) if ranged else [None]
    )
    results = []
    for block in blocks:
        tags = {"qt/command": "qt run", **kwargs.pop("tags", {})}
        if block is not None:
            tags.update(day_range_tags(ctx.days[0], ctx.days[-1], block))
        what = f"{label} {ctx.days[0]}..{ctx.days[-1]} x {','.join(block)}" if block else label
        with ctx.console.status(f"[bold]{what}[/bold] (Dagster job {job_name})"):
            try:
                result = job.execute_in_process(
                    instance=ctx.instance,
                    raise_on_error=False,
                    tags=tags,
                    # the terminal shows summaries; every event is in the instance (`./dev.sh ui`)
                    run_config=_with_logger(kwargs.get("run_config"), ctx.log_level),
                )
            except Exception as exc:  # noqa: BLE001 - definition/config errors: report and stop
                raise StageError(f"{what}: {redact(exc)}") from None
        if not result.success:
            raise StageError(f"{what} failed (run {result.run_id}): {_failure_message(result)}")
        ctx.console.print(f"{what}: Dagster run {result.run_id} of {job_name} succeeded")
        results.append(result)
    return results


def _with_logger(run_config: dict | None, level: str) -> dict:
    return {**(run_config or {}), "loggers": {"console": {"config": {"log_level": level}}}}


def stage_preflight(ctx: RunContext) -> None:
    """Fail in one line when the local DuckDB file is held by another process (another `qt run`, a
    Dagster run): DuckDB allows one writer per file."""
    from qt_pipeline.storage import StorageError
    from qt_pipeline.storage.duckdb_store import DuckDBStore

    try:
        DuckDBStore(ctx.settings.resolved_duckdb_path).close()
    except StorageError as exc:
        raise StageError(str(exc)) from None


def stage_ingest(ctx: RunContext) -> None:
    """Run ``ingestion_job`` (raw_ohlcv and its bar quality check) over every (day, symbol)."""
    totals = {"partitions": 0, "accepted": 0, "rejected": 0}
    quality: dict[str, bool] = {}
    for result in _run_job(ctx, "ingestion_job", "ingest", ranged=True, without_checks=not ctx.checks):
        for mat in result.asset_materializations_for_node("raw_ohlcv"):
            totals["partitions"] += 1
            totals["accepted"] += int(mat.metadata["rows_accepted"].value)
            totals["rejected"] += int(mat.metadata["rows_rejected"].value)
        for ev in result.get_asset_check_evaluations():
            quality[str(ev.partition)] = bool(ev.passed)
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
    """Run ``migration_job``: copy each partition into the central PostgreSQL (central_ohlcv) and prove it
    with the blocking consistency check. Without NEON_DATABASE_URL the central store is an embedded
    server under the data directory."""
    totals = {"partitions": 0, "rows": 0, "seconds": 0.0, "consistent": 0}
    for result in _run_job(ctx, "migration_job", "migrate", ranged=True):
        for mat in result.asset_materializations_for_node("central_ohlcv"):
            totals["partitions"] += 1
            totals["rows"] += int(mat.metadata["rows"].value)
            totals["seconds"] += float(mat.metadata["seconds"].value)
            totals["location"] = mat.metadata["location"].value
            totals["layout"] = mat.metadata["layout"].value
        for ev in result.get_asset_check_evaluations():
            if not ev.passed:  # blocking check: the run has failed already; be explicit anyway
                raise StageError(f"consistency check failed for {ev.partition}; run `qt reconcile`")
            totals["consistent"] += 1
    ctx.results["migrate"] = totals
    if totals["partitions"] == 0:
        from qt_pipeline.monitoring.cost import backoff_reason

        reason = backoff_reason(ctx.settings, "migration")
        if reason:  # central_ohlcv copied nothing on purpose: say why instead of "migrated 0 bar(s)"
            ctx.results["migrate"] = {**totals, "backed_off": reason}
            ctx.console.print(f"[yellow]{escape(reason)}[/yellow]")
            return
    ctx.console.print(
        f"migrated {totals['rows']} bar(s) in {totals['partitions']} partition(s) to "
        f"[bold]{redact(totals.get('location', '?'))}[/bold] ({totals.get('layout', '?')}); "
        f"consistency check passed for {totals['consistent']} partition(s)"
    )


def evolution_run_config(ctx: RunContext) -> dict[str, Any]:
    """``evolution_job`` run config for the ingested days (bars through STORAGE_BACKEND, state in the
    central store)."""
    start = datetime.combine(ctx.days[0], datetime.min.time())
    end = datetime.combine(ctx.days[-1] + timedelta(days=1), datetime.min.time())
    cfg: dict[str, Any] = {
        "symbols": list(ctx.symbols),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "train_fraction": 2 / 3 if len(ctx.days) > 1 else 0.5,
        "folds": 3 if len(ctx.days) >= 6 else 1,  # walk-forward: 3 blocks of >= 2 days
        "population_size": ctx.population,
        "generations": ctx.generations,
        "seed": ctx.settings.synthetic_seed,
        "use_ray": ctx.use_ray,
        "num_workers": 2,
    }
    if ctx.run_id:
        cfg["run_id"] = ctx.run_id
    if ctx.min_bars is not None:
        cfg["min_bars"] = ctx.min_bars
    return {"ops": {"evolved_strategies": {"config": cfg}}}


def stage_signals(ctx: RunContext) -> None:
    """Run ``signals_job`` (correlation and regime engines) over the ingested days in one run, so the
    evolution's regime and correlation genes act on real series as in the Dagster job. The engines need
    history (e.g. two symbols, days of hours for the regime model): when they cannot run, the cause is
    printed and the evolution runs with those filters inert (it says so too)."""
    if ctx.generations < 1:
        return
    tags = {
        "dagster/asset_partition_range_start": ctx.days[0].isoformat(),
        "dagster/asset_partition_range_end": ctx.days[-1].isoformat(),
    }
    run_config = {"ops": {"signal_engines": {"config": {"symbols": list(ctx.symbols)}}}}
    try:
        _run_job(ctx, "signals_job", "signals", ranged=False, tags=tags, run_config=run_config)
    except StageError as exc:
        ctx.console.print(
            f"[yellow]signals not computed ({exc}); the evolution's regime/correlation filters stay inert[/yellow]"
        )


def stage_evolve(ctx: RunContext) -> None:
    """Run ``evolution_job`` (GA on local Ray when the work pays for it, unless --no-ray; state checkpointed
    in the central store) over the ingested days, then print the run and its best strategies (in- and out-of-sample)."""
    if ctx.generations < 1:
        ctx.console.print("evolution skipped (--generations 0)")
        return
    # the evaluator actually used is printed below (auto: serial when the work is too small for Ray)
    if not ctx.use_ray:
        where = "serial"
    elif ctx.settings.ray_address:
        where = "Ray cluster"
    else:
        where = "local Ray or serial, by work size"
    (result,) = _run_job(
        ctx, "evolution_job", f"evolve ({where})", ranged=False, run_config=evolution_run_config(ctx)
    )
    (mat,) = result.asset_materializations_for_node("evolved_strategies")
    md = {k: v.value for k, v in mat.metadata.items()}
    run_id = str(md["run_id"])
    resumed = f", resumed after generation {md['resumed_after_generation']}" if md.get("resumed") else ""
    ctx.console.print(
        f"[bold]evolution run {run_id}[/bold]: generations 0..{int(md['generations']) - 1}{resumed}; "
        f"{md['evaluations']} evaluations in {md['evolve_seconds']:.1f} s on {md['evaluator']}; "
        f"state: {redact(md['state_store'])}"
    )
    from qt_pipeline.cli.evolution import show_command

    show_command(run_id, top=3)
    ctx.console.print(
        f"run again with [bold]--run-id {run_id}[/bold] to resume or extend it (same days and options); "
        f"`qt evolution show {run_id}` shows it later"
    )
    ctx.results["evolve"] = {"run_id": run_id, "best_fitness": md["best_fitness"]}


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
    ("preflight", stage_preflight),
    ("ingest", stage_ingest),
    ("quarantine", stage_quarantine),
    ("report", stage_report),
    ("migrate", stage_migrate),
    ("signals", stage_signals),
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
    run_id: Annotated[
        str | None,
        typer.Option(
            help="Evolution: name of the run (letters, digits, - _ .). A name that exists with the same "
            "days and options resumes that run from its last committed generation."
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
            run_id=run_id,
        )
        console.print(
            f"qt run: {len(ctx.days)} day(s) {ctx.days[0]}..{ctx.days[-1]} x {len(chosen)} symbol(s) "
            f"from source '{settings.market_source}'"
        )
        for name, stage in STAGES:
            if ctx.defs is None and name != "preflight":
                # after the preflight: a DuckDB file held by another process fails the run before the
                # code location is imported (~5 s)
                _load_code_location(ctx)
            try:
                stage(ctx)
            except StageError:
                raise
            except Exception as exc:  # noqa: BLE001 - any unexpected failure: say which stage, redacted
                raise StageError(f"stage {name!r} failed: {type(exc).__name__}: {redact(exc)}") from None
    except StageError as exc:
        console.print(f"[red]qt run failed:[/red] {redact(exc)}")
        raise typer.Exit(code=1) from None


def _load_code_location(ctx: RunContext) -> None:
    """The Dagster definitions and instance the stages' jobs run on."""
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # dagster's own beta parameters
    from qt_pipeline.definitions import defs

    ctx.defs = defs
    ctx.instance = _instance()


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
