"""Evolution on a real multi-node Ray cluster: 1 node vs 2 nodes with the same total CPUs, and the
per-generation scheduling overhead (target: < 5% of a generation at population 200 over 500k bars).

    .venv/bin/python benchmarks/bench_ray_cluster.py [--bars 500000] [--population 200] [--cpus 2]
        [--rounds 3] [--symbols 1]

Both clusters are started for real with the ``ray`` CLI (``ray start --head`` + ``ray start --address``,
qt_pipeline_tests/infra/local_ray_cluster.py) and reached by address, as a cloud cluster is:
  * 1 node:  a head with --cpus CPUs;
  * 2 nodes: a head with cpus/2 + a worker node with cpus/2.
For each: the driver's start/connect (once per run), the one ``ray.put`` of the bars and where its
copies are held, the cold first generation (the bars reach each worker once, every worker warms up once),
then ``--rounds`` steady generations of fresh random populations through ``RayEvaluator`` (the production
path): genomes/s and strategy-bars/s, and the scheduling overhead per generation measured by the evaluator
itself (wall time − the slowest worker's compute time: dispatch, argument transfer, result collection) as a
share of the generation. Prints figures only; the machine load is printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(label: str, cluster_nodes: list[int], data, pops, args) -> dict:
    from qt_pipeline.evolution import Costs
    from qt_pipeline.evolution.ray_eval import RayEvaluator
    from qt_pipeline_tests.infra.local_ray_cluster import LocalRayCluster

    t0 = time.perf_counter()
    with LocalRayCluster(head_cpus=cluster_nodes[0], object_store_mb=args.object_store_mb) as cluster:
        cluster.start_head()
        for cpus in cluster_nodes[1:]:
            cluster.add_node(cpus)
        t_cluster = time.perf_counter() - t0
        ev = RayEvaluator(cluster.address, num_workers=sum(cluster_nodes))
        try:
            ev.start()
            t1 = time.perf_counter()
            ev.set_data(data, Costs(), 525_960.0)
            ev.evaluate(pops[0])  # cold: the bars reach every worker, which warms up once
            t_cold = time.perf_counter() - t1
            walls = []
            for p in pops[1:]:
                t1 = time.perf_counter()
                ev.evaluate(p)
                walls.append(time.perf_counter() - t1)
            stats = ev.stats()
        finally:
            ev.close()
    bars = sum(len(d) for d in data)
    gen = statistics.median(walls)
    steady = stats["generations"][1:]
    res = {
        "label": label,
        "nodes": len(stats["actor_nodes"]),
        "cluster_start_s": t_cluster,
        "connect_s": ev.startup_seconds,
        "put_ms": ev.put_seconds * 1e3,
        "puts": stats["puts"],
        "cold_s": t_cold,
        "generation_s": gen,
        "genomes_per_s": len(pops[1]) / gen,
        "strategy_bars_per_s": len(pops[1]) * bars / gen,
        "overhead_ms": statistics.median(g["wall"] - g["compute"] for g in steady) * 1e3,
        "overhead_share": statistics.median(g["overhead"] for g in steady),
        "workers_per_node": sorted(stats["actor_nodes"].values()),
        "copies": sorted(len(v) for v in stats["data_locations"].values()),
    }
    print(
        f"  {label}: {res['nodes']} node(s) up in {t_cluster:.1f} s; driver start/connect {res['connect_s']:.2f} s "
        f"(once per run); {res['puts']} ray.put of the bars ({res['put_ms']:.0f} ms, once per run), held on "
        f"{res['copies']} node(s) per object, workers per node {res['workers_per_node']} (each loads it once)\n"
        f"    cold first generation {t_cold:.2f} s (data to workers + warm-up once per worker)\n"
        f"    steady generation (median of {len(walls)}): {gen:.2f} s = {res['genomes_per_s']:.1f} genomes/s, "
        f"{res['strategy_bars_per_s'] / 1e6:.1f} M strategy-bars/s\n"
        f"    scheduling overhead per generation: {res['overhead_ms']:.0f} ms = "
        f"{res['overhead_share']:.1%} of the generation (wall - slowest worker's compute; target < 5%)"
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=500_000, help="bars per symbol")
    ap.add_argument("--symbols", type=int, default=1)
    ap.add_argument("--population", type=int, default=200)
    ap.add_argument("--cpus", type=int, default=2, help="total CPUs of each cluster (even)")
    ap.add_argument("--rounds", type=int, default=3, help="timed generations per cluster")
    ap.add_argument("--object-store-mb", type=int, default=0, help="per node (default: 4x the bars)")
    args = ap.parse_args()
    if args.cpus < 2 or args.cpus % 2:
        ap.error("--cpus must be an even number >= 2 (it is split over two nodes)")

    from qt_pipeline.evolution import MarketData, random_population, repair
    from qt_pipeline_tests.evolution.evo_helpers import synthetic_bars

    data = [
        MarketData.from_frame(synthetic_bars(f"SYM{i}", args.bars, seed=1 + i), symbol=f"SYM{i}")
        for i in range(args.symbols)
    ]
    nbytes = sum(sum(getattr(d, f).nbytes for f in ("open", "high", "low", "close", "volume")) for d in data)
    if not args.object_store_mb:
        args.object_store_mb = max(100, int(4 * nbytes / 2**20))
    pops = [
        repair(random_population(np.random.default_rng(100 + i), args.population))
        for i in range(args.rounds + 1)
    ]
    print(
        f"ray cluster benchmark: population {args.population} x {args.symbols} symbol(s) x {args.bars:,} bars "
        f"({nbytes / 2**20:.0f} MiB of bars), {args.cpus} CPUs per cluster; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    one = measure("1 node ", [args.cpus], data, pops, args)
    two = measure("2 nodes", [args.cpus // 2, args.cpus // 2], data, pops, args)
    print(
        f"  2 nodes / 1 node throughput: {two['strategy_bars_per_s'] / one['strategy_bars_per_s']:.2f}x "
        f"(same total CPUs; ideal 1.00x); overhead 1 node {one['overhead_share']:.1%}, 2 nodes "
        f"{two['overhead_share']:.1%}; load average now {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
