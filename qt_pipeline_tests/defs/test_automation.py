"""The daily cycle on a real Dagster instance (a temporary DAGSTER_HOME): schedule tick → ingestion run →
the automation condition requests the migration → migration run with its blocking check → nightly
consistency job; a deliberately corrupted day is caught, repaired by reconcile_job, and the repair is
recorded as a materialisation. Real DuckDB and PostgreSQL throughout."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import dagster as dg
import pytest

from qt_pipeline.config import get_settings
from qt_pipeline_tests.storage.central.helpers import sql

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

NEON = dg.AssetKey("central_ohlcv")
DAY = "2024-01-04"
KEYS = {f"{DAY}|BTCUSD", f"{DAY}|ETHUSD", f"{DAY}|SOLUSD"}


@pytest.fixture
def central_env(settings, pg_schema, monkeypatch):
    url, schema = pg_schema
    monkeypatch.setenv("NEON_DATABASE_URL", url)
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    get_settings.cache_clear()
    return url, schema


def _range_tags(keys: set[str]) -> dict[str, str]:
    ordered = sorted(keys, key=lambda k: (k.split("|")[0], get_settings().symbols.index(k.split("|")[1])))
    return {
        "dagster/asset_partition_range_start": ordered[0],
        "dagster/asset_partition_range_end": ordered[-1],
    }


def test_schedule_tick_ingests_automation_migrates_consistency_passes_and_catches_a_corrupt_day(central_env):
    url, schema = central_env
    from qt_pipeline.definitions import defs

    with dg.instance_for_test() as instance:
        # 0. the automation sensor runs from the start (ON by default); its first tick only takes stock
        boot = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert boot.total_requested == 0

        # 1. the daily schedule's tick: ONE run for the closed day x every symbol
        schedule = defs.resolve_schedule_def("raw_ohlcv_daily_schedule")
        tick = schedule.evaluate_tick(
            dg.build_schedule_context(
                instance=instance, scheduled_execution_time=datetime(2024, 1, 5, 0, 15, tzinfo=UTC)
            )
        )
        (request,) = tick.run_requests
        ingest = defs.resolve_job_def(schedule.job_name).execute_in_process(
            instance=instance, tags=request.tags
        )
        assert ingest.success
        assert {m.partition for m in ingest.asset_materializations_for_node("raw_ohlcv")} == KEYS
        assert {e.partition for e in ingest.get_asset_check_evaluations() if e.passed} == KEYS

        # 2. nobody asks for the migration: the automation condition does (an old day, not the latest window)
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=boot.cursor)
        assert first.get_requested_partitions(NEON) == KEYS
        assert first.total_requested == 3  # nothing else (no evolution, no hybrid cache on this backend)
        migrate = defs.resolve_job_def("migration_job").execute_in_process(
            instance=instance, tags=_range_tags(first.get_requested_partitions(NEON))
        )
        assert migrate.success
        evals = migrate.get_asset_check_evaluations()
        assert {
            e.partition for e in evals if e.passed and e.check_name == "central_ohlcv_consistency"
        } == KEYS
        assert all(e.target_materialization_data is not None for e in evals)  # each tied to its data
        again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert again.total_requested == 0  # handled: not requested twice
        rows = sql(url, f'SELECT symbol, count(*) FROM "{schema}".ohlcv_bars GROUP BY symbol ORDER BY symbol')
        assert rows == [("BTCUSD", 1440), ("ETHUSD", 1440), ("SOLUSD", 1440)]

        # 3. the nightly consistency job passes on this steady state
        consistency = defs.resolve_job_def("consistency_job")
        assert consistency.execute_in_process(instance=instance).success

        # 4. a deliberately corrupted day is caught and named
        sql(url, f"UPDATE \"{schema}\".ohlcv_bars SET close = close * 1.001 WHERE symbol = 'ETHUSD' "
                 f"AND \"timestamp\" = '{DAY}T12:00Z'")  # fmt: skip
        bad = consistency.execute_in_process(instance=instance, raise_on_error=False)
        assert not bad.success
        failure = next(e for e in bad.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
        assert failure.step_failure_data.user_failure_data.metadata["differing"].value == [
            f"{DAY}|ETHUSD: checksum_differs (local 1440 rows, central 1440 rows)"
        ]

        # 5. reconcile repairs exactly that day and records it as a materialisation of its partition
        repaired = defs.resolve_job_def("reconcile_job").execute_in_process(instance=instance)
        assert repaired.success and repaired.output_for_node("reconcile_op") == 1
        mats = [e.materialization for e in repaired.get_asset_materialization_events()]
        assert [(m.asset_key, m.partition) for m in mats] == [(NEON, f"{DAY}|ETHUSD")]
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=NEON, asset_partitions=[f"{DAY}|ETHUSD"]), limit=1
        ).records[0]
        assert latest.run_id == repaired.run_id
        assert consistency.execute_in_process(instance=instance).success


def test_lineage_every_asset_declares_what_it_reads():
    from qt_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    assert graph.get(NEON).parent_keys == {dg.AssetKey("raw_ohlcv")}
    assert graph.get(dg.AssetKey("local_cache_warm")).parent_keys == {NEON}
    # evolution reads the bars through bar_store (STORAGE_BACKEND=local, the default, reads raw_ohlcv)
    # and the signals its regime / correlation genes act on
    assert graph.get(dg.AssetKey("evolved_strategies")).parent_keys == {
        dg.AssetKey("raw_ohlcv"),
        dg.AssetKey("correlation_signals"),
        dg.AssetKey("market_regimes"),
    }
    assert graph.get(dg.AssetKey("central_cold_tier")).parent_keys == {NEON}
    assert graph.get(NEON).automation_condition is not None
    sensor = defs.resolve_sensor_def("qt_automation_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_a_backfill_is_one_run_and_checks_run_inside_its_step():
    """Regression: the bar quality check was a separate step that opened the DuckDB file outside the
    writer pool (a UI backfill of 2-3 partitions failed with "DuckDB file ... is locked"), and every
    partition was its own run."""
    from qt_pipeline.definitions import defs

    for job_name, asset in (("ingestion_job", "raw_ohlcv"), ("migration_job", "central_ohlcv")):
        job = defs.resolve_job_def(job_name)
        assert [n.name for n in job.graph.nodes] == [asset]  # asset + its check: one step
        assets_def = defs.resolve_assets_def(asset)
        assert assets_def.backfill_policy == dg.BackfillPolicy.single_run()
        assert assets_def.op.pool == "qt_duckdb_writer"
        assert len(list(assets_def.check_specs)) == 1
