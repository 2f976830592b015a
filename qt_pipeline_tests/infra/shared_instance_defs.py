"""A tiny code location for the shared-instance test (qt_pipeline_tests/infra/test_shared_instance.py):
an op in the DuckDB-writer pool that records when it held the slot (the log path comes from the test's
environment)."""

import json
import os
import time
from pathlib import Path

import dagster as dg

# the pool of every DuckDB-writing asset (qt_pipeline.defs.resources.DUCKDB_WRITER_POOL; the test checks
# they agree). Spelled out so each run process imports only dagster, not the whole code location.
DUCKDB_WRITER_POOL = "qt_duckdb_writer"


@dg.op(pool=DUCKDB_WRITER_POOL)
def hold_writer_slot(context: dg.OpExecutionContext) -> None:
    start = time.time()
    time.sleep(1.5)
    record = {"run_id": context.run_id, "pid": os.getpid(), "start": start, "end": time.time()}
    with open(Path(os.environ["QT_SHARED_INSTANCE_LOG"]), "a") as f:
        f.write(json.dumps(record) + "\n")


@dg.job(executor_def=dg.in_process_executor)  # one process per run: the pool is held across processes
def writer_pool_job() -> None:
    hold_writer_slot()


defs = dg.Definitions(jobs=[writer_pool_job])
