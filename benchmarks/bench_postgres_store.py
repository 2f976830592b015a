"""Benchmark of the neon backend (PostgresStore) on the machine's PostgreSQL, in a throwaway database.

Measures, in the same run:
  * baseline: plain ``COPY … FROM STDIN`` of a CSV file (written beforehand) into an empty ``ohlcv_bars``
  * ``write_bars(mode="upsert")``  — COPY → temp staging → INSERT … ON CONFLICT, into an empty table
  * ``copy_bars_append``           — COPY straight into the empty table (what ``write_bars`` does by default
                                     when the range is empty)
  * ``write_bars`` again on the same rows (idempotent re-write: every key conflicts, nothing changes)
  * range read of ~10,000 bars of one symbol (``read_bars``), p50/p99 over 200 repeats

Run:  .venv/bin/python benchmarks/bench_postgres_store.py [--rows 1000000] [--admin-url URL]
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
import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._scratch import ADMIN_URL, ScratchDatabase  # noqa: E402
from qt_pipeline.config import Settings  # noqa: E402
from qt_pipeline.market.contract import to_canonical  # noqa: E402
from qt_pipeline.storage.postgres.layout import ensure_partitions  # noqa: E402
from qt_pipeline.storage.postgres.store import PostgresStore  # noqa: E402


def make_bars(n_rows: int, n_symbols: int = 10, seed: int = 1) -> pd.DataFrame:
    per = n_rows // n_symbols
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=per, freq="1min", tz="UTC")
    frames = []
    for i in range(n_symbols):
        close = 100.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0, 1e-3, per)))
        open_ = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(rng.normal(0, 2e-3, per)) * close
        high, low = np.maximum(open_, close) + spread, np.minimum(open_, close) - spread
        frames.append(
            pd.DataFrame(
                {
                    "symbol": f"SYM{i:02d}",
                    "timestamp": ts,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": rng.uniform(0, 1000, per),
                    "vwap": np.clip(low + rng.uniform(0, 1, per) * (high - low), low, high),
                    "trade_count": rng.integers(0, 500, per),
                }
            )
        )
    return to_canonical(pd.concat(frames, ignore_index=True))


def fresh_store(url: str, settings: Settings, schema: str, days) -> PostgresStore:
    store = PostgresStore(url, settings, schema=schema)
    store.ensure_schema()
    with store.direct_engine.begin() as conn:  # partitions are not part of any timed figure
        ensure_partitions(conn, schema, days)
    return store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--admin-url", default=ADMIN_URL)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    db = ScratchDatabase(admin_url=args.admin_url)
    url = db.url
    tmp = Path(tempfile.mkdtemp(prefix="qt-bench-pg-"))
    settings = Settings(QT_DATA_DIR=tmp / "data")
    stores: list[PostgresStore] = []
    try:
        t = time.perf_counter()
        bars = make_bars(args.rows)
        n = len(bars)
        days = sorted({d.date() for d in bars["timestamp"].dt.floor("D").unique()})
        print(
            f"rows: {n:,} ({bars['symbol'].nunique()} symbols x {n // bars['symbol'].nunique():,} minutes, "
            f"{len(days)} days); generated in {time.perf_counter() - t:.1f}s"
        )
        csv_path = tmp / "bars.csv"
        t = time.perf_counter()
        pacsv.write_csv(
            pa.Table.from_pandas(bars, preserve_index=False),
            csv_path,
            pacsv.WriteOptions(include_header=False),
        )
        print(
            f"CSV file for the baseline: {csv_path.stat().st_size / 1e6:.0f} MB written in "
            f"{time.perf_counter() - t:.1f}s (not timed below)"
        )

        copy_store = fresh_store(url, settings, "bench_copy", days)
        upsert_store = fresh_store(url, settings, "bench_upsert", days)
        append_store = fresh_store(url, settings, "bench_append", days)
        stores.extend([copy_store, upsert_store, append_store])

        def truncate(store: PostgresStore) -> None:
            with store.direct_engine.begin() as conn:
                conn.exec_driver_sql(f"TRUNCATE {store.qualified('ohlcv_bars')}")

        def baseline() -> None:
            raw = psycopg2.connect(url)
            with raw, raw.cursor() as cur, open(csv_path, "rb") as f:
                cur.copy_expert(
                    f'COPY {copy_store.qualified("ohlcv_bars")} (symbol, "timestamp", open, high, low, close, '
                    "volume, vwap, trade_count) FROM STDIN WITH (FORMAT csv)",
                    f,
                    size=1 << 20,
                )
            raw.close()

        def upsert() -> None:
            assert upsert_store.write_bars(bars, mode="upsert").details["path"] == "upsert"

        def rewrite() -> None:
            assert upsert_store.write_bars(bars).details["rows_inserted_or_changed"] == 0

        def append() -> None:
            assert append_store.copy_bars_append(bars).details["path"] == "copy"

        paths = [
            ("plain COPY from CSV file (baseline)", baseline, copy_store),
            ("write_bars upsert (staging + ON CONFLICT)", upsert, upsert_store),
            ("write_bars re-write, identical rows", rewrite, None),
            ("copy_bars_append (COPY into empty table)", append, append_store),
        ]
        # interleaved rounds: the machine is shared, so each path is timed in every round (best kept)
        results: dict[str, list[float]] = {name: [] for name, _, _ in paths}
        for _ in range(args.rounds):
            for name, fn, empty_first in paths:
                if empty_first is not None:
                    truncate(empty_first)
                t = time.perf_counter()
                fn()
                results[name].append(n / (time.perf_counter() - t))

        base = max(results["plain COPY from CSV file (baseline)"])
        print(
            f"\n{'write path (best of ' + str(args.rounds) + ' interleaved rounds)':<45} {'rows/s':>10} "
            f"{'vs baseline':>12}   all rounds (rows/s)"
        )
        for name, rates in results.items():
            best = max(rates)
            print(
                f"{name:<45} {best:>10,.0f} {best / base:>11.2f}x   {', '.join(f'{r:,.0f}' for r in rates)}"
            )
        s = append_store

        # range read of ~10k rows (7 days of minutes) of one symbol
        lo = pd.Timestamp("2024-01-10", tz="UTC")
        hi = lo + pd.Timedelta(minutes=10_080)
        got = s.read_bars("SYM03", lo, hi)
        assert len(got) == 10_080
        lat = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            s.read_bars("SYM03", lo, hi)
            lat.append((time.perf_counter() - t) * 1000)
        p50, p99 = np.percentile(lat, [50, 99])
        print(
            f"\nrange read {len(got):,} rows x {args.repeats}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"{len(got) / (p50 / 1000):,.0f} rows/s at p50"
        )
    finally:
        for s in stores:
            s.close()
        db.drop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
