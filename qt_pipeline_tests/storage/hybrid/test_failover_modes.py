"""The hybrid store under every network fault (issue 10): refused, black-holed new connections,
black-holed established connections, connections cut mid-stream; and a process SIGKILLed while its
write hangs on a black-holed connection.

Each write must return (queued in the outbox: the store fails over instead of hanging), and after
recovery Postgres must hold exactly what was acknowledged — row count and checksum — with no duplicates.
Times are printed (``benchmarks/bench_failover.py`` measures them), never asserted; the only time bound is
a hang guard two orders of magnitude above the budget.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from qt_pipeline.market.contract import KEY
from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.duckdb_store import DuckDBStore
from qt_pipeline.storage.hybrid import HybridStore, central_settings
from qt_pipeline.storage.outbox import Outbox
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.faults import TcpProxy
from qt_pipeline_tests.storage.hybrid import inflight_worker
from qt_pipeline_tests.storage.hybrid.failover import MODES, hybrid_settings, run_scenario

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.mark.parametrize("mode", MODES)
def test_failover_then_replay_is_exact(mode, settings, pg_schema, tmp_path):
    url, schema = pg_schema
    res = run_scenario(mode, hybrid_settings(settings), url, schema, tmp_path / mode)
    print(f"\n[failover] {res.row()} (store failover_s={res.store_failover_s})")
    assert res.queued_batches == 4  # the failing write, two more, one update: all in the outbox
    assert res.rows_after_recovery == res.acknowledged_rows == 5 * 2_000
    assert res.duplicates == 0
    assert res.checksum_equal  # values too (the update replayed after the original)


def test_process_killed_while_its_write_hangs_leaves_the_batch_in_the_outbox(settings, pg_schema, tmp_path):
    url, schema = pg_schema
    workdir = tmp_path / "w"
    workdir.mkdir()
    with TcpProxy("127.0.0.1", 5432) as proxy:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qt_pipeline_tests.storage.hybrid.inflight_worker",
                proxy.url_for(url),
                schema,
                str(workdir),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "QT_DATA_DIR": str(tmp_path / "data")},
        )
        try:
            assert proc.stdout.readline().split() == ["acked", "written"]
            proxy.cut("blackhole-all")  # the worker's pooled connection goes silent
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "writing"
            # wait until the batch was written ahead (the write is then in flight towards the silent
            # centre: pre-ping or COPY waiting for an answer), then kill the process mid-write
            outbox_dir = workdir / "ob"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any(outbox_dir.glob("*.bars.parquet")):
                time.sleep(0.05)
            time.sleep(0.5)
            assert proc.poll() is None
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        proxy.restore()
    direct = PostgresStore(url, settings, schema=schema)
    try:
        assert len(direct.read_range()) == 1_000  # only the acknowledged first batch reached Postgres
        outbox = Outbox(workdir / "ob")
        assert outbox.status().rows == 1_000  # the in-flight batch was written ahead: not only in the cache
        # the next start of the store (here: this process) replays it
        store = HybridStore(
            DuckDBStore(workdir / "cache.duckdb"),
            PostgresStore(url, central_settings(settings), schema=schema),
            settings,
            outbox=outbox,
        )
        try:
            assert store.health().healthy and outbox.is_empty()
        finally:
            store.close()
        expected = (
            pd.concat([inflight_worker.batch(0), inflight_worker.batch(1)], ignore_index=True)
            .sort_values(list(KEY))
            .reset_index(drop=True)
        )
        got = direct.read_range()
        assert len(got) == 2_000 and len(got.drop_duplicates(list(KEY))) == 2_000
        assert frame_checksum(got) == frame_checksum(expected)
    finally:
        direct.close()
