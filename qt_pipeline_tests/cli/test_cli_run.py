"""`qt run` executes the code location's named jobs on the Dagster instance, so everything it does shows in
the UI; evolution state lands in the central store (the one `qt evolution runs` reads); a named run is
resumed by its name; a concurrent run fails in one line."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest
from typer.testing import CliRunner

from qt_pipeline.cli import app
from qt_pipeline.config import get_settings

runner = CliRunner()


@pytest.fixture
def run_env(settings, pg_schema, tmp_path, monkeypatch):
    url, schema = pg_schema
    monkeypatch.setenv("NEON_DATABASE_URL", url)
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    get_settings.cache_clear()
    return get_settings()


@pytest.mark.slow
def test_qt_run_runs_named_jobs_visible_in_the_instance_and_resumes_a_named_evolution(run_env):
    args = ["run", "--days", "2", "--symbols", "BTCUSD,SOLUSD", "--population", "6", "--generations", "2",
            "--no-ray", "--run-id", "nightly"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records()
        # BTCUSD and SOLUSD are not neighbours in QT_SYMBOLS: one ranged run per contiguous block
        assert sorted(r.dagster_run.job_name for r in runs) == [
            "evolution_job", "ingestion_job", "ingestion_job", "migration_job", "migration_job", "signals_job",
        ]  # fmt: skip
        assert not any(r.dagster_run.job_name.startswith("__") for r in runs)  # no ephemeral asset jobs
        for key in ("raw_ohlcv", "central_ohlcv", "market_regimes", "evolved_strategies"):
            assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None
        # the evolution read the signals qt run materialised (as evolution_job does after signals_job)
        evo = instance.get_latest_materialization_event(dg.AssetKey("evolved_strategies"))
        assert evo is not None and evo.asset_materialization is not None
        assert evo.asset_materialization.metadata["signals"].value == "materialised"
    assert "evolution run nightly" in res.output and "--run-id nightly" in res.output

    listed = runner.invoke(app, ["evolution", "runs"])  # the same (central) store as evolution_job's
    assert listed.exit_code == 0 and "nightly" in listed.output, listed.output

    again = runner.invoke(app, args)  # the same name: resumed from its last committed generation
    assert again.exit_code == 0, again.output
    assert "resumed after generation 1" in again.output


def test_a_second_qt_run_fails_in_one_line_when_the_duckdb_file_is_locked(run_env):
    path = run_env.resolved_duckdb_path
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        res = runner.invoke(app, ["run", "--days", "1", "--generations", "0"])
        assert res.exit_code == 1
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert "Traceback" not in res.output and len(lines) <= 3, res.output
        assert "qt run failed:" in lines[-1] and "is locked by another process" in res.output
        with dg.DagsterInstance.get() as instance:
            assert instance.get_run_records() == []  # it fails before any Dagster run starts
    finally:
        holder.kill()
        holder.wait()
