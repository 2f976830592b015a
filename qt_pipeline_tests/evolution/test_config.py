"""Bad evolution input → a clear error before any work, nothing written to the state tables."""

from __future__ import annotations

import socket

import pytest

from qt_pipeline.evolution.config import EvolutionConfigError, load_config, parse_config
from qt_pipeline.evolution.ray_eval import EvaluatorError, RayEvaluator, SerialEvaluator, parse_ray_address
from qt_pipeline.evolution.runner import run_evolution
from qt_pipeline.evolution.state import DuckDBStateStore, RunConfigMismatchError, RunNotFoundError
from qt_pipeline.storage import get_storage
from qt_pipeline_tests.evolution.evo_helpers import small_config, write_bars, write_yaml

EMPTY = {"evolution_runs": 0, "evolution_generations": 0, "evolution_strategies": 0}


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"population_size": 1}, ["population_size", "greater than or equal to 2", "got 1"]),
        ({"generations": 0}, ["generations", "greater than or equal to 1"]),
        ({"crossover_prob": 1.5}, ["crossover_prob", "less than or equal to 1", "got 1.5"]),
        ({"mutation_prob": -0.1}, ["mutation_prob", "greater than or equal to 0"]),
        ({"gene_mutation_prob": 2}, ["gene_mutation_prob"]),
        ({"tournament_size": 50}, ["tournament_size (50) cannot exceed population_size (12)"]),
        ({"elite": 12}, ["elite (12) must be smaller than population_size (12)"]),
        ({"end": "2024-02-01"}, ["end (2024-02-01 00:00) must be after start (2024-03-01 00:00)"]),
        ({"end": "2024-03-01"}, ["must be after start"]),
        (
            {"train_end": "2024-03-05"},
            ["train_end (2024-03-05 00:00) must lie strictly between start and end"],
        ),
        (
            {"test_start": "2024-03-02"},
            [
                "test window [2024-03-02 00:00, 2024-03-04 00:00) overlaps the training window",
                "set test_start >= train_end",
            ],
        ),
        ({"symbols": []}, ["symbols", "at least 1"]),
        ({"symbols": ["btc usd"]}, ["malformed symbol(s) ['BTC USD']"]),
        ({"symbols": ["BTCUSD", "btcusd"]}, ["listed more than once"]),
        ({"start": "yesterday-ish"}, ["start", "is not a date/time"]),
        ({"populaton_size": 5}, ["populaton_size", "unknown field", "population_size"]),
        ({"fitness": {"metric": "profit"}}, ["fitness.metric", "'sharpe'"]),
        ({"run_id": "bad id!"}, ["run_id", "should match pattern"]),
        ({"worker_threads": 0}, ["worker_threads", "greater than or equal to 1"]),
        (
            {"train_end": "2024-03-03"},
            ["train_end/test_start set a single split, but folds=2", "set folds: 1"],
        ),
        (
            {"fitness": {"metric": "cagr"}},
            ["'cagr' extrapolates returns to a year", "days < fitness.min_horizon_days=365", "use sharpe"],
        ),
        ({"weights": {"BTCUSD": 1, "ETHUSD": 1}}, ["weights must give every symbol", "unknown ['ETHUSD']"]),
        (
            {"fitness": {"trade_penalty": 1.0}},
            ["fitness.trade_penalty", "unknown field", "min_trades_per_fold"],
        ),
        ({"fitness": {"min_exposure": 0.9, "max_exposure": 0.5}}, ["min_exposure (0.9) must not exceed"]),
        ({"folds": 0}, ["folds", "greater than or equal to 1"]),
    ],
)
def test_invalid_fields_are_reported_precisely(overrides, fragments):
    with pytest.raises(EvolutionConfigError) as err:
        parse_config(small_config(**overrides))
    msg = str(err.value)
    assert msg.startswith("evolution config is invalid")
    for f in fragments:
        assert f in msg, (f, msg)


def test_defaults_and_derived_windows():
    cfg = parse_config(small_config(folds=1, train_fraction=0.5, run_id=None))
    assert cfg.run_id.startswith("evo-")
    assert cfg.train_end_resolved.isoformat() == "2024-03-02T12:00:00+00:00"
    assert cfg.test_start_resolved == cfg.train_end_resolved
    assert cfg.start.tzinfo is not None
    # identity ignores where/how the run is computed, not what it computes
    a = parse_config(small_config(run_id="a", use_ray=True, num_workers=7, worker_threads=7))
    b = parse_config(small_config(run_id="b", use_ray=False, num_workers=1))
    assert a.identity_hash() == b.identity_hash()
    assert a.identity_hash() != parse_config(small_config(seed=99)).identity_hash()


def test_yaml_file_in_plain_and_dagster_shape(tmp_path):
    plain = load_config(write_yaml(tmp_path / "a.yaml", small_config()), seed=5)
    dag = load_config(
        write_yaml(tmp_path / "b.yaml", {"ops": {"evolved_strategies": {"config": small_config()}}})
    )
    assert plain.seed == 5 and dag.seed == 11 and plain.symbols == dag.symbols == ("BTCUSD",)
    with pytest.raises(EvolutionConfigError, match=r"(?s)b2.yaml is invalid .*population_size"):
        load_config(write_yaml(tmp_path / "b2.yaml", small_config(population_size=0)))
    with pytest.raises(EvolutionConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_example_config_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "evolution.example.yaml")
    assert cfg.use_ray and cfg.ray_address is None and cfg.generations >= 1


@pytest.fixture
def env(settings, tmp_path):
    write_bars(settings, {"BTCUSD": 4320})
    store = get_storage("local", settings)
    state = DuckDBStateStore(tmp_path / "evo.duckdb")
    yield store, state
    state.close()
    store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("overrides", "exc", "fragments"),
    [
        (
            {"symbols": ["BTCUSD", "DOGEUSD"]},
            EvolutionConfigError,
            ["symbol(s) ['DOGEUSD'] are not in the bar store", "it holds ['BTCUSD']", "ingest them first"],
        ),
        (
            {"min_bars": 5000},
            EvolutionConfigError,
            [
                "BTCUSD: 1512 bars in in-sample segment 1 [2024-03-01 00:00, 2024-03-02 01:12) after dropping 0, "
                "need at least min_bars=5000"
            ],
        ),
        (
            {"start": "2024-03-10", "end": "2024-03-12", "train_end": None},
            EvolutionConfigError,
            ["BTCUSD: 0 bars in in-sample segment 1", "0 bars in out-of-sample segment 2"],
        ),
        (
            {"resume": True, "run_id": "nope"},
            RunNotFoundError,
            ["cannot resume evolution run 'nope': no such run", "set resume=false"],
        ),
    ],
)
def test_bad_input_against_the_world_writes_nothing(env, overrides, exc, fragments):
    store, state = env
    with pytest.raises(exc) as err:
        run_evolution(parse_config(small_config(**overrides)), store, state, SerialEvaluator())
    for f in fragments:
        assert f in str(err.value), (f, str(err.value))
    assert state.table_counts() == EMPTY


def test_unreachable_ray_address_fails_before_any_work(env):
    store, state = env
    addr = f"ray://127.0.0.1:{_free_port()}"
    cfg = parse_config(small_config(use_ray=True, ray_address=addr))
    with pytest.raises(EvaluatorError) as err:
        run_evolution(cfg, store, state)  # evaluator from the config: a RayEvaluator on that address
    msg = str(err.value)
    assert f"Ray cluster at '{addr}' does not answer" in msg and "QT_RAY_ADDRESS" in msg
    assert state.table_counts() == EMPTY
    import ray

    assert not ray.is_initialized()  # nothing was started
    assert parse_ray_address("10.0.0.5") == ("10.0.0.5", 6379)
    assert parse_ray_address("ray://head") == ("head", 10001)
    assert parse_ray_address("auto") is None
    with pytest.raises(EvaluatorError, match="bad port"):
        RayEvaluator("host:abc").start()


def test_existing_run_id_with_a_different_config_is_refused(env):
    store, state = env
    run_evolution(parse_config(small_config(run_id="same", generations=2)), store, state, SerialEvaluator())
    before = state.table_counts()
    with pytest.raises(RunConfigMismatchError) as err:
        run_evolution(
            parse_config(small_config(run_id="same", generations=2, seed=12)), store, state, SerialEvaluator()
        )
    assert "seed: stored 11 != given 12" in str(err.value) and "Use a new run_id" in str(err.value)
    assert state.table_counts() == before
    assert state.get_run("same").status == "completed"


def test_resume_after_the_genome_layout_changed_is_refused(env):
    store, state = env
    run_evolution(parse_config(small_config(run_id="old", generations=2)), store, state, SerialEvaluator())
    rec = state.get_run("old")
    assert len(rec.config["_genome_layout"]) == 16
    # simulate a run started by a code version with another genome layout (real SQL on the real table)
    state._con.execute(
        "UPDATE evolution_runs SET config = ? WHERE run_id = 'old'",
        [__import__("json").dumps({**rec.config, "_genome_layout": "0123456789abcdef"})],
    )
    with pytest.raises(RunConfigMismatchError, match="another genome layout .*Start a new run_id"):
        run_evolution(
            parse_config(small_config(run_id="old", generations=2)), store, state, SerialEvaluator()
        )
