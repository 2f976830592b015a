"""`qt migrate`, `qt reconcile`, `qt consistency`, `qt db status` against real DuckDB + PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from qt_pipeline.cli import app
from qt_pipeline.config import get_settings
from qt_pipeline_tests.storage.central.helpers import make_bars, sql

SECRET = "hunter2-Sup3rSecret"  # the local server uses trust auth, so any password connects


@pytest.fixture
def cli_env(settings, pg_schema, monkeypatch):
    url, schema = pg_schema
    with_pw = make_url(url).set(password=SECRET).render_as_string(hide_password=False)
    monkeypatch.setenv("NEON_DATABASE_URL", with_pw)
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    from qt_pipeline.storage.duckdb_store import DuckDBStore

    with DuckDBStore(get_settings().resolved_duckdb_path) as local:
        local.write_bars(make_bars(("BTCUSD", "ETHUSD"), days=3, per_day=25))
    return url, schema


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert SECRET not in result.output
    return result


def test_migrate_then_noop_then_status(cli_env) -> None:
    url, schema = cli_env
    first = _run("migrate")
    assert first.exit_code == 0, first.output
    assert "migration summary" in first.output and "150" in first.output
    assert sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] == 150

    second = _run("migrate")
    assert second.exit_code == 0, second.output
    row = [ln for ln in second.output.splitlines() if "│" in ln][-1]
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[:3] == ["0", "6", "0"]  # migrated, skipped, rows

    status = _run("db", "status", "--json")
    assert status.exit_code == 0, status.output
    info = json.loads(status.output)
    assert info["layout"] == "partitioned" and info["schema"] == schema
    assert info["ledger"]["done"] == 6 and info["ledger"]["rows"] == 150
    assert info["tables"]["ohlcv_bars"][0] == 150 and info["tables"]["ohlcv_bars"][1] > 0
    assert info["capabilities"]["timescaledb_version"] is None
    table = _run("db", "status")
    assert table.exit_code == 0 and "partitioned" in table.output and "migration_ledger" in table.output


def test_migrate_filters_and_bad_input(cli_env) -> None:
    url, schema = cli_env
    res = _run("migrate", "--symbols", "BTCUSD", "--start", "2024-01-03", "--end", "2024-01-04")
    assert res.exit_code == 0, res.output
    assert sql(url, f'SELECT DISTINCT symbol, "timestamp"::date FROM "{schema}".ohlcv_bars') == [
        ("BTCUSD", __import__("datetime").date(2024, 1, 3))
    ]
    bad = _run("migrate", "--start", "03/01/2024")
    assert bad.exit_code == 2 and "--start '03/01/2024' is not a date; use YYYY-MM-DD" in bad.output
    empty = _run("reconcile", "--symbols", " , ")
    assert empty.exit_code == 2 and "--symbols is empty" in empty.output


def test_consistency_and_reconcile_dry_run_then_repair(cli_env, tmp_path, monkeypatch) -> None:
    url, schema = cli_env
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert _run("migrate").exit_code == 0
    assert _run("consistency").exit_code == 0
    sql(url, f"UPDATE \"{schema}\".ohlcv_bars SET close = close * 2 WHERE symbol = 'ETHUSD' "
             "AND \"timestamp\" = '2024-01-04T00:03Z'")  # fmt: skip
    diff = _run("consistency", "--json")
    assert diff.exit_code == 1
    assert json.loads(diff.output)["differing"] == [
        "2024-01-04|ETHUSD: checksum_differs (local 25 rows, central 25 rows)"
    ]
    dry = _run("reconcile", "--dry-run")
    assert dry.exit_code == 0 and "would be re-copied" in dry.output and "ETHUSD" in dry.output
    assert _run("consistency").exit_code == 1  # dry run changed nothing
    fixed = _run("reconcile")
    assert fixed.exit_code == 0, fixed.output
    assert "re-copied 1 symbol-day(s), 25 row(s); 0 still differ" in fixed.output
    assert _run("consistency").exit_code == 0
    # the repair is in the asset's history (regression: qt reconcile changed Postgres unrecorded)
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        recs = instance.fetch_materializations(dg.AssetKey("central_ohlcv"), limit=10).records
        assert [r.asset_materialization.partition for r in recs] == ["2024-01-04|ETHUSD"]
        assert SECRET not in str(recs[0].asset_materialization.metadata)


def test_unreachable_database_gives_a_redacted_error(settings, monkeypatch) -> None:
    monkeypatch.setenv("NEON_DATABASE_URL", f"postgresql://postgres:{SECRET}@127.0.0.1:1/nowhere")
    monkeypatch.setenv("QT_PG_RETRY_ATTEMPTS", "1")
    monkeypatch.setenv("QT_PG_CONNECT_TIMEOUT_S", "2")
    get_settings.cache_clear()
    res = _run("db", "status")
    assert res.exit_code == 1
    assert "db status failed" in res.output and "127.0.0.1" in res.output
