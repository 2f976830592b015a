"""Network transfer of a research workload: through the hybrid store vs directly from the central store.

    .venv/bin/python benchmarks/bench_transfer.py [--symbols 3] [--days 30] [--hot-reads 20] [--admin-url URL]

The workload, per symbol: the hot window (``QT_HOT_DAYS``, 7 days) is read ``--hot-reads`` times (a
researcher iterating on the last week), and the older days are read once, in three ranges (a back-test
over history). The same reads run twice, each through a byte-counting TCP proxy on loopback in front of
the central PostgreSQL:

* **direct** — a :class:`~qt_pipeline.storage.postgres.store.PostgresStore` (``STORAGE_BACKEND=central``);
* **hybrid** — a :class:`~qt_pipeline.storage.hybrid.HybridStore` (``STORAGE_BACKEND=hybrid``), starting
  with an empty cache: the first hot read fills it (read-through), the later ones are local.

Bytes are counted on the wire, both directions (everything the client and the server sent through the
proxy: protocol, queries, COPY payload, TLS-less on loopback), and the store's own counter of COPY bytes
(``qt_central_bytes_read_total``) is printed next to it. Target (the plan's figure): ≥ 80 % less transfer
with the hybrid store. Central store: the embedded PostgreSQL in a temporary data directory (the embedded
defaults), or a throwaway database on ``--admin-url``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from qt_pipeline.config import Settings  # noqa: E402
from qt_pipeline.monitoring.telemetry import TELEMETRY  # noqa: E402
from qt_pipeline_tests.storage.backends import make_bars  # noqa: E402


class CountingProxy:
    """A threaded TCP proxy on 127.0.0.1 that counts the bytes it forwards in each direction."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.up = 0  # client -> server
        self.down = 0  # server -> client
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, up), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                with self._lock:
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def reset(self) -> None:
        with self._lock:
            self.up = self.down = 0

    @property
    def total(self) -> int:
        return self.up + self.down

    def close(self) -> None:
        self._closed = True
        self._sock.close()


def _via(url: str, port: int) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def workload(symbols: list[str], today: pd.Timestamp, days: int, hot_days: int, hot_reads: int):
    """``(symbol, start, end)`` reads in order: hot window ``hot_reads`` times, then 3 cold ranges once."""
    hot_lo = today - pd.Timedelta(days=hot_days - 1)
    reads = []
    for _ in range(hot_reads):
        reads += [(s, hot_lo, today + pd.Timedelta(days=1)) for s in symbols]
    first = today - pd.Timedelta(days=days - 1)
    edges = pd.date_range(first, hot_lo, periods=4)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        reads += [(s, lo.floor("D"), hi.floor("D")) for s in symbols]
    return reads


def run(store, reads) -> tuple[int, float]:
    rows, t0 = 0, time.perf_counter()
    for symbol, lo, hi in reads:
        rows += len(store.read_bars(symbol, lo, hi))
    return rows, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=3)
    ap.add_argument("--days", type=int, default=30, help="days of minute bars per symbol (ending today)")
    ap.add_argument("--hot-reads", type=int, default=20, help="reads of the hot window per symbol")
    ap.add_argument("--admin-url", default=None, help="use a throwaway database on this server instead")
    args = ap.parse_args()

    from qt_pipeline.storage.duckdb_store import DuckDBStore
    from qt_pipeline.storage.hybrid import HybridStore
    from qt_pipeline.storage.outbox import Outbox
    from qt_pipeline.storage.postgres.store import PostgresStore

    tmp = Path(tempfile.mkdtemp(prefix="qt-bench-transfer-"))
    settings = Settings(QT_DATA_DIR=str(tmp / "data"))
    TELEMETRY.attach(settings.data_dir)
    db = None
    if args.admin_url:
        import psycopg2

        db = f"qt_bench_{uuid.uuid4().hex[:8]}"
        conn = psycopg2.connect(args.admin_url)
        conn.autocommit = True
        conn.cursor().execute(f'CREATE DATABASE "{db}"')
        conn.close()
        url = args.admin_url.rsplit("/", 1)[0] + f"/{db}"
        where = "throwaway database on --admin-url"
    else:
        from qt_pipeline.storage.central import central_url

        url = central_url(settings)  # the embedded PostgreSQL under the temporary data directory
        where = "embedded PostgreSQL (the embedded defaults)"
    from sqlalchemy.engine import make_url

    target = make_url(url)
    symbols = [f"SYM{i}" for i in range(args.symbols)]
    today = pd.Timestamp.now(tz="UTC").floor("D")
    stores: list = []
    proxy = CountingProxy(target.host or "127.0.0.1", int(target.port or 5432))
    try:
        loader = PostgresStore(url, settings)
        stores.append(loader)
        loader.ensure_schema()
        first = today - pd.Timedelta(days=args.days - 1)
        n = args.days * 1440
        for s_i, sym in enumerate(symbols):
            loader.write_bars(make_bars([sym], first, n, seed=s_i))
        reads = workload(symbols, today, args.days, settings.hot_days, args.hot_reads)

        direct = PostgresStore(_via(url, proxy.port), settings)
        stores.append(direct)
        direct.ensure_schema()
        proxy.reset()
        TELEMETRY.reset()
        d_rows, d_s = run(direct, reads)
        d_bytes, d_copy = proxy.total, TELEMETRY.counters.get("central_bytes_read", 0.0)

        central = PostgresStore(_via(url, proxy.port), settings)
        central.ensure_schema()
        hybrid = HybridStore(
            DuckDBStore(tmp / "cache.duckdb"), central, settings, outbox=Outbox(tmp / "outbox")
        )
        stores.append(hybrid)
        proxy.reset()
        TELEMETRY.reset()
        h_rows, h_s = run(hybrid, reads)
        h_bytes, h_copy = proxy.total, TELEMETRY.counters.get("central_bytes_read", 0.0)
        hits, misses = TELEMETRY.counters.get("cache_hits", 0), TELEMETRY.counters.get("cache_misses", 0)

        hot_n = args.hot_reads * len(symbols)
        print(
            f"workload: {len(symbols)} symbol(s) × {args.days} days of 1-min bars; hot window {settings.hot_days} "
            f"days read {args.hot_reads}× per symbol ({hot_n} reads), older days once in 3 ranges per symbol; "
            f"central store: {where}"
        )
        print(f"{'path':<8} {'rows read':>10} {'wire bytes':>14} {'COPY bytes':>14} {'seconds':>8}")
        print(f"{'direct':<8} {d_rows:>10,} {d_bytes:>14,} {int(d_copy):>14,} {d_s:>8.2f}")
        print(f"{'hybrid':<8} {h_rows:>10,} {h_bytes:>14,} {int(h_copy):>14,} {h_s:>8.2f}")
        print(f"cache: {int(hits)} hit(s), {int(misses)} miss(es)")
        reduction = 1 - h_bytes / d_bytes if d_bytes else 0.0
        print(
            f"transfer reduction with the hybrid store: {reduction:.1%} on the wire, "
            f"{1 - h_copy / d_copy if d_copy else 0.0:.1%} of COPY payload (target >= 80%); same rows: "
            f"{d_rows == h_rows}"
        )
        print(f"load average: {os.getloadavg()[0]:.2f}")
    finally:
        for s in reversed(stores):
            s.close()
        proxy.close()
        if db is not None:
            import psycopg2

            conn = psycopg2.connect(args.admin_url)
            conn.autocommit = True
            conn.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.close()
        else:
            from qt_pipeline.storage.postgres.embedded import stop_embedded_postgres

            stop_embedded_postgres(settings, remove_data=True)
        TELEMETRY.detach()  # nothing is flushed into the removed data directory at exit
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
