"""Signals wiring: dbt_timescale models run by dagster-dbt against real PostgreSQL (and TimescaleDB),
incremental late-bar handling, the dbt rollup equal to the engines' rollup, and the signal engine assets
with their checks and pictures.

dbt invocations take seconds each: this module runs three (two on PostgreSQL, one on TimescaleDB)."""

import uuid

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from qt_pipeline.config import get_settings
from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.resources import StorageResource
from qt_pipeline.defs.signals.assets import signal_engines
from qt_pipeline.defs.signals.dbt import dbt_resource, dbt_timescale_models
from qt_pipeline.defs.signals.keys import CENTRAL_BARS_KEY, CORRELATION_SIGNALS_KEY, MARKET_REGIMES_KEY
from qt_pipeline.market.sources.synthetic import SyntheticMarket
from qt_pipeline.signals.correlation import pair_correlations
from qt_pipeline.signals.rollup import log_returns, rollup_bars, wide

SECRET = "Sig-n0t-leak-913"
MARKET = SyntheticMarket(17, interval="5min")


def _bars(start: str, end: str) -> pd.DataFrame:
    return pd.concat([MARKET.bars(s, start, end) for s in MARKET.symbols()], ignore_index=True)


def _use_central(monkeypatch, url: str, schema: str):
    monkeypatch.setenv("NEON_DATABASE_URL", url.replace("postgres@", f"postgres:{SECRET}@", 1))
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    monkeypatch.setenv("STORAGE_BACKEND", "neon")
    get_settings.cache_clear()
    store = CentralStoreResource().get_store()
    store.ensure_schema()
    return store


def _resources() -> dict:
    return {"dbt": dbt_resource(), "central_store": CentralStoreResource(), "bar_store": StorageResource()}


def _table(store, name: str) -> pd.DataFrame:
    with store.engine.connect() as conn:
        return pd.read_sql(f'select * from "{store.schema}"."{name}"', conn)


def _assert_dbt_run_ok(result: dg.ExecuteInProcessResult) -> list[dg.AssetCheckEvaluation]:
    assert result.success
    assert SECRET not in repr(result.all_events)  # the password never reaches events or logs
    evals = result.get_asset_check_evaluations()
    failed = [e.check_name for e in evals if not e.passed]
    assert len(evals) > 40 and not failed, failed
    return evals


def test_lineage_dbt_models_sit_between_central_bars_and_signals() -> None:
    from qt_pipeline.definitions import defs

    graph = defs.get_repository_def().asset_graph
    for model in ("bars_5m", "bars_1h", "bars_1d"):
        assert graph.get(dg.AssetKey(model)).parent_keys == {CENTRAL_BARS_KEY}
    assert graph.get(dg.AssetKey("correlations_1h")).parent_keys == {dg.AssetKey("returns_1h")}
    assert dg.AssetKey("correlations_1h") in graph.get(CORRELATION_SIGNALS_KEY).parent_keys
    assert dg.AssetKey("bars_1h") in graph.get(MARKET_REGIMES_KEY).parent_keys
    assert {"dbt_rollups_job", "signals_job"} <= set(defs.get_repository_def().job_names)


def test_dbt_version_is_read_from_the_installed_package_without_running_dbt(monkeypatch, tmp_path) -> None:
    """The venv's own dbt: its version is dbt-core's, no `dbt --version` subprocess (seconds, and a PyPI
    query, before every dbt invocation); any other dbt executable is still asked."""
    import importlib.metadata

    import dagster_dbt.core.resource as dbt_core_resource
    from packaging import version

    from qt_pipeline.defs.signals.dbt import DBT_PROJECT, ProjectDbtCliResource

    asked: list[list[str]] = []

    def fake_check_output(cmd: list[str]) -> bytes:
        asked.append(cmd)
        return b"Core:\n  - installed: 1.9.4\n  - latest:    1.12.6"

    monkeypatch.setattr(dbt_core_resource, "check_output", fake_check_output)
    assert dbt_resource()._cli_version == version.parse(importlib.metadata.version("dbt-core"))
    assert asked == []
    elsewhere = tmp_path / "bin" / "dbt"  # another installation's dbt (never run: check_output is faked)
    elsewhere.parent.mkdir()
    elsewhere.write_text("#!/bin/sh\nexit 1\n")
    elsewhere.chmod(0o755)
    other = ProjectDbtCliResource(project_dir=DBT_PROJECT, dbt_executable=str(elsewhere))  # type: ignore[arg-type]
    assert other._cli_version == version.parse("1.9.4")
    assert asked == [[str(elsewhere), "--version"]]


def test_dbt_models_on_postgres_incremental_late_bars_and_same_rollup_as_engines(
    settings, pg_schema, monkeypatch
):
    url, schema = pg_schema
    store = _use_central(monkeypatch, url, schema)
    store.write_bars(_bars("2024-01-01", "2024-01-04"))

    _assert_dbt_run_ok(dg.materialize([dbt_timescale_models], resources=_resources()))

    # the dbt rollup is the engines' rollup: same buckets, OHLC bit-equal, sums to rounding
    src = store.read_range()
    py = rollup_bars(src, "1h").drop(columns=["realized_var"])
    sql = _table(store, "bars_1h").sort_values(["symbol", "bucket"]).reset_index(drop=True)
    sql["bucket"] = sql["bucket"].dt.tz_convert("UTC").dt.as_unit("us")
    assert len(sql) == len(py) == 3 * 72
    for c in ("symbol", "bucket", "open", "high", "low", "close", "trade_count", "bar_count"):
        assert (sql[c].to_numpy() == py[c].to_numpy()).all(), c
    np.testing.assert_allclose(sql["volume"], py["volume"], rtol=1e-12)
    np.testing.assert_allclose(sql["vwap"], py["vwap"], rtol=1e-12)
    # ...and so are the rolling correlations (24 h window)
    corr = _table(store, "correlations_1h")
    day = corr[(corr["window_buckets"] == 24) & corr["correlation"].notna()]
    ref = pair_correlations(wide(log_returns(rollup_bars(src, "1h")), "log_return"), 24)
    for row in day.sample(20, random_state=0).itertuples():
        want = ref.loc[pd.Timestamp(row.bucket).tz_convert("UTC"), f"{row.symbol_a}|{row.symbol_b}"]
        assert row.correlation == pytest.approx(want, abs=1e-9)

    # a new day arrives and a late correction lands in an hour already rolled up (inside the window)
    late = MARKET.bars("ETHUSD", "2024-01-03 10:00", "2024-01-03 10:10")
    late["volume"] = late["volume"] * 10.0
    late["close"] = late["close"] * 1.001
    late["high"] = np.maximum(late["high"], late["close"])
    store.write_bars(_bars("2024-01-04", "2024-01-05"))
    store.write_bars(late)
    _assert_dbt_run_ok(dg.materialize([dbt_timescale_models], resources=_resources()))
    h = _table(store, "bars_1h")
    row = h[(h["symbol"] == "ETHUSD") & (h["bucket"] == pd.Timestamp("2024-01-03 10:00", tz="UTC"))]
    want = store.read_bars(
        "ETHUSD", pd.Timestamp("2024-01-03 10:00", tz="UTC"), pd.Timestamp("2024-01-03 11:00", tz="UTC")
    )
    assert row["volume"].iloc[0] == pytest.approx(want["volume"].sum(), rel=1e-12)
    assert len(h) == 3 * 96  # the new day was appended, nothing duplicated


def test_signal_assets_materialise_with_checks_and_pictures(settings, pg_schema, monkeypatch):
    url, schema = pg_schema
    store = _use_central(monkeypatch, url, schema)
    store.write_bars(_bars("2024-01-01", "2024-01-06"))
    result = dg.materialize([signal_engines], resources=_resources(), partition_key="2024-01-05")
    assert result.success and SECRET not in repr(result.all_events)
    evals = {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}
    assert len(evals) == 4 and all(e.passed for e in evals.values()), evals
    mats = {m.asset_key: m for m in result.get_asset_materialization_events()}
    reg_meta = mats[MARKET_REGIMES_KEY].materialization.metadata
    assert "data:image/png;base64," in reg_meta["timeline"].value
    assert (
        "data:image/png;base64," in mats[CORRELATION_SIGNALS_KEY].materialization.metadata["heat_map"].value
    )
    assert reg_meta["labelled"].value == 3 * 24  # the whole day is past the warm-up

    from qt_pipeline.signals.store import SignalStore

    stored = SignalStore.from_settings(get_settings()).read("regimes")
    assert len(stored) == 3 * 24 and set(stored["bucket"].dt.date.astype(str)) == {"2024-01-05"}
    assert (stored["regime"] >= 0).all()


@pytest.mark.timescale
def test_dbt_models_on_timescaledb(settings, timescale_dsn, monkeypatch):
    schema = f"sg_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("QT_DBT_THREADS", "1")  # the harness serves every connection from one session
    monkeypatch.setenv("NEON_DATABASE_URL", timescale_dsn)
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    get_settings.cache_clear()
    store = CentralStoreResource().get_store()
    try:
        store.ensure_schema()
        assert store.layout == "hypertable"
        store.write_bars(_bars("2024-01-01", "2024-01-03"))
        result = dg.materialize([dbt_timescale_models], resources=_resources())
        assert result.success
        failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
        assert not failed, failed
        d = _table(store, "bars_1d")
        assert len(d) == 3 * 2 and (d["bar_count"] == 288).all()
    finally:
        with store.direct_engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
