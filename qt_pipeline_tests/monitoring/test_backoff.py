"""The cost governor's back-off switch (QT_COST_BACKOFF) on migrations: the central_ohlcv asset leaves its
partitions missing (no 0-row green partition, no consistency check against an unwritten store) and says
why; `qt migrate` prints one line with the reason and the override and exits 75 without copying."""

from __future__ import annotations

import dagster as dg
import pytest
from typer.testing import CliRunner

from qt_pipeline.config import get_settings
from qt_pipeline.monitoring.usage import UsageLedger
from qt_pipeline_tests.storage.central.helpers import make_bars, sql

KEY = "2024-01-03|ETHUSD"


@pytest.fixture
def env(settings, pg_schema, monkeypatch):
    url, schema = pg_schema
    monkeypatch.setenv("NEON_DATABASE_URL", url)
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    monkeypatch.setenv("COLUMNS", "400")
    get_settings.cache_clear()
    from qt_pipeline.storage.duckdb_store import DuckDBStore

    with DuckDBStore(get_settings().resolved_duckdb_path) as local:
        local.write_bars(make_bars(("BTCUSD", "ETHUSD"), days=3, per_day=20))
    UsageLedger.for_data_dir(get_settings().data_dir).set_state(
        "budget", {"status": "over", "projected_monthly": 80.0, "budget_monthly": 50.0, "currency": "USD"}
    )
    return url, schema


def _ohlcv_rows(url: str, schema: str) -> int:
    exists = sql(url, "SELECT to_regclass(%s)", (f'"{schema}".ohlcv_bars',))[0][0]
    return sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] if exists else 0


def test_central_ohlcv_backs_off_over_budget_and_leaves_the_partition_missing(env, monkeypatch):
    from qt_pipeline.defs.central.assets import central_ohlcv
    from qt_pipeline.defs.central.resources import CentralStoreResource
    from qt_pipeline.defs.resources import LocalStoreResource

    url, schema = env
    resources = {"local_store": LocalStoreResource(), "central_store": CentralStoreResource()}
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([central_ohlcv], partition_key=KEY, resources=resources, instance=instance)
    assert result.success  # the budget check alerts; the migration run itself is not a failure
    assert result.asset_materializations_for_node("central_ohlcv") == []  # not green with 0 rows
    assert result.get_asset_check_evaluations() == []  # nothing written, nothing to compare
    assert KEY not in instance.get_materialized_partitions(dg.AssetKey("central_ohlcv"))
    (obs,) = [e.event_specific_data.asset_observation for e in result.all_events if e.is_asset_observation]
    assert obs.partition == KEY and "migration backs off" in obs.metadata["backed_off"].value
    assert "QT_COST_BACKOFF=off" in obs.metadata["backed_off"].value
    warnings = [
        e.message for e in instance.all_logs(result.run_id) if "migration backs off" in (e.message or "")
    ]
    assert warnings and KEY in warnings[0]
    assert _ohlcv_rows(url, schema) == 0

    monkeypatch.setenv("QT_COST_BACKOFF", "off")
    get_settings.cache_clear()
    result = dg.materialize([central_ohlcv], partition_key=KEY, resources=resources, instance=instance)
    (mat,) = result.asset_materializations_for_node("central_ohlcv")
    assert mat.metadata["rows"].value == 20
    (ev,) = result.get_asset_check_evaluations()
    assert ev.passed
    for res in resources.values():
        res.release()


def test_qt_migrate_prints_why_it_backs_off_and_how_to_override(env, monkeypatch):
    from qt_pipeline.cli import app

    url, schema = env
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 75, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "migration backs off" in lines[0]
    assert "80.00 USD is over the budget 50.00" in lines[0] and "QT_COST_BACKOFF=off" in lines[0]
    assert _ohlcv_rows(url, schema) == 0

    # warn level does not trigger the default switch (over); QT_COST_BACKOFF=warn does
    UsageLedger.for_data_dir(get_settings().data_dir).set_state(
        "budget", {"status": "warn", "projected_monthly": 45.0, "budget_monthly": 50.0, "currency": "USD"}
    )
    monkeypatch.setenv("QT_COST_BACKOFF", "warn")
    get_settings.cache_clear()
    assert CliRunner().invoke(app, ["migrate"]).exit_code == 75
    monkeypatch.setenv("QT_COST_BACKOFF", "over")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert _ohlcv_rows(url, schema) == 2 * 3 * 20
