"""Evolution on a real multi-node Ray cluster: 1 node vs 2 nodes with the same total CPUs, and the
per-generation scheduling overhead (target: < 5% of a generation at population 200 over 500k bars).

    .venv/bin/python benchmarks/bench_ray_cluster.py [--bars 500000] [--population 200] [--cpus 2]
        [--rounds 3] [--symbols 1]

Both clusters are started for real with the ``ray`` CLI (``ray start --head`` + ``ray start --address``,
qt_pipeline_tests/infra/local_ray_cluster.py) and reached by address, as a cloud cluster is:
  * 1 node:  a head with --cpus CPUs;
  * 2 nodes: a head with cpus/2 + a worker node with cpus/2.
For each: Ray connect time, the one ``ray.put`` of the bars, a warm-up generation (JIT/cache load per
worker, excluded), then ``--rounds`` generations of fresh random populations through ``RayEvaluator``
(the production path): genomes/s and strategy-bars/s. Then the same populations through a timed variant
of the evaluator's task (same chunks, same object refs) that reports each task's compute time and node:
overhead per generation = wall time − the longest task's compute time (scheduling, argument resolution,
result transfer), as a share of the generation. Prints figures only; the machine load is printed too.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed_chunk(chunk, costs, ppy, *datasets):
    import ray

    from qt_pipeline.evolution.ray_eval import evaluate_chunk

    t0 = time.perf_counter()
    out = evaluate_chunk(chunk, costs, ppy, *datasets)
    return out, time.perf_counter() - t0, ray.get_runtime_context().get_node_id()


def measure(label: str, cluster_nodes: list[int], data, pops, args) -> dict:
    import ray

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
            ev.set_data(data, Costs(), 525_960.0)
            nodes = [n for n in ray.nodes() if n["Alive"]]
            t1 = time.perf_counter()
            ev.evaluate(pops[0])  # warm-up: JIT cache load and indicator series in every worker
            t_warm = time.perf_counter() - t1
            walls = []
            for p in pops[1:]:
                t1 = time.perf_counter()
                ev.evaluate(p)
                walls.append(time.perf_counter() - t1)
            remote = ray.remote(timed_chunk).options(num_cpus=1)
            overheads, shares, per_node = [], [], {}
            for p in pops[1:]:
                size = max(1, math.ceil(len(p) / ev.num_workers))
                t1 = time.perf_counter()
                parts = ray.get(
                    [
                        remote.remote(p[i : i + size], ev._costs, ev._ppy, *ev._refs)
                        for i in range(0, len(p), size)
                    ]
                )
                wall = time.perf_counter() - t1
                longest = max(t for _, t, _ in parts)
                overheads.append(wall - longest)
                shares.append((wall - longest) / wall)
                for _, _, node in parts:
                    per_node[node] = per_node.get(node, 0) + 1
        finally:
            ev.close()
    bars = sum(len(d) for d in data)
    gen = statistics.median(walls)
    res = {
        "label": label,
        "nodes": len(nodes),
        "cluster_start_s": t_cluster,
        "connect_s": ev.startup_seconds,
        "put_ms": ev.put_seconds * 1e3,
        "warmup_s": t_warm,
        "generation_s": gen,
        "genomes_per_s": len(pops[1]) / gen,
        "strategy_bars_per_s": len(pops[1]) * bars / gen,
        "overhead_ms": statistics.median(overheads) * 1e3,
        "overhead_share": statistics.median(shares),
        "tasks_per_node": sorted(per_node.values()),
    }
    print(
        f"  {label}: {res['nodes']} node(s) up in {t_cluster:.1f} s; connect {res['connect_s']:.2f} s, "
        f"ray.put of the bars {res['put_ms']:.0f} ms (once per run), warm-up {t_warm:.1f} s (excluded)\n"
        f"    generation (median of {len(walls)}): {gen:.2f} s = {res['genomes_per_s']:.1f} genomes/s, "
        f"{res['strategy_bars_per_s'] / 1e6:.1f} M strategy-bars/s\n"
        f"    scheduling overhead per generation: {res['overhead_ms']:.0f} ms = "
        f"{res['overhead_share']:.1%} of the generation (target < 5%); tasks per node {res['tasks_per_node']}"
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
