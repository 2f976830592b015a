"""Benchmark of the ``local`` (DuckDB) store: ingest throughput and the hot read path.

1. Ingest ``--rows`` synthetic minute bars into a fresh DuckDB file in per-symbol-day batches (1,440 rows,
   day-major order as an ingestion backfill writes them): rows/s.
2. Ingest the same rows into another fresh file as one big batch: rows/s; then upsert that batch again
   (every row conflicts and is updated — the cost of an idempotent retry): rows/s.
3. Read one symbol's last 7 days (~10,080 bars) ``--repeats`` times through ``store.read_bars(sym, start,
   end)`` and, interleaved in the same run, the same SQL directly on a long-lived DuckDB connection
   (``con.execute(sql, params).df()``): p50/p99 of each and the ratio (target <= 1.2x). The same for
   ``read_bars(sym, limit=10_080, from_end=True)``.

Bars come from ``qt_pipeline.market.sources.synthetic.SyntheticMarket`` when present (``--source auto``),
else from a NumPy random walk built here. Run: ``.venv/bin/python benchmarks/bench_local_store.py``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from qt_pipeline.market.contract import to_canonical
from qt_pipeline.storage.duckdb_store import DuckDBStore

DAY_BARS = 1440
START = pd.Timestamp("2024-01-01", tz="UTC")


def numpy_day(symbol: str, day: pd.Timestamp, rng: np.random.Generator, last: float) -> pd.DataFrame:
    close = last * np.exp(np.cumsum(rng.normal(0, 5e-4, DAY_BARS)))
    open_ = np.concatenate([[last], close[:-1]])
    spread = np.abs(rng.normal(0, 5e-4, DAY_BARS)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    vwap = np.clip(low + rng.uniform(0, 1, DAY_BARS) * (high - low), low, high)
    return to_canonical(
        pd.DataFrame(
            {
                "symbol": symbol,
                "timestamp": pd.date_range(day, periods=DAY_BARS, freq="1min"),
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": rng.uniform(1, 1000, DAY_BARS),
                "vwap": vwap,
                "trade_count": rng.integers(1, 500, DAY_BARS),
            }
        )
    )


def build_batches(rows: int, n_symbols: int, source: str) -> tuple[list[pd.DataFrame], str]:
    """Per-symbol-day canonical frames (day-major), ``rows`` bars in total."""
    market = None
    if source in ("auto", "synthetic"):
        try:
            from qt_pipeline.market.sources.synthetic import SyntheticMarket

            market = SyntheticMarket(seed=42)
        except ImportError:
            if source == "synthetic":
                raise
    symbols = [f"SYM{i:02d}" for i in range(n_symbols)]
    rng = np.random.default_rng(42)
    last = dict.fromkeys(symbols, 100.0)
    batches: list[pd.DataFrame] = []
    total = 0
    day = START
    while total < rows:
        for sym in symbols:
            if total >= rows:
                break
            if market is not None:
                b = market.bars(sym, day, day + pd.Timedelta("1D"))
            else:
                b = numpy_day(sym, day, rng, last[sym])
                last[sym] = float(b["close"].iloc[-1])
            b = b.iloc[: rows - total]
            batches.append(b)
            total += len(b)
        day += pd.Timedelta("1D")
    return batches, ("SyntheticMarket" if market is not None else "numpy random walk")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def fmt_ms(values: list[float]) -> str:
    return f"p50 {pct(values, 50) * 1e3:7.2f} ms   p99 {pct(values, 99) * 1e3:7.2f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="bars to ingest (default 1,000,000)")
    ap.add_argument("--repeats", type=int, default=200, help="timed reads per variant (default 200)")
    ap.add_argument("--symbols", type=int, default=5, help="symbols the rows are spread over (default 5)")
    ap.add_argument("--dir", type=Path, default=None, help="working directory (default: a temp dir, removed)")
    ap.add_argument("--source", choices=("auto", "synthetic", "numpy"), default="auto")
    args = ap.parse_args(argv)

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_local_store_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        batches, how = build_batches(args.rows, args.symbols, args.source)
        big = pd.concat(batches, ignore_index=True)
        print(
            f"data: {len(big):,} bars, {args.symbols} symbols, {len(batches)} symbol-day batches "
            f"({how}, built in {time.perf_counter() - t0:.1f} s)"
        )
        print(f"duckdb {duckdb.__version__}, pandas {pd.__version__}, dir {work}")
        print()

        # 1. per symbol-day batches
        path_a = work / "per_day.duckdb"
        path_a.unlink(missing_ok=True)
        store = DuckDBStore(path_a)
        t0 = time.perf_counter()
        for b in batches:
            store.write_bars(b)
        dt = time.perf_counter() - t0
        print("INGEST")
        print(
            f"  per symbol-day batches ({DAY_BARS} rows): {len(big) / dt:>12,.0f} rows/s  "
            f"({dt:.2f} s, {dt / len(batches) * 1e3:.2f} ms/batch)"
        )

        # 2. one big batch, then the same batch again (all conflicts -> updates)
        path_b = work / "one_batch.duckdb"
        path_b.unlink(missing_ok=True)
        with DuckDBStore(path_b) as store_b:
            t0 = time.perf_counter()
            store_b.write_bars(big)
            dt = time.perf_counter() - t0
            print(f"  one batch of {len(big):,} rows:        {len(big) / dt:>12,.0f} rows/s  ({dt:.2f} s)")
            t0 = time.perf_counter()
            store_b.write_bars(big)
            dt = time.perf_counter() - t0
            print(f"  same batch again (all upserts):      {len(big) / dt:>12,.0f} rows/s  ({dt:.2f} s)")
            assert int(store_b.list_symbols()["rows"].sum()) == len(big)
        print()

        # 3. hot read path: one symbol's last 7 days
        sym = str(big["symbol"].iloc[0])
        last_ts = store.list_symbols().set_index("symbol").loc[sym, "last_timestamp"]
        end = last_ts + pd.Timedelta("1min")
        start = end - pd.Timedelta("7D")
        direct = duckdb.connect(str(path_a))  # a second long-lived connection to the same database
        direct.execute("SET TimeZone = 'UTC'")
        sql_range = "SELECT * FROM ohlcv_bars WHERE symbol = ? AND timestamp >= ? AND timestamp < ? ORDER BY timestamp"
        sql_tail = (
            "SELECT * FROM (SELECT * FROM ohlcv_bars WHERE symbol = ? ORDER BY timestamp DESC LIMIT 10080) "
            "ORDER BY timestamp"
        )
        params_range = [sym, start.to_pydatetime(), end.to_pydatetime()]
        variants = {
            "range": (
                lambda: store.read_bars(sym, start, end),
                lambda: direct.execute(sql_range, params_range).df(),
            ),
            "tail": (
                lambda: store.read_bars(sym, limit=10_080, from_end=True),
                lambda: direct.execute(sql_tail, [sym]).df(),
            ),
        }
        print(f"READ {sym}, last 7 days, {args.repeats} repeats each (interleaved store/direct)")
        for name, (via_store, via_sql) in variants.items():
            a, b = via_store(), via_sql()
            assert len(a) == len(b) and a["close"].equals(b["close"]), "store and direct SQL disagree"
            for _ in range(10):  # warm-up
                via_store()
                via_sql()
            ts_store: list[float] = []
            ts_sql: list[float] = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                via_store()
                ts_store.append(time.perf_counter() - t)
                t = time.perf_counter()
                via_sql()
                ts_sql.append(time.perf_counter() - t)
            label = (
                "read_bars(sym, start, end)"
                if name == "range"
                else "read_bars(sym, limit=10080, from_end=True)"
            )
            print(f"  {label}  rows={len(a):,}")
            print(f"    store.read_bars      {fmt_ms(ts_store)}")
            print(f"    direct con.execute   {fmt_ms(ts_sql)}")
            r50 = statistics.median(ts_store) / statistics.median(ts_sql)
            r99 = pct(ts_store, 99) / pct(ts_sql, 99)
            verdict = "OK" if r50 <= 1.2 else "ABOVE TARGET"
            print(f"    ratio store/direct   p50 {r50:.3f}x   p99 {r99:.3f}x   (target <= 1.2x: {verdict})")
        direct.close()
        store.close()
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
