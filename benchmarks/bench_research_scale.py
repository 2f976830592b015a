"""Evolution at research scale: many symbols x many bars, a large population, a few generations.

    .venv/bin/python benchmarks/bench_research_scale.py [--symbols 20] [--bars 1000000] [--pop 1000]
        [--gens 2] [--folds 3] [--memory-mb 2048] [--ref-symbols 1] [--ref-pairs 200] [--data-dir DIR]

What it does (one process, serial evaluation: the single-process path; Ray scaling is bench_evolution):

1. Synthetic minute bars per symbol are generated once into ``--data-dir`` (default: a directory under
   the system temp dir, kept between runs) as ``.npy`` files and opened with ``np.load(mmap_mode="r")``:
   MarketData wraps the mapped pages without copying them, so the bars live in the page cache (shared by
   every process on the machine) rather than in each worker's private memory.
2. A walk-forward plan of ``--folds`` rolling in-sample segments over every symbol (the portfolio of all
   symbols per segment, as the GA scores it), evolved for ``--gens`` generations of ``--pop`` genomes
   with the project's GA, fitness and a DuckDB checkpoint store. Per generation it prints the time split
   into evaluation (backtests + fitness), selection and variation (breeding, hall of fame), checkpoint
   (commit of the generation) and scheduling (the rest of the loop); strategy-bars/s of evaluation.
3. Memory: peak resident set (VmHWM) and peak private anonymous memory (RssAnon, sampled every 50 ms)
   of this process against the configured evaluation budget (``--memory-mb`` = QT_EVOLUTION_MEMORY_MB:
   indicator cache + portfolio rows); the mapped bars count in RSS but not in RssAnon.
4. In the same run: a fused reference Numba loop over the MA-crossover grid (``--ref-pairs`` pairs: SMAs
   as running sums, position, costs, return moments, drawdown, trades, in one pass per pair) against the
   same grid through the project's ``evaluate_population`` (series cached, as in a later generation) and
   random genomes (stops, sizing, filters) through it; ratios printed. The reference's total returns and
   trade counts are checked against the project's (they implement the same strategy and cost model).

Prints figures only (no assertions); the machine load is printed because the figures depend on it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PPY = 525_960.0  # minute bars, 24/7


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakAnon:
    """Samples this process's private anonymous memory (RssAnon) in a thread; keeps the peak."""

    def __init__(self, every_s: float = 0.05):
        self.peak_kb = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))
            time.sleep(every_s)

    def __enter__(self) -> PeakAnon:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))


def load_bars(data_dir: Path, n_symbols: int, n_bars: int):
    """MarketData per symbol over memory-mapped .npy files (generated once, then reused)."""
    from qt_pipeline.evolution import MarketData

    out = []
    t_gen = 0.0
    for k in range(n_symbols):
        d = data_dir / f"sym{k:03d}_{n_bars}"
        if not (d / "close.npy").exists():
            t0 = time.perf_counter()
            d.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(1000 + k)
            close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n_bars)))
            open_ = np.r_[100.0, close[:-1]]
            wick = np.abs(rng.normal(0.0, 5e-4, (2, n_bars)))
            cols = {
                "timestamp": np.arange(n_bars, dtype=np.int64) * 60_000_000_000 + 1_700_000_000 * 10**9,
                "open": open_,
                "high": np.maximum(open_, close) * (1 + wick[0]),
                "low": np.minimum(open_, close) * (1 - wick[1]),
                "close": close,
                "volume": rng.uniform(1, 100, n_bars),
            }
            for name, a in cols.items():
                np.save(d / f"{name}.npy", a)
            t_gen += time.perf_counter() - t0
        arrays = {
            name: np.load(d / f"{name}.npy", mmap_mode="r")
            for name in ("timestamp", "open", "high", "low", "close", "volume")
        }
        md = MarketData(symbol=f"S{k:03d}", **arrays)
        assert np.shares_memory(md.close, arrays["close"]), "MarketData copied the mapped bars"
        out.append(md)
    return out, t_gen


@njit(cache=True, nogil=True)
def reference_ma_grid(close, fast, slow, rate, ppy, out):  # pragma: no cover - compiled
    """Plain fused loop: long when SMA(fast) > SMA(slow) at the close (acts on the next bar), costs
    ``rate`` per unit traded on entry and exit, no decision at the last bar; per pair: total return,
    Sharpe, max drawdown, trades."""
    n = close.shape[0]
    for i in range(fast.shape[0]):
        f = fast[i]
        s = slow[i]
        sf = 0.0
        ss = 0.0
        pos = 0.0
        opened = False
        s1 = 0.0
        s2 = 0.0
        eq = 1.0
        peak = 1.0
        mdd = 0.0
        ntr = 0
        for t in range(n):
            c = close[t]
            r = 0.0
            new = pos
            sf += c
            ss += c
            if t >= f:
                sf -= close[t - f]
            if t >= s:
                ss -= close[t - s]
            if t < n - 1 and t >= s - 1:
                new = 1.0 if sf * s > ss * f else 0.0
            if pos != 0.0:
                g = c / close[t - 1] - 1.0
                m = 1.0 + g
                if new != pos:
                    m -= (1.0 + g) * rate
                if opened:
                    m *= 1.0 - rate
                r = m - 1.0
            s1 += r
            s2 += r * r
            eq *= 1.0 + r
            if eq > peak:
                peak = eq
            dd = 1.0 - eq / peak
            if dd > mdd:
                mdd = dd
            opened = new != pos and new != 0.0
            if opened:
                ntr += 1
            pos = new
        var = (s2 - s1 * s1 / n) / (n - 1)
        out[i, 0] = eq - 1.0
        out[i, 1] = s1 / n / np.sqrt(var) * np.sqrt(ppy) if var > 0 else 0.0
        out[i, 2] = mdd
        out[i, 3] = ntr


def best_cpu(fn, repeat: int) -> float:
    """Best CPU seconds of this process over ``repeat`` runs (the machine is shared: steadier than wall)."""
    best = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best


def reference_section(datas, args) -> None:
    from benchmarks.bench_backtest import ma_genomes, ma_pairs
    from qt_pipeline.evolution import Costs, random_population, repair
    from qt_pipeline.evolution.backtest import evaluate_population

    costs = Costs(fee_bps=1.0, slippage_bps=1.0)
    pairs = ma_pairs(args.ref_pairs)
    fast = np.array([p[0] for p in pairs], dtype=np.int64)
    slow = np.array([p[1] for p in pairs], dtype=np.int64)
    grid = ma_genomes(pairs)
    rnd = repair(random_population(np.random.default_rng(7), args.ref_pairs))
    ref_out = np.empty((len(pairs), 4))
    reference_ma_grid(datas[0].close[:1000], fast, slow, costs.rate, PPY, ref_out)  # compile/load
    t_ref = t_grid = t_rnd = 0.0
    agree = True
    for d in datas[: args.ref_symbols]:
        t_ref += best_cpu(lambda d=d: reference_ma_grid(d.close, fast, slow, costs.rate, PPY, ref_out), 3)
        m = evaluate_population(grid, d, costs, PPY)  # computes and caches the grid's series
        t_grid += best_cpu(lambda d=d: evaluate_population(grid, d, costs, PPY), 3)
        agree = agree and np.allclose(ref_out[:, 0], m[:, 0], rtol=0, atol=1e-9)
        agree = agree and bool((ref_out[:, 3] == m[:, 6]).all())
        evaluate_population(rnd, d, costs, PPY)
        t_rnd += best_cpu(lambda d=d: evaluate_population(rnd, d, costs, PPY), 3)
    work = len(pairs) * sum(len(d) for d in datas[: args.ref_symbols])
    ref_rate, grid_rate, rnd_rate = work / t_ref, work / t_grid, work / t_rnd
    print(
        f"same-run reference ({len(pairs)} MA pairs x {args.ref_symbols} symbol(s) x {len(datas[0]):,} bars, "
        f"CPU seconds, best of 3, series cached):"
    )
    print(f"  fused reference Numba loop (MA grid)    {ref_rate / 1e6:7.1f} M strategy-bars/s")
    print(
        f"  project kernel, MA grid                 {grid_rate / 1e6:7.1f} M/s  ratio {grid_rate / ref_rate:.2f}x "
        "(target >= 0.8x)"
    )
    print(
        f"  project kernel, random genomes          {rnd_rate / 1e6:7.1f} M/s  ratio {rnd_rate / ref_rate:.2f}x "
        "(target >= 0.6x; stops, sizing, filters)"
    )
    print(f"  reference and project agree (total return 1e-9, trades): {agree}")


def evolve_section(datas, args, tmp: Path) -> None:
    import pandas as pd

    from qt_pipeline.evolution import Costs
    from qt_pipeline.evolution.config import parse_config
    from qt_pipeline.evolution.fitness import FitnessConfig, fitness
    from qt_pipeline.evolution.ga import GAParams, GeneticAlgorithm
    from qt_pipeline.evolution.ray_eval import SerialEvaluator
    from qt_pipeline.evolution.state import DuckDBStateStore
    from qt_pipeline.evolution.validation import Plan, Segment, fold_groups

    n = len(datas[0])
    k = args.folds
    t = pd.Timestamp(0, tz="UTC")
    segs = tuple(
        Segment(f"IS {j + 1}", tuple(d.slice(j * n // k, (j + 1) * n // k) for d in datas), t, t)
        for j in range(k)
    )
    plan = Plan(
        tuple(d.symbol for d in datas),
        np.ones(len(datas)),
        segs,
        (*fold_groups(k, "rolling"), tuple(range(k))),
        PPY,
    )
    bars_per_genome = sum(len(x) for s in segs for x in s.datasets)
    ev = SerialEvaluator()
    ev.set_data([plan], Costs(), PPY)
    fit_cfg = FitnessConfig(min_trades=0, min_trades_per_fold=0, max_drawdown=1.0)
    timers = {"eval": 0.0, "evaluated": 0}

    def evaluate(pop: np.ndarray):
        t0 = time.perf_counter()
        rows = ev.evaluate(pop)  # (n, groups + segments * symbols, m)
        fit = fitness(rows[:, k], fit_cfg, rows[:, :k])
        timers["eval"] += time.perf_counter() - t0
        timers["evaluated"] += len(pop)
        return rows[:, k], fit

    ga = GeneticAlgorithm(GAParams(population_size=args.pop, hall_of_fame_size=20), evaluate)
    store = DuckDBStateStore(tmp / "state.duckdb")
    store.setup()
    cfg = parse_config(
        {
            "symbols": ["BTCUSD"],
            "start": "2024-01-01",
            "end": "2024-02-01",
            "population_size": args.pop,
            "generations": args.gens,
            "run_id": "research-scale",
        }  # fmt: skip
    )
    store.create_run(cfg.run_id, cfg.to_json_dict(), cfg.identity_hash(), 0)
    print(
        f"evolution: {len(datas)} symbols x {n:,} bars, {k} rolling in-sample folds (portfolio of all symbols), "
        f"population {args.pop}, {args.gens} generations, serial, memory budget {args.memory_mb} MiB"
    )
    print(
        f"  {'gen':>3} {'wall s':>8} {'eval s':>8} {'sel+var s':>9} {'ckpt s':>7} {'sched s':>7} "
        f"{'M strategy-bars/s':>17} {'RSS peak MiB':>12} {'anon MiB':>9}"
    )
    state = None
    for g in range(args.gens):
        timers["eval"], timers["evaluated"] = 0.0, 0
        t0 = time.perf_counter()
        state = ga.initial(0) if state is None else ga.step(state)
        t_gen = time.perf_counter() - t0
        t1 = time.perf_counter()
        store.commit_generation(cfg.run_id, state)
        t_ckpt = time.perf_counter() - t1
        wall = time.perf_counter() - t0
        t_eval = timers["eval"]
        sel_var = t_gen - t_eval
        sched = max(0.0, wall - t_gen - t_ckpt)
        sb = timers["evaluated"] * bars_per_genome
        print(
            f"  {g:>3} {wall:8.2f} {t_eval:8.2f} {sel_var:9.3f} {t_ckpt:7.3f} {sched:7.3f} "
            f"{sb / t_eval / 1e6:17.1f} {_status_kb('VmHWM') / 1024:12.0f} {_status_kb('RssAnon') / 1024:9.0f}"
        )
    store.close()
    ev.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--bars", type=int, default=1_000_000)
    p.add_argument("--pop", type=int, default=1000)
    p.add_argument("--gens", type=int, default=2, help="generations to evolve (0: the reference section only)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--memory-mb", type=int, default=2048)
    p.add_argument("--ref-symbols", type=int, default=1)
    p.add_argument("--ref-pairs", type=int, default=200)
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "qt_bench_research_scale")
    p.add_argument("--skip-reference", action="store_true")
    args = p.parse_args()
    os.environ["QT_EVOLUTION_MEMORY_MB"] = str(args.memory_mb)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (1 min) at start")
    t0 = time.perf_counter()
    datas, t_gen = load_bars(args.data_dir, args.symbols, args.bars)
    print(
        f"data: {args.symbols} x {args.bars:,} bars memory-mapped from {args.data_dir} "
        f"(generated now: {t_gen:.1f} s; opening {time.perf_counter() - t0 - t_gen:.2f} s)"
    )
    with PeakAnon() as anon, tempfile.TemporaryDirectory() as tmp:
        if not args.skip_reference:
            reference_section(datas, args)
        from qt_pipeline.evolution.backtest import release_workspace

        release_workspace()
        if args.gens > 0:  # --gens 0: the reference section only
            evolve_section(datas, args, Path(tmp))
    budget = args.memory_mb
    print(
        f"memory: peak RSS {_status_kb('VmHWM') / 1024:.0f} MiB (includes the mapped bars and the Python/Numba "
        f"runtime); peak private anonymous {anon.peak_kb / 1024:.0f} MiB against the evaluation budget "
        f"{budget} MiB (+ runtime); bars {args.symbols * args.bars * 48 / 2**20:.0f} MiB shared via the page cache"
    )
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) at the end")


if __name__ == "__main__":
    main()
