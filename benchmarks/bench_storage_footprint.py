"""Storage footprint per bar (capacity planning, infra/CAPACITY.md): PostgreSQL rows (heap + primary key,
daily partitions as the `neon` store lays them out) vs the cold tier's zstd Parquet archive of the same bars.

    .venv/bin/python benchmarks/bench_storage_footprint.py [--symbols 4] [--days 7]
        [--pg-admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Writes synthetic minute bars through ``PostgresStore.write_bars`` into a throwaway database of the local
server, VACUUMs, sums ``pg_total_relation_size`` over the partitions, writes the same frame as zstd Parquet
(the cold tier's format) and prints bytes per bar and the extrapolation to 20 symbols x 2 years.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._scratch import ADMIN_URL, ScratchDatabase  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=4)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument(
        "--pg-admin-url",
        default=ADMIN_URL,
    )
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from qt_pipeline.config import Settings
    from qt_pipeline.storage.postgres.store import PostgresStore
    from qt_pipeline_tests.evolution.evo_helpers import synthetic_bars

    n = args.days * 1440
    frame = pd.concat(
        [
            synthetic_bars(f"SYM{i:02d}", n, seed=10 + i, start=pd.Timestamp("2024-01-01", tz="UTC"))
            for i in range(args.symbols)
        ],
        ignore_index=True,
    )
    rows = len(frame)
    db = ScratchDatabase("qt_bench_fp", admin_url=args.pg_admin_url)
    url = db.url
    try:
        settings = Settings(QT_DATA_DIR=tempfile.mkdtemp(), QT_PG_TIMESCALEDB="off", QT_PG_SCHEMA="qt")
        store = PostgresStore(url, settings, schema="qt")
        t0 = time.perf_counter()
        store.write_bars(frame)
        t_write = time.perf_counter() - t0
        store.close()
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
            cur.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'qt.ohlcv_bars'::regclass"
            )
            pg_bytes = int(cur.fetchone()[0])
        conn.close()
    finally:
        db.drop()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bars.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="zstd")
        pq_bytes = path.stat().st_size
    per_pg, per_pq = pg_bytes / rows, pq_bytes / rows
    target = 20 * 2 * 525_960
    print(
        f"storage footprint: {args.symbols} symbols x {args.days} days = {rows:,} minute bars "
        f"(written in {t_write:.1f} s, {rows / t_write:,.0f} rows/s)\n"
        f"  PostgreSQL (heap + primary key, daily partitions): {pg_bytes / 2**20:.1f} MiB = {per_pg:.0f} B/bar\n"
        f"  zstd Parquet (cold tier archive):                  {pq_bytes / 2**20:.2f} MiB = {per_pq:.1f} B/bar "
        f"({per_pg / per_pq:.1f}x smaller)\n"
        f"  20 symbols x 2 years = {target:,} bars: PostgreSQL {per_pg * target / 1e9:.2f} GB, "
        f"Parquet {per_pq * target / 1e9:.2f} GB"
    )


if __name__ == "__main__":
    main()
