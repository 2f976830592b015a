"""``run_evolution``: one evolution run end to end, usable from Dagster, the CLI and ``qt run``.

Order of work (bad input fails before anything is written to the state tables):

1. look the run id up in the state store: an existing run with a different config → error; ``resume``
   with an unknown run id → error; an existing run with the same config is resumed;
2. read the bars through the storage interface (unknown symbols, too few bars in the train or test
   window → error);
3. start the evaluator (a Ray address that does not answer → error);
4. create the run record, then evolve: every generation is committed in one transaction;
5. re-score the hall of fame out of sample, store the evolved strategies, mark the run completed.

Evaluation (:mod:`qt_pipeline.evolution.validation`): the window is split into ``folds`` walk-forward
blocks, each with an in-sample and an out-of-sample segment. A genome is scored on the portfolio it would
run across the symbols (``weights``, equal by default) in every in-sample fold; its fitness aggregates
the folds under hard constraints (:mod:`qt_pipeline.evolution.fitness`); its stored metric row is the
portfolio over all in-sample segments. The GA never sees an out-of-sample bar; the report shows every
fold's out-of-sample result. Annualisation follows the data's calendar (:mod:`.calendar`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qt_pipeline.evolution.backtest import release_workspace
from qt_pipeline.evolution.config import EvolutionConfig, EvolutionConfigError
from qt_pipeline.evolution.ga import GAParams, GAState, GenerationStats, GeneticAlgorithm, HallOfFame
from qt_pipeline.evolution.metrics import METRIC_INDEX
from qt_pipeline.evolution.report import OOSReport, build_report
from qt_pipeline.evolution.state import EvolutionStateStore, RunConfigMismatchError, RunNotFoundError
from qt_pipeline.redaction import redact

log = logging.getLogger("qt_pipeline.evolution")

ProgressFn = Callable[[GenerationStats, int], None]  # (stats of the committed generation, total generations)
BAR_FIELDS = ("timestamp", "open", "high", "low", "close", "volume")
TRADE_KEY_COLUMN = METRIC_INDEX["trade_key"]  # hall of fame: one strategy per set of trades


@dataclass(frozen=True)
class PreparedData:
    is_plan: Any  # validation.Plan over the in-sample segments (groups: folds, then all in-sample)
    oos_plan: Any  # validation.Plan over the out-of-sample segments (groups: folds, then all)
    calendar: Any  # calendar.Calendar
    fold_index: tuple[int, ...]  # groups of is_plan that are the walk-forward folds
    all_index: int  # group of is_plan with every in-sample segment
    oos_all_index: int

    @property
    def periods_per_year(self) -> float:
        return float(self.calendar.periods_per_year)

    @property
    def train(self) -> list[Any]:
        """MarketData per symbol of the first in-sample segment."""
        return list(self.is_plan.segments[0].datasets)

    @property
    def train_bars(self) -> int:
        return sum(len(d) for seg in self.is_plan.segments for d in seg.datasets)

    @property
    def test_bars(self) -> int:
        return sum(len(d) for seg in self.oos_plan.segments for d in seg.datasets)

    def score(self, rows: np.ndarray, fit_cfg: Any) -> tuple[np.ndarray, np.ndarray]:
        """(all-in-sample portfolio rows, fitness) of in-sample plan rows ``(n, R, m)``."""
        from qt_pipeline.evolution.fitness import fitness

        allis = np.ascontiguousarray(rows[:, self.all_index, :])
        return allis, fitness(allis, fit_cfg, rows[:, list(self.fold_index), :])


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
    """Read the bars of ``config.symbols`` through the storage interface, cut them into walk-forward
    segments (validation.py) and infer the calendar; validate bar counts.

    ``signals`` (a :class:`qt_pipeline.signals.feed.SignalFeed`, optional) gives each bar its regime code
    and correlation, aligned without look-ahead: the ``regime_mask``/``correlation_max`` genes act on them."""
    from qt_pipeline.evolution.backtest import MarketData
    from qt_pipeline.evolution.calendar import infer_calendar
    from qt_pipeline.evolution.validation import Plan, Segment, fold_groups, walk_forward_bounds

    listed = store.list_symbols()
    known = set(listed["symbol"].astype(str)) if len(listed) else set()
    unknown = [s for s in config.symbols if s not in known]
    if unknown:
        raise EvolutionConfigError(
            f"evolution config: symbol(s) {unknown} are not in the bar store {store.location} (it holds "
            f"{sorted(known)[:20] or 'no symbols'}); ingest them first or fix 'symbols'"
        )
    start, end = pd.Timestamp(config.start), pd.Timestamp(config.end)
    if config.folds == 1:
        tr_end, te_start = pd.Timestamp(config.train_end_resolved), pd.Timestamp(config.test_start_resolved)
        windows = [((start, tr_end), (te_start, end))]
    else:
        windows = [
            ((a, m), (m, b))
            for a, m, b in walk_forward_bounds(start, end, config.folds, config.train_fraction)
        ]
    frames = {sym: store.read_bars(sym, start, end, columns=list(BAR_FIELDS)) for sym in config.symbols}
    problems: list[str] = []
    is_segs: list[Any] = []
    oos_segs: list[Any] = []
    for k, ((a, m), (m2, b)) in enumerate(windows):
        for kind, (lo, hi), drop, out in (
            ("in-sample", (a, m), config.embargo_bars if k > 0 else 0, is_segs),
            ("out-of-sample", (m2, b), config.purge_bars, oos_segs),
        ):
            parts = []
            for sym, df in frames.items():
                ts = df["timestamp"]
                part = df[(ts >= lo) & (ts < hi)].iloc[drop:].reset_index(drop=True)
                if len(part) < max(2, config.min_bars):
                    problems.append(
                        f"{sym}: {len(part)} bars in {kind} segment {k + 1} [{lo:%Y-%m-%d %H:%M}, "
                        f"{hi:%Y-%m-%d %H:%M}) after dropping {drop}, need at least min_bars={config.min_bars}"
                    )
                    continue
                regime, corr = (
                    signals.for_bars(sym, part["timestamp"]) if signals is not None else (None, None)
                )
                parts.append(MarketData.from_frame(part, symbol=sym, regime=regime, correlation=corr))
            if len(parts) == len(frames):
                name = f"{'IS' if kind == 'in-sample' else 'OOS'} {k + 1}"
                out.append(Segment(name, tuple(parts), lo, hi))
    if problems:
        raise EvolutionConfigError(
            "evolution config: not enough bars — "
            + "; ".join(problems[:8])
            + f" (store {store.location}). Widen start/end, use fewer folds, lower min_bars or purge/embargo, "
            "or ingest more history."
        )
    all_ts = np.unique(np.concatenate([d.timestamp for seg in (*is_segs, *oos_segs) for d in seg.datasets]))
    calendar = infer_calendar(all_ts, config.periods_per_year)
    k = config.folds
    groups = list(fold_groups(k, config.scheme))
    every = tuple(range(k))
    if every not in groups:
        groups.append(every)
    oos_groups = [(i,) for i in range(k)] + ([every] if k > 1 else [])
    weights = np.asarray(config.weight_vector(), dtype=np.float64)
    ppy = float(calendar.periods_per_year)
    is_plan = Plan(tuple(config.symbols), weights, tuple(is_segs), tuple(groups), ppy)
    oos_plan = Plan(tuple(config.symbols), weights, tuple(oos_segs), tuple(oos_groups), ppy)
    return PreparedData(
        is_plan, oos_plan, calendar, tuple(range(k)), groups.index(every), len(oos_groups) - 1
    )


def trial_sharpes(
    state_store: EvolutionStateStore, run_id: str, last_generation: int, elite: int
) -> np.ndarray:
    """The in-sample (annualised) Sharpe ratio of every genome evaluated by the run, read back from its
    checkpoints (generation 0: the whole population; later: the offspring, i.e. the rows after the
    elites), so a resumed run counts exactly the trials of an uninterrupted one."""
    col = METRIC_INDEX["sharpe"]
    out = []
    for g in range(last_generation + 1):
        chk = state_store.load_checkpoint(run_id, g)
        if chk is None:
            continue
        m = chk.state.metrics
        out.append(m[:, col] if g == 0 else m[elite:, col])
    return np.concatenate(out) if out else np.empty(0)


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
    if config.memory_budget_mb is not None:
        from qt_pipeline.evolution import series_cache

        series_cache.set_memory_budget_mb(config.memory_budget_mb)
        os.environ[series_cache.MEMORY_ENV] = str(config.memory_budget_mb)  # Ray workers started from here
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

        def evaluate(pop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return data.score(evaluator.evaluate(pop), fit_cfg)

        ga = GeneticAlgorithm(GAParams.from_config(config), evaluate, behaviour_column=TRADE_KEY_COLUMN)
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
            # (inside: a Ray node lost while its workers load the data fails the run record too)
            evaluator.set_data([data.is_plan], costs, data.periods_per_year)
            if checkpoint is None:
                state = ga.initial(config.seed)
                assert state.stats is not None  # the GA always reports a generation's statistics
                state_store.commit_generation(config.run_id, state)
                evaluations += state.stats.evaluations
                ran += 1
                if progress is not None:
                    progress(state.stats, total)
            else:
                state = checkpoint.state
            while state.generation < total - 1:
                state = ga.step(state)
                assert state.stats is not None
                state_store.commit_generation(config.run_id, state)
                evaluations += state.stats.evaluations
                ran += 1
                if progress is not None:
                    progress(state.stats, total)
            evolve_seconds = time.perf_counter() - t_evolve
            trials = trial_sharpes(state_store, config.run_id, state.generation, config.elite)
            report = build_report(state.hall_of_fame, data, costs, fit_cfg, config, trials)
            state_store.save_strategies(config.run_id, report.strategy_rows(), complete=True)
        except BaseException as exc:
            if isinstance(exc, Exception):  # an interrupt (Ctrl-C) leaves the run resumable as 'running'
                try:
                    first = (str(exc).strip().splitlines() or [""])[0]  # Ray errors span many lines
                    state_store.set_status(config.run_id, "failed", redact(f"{type(exc).__name__}: {first}"))
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
            "calendar": data.calendar.describe(),
            # MarketData per symbol of every out-of-sample segment, signals included (filter ablation)
            "test_data": [d for seg in data.oos_plan.segments for d in seg.datasets],
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
    per = f"; portfolio of {n_sym} symbols" if n_sym > 1 else ""
    table = Table(title=f"best strategies (in-sample | out-of-sample{per})")
    # (heading, report column, format); "#" and "flags" are added around them
    metrics = (
        ("fitness IS", "fitness", ".3f"), ("fitness OOS", "oos_fitness", ".3f"),
        ("Sharpe IS", "is_sharpe", ".2f"), ("Sharpe OOS", "oos_sharpe", ".2f"),
        ("PSR", "psr", ".2f"), ("DSR", "dsr", ".2f"),
        ("return IS", "is_total_return", ".2%"), ("return OOS", "oos_total_return", ".2%"),
        ("B&H OOS", "bh_oos_total_return", ".2%"), ("max DD OOS", "oos_max_drawdown", ".2%"),
        ("trades IS", "is_n_trades", ".0f"), ("trades OOS", "oos_n_trades", ".0f"),
        ("turnover IS", "is_turnover", ".1f"),
    )  # fmt: skip
    for col in ("#", *(m[0] for m in metrics)):
        table.add_column(col, justify="right")
    table.add_column("flags", justify="left")
    t = result.report.table

    def num(v: float, spec: str) -> str:
        return format(v, spec) if np.isfinite(v) else "n/a"

    for r in t.head(top).itertuples(index=False):
        d = r._asdict()
        cells = [num(d[key], spec) for _, key, spec in metrics]
        cells[-1] += "x"  # turnover as a multiple of equity
        table.add_row(str(d["rank"]), *cells, d["flags"] or "-")
    # piped output (a log, CI): rich would assume 80 columns and elide the numbers; print it full width
    wide = console if console.is_terminal else Console(file=console.file, width=max(console.width, 200))
    wide.print(table)
    console.print(f"[bold]best strategy:[/bold] {result.best_description}")
    if len(t):
        best = t.iloc[0]
        folds = sorted(
            {c.split("_")[1] for c in t.columns if c.startswith("oos_f") and c.endswith("_sharpe")}
        )
        if len(folds) > 1:
            parts = [
                f"{f}: Sharpe {best[f'oos_{f}_sharpe']:.2f}, return {best[f'oos_{f}_total_return']:.2%}, "
                f"{best[f'oos_{f}_n_trades']:.0f} trades"
                for f in folds
            ]
            console.print("  out of sample per fold: " + "; ".join(parts))
        if n_sym > 1:
            parts = [
                f"{s}: Sharpe IS {best[f'is_sharpe@{s}']:.2f} / OOS {best[f'oos_sharpe@{s}']:.2f}, trades "
                f"{best[f'is_n_trades@{s}']:.0f} / {best[f'oos_n_trades@{s}']:.0f}"
                for s in result.config.symbols
            ]
            console.print("  per symbol: " + "; ".join(parts))
    for note in result.report.notes:
        console.print(f"  note: {note}")
