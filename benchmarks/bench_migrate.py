"""Benchmark: migrate 1,000,000 bars DuckDB → PostgreSQL, against a plain COPY baseline; range reads.

Prints figures, asserts nothing. Uses a fresh throwaway database on the local PostgreSQL server
(``QT_BENCH_PG_ADMIN_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped at the end.

    .venv/bin/python benchmarks/bench_migrate.py [--rows 1000000] [--reads 60]

Figures:
* migration rows/s (``migrate_all``: DuckDB read → canonical frame → binary COPY into the partitioned
  ``ohlcv_bars`` + ledger), and its ratio to a plain ``COPY … FROM`` a CSV file of the same rows into an
  empty table with the same columns and primary key, measured in the same run (target ≥ 0.7×);
* a second, no-op migration run (ledger check only);
* range reads of ~10,000 rows of one symbol through ``PostgresStore.read_bars``: p50/p99.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._scratch import ScratchDatabase  # noqa: E402
from qt_pipeline.config import Settings  # noqa: E402
from qt_pipeline.market.contract import to_canonical  # noqa: E402
from qt_pipeline.storage.duckdb_store import DuckDBStore  # noqa: E402
from qt_pipeline.storage.migration import migrate_all  # noqa: E402
from qt_pipeline.storage.postgres.store import PostgresStore  # noqa: E402

BARS_PER_DAY = 1000


def build_bars(n_rows: int, seed: int = 1) -> pd.DataFrame:
    """``n_rows`` canonical minute bars: 1000 bars per symbol-day, 40 days, as many symbols as needed."""
    days = 40
    n_symbols = max(1, -(-n_rows // (days * BARS_PER_DAY)))
    rng = np.random.default_rng(seed)
    per_symbol = days * BARS_PER_DAY
    day_idx = np.repeat(np.arange(days), BARS_PER_DAY)
    minute = np.tile(np.arange(BARS_PER_DAY), days)
    base_ts = pd.Timestamp("2024-01-01", tz="UTC")
    ts = base_ts + pd.to_timedelta(day_idx * 86400 + minute * 60, unit="s")
    frames = []
    for s in range(n_symbols):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, per_symbol))) + s
        open_ = np.r_[close[0], close[:-1]]
        high = np.maximum(open_, close) * (1 + rng.random(per_symbol) * 1e-3)
        low = np.minimum(open_, close) * (1 - rng.random(per_symbol) * 1e-3)
        frames.append(
            pd.DataFrame(
                {
                    "symbol": f"SYM{s:03d}",
                    "timestamp": ts,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": rng.random(per_symbol) * 1e4,
                    "vwap": (high + low + close) / 3,
                    "trade_count": rng.integers(1, 10_000, per_symbol),
                }
            )
        )
    return to_canonical(pd.concat(frames, ignore_index=True).head(n_rows))



def baseline_copy(db_url: str, csv_path: Path) -> float:
    """Seconds for a plain COPY of the CSV file into an empty table with the same columns and key."""
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute(
            'CREATE TABLE bench_baseline (symbol text NOT NULL, "timestamp" timestamptz NOT NULL, '
            "open float8 NOT NULL, high float8 NOT NULL, low float8 NOT NULL, close float8 NOT NULL, "
            "volume float8 NOT NULL, vwap float8 NOT NULL, trade_count bigint NOT NULL, "
            'ingested_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (symbol, "timestamp"))'
        )
    conn.commit()
    t0 = time.perf_counter()
    with conn.cursor() as cur, open(csv_path, "rb") as fh:
        cur.copy_expert(
            'COPY bench_baseline (symbol, "timestamp", open, high, low, close, volume, vwap, trade_count) '
            "FROM STDIN WITH (FORMAT csv, HEADER true)",
            fh,
            size=1 << 20,
        )
    conn.commit()
    secs = time.perf_counter() - t0
    with conn.cursor() as cur:
        cur.execute("DROP TABLE bench_baseline")
    conn.commit()
    conn.close()
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reads", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--writers", type=int, default=2)
    args = ap.parse_args()

    db = ScratchDatabase()
    db_url = db.url
    tmp = Path(tempfile.mkdtemp(prefix="qt_bench_migrate_"))
    try:
        settings = Settings(QT_DATA_DIR=str(tmp / "data"))
        t0 = time.perf_counter()
        bars = build_bars(args.rows)
        local = DuckDBStore(tmp / "local.duckdb")
        local.write_bars(bars)
        n = len(bars)
        n_sd = len(local.symbol_days())
        print(f"prepared {n:,} bars ({n_sd} symbol-days) in DuckDB in {time.perf_counter() - t0:.1f}s")
        del bars

        # baseline: the same rows as a CSV file (DuckDB writes it), plain COPY into an empty table
        csv_path = tmp / "bars.csv"
        local.connection.execute(
            "COPY (SELECT symbol, strftime(timestamp AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S.%f+00') AS timestamp, "
            "open, high, low, close, volume, vwap, trade_count FROM ohlcv_bars ORDER BY symbol, timestamp) "
            f"TO '{csv_path}' (HEADER, DELIMITER ',')"
        )
        ratios, mig_rates, base_rates = [], [], []
        for r in range(args.rounds):  # interleaved rounds: the machine is shared, so load drifts
            base_s = baseline_copy(db_url, csv_path)
            base_rps = n / base_s
            print(
                f"[round {r + 1}] baseline plain COPY from CSV file : {base_s:6.2f}s  {base_rps:>10,.0f} rows/s"
            )
            central = PostgresStore(db_url, settings, schema=f"bench_r{r}")
            central.ensure_schema()
            t0 = time.perf_counter()
            summary = migrate_all(local, central, writers=args.writers)
            mig_s = time.perf_counter() - t0
            assert summary.rows == n, (summary.rows, n)
            mig_rps = n / mig_s
            print(
                f"[round {r + 1}] migrate_all DuckDB → Postgres      : {mig_s:6.2f}s  {mig_rps:>10,.0f} rows/s  "
                f"({summary.migrated} symbol-days, {summary.batches} batches, {args.writers} writers)"
            )
            ratios.append(mig_rps / base_rps)
            mig_rates.append(mig_rps)
            base_rates.append(base_rps)
            if r + 1 < args.rounds:
                central.close()
        print(
            f"migration {np.median(mig_rates):,.0f} rows/s (median), baseline {np.median(base_rates):,.0f} rows/s; "
            f"ratio median {np.median(ratios):.2f}x, per round {', '.join(f'{x:.2f}' for x in ratios)} "
            "(target >= 0.70x)"
        )

        t0 = time.perf_counter()
        again = migrate_all(local, central)
        print(
            f"second run (ledger, no-op)         : {time.perf_counter() - t0:6.2f}s  "
            f"skipped {again.skipped}, migrated {again.migrated}"
        )

        # range reads of ~10,000 rows (10 days of one symbol) through the store
        rng = np.random.default_rng(3)
        symbols = sorted(central.list_symbols()["symbol"])
        lat = []
        for i in range(args.reads + 5):
            sym = symbols[int(rng.integers(len(symbols)))]
            d0 = int(rng.integers(0, 30))
            start = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=d0)
            t0 = time.perf_counter()
            df = central.read_bars(sym, start, start + pd.Timedelta(days=10))
            dt = time.perf_counter() - t0
            if i >= 5:  # warm-up
                lat.append(dt * 1000)
            assert len(df) == 10 * BARS_PER_DAY
        p50, p99 = np.percentile(lat, [50, 99])
        print(f"range read 10,000 rows (read_bars)  : p50 {p50:.1f} ms  p99 {p99:.1f} ms  ({len(lat)} reads)")
        central.close()
        local.close()
    finally:
        db.drop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
