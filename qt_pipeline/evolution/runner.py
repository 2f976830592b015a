"""``run_evolution``: one evolution run end to end, usable from Dagster, the CLI and ``qt run``.

Order of work (bad input fails before anything is written to the state tables):

1. look the run id up in the state store: an existing run with a different config → error; ``resume``
   with an unknown run id → error; an existing run with the same config is resumed;
2. read the bars through the storage interface (unknown symbols, too few bars in the train or test
   window → error);
3. start the evaluator (a Ray address that does not answer → error);
4. create the run record, then evolve: every generation is committed in one transaction;
5. re-score the hall of fame out of sample, store the evolved strategies, mark the run completed.

Several symbols: every genome is backtested on each symbol; its fitness is the mean over symbols of the
per-symbol fitness and its reported metrics are the per-symbol means.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qt_pipeline.evolution.backtest import release_workspace
from qt_pipeline.evolution.config import EvolutionConfig, EvolutionConfigError
from qt_pipeline.evolution.ga import GAParams, GAState, GenerationStats, GeneticAlgorithm, HallOfFame
from qt_pipeline.evolution.report import OOSReport, build_report, symbol_fitness
from qt_pipeline.evolution.state import EvolutionStateStore, RunConfigMismatchError, RunNotFoundError
from qt_pipeline.redaction import redact

log = logging.getLogger("qt_pipeline.evolution")

ProgressFn = Callable[[GenerationStats, int], None]  # (stats of the committed generation, total generations)
BAR_FIELDS = ("timestamp", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class PreparedData:
    train: list[Any]  # MarketData per symbol
    test: list[Any]
    periods_per_year: float
    train_window: tuple[pd.Timestamp, pd.Timestamp]
    test_window: tuple[pd.Timestamp, pd.Timestamp]

    @property
    def train_bars(self) -> int:
        return sum(len(d) for d in self.train)

    @property
    def test_bars(self) -> int:
        return sum(len(d) for d in self.test)


@dataclass
class EvolutionResult:
    run_id: str
    config: EvolutionConfig
    status: str
    last_generation: int
    resumed_from: int | None  # last committed generation found at start (None: fresh run)
    generations_run: int  # generations evaluated by this call
    best_genome: np.ndarray
    best_fitness: float
    best_description: str
    hall_of_fame: HallOfFame
    final: GAState
    stats: pd.DataFrame
    report: OOSReport
    seconds: float  # whole call, Ray start-up and data loading included
    evaluations: int  # genomes evaluated by this call
    train_bars: int
    evaluator: str
    state_location: str
    evolve_seconds: float = 0.0  # the generations of this call (breeding, evaluation, checkpoints)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluations_per_s(self) -> float:
        """Genomes evaluated per second of evolution (Ray start-up and data loading excluded)."""
        return self.evaluations / self.evolve_seconds if self.evolve_seconds > 0 else 0.0

    @property
    def strategy_bars_per_s(self) -> float:
        return self.evaluations_per_s * self.train_bars


def _config_diff(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(new))
    return [
        f"{k}: stored {stored.get(k)!r} != given {new.get(k)!r}" for k in keys if stored.get(k) != new.get(k)
    ]


def genome_fingerprint() -> str:
    """Hash of the genome layout (gene names, kinds, bounds, choices): stored with a run so a resume after
    the layout changed fails clearly instead of decoding old genomes wrongly."""
    import hashlib
    import json

    from qt_pipeline.evolution.genome import GENES

    layout = [[g.name, g.kind, float(g.low), float(g.high), repr(g.choices)] for g in GENES]
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]


def check_run_id(config: EvolutionConfig, state_store: EvolutionStateStore) -> Any:
    """The existing run record to resume (or None for a new run); raises on a mismatch/unknown id."""
    existing = state_store.get_run(config.run_id)
    if existing is None:
        if config.resume:
            known = [r.run_id for r in state_store.list_runs(limit=5)]
            raise RunNotFoundError(
                f"cannot resume evolution run {config.run_id!r}: no such run in {state_store.location} "
                f"(recent runs: {known or 'none'}). Check the run id, or set resume=false to start a new run."
            )
        return None
    if existing.config_hash != config.identity_hash():
        stored = {k: v for k, v in existing.config.items() if k in config.identity()}
        diff = _config_diff(stored, config.identity())
        raise RunConfigMismatchError(
            f"evolution run {config.run_id!r} already exists in {state_store.location} with a different "
            f"config ({'; '.join(diff[:8]) or 'hash differs'}). Use a new run_id for a new config, or run "
            "again with the stored config to resume it."
        )
    stored_fp = existing.config.get("_genome_layout")
    if stored_fp is not None and stored_fp != genome_fingerprint():
        raise RunConfigMismatchError(
            f"evolution run {config.run_id!r} was started with another genome layout ({stored_fp}, now "
            f"{genome_fingerprint()}): its checkpoints cannot be resumed by this code version. Start a new run_id."
        )
    return existing


def prepare_data(config: EvolutionConfig, store: Any, signals: Any = None) -> PreparedData:
    """Read and split the bars of ``config.symbols`` through the storage interface; validate counts.

    ``signals`` (a :class:`qt_pipeline.signals.feed.SignalFeed`, optional) gives each bar its regime code
    and correlation, aligned without look-ahead: the ``regime_mask``/``correlation_max`` genes act on them."""
    from qt_pipeline.evolution.backtest import MarketData, infer_periods_per_year

    listed = store.list_symbols()
    known = set(listed["symbol"].astype(str)) if len(listed) else set()
    unknown = [s for s in config.symbols if s not in known]
    if unknown:
        raise EvolutionConfigError(
            f"evolution config: symbol(s) {unknown} are not in the bar store {store.location} (it holds "
            f"{sorted(known)[:20] or 'no symbols'}); ingest them first or fix 'symbols'"
        )
    start, end = pd.Timestamp(config.start), pd.Timestamp(config.end)
    tr_end, te_start = pd.Timestamp(config.train_end_resolved), pd.Timestamp(config.test_start_resolved)
    train, test, problems = [], [], []
    for sym in config.symbols:
        df = store.read_bars(sym, start, end, columns=list(BAR_FIELDS))
        ts = df["timestamp"]
        tr = df[ts < tr_end]
        te = df[ts >= te_start]
        for name, part, (a, b) in (("train", tr, (start, tr_end)), ("test", te, (te_start, end))):
            if len(part) < config.min_bars:
                problems.append(
                    f"{sym}: {len(part)} bars in the {name} window [{a:%Y-%m-%d %H:%M}, {b:%Y-%m-%d %H:%M}), "
                    f"need at least min_bars={config.min_bars}"
                )
        if not problems:
            for part, out in ((tr.reset_index(drop=True), train), (te.reset_index(drop=True), test)):
                regime, corr = (
                    signals.for_bars(sym, part["timestamp"]) if signals is not None else (None, None)
                )
                out.append(MarketData.from_frame(part, symbol=sym, regime=regime, correlation=corr))
    if problems:
        raise EvolutionConfigError(
            "evolution config: not enough bars — "
            + "; ".join(problems)
            + f" (store {store.location}). Widen start/end, move train_end/test_start, lower min_bars, "
            "or ingest more history."
        )
    ppy = config.periods_per_year or infer_periods_per_year(train[0].timestamp)
    return PreparedData(train, test, float(ppy), (start, tr_end), (te_start, end))


def run_evolution(
    config: EvolutionConfig,
    store: Any,
    state_store: EvolutionStateStore,
    evaluator: Any = None,
    progress: ProgressFn | None = None,
    *,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    signals: Any = None,
) -> EvolutionResult:
    """Run (or resume) the evolution described by ``config``. See the module docstring.

    ``store`` is a :class:`~qt_pipeline.storage.DataStorageInterface`; ``evaluator`` a
    :class:`~qt_pipeline.evolution.ray_eval.SerialEvaluator`/``RayEvaluator`` (default: what the config
    asks for; one this function creates is closed at the end). ``progress(stats, total)`` is called after
    each committed generation; ``on_start(info)`` once before the first generation.
    """
    from qt_pipeline.evolution.ray_eval import make_evaluator

    t0 = time.perf_counter()
    state_store.setup()
    existing = check_run_id(config, state_store)
    data = prepare_data(config, store, signals)
    own_evaluator = evaluator is None
    evaluator = evaluator if evaluator is not None else make_evaluator(config)
    try:
        evaluator.start()
        # ---- validation done: from here on we write ----
        if existing is None:
            record = {**config.to_json_dict(), "_genome_layout": genome_fingerprint()}
            state_store.create_run(config.run_id, record, config.identity_hash(), config.seed)
        checkpoint = state_store.load_checkpoint(config.run_id) if existing is not None else None
        costs = config.costs.to_core()
        fit_cfg = config.fitness.to_core()
        evaluator.set_data(data.train, costs, data.periods_per_year)

        def evaluate(pop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            m3 = evaluator.evaluate(pop)
            return m3.mean(axis=1), symbol_fitness(m3, fit_cfg)

        ga = GeneticAlgorithm(GAParams.from_config(config), evaluate)
        total = config.generations
        resumed_from = checkpoint.state.generation if checkpoint is not None else None
        info = {
            "run_id": config.run_id,
            "resumed_from": resumed_from,
            "generations": total,
            "train_bars": data.train_bars,
            "test_bars": data.test_bars,
            "evaluator": evaluator.describe(),
            "state": state_store.location,
            "startup_seconds": getattr(evaluator, "startup_seconds", 0.0),
        }
        log.info("evolution run %s: %s", config.run_id, redact(info))
        if on_start is not None:
            on_start(info)
        evaluations = 0
        ran = 0
        t_evolve = time.perf_counter()
        try:
            if checkpoint is None:
                state = ga.initial(config.seed)
                state_store.commit_generation(config.run_id, state)
                evaluations += state.stats.evaluations
                ran += 1
                if progress is not None:
                    progress(state.stats, total)
            else:
                state = checkpoint.state
            while state.generation < total - 1:
                state = ga.step(state)
                state_store.commit_generation(config.run_id, state)
                evaluations += state.stats.evaluations
                ran += 1
                if progress is not None:
                    progress(state.stats, total)
            evolve_seconds = time.perf_counter() - t_evolve
            report = build_report(
                state.hall_of_fame,
                data.test,
                costs,
                data.periods_per_year,
                fit_cfg,
                config.oos_collapse_threshold,
            )
            state_store.save_strategies(config.run_id, report.strategy_rows(), complete=True)
        except BaseException as exc:
            if isinstance(exc, Exception):  # an interrupt (Ctrl-C) leaves the run resumable as 'running'
                try:
                    state_store.set_status(config.run_id, "failed", f"{type(exc).__name__}: {exc}")
                except Exception:  # pragma: no cover - report the original error, not this one
                    log.exception("could not mark evolution run %s failed", config.run_id)
            raise
    finally:
        if own_evaluator:
            evaluator.close()
        release_workspace()  # indicator series cached in this thread (serial runs, the OOS report)
    best = state.hall_of_fame.genomes[0]
    return EvolutionResult(
        run_id=config.run_id,
        config=config,
        status="completed",
        last_generation=state.generation,
        resumed_from=resumed_from,
        generations_run=ran,
        best_genome=best.copy(),
        best_fitness=float(state.hall_of_fame.fitness[0]),
        best_description=str(report.table["description"].iloc[0]),
        hall_of_fame=state.hall_of_fame,
        final=state,
        stats=state_store.generation_stats(config.run_id),
        report=report,
        seconds=time.perf_counter() - t0,
        evolve_seconds=evolve_seconds,
        evaluations=evaluations,
        train_bars=data.train_bars,
        evaluator=evaluator.describe(),
        state_location=state_store.location,
        extra={
            "startup_seconds": getattr(evaluator, "startup_seconds", 0.0),
            "periods_per_year": data.periods_per_year,
            "test_data": data.test,  # MarketData per symbol, signals included (filter ablation)
            "costs": costs,
        },
    )


def print_summary(result: EvolutionResult, console: Any = None, *, top: int = 5) -> None:
    """Print the run summary and the best strategies with in- and out-of-sample metrics (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    resumed = f", resumed after generation {result.resumed_from}" if result.resumed_from is not None else ""
    console.print(
        f"[bold]evolution run {result.run_id}[/bold]: {result.status}, generations 0..{result.last_generation}"
        f"{resumed}; {result.evaluations} evaluations in {result.evolve_seconds:.1f} s "
        f"({result.evaluations_per_s:.1f} genomes/s, {result.strategy_bars_per_s / 1e6:.2f} M strategy-bars/s) "
        f"on {result.evaluator}; state: {redact(result.state_location)}"
    )
    n_sym = len(result.config.symbols)
    per = f"; metrics are means over {n_sym} symbols" if n_sym > 1 else ""
    table = Table(title=f"best strategies (in-sample | out-of-sample{per})")
    for col in (
        "#",
        "fitness IS",
        "fitness OOS",
        "Sharpe IS",
        "Sharpe OOS",
        "return IS",
        "return OOS",
        "max DD OOS",
        "trades OOS",
        "flags",
    ):
        table.add_column(col, justify="right" if col != "flags" else "left")
    t = result.report.table
    for r in t.head(top).itertuples(index=False):
        d = r._asdict()
        table.add_row(
            str(d["rank"]),
            f"{d['fitness']:.3f}",
            f"{d['oos_fitness']:.3f}",
            f"{d['is_sharpe']:.2f}",
            f"{d['oos_sharpe']:.2f}",
            f"{d['is_total_return']:.2%}",
            f"{d['oos_total_return']:.2%}",
            f"{d['oos_max_drawdown']:.2%}",
            f"{d['oos_n_trades']:.0f}",
            d["flags"] or "-",
        )
    # piped output (a log, CI): rich would assume 80 columns and elide the numbers; print it full width
    wide = console if console.is_terminal else Console(file=console.file, width=max(console.width, 136))
    wide.print(table)
    console.print(f"[bold]best strategy:[/bold] {result.best_description}")
