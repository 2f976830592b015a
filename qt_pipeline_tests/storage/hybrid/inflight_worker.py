"""Subprocess of the kill-mid-write test: a hybrid store that writes one batch, waits for "go" on stdin,
then writes a second batch (which the test black-holes and SIGKILLs while it is in flight).

    python -m qt_pipeline_tests.storage.hybrid.inflight_worker URL SCHEMA WORKDIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from qt_pipeline.config import Settings
from qt_pipeline.storage.duckdb_store import DuckDBStore
from qt_pipeline.storage.hybrid import HybridStore, central_settings
from qt_pipeline.storage.outbox import Outbox
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.storage.backends import make_bars

START = pd.Timestamp("2026-03-02", tz="UTC")


def batch(i: int) -> pd.DataFrame:
    return make_bars(["AAA", "BBB"], START + pd.Timedelta(days=i), 500, seed=i)


def main() -> None:
    url, schema, workdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    # a budget far longer than the test waits: the process is killed while the write is in flight
    settings = Settings().model_copy(update={"hybrid_failover_s": 600.0})
    central = PostgresStore(url, central_settings(settings), schema=schema)
    store = HybridStore(
        DuckDBStore(workdir / "cache.duckdb"), central, settings, outbox=Outbox(workdir / "ob")
    )
    print("acked", store.write_bars(batch(0)).details["central"], flush=True)
    sys.stdin.readline()
    print("writing", flush=True)
    store.write_bars(batch(1))
    print("returned", flush=True)


if __name__ == "__main__":
    main()
