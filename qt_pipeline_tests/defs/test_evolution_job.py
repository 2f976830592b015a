"""``evolution_job`` through Dagster (execute_in_process) on a real local Ray started by the
``ray_cluster`` resource (dagster-ray LocalRay), reading bars through ``bar_store`` (local DuckDB)."""

from __future__ import annotations

import pytest

from qt_pipeline_tests.evolution.evo_helpers import small_config, write_bars


@pytest.fixture
def central(settings, pg_schema, monkeypatch):
    """Evolution state goes to the central store (whatever the entry point): here a fresh schema."""
    from qt_pipeline.config import get_settings

    url, schema = pg_schema
    monkeypatch.setenv("NEON_DATABASE_URL", url)
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    get_settings.cache_clear()
    return get_settings()


def _job():
    from qt_pipeline.definitions import defs

    return defs.resolve_job_def("evolution_job")


def _run_config(**overrides):
    cfg = small_config(**overrides)
    return {"ops": {"evolved_strategies": {"config": cfg}}}


def _failure_message(result) -> str:
    return "\n".join(
        str(e.event_specific_data.error.message)
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    )


def test_bad_config_fails_the_run_before_ray_starts_and_writes_nothing(central):
    settings = central
    write_bars(settings, {"BTCUSD": 4320})
    result = _job().execute_in_process(
        run_config=_run_config(symbols=["BTCUSD", "XRPUSD"], use_ray=True, run_id="bad"), raise_on_error=False
    )
    assert not result.success
    msg = _failure_message(result)
    assert "symbol(s) ['XRPUSD'] are not in the bar store" in msg
    logs = [e.message or "" for e in result.all_events]
    assert not any("starting a local Ray" in m or "Connected to" in m for m in logs)  # Ray never started
    import ray

    assert not ray.is_initialized()
    from qt_pipeline.evolution.state import state_store_from_settings

    with state_store_from_settings(settings) as state:
        assert state.table_counts() == {
            "evolution_runs": 0,
            "evolution_generations": 0,
            "evolution_strategies": 0,
        }

    result = _job().execute_in_process(run_config=_run_config(population_size=1), raise_on_error=False)
    assert not result.success and "population_size" in _failure_message(result)


@pytest.mark.slow
def test_evolution_job_materialises_on_local_ray(central, monkeypatch):
    settings = central
    monkeypatch.setenv("QT_EVOLUTION_EXECUTOR", "ray")  # this run is too small for the automatic choice
    write_bars(settings, {"BTCUSD": 4320})
    result = _job().execute_in_process(
        run_config=_run_config(population_size=10, generations=2, use_ray=True, num_workers=2, run_id="dag1")
    )
    assert result.success
    mats = result.asset_materializations_for_node("evolved_strategies")
    assert len(mats) == 1
    md = mats[0].metadata
    assert md["run_id"].value == "dag1"
    assert md["generations"].value == 2
    assert md["evaluations"].value == 10 + 8  # generation 0 + offspring of generation 1 (2 elites kept)
    assert md["evaluations_per_s"].value > 0 and md["seconds"].value > md["evolve_seconds"].value > 0
    assert md["evaluator"].value.startswith("ray (local, 2 workers")
    assert md["ray_startup_s"].value > 0.5  # regression: read 0.003 s while Ray took seconds to start
    assert md["resumed"].value is False and "resumed_after_generation" not in md  # was -1 for a fresh run
    assert "dag1" in md["resume_with"].value
    assert md["fitness_curve"].value.startswith("![fitness per generation](data:image/png;base64,iVBOR")
    assert "| rank | fitness IS | fitness OOS |" in md["is_vs_oos"].value
    assert "strategy" in md["best_strategy"].value.lower()
    from pathlib import Path

    png = Path(md["fitness_curve_path"].value)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import ray

    assert not ray.is_initialized()  # the resource shut its local Ray down at step end
    from qt_pipeline.evolution.state import state_store_from_settings

    with state_store_from_settings(settings) as state:
        rec = state.get_run("dag1")
        assert rec.status == "completed" and rec.last_generation == 1
        strategies = state.load_strategies("dag1")
        assert len(strategies) == 5 and strategies["oos_metrics"].notna().all()


def test_example_run_config_matches_the_job_schema(central):
    # `central`: the code location's resources reference NEON_DATABASE_URL when it was set at import
    # (an earlier test may have imported the definitions so); validation resolves that reference
    from pathlib import Path

    import dagster as dg
    import yaml

    example = Path(__file__).resolve().parents[2] / "configs" / "evolution.example.yaml"
    run_config = yaml.safe_load(example.read_text())
    resolved = dg.validate_run_config(_job(), run_config)
    cfg = resolved["ops"]["evolved_strategies"]["config"]
    assert cfg["population_size"] == 40 and cfg["fitness"]["metric"] == "sharpe"
    from qt_pipeline.evolution.config import parse_config

    assert parse_config(cfg).symbols == ("BTCUSD", "ETHUSD")  # and the domain model accepts it as well


def _my_ray_sessions() -> list:
    """Processes of Ray sessions started by this test process (session ids embed the owner's pid)."""
    import os

    import psutil

    from qt_pipeline.evolution.ray_runtime import SESSION_ENV

    prefix = f"qtr{os.getpid()}-"
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(SESSION_ENV, "").startswith(prefix) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.mark.slow
def test_raylet_killed_mid_run_fails_the_run_with_a_one_line_cause_and_leaves_no_ray_process(
    central, monkeypatch
):
    """Real fault: kill -9 of the local raylet while the evolution job evaluates. Ray ends its driver
    process when its raylet dies; the run must still end FAILURE with one line saying so, the evolution
    run must be marked failed with that cause, and no process of the Ray session may remain."""
    monkeypatch.setenv("QT_EVOLUTION_EXECUTOR", "ray")  # small data: the automatic choice would be serial
    import threading
    import time

    import dagster as dg
    import psutil

    settings = central
    write_bars(settings, {"BTCUSD": 4320})
    killed: dict = {}

    def kill_raylet_once_evaluating() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and "pid" not in killed:
            procs = _my_ray_sessions()
            names = {p.pid: p.name() for p in procs if p.is_running()}
            if any(n.startswith("ray::EvalActor") for n in names.values()):
                time.sleep(1.0)  # a few generations committed
                for pid, name in names.items():
                    if name == "raylet":
                        psutil.Process(pid).kill()
                        killed["pid"] = pid
                        return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_raylet_once_evaluating, daemon=True)
    killer.start()
    instance = dg.DagsterInstance.ephemeral()
    result = _job().execute_in_process(
        run_config=_run_config(population_size=10, generations=5000, use_ray=True, run_id="raylet"),
        instance=instance,
        raise_on_error=False,
    )
    killer.join(5)
    assert "pid" in killed, "the raylet of the run's Ray was never found"
    assert not result.success
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
    msg = _failure_message(result)
    assert len(msg.strip().splitlines()) == 1, msg
    assert "the local Ray node died" in msg and "driver process exited" in msg, msg
    from qt_pipeline.evolution.state import state_store_from_settings

    with state_store_from_settings(settings) as state:
        rec = state.get_run("raylet")
        assert rec.status == "failed" and "the local Ray node died" in (rec.error or ""), rec
    assert _my_ray_sessions() == []
