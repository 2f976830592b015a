"""Resume: a run interrupted at any point and started again with the same run id finishes with exactly
the result of an uninterrupted run (population, fitness, metrics, hall of fame, RNG, strategies)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qt_pipeline.evolution.config import parse_config
from qt_pipeline.evolution.ray_eval import SerialEvaluator
from qt_pipeline.evolution.runner import run_evolution
from qt_pipeline.evolution.state import DuckDBStateStore, EvolutionStateStore, PostgresStateStore
from qt_pipeline.storage import get_storage
from qt_pipeline_tests.evolution.evo_helpers import small_config, write_bars, write_yaml


class Interrupted(Exception):
    pass


def assert_same_final_state(state: EvolutionStateStore, run_a: str, run_b: str) -> None:
    a = state.load_checkpoint(run_a).state
    b = state.load_checkpoint(run_b).state
    assert a.generation == b.generation
    for name in ("population", "fitness", "metrics"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    for name in ("genomes", "fitness", "metrics", "generation"):
        assert getattr(a.hall_of_fame, name).tobytes() == getattr(b.hall_of_fame, name).tobytes(), name
    assert a.rng_state == b.rng_state and a.evaluations == b.evaluations
    sa, sb = state.load_strategies(run_a), state.load_strategies(run_b)
    cols = [
        "rank",
        "genome",
        "description",
        "generation",
        "fitness",
        "oos_fitness",
        "is_metrics",
        "oos_metrics",
        "flags",
    ]
    assert sa[cols].to_dict("records") == sb[cols].to_dict("records")
    ga, gb = state.generation_stats(run_a), state.generation_stats(run_b)
    assert ga["best_fitness"].tolist() == gb["best_fitness"].tolist()
    assert ga["mean_fitness"].tolist() == gb["mean_fitness"].tolist()


def test_resume_after_an_error_in_process_equals_uninterrupted(settings, tmp_path):
    write_bars(settings, {"BTCUSD": 4320, "ETHUSD": 4320})
    store = get_storage("local", settings)
    state = DuckDBStateStore(tmp_path / "evo.duckdb")
    base = small_config(symbols=["BTCUSD", "ETHUSD"], generations=6)
    try:
        full = run_evolution(parse_config({**base, "run_id": "full"}), store, state, SerialEvaluator())

        def crash(stats, total):
            if stats.generation == 2:
                raise Interrupted("simulated crash after generation 2 was committed\n  (a multi-line dump)")

        with pytest.raises(Interrupted):
            run_evolution(parse_config({**base, "run_id": "cut"}), store, state, SerialEvaluator(), crash)
        rec = state.get_run("cut")
        assert rec.status == "failed" and rec.last_generation == 2 and "simulated crash" in rec.error
        assert "\n" not in rec.error and "multi-line dump" not in rec.error  # a one-line cause
        assert len(state.load_strategies("cut")) == 0

        resumed = run_evolution(
            parse_config({**base, "run_id": "cut", "resume": True}), store, state, SerialEvaluator()
        )
        assert resumed.resumed_from == 2 and resumed.generations_run == 3
        assert state.get_run("cut").status == "completed"
        assert_same_final_state(state, "full", "cut")
        assert resumed.best_fitness == full.best_fitness

        again = run_evolution(parse_config({**base, "run_id": "cut"}), store, state, SerialEvaluator())
        assert again.generations_run == 0 and again.resumed_from == 5  # completed: nothing re-run
        assert_same_final_state(state, "full", "cut")
    finally:
        state.close()
        store.close()


@pytest.mark.slow
def test_resume_after_sigkill_of_the_cli_process_equals_uninterrupted(settings, pg_schema, tmp_path):
    """`qt evolve` (serial evaluation, to keep the subprocess light: Ray start alone takes 7-14 s) is
    SIGKILLed once a few generations are committed to Postgres; the same command then resumes it."""
    url, schema = pg_schema
    write_bars(settings, {"BTCUSD": 20 * 1440})
    cfg = small_config(end="2024-03-21", folds=3, population_size=40, generations=50)
    cfg_path = write_yaml(tmp_path / "evo.yaml", cfg)
    env = {
        **os.environ,
        "QT_DATA_DIR": str(settings.data_dir),
        "NEON_DATABASE_URL": url,
        "QT_PG_SCHEMA": schema,
        "STORAGE_BACKEND": "local",
    }
    qt = Path(sys.executable).with_name("qt")
    cmd = [str(qt), "evolve", "--config", str(cfg_path), "--run-id", "killed", "--serial"]
    state = PostgresStateStore.from_url(url, schema, settings)
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        killed_at = None
        while time.monotonic() < deadline and proc.poll() is None:
            rec = state.get_run("killed")
            if rec is not None and rec.last_generation is not None and rec.last_generation >= 3:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = rec.last_generation
                break
            time.sleep(0.05)
        proc.wait(timeout=30)
        out = proc.stdout.read().decode(errors="replace")
        assert killed_at is not None, f"the run ended before it could be killed:\n{out}"
        assert proc.returncode == -signal.SIGKILL
        rec = state.get_run("killed")
        assert rec.status == "running" and killed_at <= rec.last_generation < 49, rec
        ck = state.load_checkpoint("killed")
        assert ck.state.generation == rec.last_generation  # record and checkpoint agree (one transaction)
        assert len(state.generation_stats("killed")) == rec.last_generation + 1

        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"resumed after generation {rec.last_generation}" in done.stdout
        assert state.get_run("killed").status == "completed"

        store = get_storage("local", settings)
        try:
            run_evolution(parse_config({**cfg, "run_id": "straight"}), store, state, SerialEvaluator())
        finally:
            store.close()
        assert_same_final_state(state, "straight", "killed")
    finally:
        state.close()
