"""Dagster wiring of the central store: real materialisations against real DuckDB + PostgreSQL."""

import dagster as dg
import pandas as pd
import pytest

from qt_pipeline.config import get_settings
from qt_pipeline.defs.central import defs as central_defs
from qt_pipeline.defs.central.assets import central_cold_tier, central_ohlcv, partition_symbol_day
from qt_pipeline.defs.central.jobs import consistency_job, reconcile_job
from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.ingestion.partitions import RAW_OHLCV_PARTITIONS
from qt_pipeline.defs.resources import LocalStoreResource
from qt_pipeline_tests.storage.central.helpers import make_bars, sql

KEY = "2024-01-03|ETHUSD"
SECRET = "Pw-d0-not-leak-42"


@dg.asset(partitions_def=RAW_OHLCV_PARTITIONS, deps=[central_ohlcv], group_name="test")
def downstream_of_central(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partition": context.partition_key})


@pytest.fixture
def env(settings, pg_schema, monkeypatch):
    url, schema = pg_schema
    # the local server trusts every password: this one must never show up in events or metadata
    monkeypatch.setenv("NEON_DATABASE_URL", url.replace("postgres@", f"postgres:{SECRET}@"))
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    get_settings.cache_clear()
    resources = {"local_store": LocalStoreResource(), "central_store": CentralStoreResource()}
    local = resources["local_store"].get_store()
    local.write_bars(make_bars(("BTCUSD", "ETHUSD"), days=3, per_day=20))
    yield url, schema, resources
    for res in resources.values():
        res.release()


def _check_evals(result: dg.ExecuteInProcessResult) -> list[dg.AssetCheckEvaluation]:
    assert SECRET not in repr(result.all_events)  # no secret in any event, log line or metadata entry
    return result.get_asset_check_evaluations()


def test_definitions_load_and_wiring() -> None:
    from qt_pipeline.definitions import defs

    repo = defs.get_repository_def()
    assert {"consistency_job", "reconcile_job", "cold_tier_job"} <= set(repo.job_names)
    assert {s.name for s in central_defs.schedules} == {"consistency_schedule", "cold_tier_schedule"}
    spec = next(iter(central_ohlcv.check_specs))
    assert spec.blocking and spec.name == "central_ohlcv_consistency"
    assert central_ohlcv.partitions_def == RAW_OHLCV_PARTITIONS
    assert dg.AssetKey("raw_ohlcv") in central_ohlcv.asset_deps[dg.AssetKey("central_ohlcv")]
    assert central_ohlcv.group_names_by_key[dg.AssetKey("central_ohlcv")] == "central"
    assert (
        partition_symbol_day(dg.MultiPartitionKey({"date": "2024-01-03", "symbol": "ETHUSD"}))[0] == "ETHUSD"
    )


def test_central_ohlcv_partition_materialises_and_check_passes(env) -> None:
    url, schema, resources = env
    result = dg.materialize([central_ohlcv, downstream_of_central], partition_key=KEY, resources=resources)
    assert result.success
    md = result.asset_materializations_for_node("central_ohlcv")[0].metadata
    assert md["rows"].value == 20 and md["layout"].value == "partitioned" and md["skipped"].value is False
    assert md["bytes"].value > 0 and md["rows_per_s"].value > 0 and schema in md["location"].value
    (ev,) = _check_evals(result)
    assert ev.passed and ev.metadata["central_rows"].value == 20
    assert sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] == 20
    assert sql(url, f'SELECT partition_key FROM "{schema}".migration_ledger') == [(KEY,)]
    # materialising again is a ledger-checked no-op
    again = dg.materialize([central_ohlcv], partition_key=KEY, resources=resources)
    assert again.asset_materializations_for_node("central_ohlcv")[0].metadata["skipped"].value is True

    # one value altered in Postgres: the check alone (no re-materialisation) fails and names the key
    ts = "2024-01-03T00:07:00+00:00"
    sql(
        url,
        f'UPDATE "{schema}".ohlcv_bars SET low = low - 1e-9 WHERE symbol = %s AND "timestamp" = %s',
        ("ETHUSD", ts),
    )
    # (re-materialising skips the copy — the ledger matches DuckDB — so only the check can catch it)
    failed = dg.materialize([central_ohlcv], partition_key=KEY, resources=resources, raise_on_error=False)
    assert failed.asset_materializations_for_node("central_ohlcv")[0].metadata["skipped"].value is True
    (ev,) = _check_evals(failed)
    assert not ev.passed and ev.metadata["values_differ"].value == 1
    (desc,) = ev.metadata["differing_keys"].value
    assert desc.startswith(f"ETHUSD @ {ts}: values_differ (low local=")


def test_failed_consistency_check_blocks_downstream(env) -> None:
    url, schema, resources = env
    central = resources["central_store"].get_store()
    central.ensure_schema()
    # Postgres holds a row DuckDB does not have: the upsert keeps it, so the check must fail
    stray = make_bars(("ETHUSD",), days=1, per_day=1, start=pd.Timestamp("2024-01-03").date())
    stray["timestamp"] = stray["timestamp"] + pd.Timedelta(hours=5)
    central.write_bars(stray)
    result = dg.materialize(
        [central_ohlcv, downstream_of_central],
        partition_key=KEY,
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success
    materialised = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey("central_ohlcv") in materialised
    assert dg.AssetKey("downstream_of_central") not in materialised
    (ev,) = _check_evals(result)
    assert not ev.passed
    keys = ev.metadata["differing_keys"].value
    assert keys == ["ETHUSD @ 2024-01-03T05:00:00+00:00: extra_in_central"]
    assert ev.metadata["extra_in_central"].value == 1

    # repair, then the same run goes through
    only_this = {"symbols": ["ETHUSD"], "start": "2024-01-03", "end": "2024-01-04"}
    repaired = reconcile_job.execute_in_process(
        resources=resources, run_config={"ops": {"reconcile_op": {"config": only_this}}}
    )
    assert repaired.success and repaired.output_for_node("reconcile_op") == 1
    ok = dg.materialize([central_ohlcv, downstream_of_central], partition_key=KEY, resources=resources)
    assert ok.success and ok.asset_materializations_for_node("downstream_of_central")


def test_consistency_job_and_reconcile_job(env) -> None:
    url, schema, resources = env
    for key in ("2024-01-02|BTCUSD", "2024-01-02|ETHUSD", "2024-01-03|BTCUSD", KEY, "2024-01-04|BTCUSD",
                "2024-01-04|ETHUSD"):  # fmt: skip
        dg.materialize([central_ohlcv], partition_key=key, resources=resources)
    assert consistency_job.execute_in_process(resources=resources).success

    sql(url, f"UPDATE \"{schema}\".ohlcv_bars SET volume = volume + 1 WHERE symbol = 'BTCUSD' "
             "AND \"timestamp\" = '2024-01-04T00:10Z'")  # fmt: skip
    failed = consistency_job.execute_in_process(resources=resources, raise_on_error=False)
    assert not failed.success
    assert SECRET not in repr(failed.all_events)
    failure = next(e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    fmd = failure.step_failure_data.user_failure_data.metadata
    assert fmd["symbol_days_differing"].value == 1
    assert fmd["differing"].value == ["2024-01-04|BTCUSD: checksum_differs (local 20 rows, central 20 rows)"]

    dry = reconcile_job.execute_in_process(
        resources=resources, run_config={"ops": {"reconcile_op": {"config": {"dry_run": True}}}}
    )
    assert dry.success and dry.output_for_node("reconcile_op") == 0
    assert not consistency_job.execute_in_process(resources=resources, raise_on_error=False).success
    fixed = reconcile_job.execute_in_process(resources=resources)
    assert fixed.success and fixed.output_for_node("reconcile_op") == 1
    assert consistency_job.execute_in_process(resources=resources).success


def test_cold_tier_asset_archives_and_reads_back(env) -> None:
    url, schema, resources = env
    local = resources["local_store"].get_store()
    from qt_pipeline.storage.migration import migrate_all

    central = resources["central_store"].get_store()
    migrate_all(local, central)
    result = dg.materialize(
        [central_cold_tier],
        resources=resources,
        run_config={"ops": {"central_cold_tier": {"config": {"older_than_days": 0}}}},
    )
    md = result.asset_materializations_for_node("central_cold_tier")[0].metadata
    assert md["mode"].value == "parquet" and md["rows"].value == 120
    assert md["bytes_after"].value > 0 and "archived" in md["details"].value
    assert sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] == 0
    pd.testing.assert_frame_equal(central.read_range(), local.read_range())


def test_a_never_ingested_partition_fails_with_a_message_instead_of_turning_green(env) -> None:
    """Regression: central_ohlcv for a partition raw_ohlcv never ingested succeeded with 0 rows and its
    blocking check passed (0 = 0)."""
    url, schema, resources = env
    missing = "2024-01-20|BTCUSD"
    result = dg.materialize([central_ohlcv], partition_key=missing, resources=resources, raise_on_error=False)
    assert not result.success
    assert not result.get_asset_materialization_events() and not result.get_asset_check_evaluations()
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    msg = failure.step_failure_data.error.message
    assert "1 partition(s) were never ingested: 2024-01-20|BTCUSD" in msg and "raw_ohlcv" in msg
    assert failure.step_failure_data.user_failure_data.metadata["partitions_without_bars"].value == [missing]


def test_a_ranged_run_copies_and_proves_every_partition_in_one_step(env) -> None:
    url, schema, resources = env
    from qt_pipeline.definitions import defs

    job = defs.resolve_job_def("migration_job")
    tags = {"dagster/asset_partition_range_start": "2024-01-02|BTCUSD",
            "dagster/asset_partition_range_end": "2024-01-04|ETHUSD"}  # fmt: skip
    result = job.execute_in_process(resources=resources, tags=tags)
    assert result.success
    mats = result.asset_materializations_for_node("central_ohlcv")
    assert len(mats) == 6 and {m.metadata["rows"].value for m in mats} == {20}  # per-partition metadata
    assert {m.partition for m in mats} == {e.partition for e in result.get_asset_check_evaluations()}
    assert len({e.step_key for e in result.all_events if e.step_key}) == 1  # one step for all six
    assert sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] == 120
