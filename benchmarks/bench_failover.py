"""Hybrid store failover under each network fault, through a real TCP proxy on loopback.

    .venv/bin/python benchmarks/bench_failover.py [--rounds 3] [--batch-rows 2000]

For each mode — refuse, black-hole new connections, black-hole established connections, cut mid-stream —
prints the time from the fault to the first write returning (queued in the outbox: "fail over"; target
<= 5 s with the default QT_HYBRID_FAILOVER_S), the time of the health probe + outbox replay after the
network heals ("recover"), and the exactness check (acknowledged rows vs rows in Postgres, duplicates,
checksum). Baseline in the same run: a healthy write of the same batch size. Uses a throwaway database on
the machine's PostgreSQL (QT_TEST_PG_ADMIN_URL), dropped at the end. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._scratch import ScratchDatabase  # noqa: E402
from qt_pipeline.config import Settings  # noqa: E402
from qt_pipeline.storage.postgres.store import PostgresStore  # noqa: E402
from qt_pipeline_tests.storage.backends import make_bars  # noqa: E402
from qt_pipeline_tests.storage.hybrid.failover import MODES, hybrid_settings, run_scenario  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-rows", type=int, default=2000)
    args = ap.parse_args()

    db = ScratchDatabase()
    url = db.url
    tmp = Path(tempfile.mkdtemp(prefix="qt-bench-failover-"))
    settings = hybrid_settings(Settings(QT_DATA_DIR=str(tmp)))
    try:
        base = PostgresStore(url, settings, schema="baseline")
        base.ensure_schema()
        healthy = []
        for i in range(5):
            frame = make_bars(
                ["AAA", "BBB"],
                pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=i),
                args.batch_rows // 2,
                seed=i,
            )
            t0 = time.perf_counter()
            base.write_bars(frame)
            healthy.append(time.perf_counter() - t0)
        base.close()
        print(
            f"failover budget: QT_HYBRID_FAILOVER_S={settings.hybrid_failover_s} s + rows / "
            f"{settings.hybrid_min_rows_per_s:.0f} rows/s; connect timeout {settings.hybrid_connect_timeout_s} s; "
            f"{settings.hybrid_pg_retry_attempts} attempts"
        )
        print(
            f"baseline: healthy central write of {args.batch_rows} rows: median {statistics.median(healthy):.3f} s"
        )
        print()
        print(
            "| scenario | acknowledged rows | rows after recovery | duplicates | time to fail over / recover "
            "(median of rounds; max fail over) | checksum equal |"
        )
        print("|---|---|---|---|---|---|")
        for mode in MODES:
            results = []
            for r in range(args.rounds):
                schema = f"s_{mode.replace('-', '_')}_{r}"
                results.append(
                    run_scenario(mode, settings, url, schema, tmp / f"{mode}-{r}", batch_rows=args.batch_rows)
                )
            last = results[-1]
            fo = [x.failover_s for x in results]
            rc = [x.recover_s for x in results]
            print(
                f"| {mode} | {last.acknowledged_rows} | {last.rows_after_recovery} | "
                f"{sum(x.duplicates for x in results)} | {statistics.median(fo):.2f} s / {statistics.median(rc):.2f} s "
                f"(max {max(fo):.2f} s) | {all(x.checksum_equal for x in results)} |",
                flush=True,
            )
    finally:
        db.drop()


if __name__ == "__main__":
    main()
