"""Nothing dropped when runs overlap: a quarantine run that fails because another process holds the DuckDB
file (a real lock, held by a real second process) is requested again by the landing sensor on a later tick,
and then stores the file's rejects."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import dagster as dg

from qt_pipeline.defs.ingestion import (
    MarketSourceResource,
    ingestion_job,
    landing_directory_sensor,
    landing_quarantine_job,
    raw_ohlcv,
)
from qt_pipeline.defs.ingestion.sensors import ATTEMPT_TAG, RETRY_OF_TAG
from qt_pipeline.defs.resources import StorageResource

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

HEADER = "symbol,timestamp,open,high,low,close,volume,vwap,trade_count"


def _defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_ohlcv],
        jobs=[ingestion_job, landing_quarantine_job],
        sensors=[landing_directory_sensor],
        resources={
            "market_source": MarketSourceResource(kind="landing"),
            "local_store": StorageResource(backend="local"),
        },
    )


def _tick(defs, instance, cursor):
    ctx = dg.build_sensor_context(
        cursor=cursor,
        instance=instance,
        definitions=defs,
        resources={"market_source": MarketSourceResource(kind="landing")},
    )
    data = defs.resolve_sensor_def("landing_directory_sensor").evaluate_tick(ctx)
    return data.run_requests or [], data.cursor


def test_failed_quarantine_run_is_requested_again_and_then_stores_the_rejects(settings):
    landing = settings.resolved_landing_dir
    landing.mkdir(parents=True)
    bad = landing / "unknown.csv"
    bad.write_text(f"{HEADER}\nXXXUSD,2024-01-03T00:00:00Z,100,101,99,100.5,10,100,5\n")
    db = settings.resolved_duckdb_path
    db.parent.mkdir(parents=True, exist_ok=True)
    defs = _defs()
    job = defs.resolve_job_def("landing_quarantine_job")
    with dg.instance_for_test() as instance:
        (req,), cursor = _tick(defs, instance, None)
        assert req.job_name == "landing_quarantine_job"
        # another process holds the DuckDB file (an overlapping run): the quarantine run fails
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import duckdb,time; c=duckdb.connect({str(db)!r}); print('ok', flush=True); time.sleep(120)",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "ok"
            failed = job.execute_in_process(
                run_config=req.run_config, tags=req.tags, instance=instance, raise_on_error=False
            )
            assert not failed.success
            # it failed on the lock, after the op's own retries
            assert any("lock" in str(e.event_specific_data).lower() for e in failed.all_events)
            assert any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in failed.all_events)
        finally:
            holder.kill()
            holder.wait()
        time.sleep(0.2)
        # the next tick: the file is in the cursor (unchanged) but its failed run is requested again
        (retry,), cursor2 = _tick(defs, instance, cursor)
        assert cursor2 == cursor
        assert retry.run_key == f"retry:{failed.run_id}" and retry.tags[ATTEMPT_TAG] == "2"
        assert retry.run_config == req.run_config
        ok = job.execute_in_process(run_config=retry.run_config, tags=retry.tags, instance=instance)
        assert ok.success
        local = StorageResource(backend="local")  # runs close their stores at step end: the file is free
        rej = local.get_store().read_rejects(str(bad))
        local.release()
        assert rej["reason"].tolist() == ["unknown_symbol"]
        # a failed run that has been repeated is not repeated again
        requests, _ = _tick(defs, instance, cursor)
        assert [r for r in requests if r.tags.get(RETRY_OF_TAG) == failed.run_id] == []
