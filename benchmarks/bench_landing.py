"""Benchmark of the landing data path: rows/s for daily, hourly and minute exports of realistic size, and
peak memory of the streaming reader against its chunk size.

Files (written by this script into a temp dir, shaped like the real exports the landing config reads):

* ``equities/GOOGL.csv`` — 10 years of daily bars ``Date,Open,High,Low,Close,Adj Close,Volume`` (~2,500 rows);
* ``fx/EURUSD_….csv`` — 10 years of hourly bars with ``Gmt time`` stamps ``01.01.2017 22:00:00.000``
  (~62,000 rows);
* ``crypto/btc.csv`` — ``--minute-rows`` minute bars in another column order (default 2,000,000, ~150 MB).

For each file it prints rows/s of

1. ``validate``: :func:`qt_pipeline.market.filecheck.check_file` (what ``qt validate`` runs: stream, parse,
   validate everything);
2. ``ingest (one range)``: ``fetch`` of the file's whole range + validation, as one single-run backfill
   does (placement + fetch + validate; storage excluded);
3. ``baseline``: ``pandas.read_csv`` of the same file (parsing only, no validation) — the ratio says what
   validation costs on top of parsing;

and for the daily file ``ingest per day``: the same work done one UTC-day partition at a time (what one
run per partition costs without Dagster's own overhead), extrapolated from ``--per-day-sample`` days.

Then, for each ``--chunks`` size (MiB), a fresh subprocess validates the minute file with that chunk size
and reports its peak RSS above the RSS after imports: the streaming reader's memory should track the
chunk size, not the file size (target: ≤ 2× the chunk plus a fixed overhead).

Run: ``.venv/bin/python benchmarks/bench_landing.py`` (``--minute-rows 200000`` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "landing.example.yaml"


def write_daily(path: Path) -> int:
    import warnings

    import exchange_calendars as xcals

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        days = xcals.get_calendar("XNYS").sessions_in_range("2015-01-02", "2024-12-31")
    rng = np.random.default_rng(1)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.015, len(days))))
    open_ = np.concatenate([[50.0], close[:-1]])
    hi = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, len(days)))
    lo = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, len(days)))
    df = pd.DataFrame(
        {
            "Date": days.strftime("%Y-%m-%d"),
            "Open": open_.round(2),
            "High": hi.round(2),
            "Low": lo.round(2),
            "Close": close.round(2),
            "Adj Close": (close * 0.99).round(2),
            "Volume": rng.integers(10**6, 10**8, len(days)),
        }
    )
    df["High"] = df[["Open", "High", "Close"]].max(axis=1)
    df["Low"] = df[["Open", "Low", "Close"]].min(axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return len(df)


def write_hourly_fx(path: Path) -> int:
    t = pd.date_range("2015-01-04 22:00", "2024-12-27 21:00", freq="1h")
    t = t[(t.day_of_week < 5) | ((t.day_of_week == 6) & (t.hour >= 22))]  # the FX week (winter hours)
    t = t[~((t.day_of_week == 4) & (t.hour >= 21))]
    rng = np.random.default_rng(2)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.0008, len(t))))
    open_ = np.concatenate([[1.1], close[:-1]])
    spread = np.abs(rng.normal(0, 0.0004, len(t)))
    df = pd.DataFrame(
        {
            "Gmt time": t.strftime("%d.%m.%Y %H:%M:%S.000"),
            "Open": open_.round(5),
            "High": (np.maximum(open_, close) + spread).round(5),
            "Low": (np.minimum(open_, close) - spread).round(5),
            "Close": close.round(5),
            "Volume": rng.uniform(1000, 90000, len(t)).round(2),
        }
    )
    df["High"] = df[["Open", "High", "Close"]].max(axis=1)
    df["Low"] = df[["Open", "Low", "Close"]].min(axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return len(df)


def write_minute(path: Path, rows: int) -> int:
    t = pd.date_range("2022-01-01", periods=rows, freq="1min", tz="UTC")
    rng = np.random.default_rng(3)
    close = 40000 * np.exp(np.cumsum(rng.normal(0, 4e-4, rows)))
    open_ = np.concatenate([[40000.0], close[:-1]])
    spread = np.abs(rng.normal(0, 4e-4, rows)) * close
    hi = np.maximum(open_, close) + spread
    lo = np.minimum(open_, close) - spread
    df = pd.DataFrame(
        {
            "Timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Symbol": "BTCUSD",
            "Close": close.round(2),
            "Open": open_.round(2),
            "Low": lo.round(2),
            "High": hi.round(2),
            "Volume": rng.uniform(0.1, 50, rows).round(4),
            "Trades": rng.integers(1, 900, rows),
        }
    )
    df["High"] = df[["Open", "High", "Close"]].max(axis=1)
    df["Low"] = df[["Open", "Low", "Close"]].min(axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, chunksize=200_000)
    return len(df)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def source(landing: Path, chunk_mb: float = 16.0):
    from qt_pipeline.market.layout import load_landing_config
    from qt_pipeline.market.sources.landing import LandingDirectorySource

    return LandingDirectorySource(landing, config=load_landing_config(CONFIG), chunk_mb=chunk_mb)


def bench_file(landing: Path, path: Path, symbol: str, rows: int, interval: str, per_day: int) -> dict:
    from qt_pipeline.market.filecheck import check_file
    from qt_pipeline.market.sources import ingest_batches

    now = pd.Timestamp("2030-01-01", tz="UTC")
    rep, t_val = timed(lambda: check_file(source(landing), path, interval=interval, now=now))
    src = source(landing)
    parts, t_place = timed(src.partitions)
    lo = pd.Timestamp(parts["day"].min(), tz="UTC")
    hi = pd.Timestamp(parts["day"].max(), tz="UTC") + pd.Timedelta(days=1)
    res, t_fetch = timed(lambda: ingest_batches(src, symbol, lo, hi, interval=interval, now=now))
    _, t_base = timed(lambda: pd.read_csv(path))
    out = {
        "file": str(path.relative_to(landing)),
        "rows": rows,
        "MB": path.stat().st_size / 2**20,
        "accepted": len(res.accepted),
        "rejected": int(res.summary()["rejected_rows"]) + int(rep.rejected_rows),
        "validate rows/s": rows / t_val,
        "ingest (one range) rows/s": rows / (t_place + t_fetch),
        "baseline read_csv rows/s": rows / t_base,
    }
    if per_day:
        days = list(parts["day"])[:per_day]
        t0 = time.perf_counter()
        n = 0
        for d in days:
            s = pd.Timestamp(d, tz="UTC")
            n += len(
                ingest_batches(src, symbol, s, s + pd.Timedelta(days=1), interval=interval, now=now).accepted
            )
        per = (time.perf_counter() - t0) / len(days)
        out["ingest per day s/partition"] = per
        out["per-day extrapolated s (all partitions)"] = per * len(parts)
        out["one range s"] = t_place + t_fetch
    return out


def child_peak(path: str, chunk_mb: float, mode: str = "check") -> None:
    """Validate ``path`` with ``chunk_mb`` chunks (``mode="check"``, what ``qt validate`` does) or place and
    stage it (``mode="stage"``, the one pass of an ingestion); print the RSS before and the peak RSS during
    it (sampled every 2 ms from /proc/self/statm: ru_maxrss would include the import peak)."""
    import os
    import threading

    from qt_pipeline.market.filecheck import check_file

    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    landing = Path(path).parents[1]
    warm = Path(path).parents[3] / "warmup"
    now = pd.Timestamp("2030-01-01", tz="UTC")
    check_file(source(landing, chunk_mb), warm / "crypto" / "warmup.csv", interval="1min", now=now)
    source(warm, 0.004).partitions()  # the staging path's first-call costs too (its file is > 1 chunk)
    src = source(landing, chunk_mb)
    base = rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    if mode == "stage":
        rows, chunks = int(src.partitions()["rows"].sum()), -1
    else:
        rep = check_file(src, Path(path), interval="1min", now=now)
        rows, chunks = rep.accepted, rep.chunks
    done.set()
    th.join()
    print(json.dumps({"base_mb": base / 2**20, "peak_mb": peak[0] / 2**20, "rows": rows, "chunks": chunks}))


def memory_table(minute: Path, small_root: Path, small_rows: int, chunks: str) -> None:
    """Peak RSS above the post-import RSS (fresh subprocess each) while validating the minute file and one
    a quarter of its size, at each chunk size: memory should follow the chunk, not the file, so the two
    peaks should be close (ratio ~1) and the peak within 2x the chunk; then the same for the staging pass
    an ingestion makes over the large file."""
    small = small_root / "crypto" / "btc.csv"
    write_minute(small, small_rows)

    def peak(path: Path, c: float, mode: str = "check") -> tuple[int, float]:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path), str(c), mode],
            capture_output=True,
            text=True,
            check=True,
        )
        m = json.loads(out.stdout.strip().splitlines()[-1])
        return m["chunks"], m["peak_mb"] - m["base_mb"]

    mb = {p: p.stat().st_size / 2**20 for p in (small, minute)}
    print(
        f"\npeak RSS above the post-import RSS, streaming validation of {mb[small]:.0f} MiB vs {mb[minute]:.0f} "
        "MiB, and the staging pass (placement + staging file) of the large one:"
    )
    print(
        f"  {'chunk MiB':>9} {'blocks':>9} {'small MiB':>10} {'large MiB':>10} {'large/small':>12} "
        f"{'large/chunk':>12} {'stage MiB':>10} {'stage/chunk':>12}"
    )
    for c in [float(x) for x in chunks.split(",")]:
        (k_s, d_s), (k_l, d_l) = peak(small, c), peak(minute, c)
        _, d_st = peak(minute, c, "stage")
        print(
            f"  {c:>9g} {f'{k_s}/{k_l}':>9} {d_s:>10.1f} {d_l:>10.1f} {d_l / max(d_s, 1):>12.2f} "
            f"{d_l / c:>12.2f} {d_st:>10.1f} {d_st / c:>12.2f}"
        )


def one_pass_table(root: Path, days: int, chunk_mb: float) -> None:
    """Time to fetch and validate every (symbol, day) partition of one multi-day minute file (what the
    partition runs of one landing file do between them): the file streamed again for every partition
    (``staging=False``, the reader before staging) vs split once into the staging file."""
    landing = root / "multiday"
    path = landing / "crypto" / "btc.csv"
    rows = write_minute(path, days * 1440)
    from qt_pipeline.market.sources import ingest_batches

    print(
        f"\nall {days} day partitions of one {path.stat().st_size / 2**20:.0f} MiB minute file "
        f"({rows:,} rows), {chunk_mb:g} MiB chunks:"
    )
    for label, staging in (("streamed per partition", False), ("staged once", True)):
        src = source(landing, chunk_mb)
        src.staging = staging
        src._staging_dir = root / f"staging_{staging}"
        now = pd.Timestamp("2030-01-01", tz="UTC")
        t0 = time.perf_counter()
        accepted = 0
        for sym, day in src.partitions()[["symbol", "day"]].itertuples(index=False):
            s = pd.Timestamp(day, tz="UTC")
            res = ingest_batches(src, sym, s, s + pd.Timedelta(days=1), interval="1min", now=now)
            accepted += len(res.accepted)
        t = time.perf_counter() - t0
        print(f"  {label:<24} {t:>7.2f} s  ({src.passes} reads of the file, {accepted:,} bars accepted)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minute-rows", type=int, default=2_000_000)
    ap.add_argument("--chunks", default="1,4,16,64", help="chunk sizes (MiB) for the memory measurement")
    ap.add_argument("--per-day-sample", type=int, default=60)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--memory-only", action="store_true", help="only the memory measurement")
    ap.add_argument("--one-pass-only", action="store_true", help="only the all-partitions measurement")
    ap.add_argument("--multi-days", type=int, default=60, help="days of the multi-day minute file")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_peak(args.child[0], float(args.child[1]), *args.child[2:3])
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_landing_"))
    landing = work / "landing"
    try:
        # one landing directory per file, so each measurement reads only its own file
        daily = landing / "daily" / "equities" / "GOOGL.csv"
        fx = landing / "hourly" / "fx" / "EURUSD_Candlestick_1_Hour_BID.csv"
        minute = landing / "minute" / "crypto" / "btc.csv"
        t0 = time.perf_counter()
        if args.one_pass_only:
            one_pass_table(work, args.multi_days, 1.0)
            return
        n_m = write_minute(minute, args.minute_rows)
        write_minute(work / "warmup" / "crypto" / "warmup.csv", 1000)
        if args.memory_only:
            memory_table(minute, landing / "minute4", max(1000, n_m // 4), args.chunks)
            return
        n_d = write_daily(daily)
        n_h = write_hourly_fx(fx)
        from qt_pipeline.market.calendars import get_calendar

        get_calendar("XNYS")  # built once per process (~seconds): not part of the file's throughput
        from qt_pipeline.market.filecheck import check_file

        # first-call costs (lazy imports, kernel set-up) are per process, not per row
        check_file(source(work / "warmup"), work / "warmup" / "crypto" / "warmup.csv", interval="1min")
        print(f"wrote files in {work} ({time.perf_counter() - t0:.1f} s for the minute file)")
        results = [
            bench_file(landing / "daily", daily, "GOOGL", n_d, "1D", args.per_day_sample),
            bench_file(landing / "hourly", fx, "EURUSD", n_h, "1h", 0),
            bench_file(landing / "minute", minute, "BTCUSD", n_m, "1min", 0),
        ]
        for r in results:
            print(
                f"\n{r['file']}: {r['rows']:,} rows, {r['MB']:.1f} MiB, accepted {r['accepted']:,}, rejected {r['rejected']}"
            )
            for k in ("validate rows/s", "ingest (one range) rows/s", "baseline read_csv rows/s"):
                print(f"  {k:<28} {r[k]:>12,.0f}")
            print(
                f"  validate / read_csv ratio      {r['validate rows/s'] / r['baseline read_csv rows/s']:.2f}"
            )
            if "ingest per day s/partition" in r:
                print(
                    f"  one partition per day: {r['ingest per day s/partition'] * 1000:.1f} ms/partition → "
                    f"{r['per-day extrapolated s (all partitions)']:.1f} s for all days vs {r['one range s']:.2f} s "
                    f"as one range (ratio {r['per-day extrapolated s (all partitions)'] / r['one range s']:.0f}x; "
                    "Dagster's per-run overhead comes on top of each partition)"
                )
        memory_table(minute, landing / "minute4", max(1000, n_m // 4), args.chunks)
        one_pass_table(work, args.multi_days, 1.0)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
