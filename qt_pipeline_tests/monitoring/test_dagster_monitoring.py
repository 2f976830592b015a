"""Dagster wiring on a real instance: the budget check's WARN/ERROR thresholds, the freshness checks of the
local and central bars, the metrics observation, the cost back-off of cache warming."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from qt_pipeline.config import get_settings
from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.resources import LocalStoreResource
from qt_pipeline_tests.storage.backends import make_bars


def _central(pg_schema) -> CentralStoreResource:
    url, schema = pg_schema
    return CentralStoreResource(database_url=url, pg_schema=schema)


def _cost_run(pg_schema, instance, monkeypatch, budget: float, warn: float = 0.8):
    from qt_pipeline.defs.monitoring.assets import platform_cost

    monkeypatch.setenv("QT_BUDGET_MONTHLY_USD", str(budget))
    monkeypatch.setenv("QT_BUDGET_WARN_RATIO", str(warn))
    get_settings.cache_clear()
    result = dg.materialize(
        [platform_cost], instance=instance, resources={"central_store": _central(pg_schema)}
    )
    (evaluation,) = result.get_asset_check_evaluations()
    (mat,) = result.asset_materializations_for_node("platform_cost")
    return evaluation, mat.metadata


def test_budget_check_passes_warns_and_fails_on_the_configured_thresholds(settings, pg_schema, monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    evaluation, meta = _cost_run(pg_schema, instance, monkeypatch, budget=1000)
    projected = meta["projected_monthly"].value
    assert projected > 0  # storage of the (empty) schema's tables and the measured compute are priced
    assert evaluation.passed and meta["status"].value == "ok"
    assert "| central storage |" in meta["cost"].value and "EFS" in meta["cost"].value

    evaluation, meta = _cost_run(pg_schema, instance, monkeypatch, budget=projected * 1.5, warn=0.1)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert meta["status"].value == "warn"

    evaluation, meta = _cost_run(pg_schema, instance, monkeypatch, budget=projected / 10)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "OVER the budget" in evaluation.description
    # the UI's history of the asset holds the three runs' numbers
    records = instance.fetch_materializations(dg.AssetKey("platform_cost"), limit=10).records
    assert len(records) == 3


def test_freshness_checks_fail_for_stale_and_missing_symbols(settings, pg_schema, monkeypatch, tmp_path):
    from qt_pipeline.defs.monitoring import defs as monitoring_defs
    from qt_pipeline.storage.postgres.store import PostgresStore

    monkeypatch.setenv("QT_SYMBOLS", "AAA,BBB,CCC")
    get_settings.cache_clear()
    now = pd.Timestamp.now(tz="UTC")
    fresh = make_bars(["AAA"], now.floor("h") - pd.Timedelta(hours=2), 12, freq="5min")
    stale = make_bars(["BBB"], now.floor("D") - pd.Timedelta(days=3), 12, freq="5min")
    bars = pd.concat([fresh, stale], ignore_index=True)
    url, schema = pg_schema
    central = PostgresStore(url, get_settings(), schema=schema)
    central.write_bars(bars)
    central.close()
    local_path = tmp_path / "local.duckdb"
    from qt_pipeline.storage.duckdb_store import DuckDBStore

    local = DuckDBStore(local_path)
    local.write_bars(fresh)  # the local store lacks BBB entirely
    local.close()

    defs = dg.Definitions.merge(
        monitoring_defs,
        dg.Definitions(
            assets=[dg.AssetSpec("raw_ohlcv"), dg.AssetSpec("central_ohlcv")],
            resources={
                "central_store": _central(pg_schema),
                "local_store": LocalStoreResource(duckdb_path=str(local_path)),
            },
        ),
    )
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("freshness_checks_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    by_name = {e.check_name: e for e in result.get_asset_check_evaluations()}
    central_ev, local_ev = by_name["bars_fresh_central"], by_name["bars_fresh_local"]
    assert not central_ev.passed and not local_ev.passed
    assert central_ev.metadata["stale_symbols"].value == "BBB,CCC"
    assert local_ev.metadata["stale_symbols"].value == "BBB,CCC"
    assert "BBB (newest" in central_ev.description and "CCC (no bars)" in central_ev.description
    assert central_ev.metadata["repair"].value == "qt migrate --symbols BBB,CCC"
    assert central_ev.metadata["lag_h/AAA"].value < 3

    # with only the fresh symbol configured both checks pass
    monkeypatch.setenv("QT_SYMBOLS", "AAA")
    get_settings.cache_clear()
    result = defs.resolve_job_def("freshness_checks_job").execute_in_process(instance=instance)
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_metrics_sensor_records_an_observation_the_ui_plots(platform, pg_schema):
    from qt_pipeline.defs.monitoring.sensors import platform_metrics_sensor
    from qt_pipeline_tests.monitoring.conftest import SYMBOLS, bars_days

    platform.ingest_and_migrate(bars_days(SYMBOLS, -2, 2))
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(
        instance=instance, resources={"central_store": _central(pg_schema)}
    ) as context:
        result = platform_metrics_sensor(context)
    (obs,) = result.asset_events
    assert obs.asset_key == dg.AssetKey("platform_metrics")
    meta = obs.metadata
    assert meta["qt_central_up"].value == 1 and meta["qt_consistency_ok"].value == 1
    assert meta["qt_last_migrated_day_timestamp_seconds{symbol=AAA}"].value > 0
    assert isinstance(meta["qt_outbox_batches"], dg.FloatMetadataValue)  # numeric: plotted by the UI


def test_cache_warming_backs_off_over_budget(settings, pg_schema, tmp_path, monkeypatch):
    from qt_pipeline.defs.hybrid.assets import local_cache_warm
    from qt_pipeline.defs.resources import StorageResource
    from qt_pipeline.monitoring.usage import UsageLedger

    url, schema = pg_schema
    monkeypatch.setenv("NEON_DATABASE_URL", url)
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    get_settings.cache_clear()
    UsageLedger.for_data_dir(get_settings().data_dir).set_state(
        "budget", {"status": "over", "projected_monthly": 80.0, "budget_monthly": 50.0, "currency": "USD"}
    )
    resources = {"hybrid_store": StorageResource(backend="hybrid")}
    result = dg.materialize([local_cache_warm], resources=resources, instance=dg.DagsterInstance.ephemeral())
    (mat,) = result.asset_materializations_for_node("local_cache_warm")
    assert "cache warming backs off" in mat.metadata["backed_off"].value
    assert mat.metadata["rows_pulled"].value == 0

    monkeypatch.setenv("QT_COST_BACKOFF", "off")
    get_settings.cache_clear()
    result = dg.materialize([local_cache_warm], resources=resources, instance=dg.DagsterInstance.ephemeral())
    (mat,) = result.asset_materializations_for_node("local_cache_warm")
    assert "backed_off" not in mat.metadata and "coverage" in mat.metadata


@pytest.mark.parametrize("name", ["platform_cost", "platform_metrics", "local_bars_freshness"])
def test_code_location_registers_monitoring(name):
    from qt_pipeline.definitions import defs

    assert defs.resolve_assets_def(name) if name == "platform_cost" else True
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert name in keys
    for sensor in ("platform_metrics_sensor", "qt_run_failure_alert", "qt_check_failure_alert"):
        assert defs.resolve_sensor_def(sensor) is not None


def test_metrics_sensor_leaves_an_idle_central_store_alone(platform, pg_schema, monkeypatch):
    """Idle (no run, no central use since the last observation, younger than QT_METRICS_IDLE_INTERVAL_S):
    the tick skips without a query, saying why; a run since, an old observation or the interval 0 query."""
    import json
    from datetime import UTC, datetime, timedelta

    from qt_pipeline.defs.monitoring.sensors import platform_metrics_sensor
    from qt_pipeline.monitoring.telemetry import TELEMETRY
    from qt_pipeline_tests.monitoring.conftest import SYMBOLS, bars_days

    platform.ingest_and_migrate(bars_days(SYMBOLS, -1, 1))
    instance = dg.DagsterInstance.ephemeral()
    resources = {"central_store": _central(pg_schema)}

    def tick(cursor: str | None):
        before = TELEMETRY.snapshot()["counters"].get("central_queries", 0.0)
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
            result = platform_metrics_sensor(context)
        return result, TELEMETRY.snapshot()["counters"].get("central_queries", 0.0) - before

    first, _ = tick(None)
    assert len(first.asset_events) == 1 and first.cursor
    observed_at = datetime.fromisoformat(json.loads(first.cursor)["observed_at"])

    idle, queries = tick(first.cursor)
    assert idle.asset_events == [] and queries == 0
    assert idle.skip_reason.skip_message.startswith("idle: no run and no central store use since")
    assert "QT_METRICS_IDLE_INTERVAL_S=3600" in idle.skip_reason.skip_message and idle.cursor == first.cursor

    # a run finished since the last observation: observed again
    @dg.asset
    def something() -> None:
        return None

    dg.materialize([something], instance=instance)
    after_run, _ = tick(first.cursor)
    assert len(after_run.asset_events) == 1
    assert datetime.fromisoformat(json.loads(after_run.cursor)["observed_at"]) > observed_at

    # an observation older than the idle interval: observed again although nothing ran
    old = json.dumps({"observed_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat()})
    assert len(tick(old)[0].asset_events) == 1
    # the interval 0 observes on every tick
    monkeypatch.setenv("QT_METRICS_IDLE_INTERVAL_S", "0")
    get_settings.cache_clear()
    assert len(tick(after_run.cursor)[0].asset_events) == 1
