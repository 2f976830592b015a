"""Dagster wiring of the hybrid domain, run for real: materialise local_cache_warm, tick central_health_sensor
through a real TCP proxy (and a real local HTTP server answering like Neon's API), execute outbox_replay_job."""

from __future__ import annotations

import logging

import dagster as dg
import pandas as pd

from qt_pipeline.config import get_settings
from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.hybrid.assets import local_cache_warm
from qt_pipeline.defs.hybrid.jobs import outbox_replay_job
from qt_pipeline.defs.hybrid.sensors import central_health_sensor
from qt_pipeline.defs.resources import StorageResource
from qt_pipeline.storage.outbox import Outbox
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.faults import TcpProxy, free_port
from qt_pipeline_tests.storage.backends import make_bars
from qt_pipeline_tests.storage.hybrid.neon_api_server import FakeNeonApi

KEY = "neon-api-key-never-logged-0123456789"


def _env(monkeypatch, **values):
    for k, v in values.items():
        monkeypatch.setenv(k, str(v))
    get_settings.cache_clear()
    return get_settings()


def test_definitions_wire_the_hybrid_domain():
    from qt_pipeline.definitions import defs

    assert defs.resolve_job_def("outbox_replay_job") is not None
    assert defs.resolve_sensor_def("central_health_sensor").minimum_interval_seconds == 30
    sched = defs.resolve_schedule_def("local_cache_warm_schedule")
    assert sched.cron_schedule == "*/15 * * * *"
    spec = defs.resolve_assets_def("local_cache_warm")
    assert spec.get_asset_spec(dg.AssetKey("local_cache_warm")).group_name == "hybrid"
    assert local_cache_warm.op.pool == "qt_duckdb_writer"
    assert dg.AssetKey("central_health") in defs.resolve_asset_graph().get_all_asset_keys()


def test_local_cache_warm_materialises_with_metadata(settings, pg_schema, monkeypatch):
    url, schema = pg_schema
    s = _env(
        monkeypatch, NEON_DATABASE_URL=url, QT_PG_SCHEMA=schema, STORAGE_BACKEND="hybrid", QT_SYMBOLS="WA,WB"
    )
    start = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=3)
    central = PostgresStore(url, s, schema=schema)
    bars = make_bars(["WA", "WB"], start, 30, seed=3)
    central.write_bars(bars)
    central.close()
    result = dg.materialize([local_cache_warm], resources={"hybrid_store": StorageResource(backend="hybrid")})
    assert result.success
    md = result.asset_materializations_for_node("local_cache_warm")[0].metadata
    assert md["rows_pulled"].value == 60
    assert md["rows_evicted"].value == 0
    table = md["coverage"].value
    assert "| WA | 7/7 |" in table and "| WB | 7/7 |" in table
    lag = md["freshness_lag_s/WA"].value
    assert lag >= (pd.Timestamp.now(tz="UTC") - bars["timestamp"].max()).total_seconds() - 60
    # the cache file is this machine's own hybrid cache, not the ingestion DuckDB
    assert s.resolved_hybrid_cache_path.exists()


def test_central_health_sensor_history_transitions_and_replay_request(
    settings, pg_url, monkeypatch, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    api = FakeNeonApi(KEY)
    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        _env(
            monkeypatch,
            NEON_DATABASE_URL=proxy.url_for(pg_url),
            QT_PG_CONNECT_TIMEOUT_S=2,
            NEON_API_KEY=KEY,
            NEON_PROJECT_ID=api.project_id,
            NEON_ENDPOINT_ID=api.endpoint_id,
            NEON_API_URL=api.base_url,
        )
        results = []

        def tick(cursor):
            with dg.build_sensor_context(
                cursor=cursor, resources={"central_store": CentralStoreResource()}
            ) as ctx:
                r = central_health_sensor(ctx)
            results.append(r)
            return r

        r1 = tick(None)
        md1 = r1.asset_events[0].metadata
        assert r1.asset_events[0].asset_key == dg.AssetKey("central_health")
        assert md1["healthy"].value is True and md1["endpoint_state"].value == "active"
        assert md1["connect_ms"].value >= 0 and md1["query_ms"].value >= 0 and md1["database_bytes"].value > 0
        assert md1["server_version_num"].value >= 150000 and "pool_size" in md1
        assert not r1.run_requests and "healthy since" in r1.skip_reason.skip_message  # says why no run

        proxy.cut()
        api.state = "idle"
        r2 = tick(r1.cursor)
        md2 = r2.asset_events[0].metadata
        assert md2["healthy"].value is False and "refused" in md2["reason"].value.lower()
        assert md2["transitions"].value == 1 and not r2.run_requests
        err = capfd.readouterr().err  # the sensor's context.log (dagster's console logger)
        assert "ERROR" in err and "central store UNHEALTHY" in err and KEY not in err

        r2b = tick(r2.cursor)  # still down: no new transition
        assert r2b.asset_events[0].metadata["transitions"].value == 1

        proxy.restore()
        r3 = tick(r2b.cursor)
        assert r3.asset_events[0].metadata["healthy"].value is True
        assert len(r3.run_requests) == 1 and r3.run_requests[0].run_key.startswith("outbox-replay-2-")
        r4 = tick(r3.cursor)
        assert not r4.run_requests

        assert all(req["auth"] == f"Bearer {KEY}" for req in api.requests) and api.requests
        everything = " ".join(str(r.asset_events[0].metadata) + str(r.cursor) for r in results)
        assert KEY not in everything and KEY not in caplog.text
    finally:
        proxy.close()
        api.close()


def test_outbox_replay_job_drains_and_fails_loudly_when_the_centre_is_down(settings, pg_schema, monkeypatch):
    url, schema = pg_schema
    dead = f"postgresql://postgres:pw-secret-42@127.0.0.1:{free_port()}/postgres"
    s = _env(monkeypatch, NEON_DATABASE_URL=dead, QT_PG_SCHEMA=schema, QT_HYBRID_CONNECT_TIMEOUT_S=1)
    outbox = Outbox(s.resolved_outbox_dir)
    frames = [
        make_bars(["RA"], pd.Timestamp("2026-01-05", tz="UTC") + pd.Timedelta(hours=i), 10, seed=i)
        for i in range(3)
    ]
    for f in frames:
        outbox.append(f)

    failed = outbox_replay_job.execute_in_process(raise_on_error=False)
    assert not failed.success
    assert len(outbox.list_batches()) == 3  # nothing lost
    failure = [e for e in failed.all_events if e.is_step_failure][0]
    assert "pw-secret-42" not in str(failure.event_specific_data.error.message)

    s = _env(monkeypatch, NEON_DATABASE_URL=url)
    ok = outbox_replay_job.execute_in_process()
    assert ok.success and ok.output_for_node("replay_outbox_op") == 30
    assert outbox.is_empty()
    central = PostgresStore(url, s, schema=schema)
    try:
        assert len(central.read_bars("RA")) == 30
    finally:
        central.close()


def test_health_sensor_observes_the_embedded_default_and_says_why_it_skips(settings):
    """Regression: on defaults (no NEON_DATABASE_URL) the sensor skipped with "NEON_DATABASE_URL is not
    set" although the embedded PostgreSQL is the central store in use."""
    from qt_pipeline.storage.postgres.embedded import ensure_embedded_postgres, stop_embedded_postgres

    def tick(cursor=None):
        with dg.build_sensor_context(
            cursor=cursor, resources={"central_store": CentralStoreResource()}
        ) as ctx:
            return central_health_sensor(ctx)

    first = tick()  # nothing has created the embedded server yet, and the probe must not create it
    assert isinstance(first, dg.SkipReason) and "has not been created yet" in first.skip_message
    assert not (settings.data_dir / "postgres" / "PG_VERSION").exists()
    try:
        ensure_embedded_postgres(settings)
        r = tick()
        (obs,) = r.asset_events
        assert obs.metadata["healthy"].value is True and obs.metadata["server_version_num"].value >= 150000
        assert "127.0.0.1" in obs.metadata["location"].value and "qt-" not in str(obs.metadata)  # redacted
        assert "healthy since" in r.skip_reason.skip_message
        stop_embedded_postgres(settings)
        stopped = tick(r.cursor)
        assert isinstance(stopped, dg.SkipReason) and "is stopped" in stopped.skip_message
    finally:
        stop_embedded_postgres(settings)
