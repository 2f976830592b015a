"""State stores on both backends: run records, exact checkpoints, atomic commits, strategies."""

from __future__ import annotations

import numpy as np
import pytest

from qt_pipeline.evolution.config import parse_config
from qt_pipeline.evolution.ga import GAState, GenerationStats, HallOfFame
from qt_pipeline.evolution.runner import run_evolution
from qt_pipeline.evolution.state import (
    DuckDBStateStore,
    PostgresStateStore,
    StateStoreError,
    state_store_from_settings,
)
from qt_pipeline.storage import get_storage
from qt_pipeline_tests.evolution.evo_helpers import small_config, write_bars


@pytest.fixture(params=["duckdb", "postgres"])
def state_store(request, tmp_path, settings):
    if request.param == "duckdb":
        store = DuckDBStateStore(tmp_path / "evo.duckdb")
    else:
        url, schema = request.getfixturevalue("pg_schema")
        store = PostgresStateStore.from_url(url, schema, settings)
    yield store
    store.close()


def _state(gen: int, seed: int = 0) -> GAState:
    from qt_pipeline.evolution import N_GENES, repair

    rng = np.random.default_rng(seed)
    pop = repair(rng.random((7, N_GENES)))
    fit = rng.normal(size=7)
    met = rng.normal(size=(7, 9))
    met[0, 3] = np.nan  # non-finite metrics must round-trip bit-exactly too
    met[1, 4] = np.inf
    hof = HallOfFame.empty(N_GENES, 9).update(pop, fit, met, gen, 4)
    return GAState(
        gen,
        pop,
        fit,
        met,
        rng.bit_generator.state,
        hof,
        7 * (gen + 1),
        GenerationStats(gen, float(fit.max()), float(fit.mean()), float(fit.std()), 0.25, 7, 0.5),
    )


def test_run_record_lifecycle(state_store):
    assert state_store.get_run("r1") is None
    rec = state_store.create_run("r1", {"seed": 3, "symbols": ["BTCUSD"]}, "abc", 3)
    assert (rec.status, rec.last_generation, rec.config["symbols"], rec.seed) == (
        "running",
        None,
        ["BTCUSD"],
        3,
    )
    assert state_store.create_run("r1", {"seed": 3}, "abc", 3) == rec  # idempotent retry of the same create
    with pytest.raises(StateStoreError, match="already exists"):
        state_store.create_run("r1", {}, "other-hash", 3)
    state_store.set_status("r1", "failed", "boom at postgresql://u:secret@h/db")
    rec = state_store.get_run("r1")
    assert rec.status == "failed" and rec.finished_at is not None
    assert "secret" not in rec.error and "boom" in rec.error
    state_store.create_run("r2", {}, "def", 1)
    assert {r.run_id for r in state_store.list_runs()} == {"r1", "r2"}


def test_checkpoint_round_trip_is_bit_exact_and_latest_wins(state_store):
    state_store.create_run("r", {}, "h", 0)
    s0, s1 = _state(0, 1), _state(1, 2)
    state_store.commit_generation("r", s0)
    state_store.commit_generation("r", s1)
    state_store.commit_generation("r", s1)  # idempotent re-commit (retry after an unknown outcome)
    ck = state_store.load_checkpoint("r")
    got = ck.state
    assert got.generation == 1
    for name in ("population", "fitness", "metrics"):
        assert getattr(got, name).tobytes() == getattr(s1, name).tobytes(), name
    for name in ("genomes", "fitness", "metrics", "generation"):
        assert getattr(got.hall_of_fame, name).tobytes() == getattr(s1.hall_of_fame, name).tobytes(), name
    assert got.rng_state == s1.rng_state
    rng = np.random.Generator(np.random.PCG64(0))
    rng.bit_generator.state = got.rng_state  # restorable: continues the same stream
    from qt_pipeline.evolution import N_GENES

    ref = np.random.default_rng(2)
    ref.random((7, N_GENES)), ref.normal(size=7), ref.normal(size=(7, 9))
    assert rng.random() == ref.random()
    assert got.evaluations == 14 and got.stats == s1.stats
    assert state_store.load_checkpoint("r", 0).state.population.tobytes() == s0.population.tobytes()
    assert state_store.get_run("r").last_generation == 1
    stats = state_store.generation_stats("r")
    assert list(stats["generation"]) == [0, 1] and stats["diversity"].tolist() == [0.25, 0.25]
    assert state_store.load_checkpoint("other") is None


def test_failed_commit_is_rolled_back_entirely(state_store):
    state_store.create_run("r", {}, "h", 0)
    state_store.commit_generation("r", _state(0))
    # generation 1 for a run that does not exist violates the foreign key: nothing of it may remain
    with pytest.raises(StateStoreError, match="rolled back"):
        state_store.commit_generation("ghost", _state(1))
    assert state_store.table_counts()["evolution_generations"] == 1
    assert state_store.get_run("r").last_generation == 0


def test_strategies_saved_with_metrics_and_flags(state_store):
    state_store.create_run("r", {}, "h", 0)
    rows = [
        {
            "rank": 1,
            "genome": {"a": 1.5},
            "description": "best",
            "generation": 3,
            "fitness": 2.0,
            "oos_fitness": -1.0,
            "is_metrics": {"sharpe": 2.0, "cagr": float("nan")},
            "oos_metrics": {"sharpe": -1.0},
            "flags": "oos_collapse,sign_flip",
        },
        {
            "rank": 2,
            "genome": {"a": 0.5},
            "description": "second",
            "generation": 1,
            "fitness": 1.0,
            "oos_fitness": 0.9,
            "is_metrics": {"sharpe": 1.0},
            "oos_metrics": {"sharpe": 0.9},
            "flags": "",
        },
    ]
    state_store.save_strategies("r", rows)
    state_store.save_strategies("r", rows)  # replaces, no duplicates
    df = state_store.load_strategies("r")
    assert list(df["rank"]) == [1, 2] and df.loc[0, "flags"] == "oos_collapse,sign_flip"
    assert df.loc[0, "is_metrics"] == {"sharpe": 2.0, "cagr": None}
    assert df.loc[0, "genome"] == {"a": 1.5} and df.loc[1, "oos_fitness"] == pytest.approx(0.9)
    assert state_store.get_run("r").status == "completed"


def test_run_checkpoints_hold_what_the_ga_computed(state_store, settings):
    """Every committed generation of a real run holds the population/fitness the GA produced: replaying
    the GA from the checkpoint of generation 1 gives the checkpoint of generation 2 exactly."""
    write_bars(settings, {"BTCUSD": 4320})
    cfg = parse_config(small_config(generations=3, run_id="chk"))
    store = get_storage("local", settings)
    try:
        result = run_evolution(cfg, store, state_store)
    finally:
        store.close()
    c1 = state_store.load_checkpoint("chk", 1).state
    c2 = state_store.load_checkpoint("chk", 2).state
    from qt_pipeline.evolution.ga import GAParams, GeneticAlgorithm
    from qt_pipeline.evolution.ray_eval import SerialEvaluator
    from qt_pipeline.evolution.runner import TRADE_KEY_COLUMN, prepare_data

    store = get_storage("local", settings)
    try:
        data = prepare_data(cfg, store)
    finally:
        store.close()
    ev = SerialEvaluator()
    ev.set_data([data.is_plan], cfg.costs.to_core(), data.periods_per_year)
    fc = cfg.fitness.to_core()
    ga = GeneticAlgorithm(
        GAParams.from_config(cfg), lambda p: data.score(ev.evaluate(p), fc), behaviour_column=TRADE_KEY_COLUMN
    )
    replay = ga.step(c1)
    assert replay.population.tobytes() == c2.population.tobytes()
    assert replay.fitness.tobytes() == c2.fitness.tobytes()
    assert replay.rng_state == c2.rng_state
    assert result.final.population.tobytes() == c2.population.tobytes()
    counts = state_store.table_counts()
    assert counts == {"evolution_runs": 1, "evolution_generations": 3, "evolution_strategies": 5}
    assert len(result.stats) == 3 and result.stats["best_fitness"].is_monotonic_increasing


def test_factory_chooses_duckdb_when_asked_and_postgres_otherwise(settings, pg_schema, monkeypatch):
    local = state_store_from_settings(settings.model_copy(update={"evolution_state": "duckdb"}))
    try:
        assert isinstance(local, DuckDBStateStore) and local.location.endswith("evolution.duckdb")
    finally:
        local.close()
    url, schema = pg_schema
    central_settings = settings.model_copy(
        update={"neon_database_url": __import__("pydantic").SecretStr(url), "pg_schema": schema}
    )
    central = state_store_from_settings(central_settings)
    try:
        assert isinstance(central, PostgresStateStore) and central.schema == schema
        central.create_run("x", {}, "h", 1)
        assert central.get_run("x").run_id == "x"
    finally:
        central.close()


def test_postgres_commit_is_retried_after_a_dropped_connection(settings, pg_schema):
    """A connection killed in the middle of a checkpoint commit (real TCP RST through a proxy) is
    retried as a whole transaction: the checkpoint lands exactly once and bit-exact."""
    from qt_pipeline_tests.faults import TcpProxy

    url, schema = pg_schema
    with TcpProxy("127.0.0.1", 5432) as proxy:
        store = PostgresStateStore.from_url(proxy.url_for(url), schema, settings)
        try:
            store.create_run("r", {}, "h", 0)
            s = _state(0, 3)
            proxy.drop_after_bytes(300)  # the commit sends > 1 kB: it dies mid-transaction
            store.commit_generation("r", s)
            assert proxy.kills >= 1
            got = store.load_checkpoint("r").state
            assert got.population.tobytes() == s.population.tobytes() and got.rng_state == s.rng_state
            assert store.table_counts()["evolution_generations"] == 1
            assert store.get_run("r").last_generation == 0
        finally:
            store.close()
