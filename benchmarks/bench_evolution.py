"""Evolution benchmark: fitness throughput (strategy-bar evaluations/s) serial vs Ray, and checkpoint
latency per generation on local PostgreSQL.

    .venv/bin/python benchmarks/bench_evolution.py [--bars 500000] [--population 200] [--workers 2]
        [--worker-threads N] [--repeats 2] [--checkpoints 100]
        [--pg-admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Prints figures only (no assertions). Start-up (once per run: Ray with its workers, which compile / load
their kernels then; the serial process's own compile / cache load) is reported apart; the cold first
generation (empty indicator caches; Ray's workers resolve the bars) and the steady generations are timed
and compared. Targets: Ray on 2 workers >= 1.9x serial in steady generations on an
idle machine, >= 1.5x in the cold first generation, scheduling overhead < 5%; checkpoint p99 < 100 ms. The
machine load (os.getloadavg) is printed because the figures depend on it. ``--worker-threads 1`` measures
Ray with a worker process per CPU (a cluster's default) instead of the local default of one process whose
threads share the CPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bars(n: int):
    from qt_pipeline.evolution import MarketData
    from qt_pipeline_tests.evolution.evo_helpers import synthetic_bars

    return MarketData.from_frame(synthetic_bars("BTCUSD", n, seed=1))


def bench_throughput(args) -> None:
    import numba

    from qt_pipeline.evolution import Costs, random_population, repair
    from qt_pipeline.evolution.ray_eval import RayEvaluator, SerialEvaluator, evaluate_chunk, warm_up

    data = bars(args.bars)
    pop = repair(random_population(np.random.default_rng(0), args.population))
    work = args.population * len(data)
    print(
        f"fitness throughput: population {args.population} x {len(data):,} bars = {work / 1e6:.0f} M strategy-bars "
        f"per evaluation ({args.repeats} interleaved repeats)"
    )

    # Cold = the first generation of a run: the indicator caches are empty (every series is computed) and
    # Ray's workers resolve the bars. The one-time start-up is reported apart: Ray's start (which starts
    # the workers and compiles / loads their kernels once each) and, for the same footing, the serial
    # process's own compile / cache load (``warm_up``, the same kernels).
    # Steady = later generations (fresh random populations, as the GA's), serial and Ray interleaved so a
    # change in machine load hits both alike.
    from qt_pipeline.evolution import series_cache

    pops = [pop] + [
        repair(random_population(np.random.default_rng(100 + i), args.population))
        for i in range(args.repeats)
    ]
    serial = SerialEvaluator()
    serial.set_data([data], Costs(), 525_960.0)
    t0 = time.perf_counter()
    warm_up()
    # the same footing as a Ray worker's start-up: the series workspace faulted in before the first
    # generation (series_cache.reserve), so the cold generation compares computation, not first touches
    series_cache.reserve(series_cache.workspace_budget_bytes() // 2)
    t_warm = time.perf_counter() - t0
    ray_ev = RayEvaluator(
        num_workers=args.workers, batch_size=args.batch_size, worker_threads=args.worker_threads
    )
    t0 = time.perf_counter()
    ray_ev.start()
    ray_ev.wait_ready()
    t_start = time.perf_counter() - t0
    # The ceiling Ray is measured against, in the same rounds: the same kernel on as many Numba threads in
    # this process (no Ray: no object store, no second process, no Ray daemons' CPU, no worker niceness),
    # steady rounds only (its series come from the serial evaluator's cache of these bars, which the cold
    # round filled), when the local Ray runs one process of several threads
    threads_here = min(args.workers, numba.config.NUMBA_NUM_THREADS) if ray_ev.worker_threads > 1 else 0
    if threads_here:
        warm_up(parallel=True)  # its compile / cache load, untimed like the others'
    t_serial, t_ray, t_here, same = [], [], [], True
    try:
        for i, p_i in enumerate(pops):
            t0 = time.perf_counter()
            expected = serial.evaluate(p_i)
            t_serial.append(time.perf_counter() - t0)
            # (the in-process round before the Ray round in odd rounds, after it in even ones)
            for variant in ("here", "ray") if i % 2 else ("ray", "here"):
                t0 = time.perf_counter()
                if variant == "ray":
                    if i == 0:
                        ray_ev.set_data([data], Costs(), 525_960.0)
                    got = np.asarray(ray_ev.evaluate(p_i))
                    t_ray.append(time.perf_counter() - t0)
                elif i and threads_here:
                    numba.set_num_threads(threads_here)
                    got = evaluate_chunk(p_i, Costs(), 525_960.0, data, parallel=True)
                    t_here.append(time.perf_counter() - t0)
                    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
                else:
                    continue
                same = same and got.tobytes() == np.asarray(expected).tobytes()
        rs = ray_ev.stats()
    finally:
        ray_ev.close()
    print(
        f"  serial warm-up (compile / cache load, series workspace faulted in) {t_warm:.2f} s, ray start-up with its workers warm {t_start:.2f} s "
        f"(both once per run, excluded), ray.put of the bars "
        f"{ray_ev.put_seconds * 1e3:.1f} ms (once per run); {ray_ev.describe()}: {rs['actors_started']} worker "
        f"processes, warm-up {max(rs['warmup_seconds'], default=0):.2f} s each (once per worker, during "
        f"start-up); genomes per call of a worker {ray_ev.chunk_sizes(len(pop))[0]}"
    )
    cs = series_cache.stats()
    print(
        f"  serial indicator cache: {cs['computed']} series computed, {cs['reused']} reused, "
        f"{cs['resident_bytes'] / 2**20:.0f} MiB resident"
    )
    print(
        f"  cold first generation: serial {t_serial[0]:.2f} s ({work / t_serial[0] / 1e6:.1f} M/s), "
        f"ray {t_ray[0]:.2f} s ({work / t_ray[0] / 1e6:.1f} M/s), speedup {t_serial[0] / t_ray[0]:.2f}x "
        "(target >= 1.5x)"
    )
    steady_s, steady_r = t_serial[1:], t_ray[1:]
    for name, ts in (("serial", steady_s), (f"ray {args.workers} workers", steady_r)):
        best, med = min(ts), float(np.median(ts))
        print(
            f"  {name:15s} best {best:6.2f} s ({work / best / 1e6:6.1f} M strategy-bars/s), "
            f"median {med:6.2f} s ({work / med / 1e6:6.1f} M/s)"
        )
    overhead = float(np.median([g["overhead"] for g in rs["generations"][1:]]))
    summed = [sum(g["worker_compute"]) for g in rs["generations"]]
    threads = ray_ev.worker_threads
    print(
        f"  ray worker processes' compute (wall inside the workers, summed over {rs['actors_started']} "
        f"process(es) of {threads} thread(s)): cold {summed[0]:.2f} s, steady median {np.median(summed[1:]):.2f} s "
        f"(x {threads} threads = {threads * np.median(summed[1:]):.2f} CPU-s), against serial's {t_serial[0]:.2f} s / "
        f"{np.median(steady_s):.2f} s"
    )
    paired = np.asarray(steady_s) / np.asarray(steady_r)  # each generation against the serial run beside it
    print(
        f"  speedup ray/serial (steady generations): best {min(steady_s) / min(steady_r):.2f}x, median "
        f"{np.median(steady_s) / np.median(steady_r):.2f}x, median of the paired ratios {np.median(paired):.2f}x "
        f"(range {paired.min():.2f}-{paired.max():.2f}x) (target >= 1.9x on an idle machine); scheduling "
        f"overhead {overhead:.1%} of a steady generation; bit-identical to serial: {same}; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    if t_here:
        here_paired = np.asarray(steady_s) / np.asarray(t_here)
        cost = np.asarray(steady_r) / np.asarray(t_here)
        print(
            f"  same kernel on {threads_here} threads in this process, no Ray (the ceiling, same rounds): median "
            f"{np.median(t_here):.2f} s, speedup over serial: median {np.median(steady_s) / np.median(t_here):.2f}x, "
            f"median of the paired ratios {np.median(here_paired):.2f}x (range {here_paired.min():.2f}-"
            f"{here_paired.max():.2f}x); a Ray round takes {np.median(cost) - 1:+.1%} (median of the paired "
            f"ratios) over the in-process round beside it"
        )


def bench_plan(args) -> None:
    """What the GA evaluates since walk-forward validation: a plan of 3 rolling in-sample folds (each its own
    segment, so every fold re-warms its indicators) plus the portfolio row over all folds, against the
    plain per-dataset evaluation of the same bars. Serial, interleaved rounds, series cached after round 0."""
    import pandas as pd

    from qt_pipeline.evolution import Costs, random_population, repair
    from qt_pipeline.evolution.ray_eval import SerialEvaluator
    from qt_pipeline.evolution.validation import Plan, Segment, fold_groups

    data = bars(args.bars)
    n = len(data)
    t = pd.Timestamp(0, tz="UTC")
    segs = tuple(Segment(f"IS {k + 1}", (data.slice(k * n // 3, (k + 1) * n // 3),), t, t) for k in range(3))
    plan = Plan((data.symbol,), np.ones(1), segs, (*fold_groups(3, "rolling"), (0, 1, 2)), 525_960.0)
    plain = SerialEvaluator()
    plain.set_data([data], Costs(), 525_960.0)
    on_plan = SerialEvaluator()
    on_plan.set_data([plan], Costs(), 525_960.0)
    work = args.population * n
    t_plain, t_plan = [], []
    for i in range(args.repeats + 1):
        pop = repair(random_population(np.random.default_rng(200 + i), args.population))
        t0 = time.perf_counter()
        plain.evaluate(pop)
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        on_plan.evaluate(pop)
        t_plan.append(time.perf_counter() - t0)
    a, b = min(t_plain[1:]), min(t_plan[1:])
    print(
        f"walk-forward plan (3 rolling folds + all-folds portfolio row), serial, best steady round: plain "
        f"{work / a / 1e6:.1f} M strategy-bars/s, plan {work / b / 1e6:.1f} M/s (plan/plain {a / b:.2f}x)"
    )


def bench_checkpoint(args) -> None:
    import psycopg2

    from qt_pipeline.config import Settings
    from qt_pipeline.evolution import N_GENES, random_population, repair
    from qt_pipeline.evolution.ga import GAState, GenerationStats, HallOfFame
    from qt_pipeline.evolution.metrics import METRIC_NAMES
    from qt_pipeline.evolution.state import PostgresStateStore

    name = f"qt_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(args.pg_admin_url, connect_timeout=5)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = args.pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        store = PostgresStateStore.from_url(url, "bench", Settings())
        store.setup()
        store.create_run("bench", {"bench": True}, "h", 0)
        rng = np.random.default_rng(0)
        pop = repair(random_population(rng, args.population))
        fit = rng.normal(size=args.population)
        m = len(METRIC_NAMES)
        met = rng.normal(size=(args.population, m))
        hof = HallOfFame.empty(N_GENES, m).update(pop, fit, met, 0, 20)
        lat = []
        for g in range(args.checkpoints):
            st = GAState(
                g,
                pop,
                fit,
                met,
                rng.bit_generator.state,
                hof,
                args.population * (g + 1),
                GenerationStats(
                    g, float(fit.max()), float(fit.mean()), float(fit.std()), 0.3, args.population, 1.0
                ),
            )
            t0 = time.perf_counter()
            store.commit_generation("bench", st)
            lat.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        store.load_checkpoint("bench")
        t_load = (time.perf_counter() - t0) * 1e3
        store.close()
        lat_a = np.array(lat)
        print(
            f"checkpoint latency (local PostgreSQL, population {args.population} x {N_GENES} genes, hall of fame 20, "
            f"{args.checkpoints} generations, one transaction each): p50 {np.percentile(lat_a, 50):.1f} ms, "
            f"p99 {np.percentile(lat_a, 99):.1f} ms, max {lat_a.max():.1f} ms (target p99 < 100 ms); "
            f"load latest checkpoint {t_load:.1f} ms"
        )
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bars", type=int, default=500_000)
    p.add_argument("--population", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--worker-threads", type=int, default=None, help="CPUs per Ray worker process (default: automatic)"
    )
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--checkpoints", type=int, default=100)
    p.add_argument(
        "--pg-admin-url",
        default=os.environ.get("QT_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-checkpoint", action="store_true")
    p.add_argument("--skip-plan", action="store_true")
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (1 min)")
    if not args.skip_checkpoint:
        bench_checkpoint(args)
    if not args.skip_throughput:
        bench_throughput(args)
    if not args.skip_plan:
        bench_plan(args)


if __name__ == "__main__":
    main()
