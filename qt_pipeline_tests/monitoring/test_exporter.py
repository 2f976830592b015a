"""The Prometheus exporter: scraped over HTTP and parsed with prometheus_client's own parser; the
long-running `qt metrics serve` command against a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from qt_pipeline.monitoring.collect import METRICS, collect_metrics
from qt_pipeline.monitoring.exporter import serve
from qt_pipeline_tests.faults import free_port
from qt_pipeline_tests.monitoring.conftest import SYMBOLS, bars_days, today


def _scrape(port: int) -> dict[str, list]:
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return {f.name: f.samples for f in text_string_to_metric_families(body)}


def _value(families, sample_name: str, **labels) -> float:
    family = families[sample_name.removesuffix("_total")]
    got = [
        s.value
        for s in family
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(got) == 1, (sample_name, labels, family)
    return got[0]


def test_scrape_parses_and_reflects_live_values(platform):
    platform.ingest_and_migrate(bars_days(SYMBOLS, -2, 2))
    hybrid = platform.hybrid()
    server, _ = serve(lambda: collect_metrics(platform.settings, platform.central), port=0)
    try:
        port = server.server_port
        fams = _scrape(port)
        assert _value(fams, "qt_central_up") == 1
        assert _value(fams, "qt_consistency_ok") == 1
        assert _value(fams, "qt_cache_hits_total") == 0
        for s in SYMBOLS:
            assert (
                _value(fams, "qt_last_migrated_day_timestamp_seconds", symbol=s)
                == (today() - pd.Timedelta(days=1)).timestamp()
            )
        assert _value(fams, "qt_query_latency_seconds", op="select", quantile="0.99") > 0
        assert _value(fams, "qt_query_latency_seconds", op="copy_in", quantile="0.5") > 0  # the migration
        bytes_before = _value(fams, "qt_central_bytes_read_total")

        # live: a read-through then a cached read change the next scrape
        lo = today() - pd.Timedelta(days=1)
        hybrid.read_bars("AAA", lo, today())
        hybrid.read_bars("AAA", lo, today())
        fams = _scrape(port)
        assert _value(fams, "qt_cache_hits_total") == 1 and _value(fams, "qt_cache_misses_total") == 1
        assert _value(fams, "qt_cache_hit_ratio") == 0.5
        assert _value(fams, "qt_central_bytes_read_total") > bytes_before
        assert _value(fams, "qt_query_latency_seconds", op="copy_out", quantile="0.5") > 0
        # every exposed family is documented (METRICS) — and the documented counters are counters
        documented = {n.removesuffix("_total") for n in METRICS} | {"qt_collect_errors"}
        assert set(fams) <= documented
        assert _value(fams, "qt_collect_errors") == 0
    finally:
        server.shutdown()
        server.server_close()


def test_qt_metrics_serve_runs_until_terminated(settings, pg_schema, tmp_path):
    url, schema = pg_schema
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QT_")},
        "QT_DATA_DIR": str(tmp_path / "data"),
        "NEON_DATABASE_URL": url,
        "QT_PG_SCHEMA": schema,
    }
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "qt"), "metrics", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        fams = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                fams = _scrape(port)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert fams is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert _value(fams, "qt_central_up") == 1
        assert _value(fams, "qt_consistency_mismatched_symbol_days") == 0
        assert _value(fams, "qt_outbox_batches") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"serving metrics on http://127.0.0.1:{port}/metrics" in out


WORKER = """
import os, sys
from qt_pipeline.config import Settings
from qt_pipeline.monitoring.telemetry import TELEMETRY
from qt_pipeline.storage.postgres.store import PostgresStore
settings = Settings(QT_DATA_DIR=sys.argv[1], QT_PG_POOL_SIZE=3)
TELEMETRY.attach(settings.data_dir)
store = PostgresStore(sys.argv[2], settings, schema=sys.argv[3])
store.list_symbols()
TELEMETRY.flush()
print(os.getpid())
"""


def test_pools_and_latencies_of_other_processes_are_exposed_with_their_process_label(platform):
    import socket

    platform.ingest_and_migrate(bars_days(SYMBOLS, -1, 1))
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(platform.settings.data_dir), platform.url, platform.schema],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    worker = f"{socket.gethostname()}:{out.stdout.strip()}"
    server, _ = serve(lambda: collect_metrics(platform.settings, platform.central), port=0)
    try:
        fams = _scrape(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
    assert _value(fams, "qt_pool_size", process=worker) == 3  # the worker's pool, not this process's (5)
    assert _value(fams, "qt_query_latency_seconds", process=worker, op="select", quantile="0.5") > 0
    me = f"{socket.gethostname()}:{os.getpid()}"
    assert {s.labels["process"] for s in fams["qt_pool_size"]} == {worker, me}
