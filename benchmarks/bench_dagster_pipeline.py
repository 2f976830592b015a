"""Benchmark: ingest + migrate + checks of N days x 3 symbols of minute bars through Dagster, next to the
bare data path (the same domain functions called directly) in the same run.

Prints figures, asserts nothing. Uses a fresh throwaway database on the local PostgreSQL server
(``QT_BENCH_PG_ADMIN_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped at the end,
and a temporary Dagster instance (SQLite run/event storage, as ``./dev.sh`` uses).

    .venv/bin/python benchmarks/bench_dagster_pipeline.py [--days 90] [--no-checks] [--per-partition 3]

Both sides do the same work per (day, symbol) partition, each in its own data directory and schema:
fetch synthetic bars + validate + write to DuckDB; the Great Expectations bar-quality suite on the stored
partition; copy to PostgreSQL + ledger; the per-partition consistency proof (rows + checksum on both
sides). The Dagster side runs the code location's ``ingestion_job`` and ``migration_job`` as ranged runs
(single-run backfill policy: one run per job for each block of days, checks evaluated per partition
inside the step). The sides alternate in ``--blocks`` blocks of days, so a change of machine load during
the run weighs on both alike. ``--instance postgres`` keeps Dagster's runs and events in PostgreSQL as
in production (infra/dagster.prod.yaml); the default is SQLite, as ``./dev.sh``. Target: Dagster end to end >= 0.5x the bare path's throughput.

``--per-partition N`` also times N partitions the old way (one Dagster run per partition and job) to
show what per-partition orchestration costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._scratch import ScratchDatabase  # noqa: E402

SYMBOLS = ("BTCUSD", "ETHUSD", "SOLUSD")
START = date(2024, 1, 1)
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}



def _settings_env(data_dir: Path, url: str, schema: str) -> None:
    os.environ.update(
        {
            "QT_DATA_DIR": str(data_dir),
            "NEON_DATABASE_URL": url,
            "QT_PG_SCHEMA": schema,
            "QT_SYMBOLS": ",".join(SYMBOLS),
            "QT_PARTITIONS_START": START.isoformat(),
            "STORAGE_BACKEND": "local",
        }
    )
    from qt_pipeline.config import get_settings

    get_settings.cache_clear()


def bare_path(days: list[date], checks: bool) -> float:
    """The data path without Dagster: the domain functions the assets call, partition by partition."""
    from qt_pipeline.config import get_settings
    from qt_pipeline.market.quality import run_bar_quality
    from qt_pipeline.market.sources import ingest_batches
    from qt_pipeline.market.sources.synthetic import SyntheticMarket
    from qt_pipeline.storage.central import open_central
    from qt_pipeline.storage.consistency import check_partition
    from qt_pipeline.storage.duckdb_store import DuckDBStore
    from qt_pipeline.storage.migration import day_bounds, migrate_partition

    settings = get_settings()
    t0 = time.perf_counter()
    local = DuckDBStore(settings.resolved_duckdb_path)
    central = open_central(settings)
    try:
        source = SyntheticMarket(
            settings.synthetic_seed, symbols=settings.symbols, interval=settings.interval
        )
        for day in days:
            for sym in SYMBOLS:
                start, end = day_bounds(day)
                res = ingest_batches(
                    source, sym, start, end, interval=settings.interval, known_symbols=settings.symbols
                )
                local.write_bars(res.accepted)
                if checks:
                    assert run_bar_quality(
                        local.read_bars(sym, start, end), interval=settings.interval
                    ).success
        central.ensure_schema()
        for day in days:
            for sym in SYMBOLS:
                migrate_partition(local, central, sym, day)
                if checks:
                    assert check_partition(local, central, sym, day).ok
    finally:
        local.close()
        central.close()
    return time.perf_counter() - t0


def _blocks(days: list[date], n: int) -> list[list[date]]:
    """``days`` in ``n`` consecutive blocks of (nearly) equal length."""
    n = max(1, min(n, len(days)))
    size, extra = divmod(len(days), n)
    out, i = [], 0
    for b in range(n):
        j = i + size + (1 if b < extra else 0)
        out.append(days[i:j])
        i = j
    return out


def _psycopg2_url(url: str) -> str:
    # SQLAlchemy 2.1 maps "postgresql://" to psycopg (3); the project ships psycopg2 (as infra/dagster.prod.yaml)
    return "postgresql+psycopg2://" + url.split("://", 1)[1]


def _instance(kind: str, home: Path, url: str):
    """A throwaway Dagster instance: SQLite storage under ``home`` (what ./dev.sh uses) or PostgreSQL
    storage in the benchmark's scratch database (the production configuration, infra/dagster.prod.yaml)."""
    import dagster as dg

    no_telemetry = {"telemetry": {"enabled": False}}
    if kind == "sqlite":
        return dg.DagsterInstance.local_temp(str(home), overrides=no_telemetry)
    import yaml

    (home / "dagster.yaml").write_text(
        yaml.safe_dump({"storage": {"postgres": {"postgres_url": _psycopg2_url(url)}}, **no_telemetry})
    )
    return dg.DagsterInstance.from_config(str(home))


def dagster_path(days: list[date], checks: bool, instance) -> tuple[float, int]:
    from qt_pipeline.definitions import defs
    from qt_pipeline.defs.ingestion.schedules import day_range_tags

    tags = day_range_tags(days[0], days[-1], SYMBOLS)
    t0 = time.perf_counter()
    runs = 0
    for name in ("ingestion_job", "migration_job"):
        job = defs.resolve_job_def(name)
        if not checks:
            job = job.get_subset(
                asset_selection=set(job.asset_layer.executable_asset_keys), asset_check_selection=set()
            )
        result = job.execute_in_process(instance=instance, tags=tags, run_config=QUIET, raise_on_error=False)
        runs += 1
        if not result.success:
            errors = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
            raise SystemExit(f"{name} failed: run {result.run_id}: {errors}")
        if checks:
            evals = result.get_asset_check_evaluations()
            assert len(evals) == len(days) * len(SYMBOLS) and all(e.passed for e in evals)
    return time.perf_counter() - t0, runs


def per_partition(days: list[date], checks: bool, instance, n: int) -> float:
    """Seconds per partition when every partition is its own run of each job (the old way)."""
    from qt_pipeline.definitions import defs
    from qt_pipeline.defs.ingestion.partitions import partition_key_for

    keys = [str(partition_key_for(d, s)) for d in days for s in SYMBOLS][:n]
    t0 = time.perf_counter()
    for name in ("ingestion_job", "migration_job"):
        job = defs.resolve_job_def(name)
        if not checks:
            job = job.get_subset(
                asset_selection=set(job.asset_layer.executable_asset_keys), asset_check_selection=set()
            )
        for key in keys:
            assert job.execute_in_process(instance=instance, partition_key=key, run_config=QUIET).success
    return (time.perf_counter() - t0) / max(len(keys), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--no-checks", dest="checks", action="store_false", help="skip GX and consistency checks")
    ap.add_argument("--per-partition", type=int, default=3, help="partitions timed one run each (0: skip)")
    ap.add_argument(
        "--blocks",
        type=int,
        default=3,
        help="alternate bare and Dagster in this many blocks of days (fair under changing load)",
    )
    ap.add_argument(
        "--instance",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="Dagster run/event storage: SQLite files (as ./dev.sh) or PostgreSQL (as infra/dagster.prod.yaml)",
    )
    args = ap.parse_args()
    days = [START + timedelta(days=i) for i in range(args.days)]
    n_part = len(days) * len(SYMBOLS)

    db = ScratchDatabase()
    url = db.url
    work = Path(tempfile.mkdtemp(prefix="qt_bench_dagster_"))
    try:

        if args.checks:  # warm up Great Expectations (a ~10 s import) outside both timings
            _settings_env(work / "warm", url, "warm")
            import pandas as pd

            from qt_pipeline.market.quality import run_bar_quality
            from qt_pipeline.market.sources import ingest_batches
            from qt_pipeline.market.sources.synthetic import SyntheticMarket

            t = pd.Timestamp(START, tz="UTC")
            warm = ingest_batches(SyntheticMarket(1, symbols=SYMBOLS), "BTCUSD", t, t + pd.Timedelta(hours=2))
            run_bar_quality(warm.accepted)

        # The two sides alternate in blocks of days (bare, Dagster, bare, Dagster, ...) so that a change of
        # machine load during the run weighs on both alike; each block is one ranged backfill per job.
        blocks = _blocks(days, args.blocks)
        (work / "dagster_home").mkdir()
        bare_s = dag_s = 0.0
        runs = 0
        with _instance(args.instance, work / "dagster_home", url) as instance:
            for block in blocks:
                _settings_env(work / "bare", url, "bare")
                bare_s += bare_path(block, args.checks)
                _settings_env(work / "dagster", url, "dagster")
                secs, n = dagster_path(block, args.checks, instance)
                dag_s, runs = dag_s + secs, runs + n
            pp = None
            if args.per_partition:
                _settings_env(work / "pp", url, "pp")
                pp = per_partition(days, args.checks, instance, args.per_partition)

        rows = n_part * 1440
        print(
            f"{args.days} days x {len(SYMBOLS)} symbols = {n_part} partitions, {rows:,} minute bars; "
            f"checks {'on (GX bar quality + consistency proof per partition)' if args.checks else 'off'}; "
            f"Dagster storage: {args.instance}"
        )
        print(
            f"bare data path      : {bare_s:8.2f} s  {rows / bare_s:10,.0f} bars/s  "
            f"{bare_s / n_part * 1000:7.1f} ms/partition"
        )
        print(
            f"Dagster ({runs} ranged runs, {args.blocks} blocks): {dag_s:8.2f} s  {rows / dag_s:10,.0f} bars/s  "
            f"{dag_s / n_part * 1000:7.1f} ms/partition"
        )
        print(f"ratio Dagster / bare throughput: {bare_s / dag_s:.2f}x  (target >= 0.5x)")
        if pp is not None:
            print(
                f"one run per partition and job (old way, {args.per_partition} partitions): "
                f"{pp * 1000:.0f} ms/partition -> {pp * n_part:.0f} s for all {n_part}"
            )
    finally:
        db.drop()


if __name__ == "__main__":
    main()
