"""Hybrid store figures: hot read vs DuckDB directly, failover time, outbox drain time.

    .venv/bin/python benchmarks/bench_hybrid.py [--iterations 200] [--batches 40] [--batch-rows 1440]

Uses a throwaway database on the machine's PostgreSQL (QT_TEST_PG_ADMIN_URL, default
postgresql://postgres@127.0.0.1:5432/postgres), dropped at the end, with a real TCP proxy in front of it
(the proxy is what gets cut). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._scratch import ScratchDatabase  # noqa: E402
from qt_pipeline.config import Settings  # noqa: E402
from qt_pipeline.storage.duckdb_store import DuckDBStore  # noqa: E402
from qt_pipeline.storage.hybrid import HybridStore, central_settings  # noqa: E402
from qt_pipeline.storage.outbox import Outbox  # noqa: E402
from qt_pipeline.storage.postgres.store import PostgresStore  # noqa: E402
from qt_pipeline_tests.faults import TcpProxy  # noqa: E402
from qt_pipeline_tests.storage.backends import make_bars  # noqa: E402


def _pct(xs: list[float]) -> tuple[float, float]:
    a = np.array(xs) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-rows", type=int, default=1440)
    args = ap.parse_args()

    db = ScratchDatabase()
    url = db.url
    tmp = Path(tempfile.mkdtemp(prefix="qt-bench-hybrid-"))
    settings = Settings(QT_DATA_DIR=str(tmp)).model_copy(
        update={"hybrid_probe_interval_s": 0.5, "hybrid_connect_timeout_s": 2}
    )
    proxy = TcpProxy("127.0.0.1", 5432)
    store = None
    try:
        central = PostgresStore(proxy.url_for(url), central_settings(settings), schema="public")
        central.ensure_schema()
        store = HybridStore(
            DuckDBStore(tmp / "cache.duckdb"), central, settings, outbox=Outbox(tmp / "outbox")
        )
        now = pd.Timestamp.now(tz="UTC").floor("min")
        start = now - pd.Timedelta(minutes=10_080)
        bars = make_bars(["BTCUSD", "ETHUSD", "SOLUSD"], start, 10_080, seed=1)
        t0 = time.perf_counter()
        store.write_bars(bars)
        print(f"setup: wrote {len(bars):,} rows through the hybrid store in {time.perf_counter() - t0:.2f} s")
        rep = store.warm_cache(["BTCUSD", "ETHUSD", "SOLUSD"])
        print(
            f"warming: {rep.days_fetched} symbol-days fetched, {rep.rows_pulled:,} rows, {rep.seconds:.2f} s"
        )

        # --- hot read: hybrid (covered) vs the same query on the same DuckDB connection --------------
        lo, hi = start, now
        t = time.perf_counter()
        store.read_bars("BTCUSD", lo, hi)  # the oldest day is warm, not hot: the first read fills it
        print(f"first read (read-through of uncovered days): {(time.perf_counter() - t) * 1000:.1f} ms")
        assert store.is_covered("BTCUSD", lo, hi)
        local = store.local
        hyb, duck, pg = [], [], []
        for _ in range(10):  # warm-up
            store.read_bars("BTCUSD", lo, hi)
            local.read_bars("BTCUSD", lo, hi)
        for _ in range(args.iterations):
            t = time.perf_counter()
            df = local.read_bars("BTCUSD", lo, hi)
            duck.append(time.perf_counter() - t)
            t = time.perf_counter()
            df2 = store.read_bars("BTCUSD", lo, hi)
            hyb.append(time.perf_counter() - t)
        assert len(df) == len(df2) == 10_080
        for _ in range(max(20, args.iterations // 10)):
            t = time.perf_counter()
            central.read_bars("BTCUSD", lo, hi)
            pg.append(time.perf_counter() - t)
        (d50, d99), (h50, h99), (p50, p99) = _pct(duck), _pct(hyb), _pct(pg)
        print(f"\nhot read, 1 symbol, last 7 days ({len(df):,} rows), {args.iterations} iterations:")
        print(f"  DuckDB directly        p50 {d50:7.2f} ms   p99 {d99:7.2f} ms")
        print(
            f"  hybrid (covered)       p50 {h50:7.2f} ms   p99 {h99:7.2f} ms   ratio p50 {h50 / d50:.3f}x "
            f"p99 {h99 / d99:.3f}x (target <= 1.1x)"
        )
        print(f"  Postgres (reference)   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")

        # --- failover: proxy cut (refuse), then blackhole ------------------------------------------
        extra = make_bars(["BTCUSD"], now, args.batch_rows, seed=2)
        print("\nfailover (outage noticed -> local-only):")
        for mode in ("refuse", "blackhole"):
            proxy.cut(mode)
            t = time.perf_counter()
            res = store.write_bars(extra)
            took = time.perf_counter() - t
            st = store.state
            print(
                f"  proxy cut ({mode:9s}): write returned in {took:.3f} s, store failover_s={st.failover_s:.3f} s, "
                f"central={res.details['central']} (retry attempts {settings.hybrid_pg_retry_attempts}, "
                f"connect timeout {settings.hybrid_connect_timeout_s} s)"
            )
            t = time.perf_counter()
            store.write_bars(extra)
            print(
                f"  next write while degraded: {(time.perf_counter() - t) * 1000:.1f} ms (straight to the outbox)"
            )
            proxy.restore()
            time.sleep(settings.hybrid_probe_interval_s)
            store.health()
            assert not store.degraded, store.state

        # --- drain: N batches written during an outage, then recovery ------------------------------
        proxy.cut()
        t_out = time.perf_counter()
        for i in range(args.batches):
            b = make_bars(
                ["ETHUSD"],
                now + pd.Timedelta(days=1, minutes=i * args.batch_rows),
                args.batch_rows,
                seed=10 + i,
            )
            store.write_bars(b)
        outage_s = time.perf_counter() - t_out
        st = store.state
        print(
            f"\noutage: {st.outbox_batches} batches / {st.outbox_rows:,} rows queued in {outage_s:.2f} s "
            f"({st.outbox_rows / outage_s:,.0f} rows/s local-only writes)"
        )
        proxy.restore()
        time.sleep(settings.hybrid_probe_interval_s)
        t = time.perf_counter()
        h = store.health()
        drain = time.perf_counter() - t
        assert h.healthy and store.state.outbox_batches == 0, h.message
        print(
            f"drain after recovery: {store.last_replay.replayed_batches} batches / "
            f"{store.last_replay.replayed_rows:,} rows in {drain:.2f} s "
            f"({store.last_replay.replayed_rows / drain:,.0f} rows/s, incl. health probe)"
        )
        from qt_pipeline.storage.checksum import symbol_day_checksums

        same = symbol_day_checksums(central.read_range()).equals(
            symbol_day_checksums(store.local.read_range())
        )
        print(f"consistency after drain (per symbol-day checksums equal): {same}")
    finally:
        if store is not None:
            store.close()
        proxy.close()
        db.drop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
