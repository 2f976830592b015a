"""Serial or Ray chosen from the work a run will do; the choice is reported and can be forced."""

from __future__ import annotations

import numpy as np
import pytest

from qt_pipeline.evolution import Costs, random_population, repair
from qt_pipeline.evolution import executor_choice as ec
from qt_pipeline.evolution.backtest import evaluate_population
from qt_pipeline.evolution.config import parse_config

from . import MINUTES_PER_YEAR, synthetic_market
from .evo_helpers import small_config


def test_small_work_is_serial_and_large_work_uses_ray():
    small = ec.choose(population=40, generations=8, bars=120_000, workers=2)
    assert not small.use_ray and "too small for Ray" in small.reason
    big = ec.choose(population=1000, generations=100, bars=20_000_000, workers=2)
    assert big.use_ray and "2 Ray workers save" in big.reason
    # one worker never pays for Ray
    assert not ec.choose(population=1000, generations=100, bars=20_000_000, workers=1).use_ray
    assert ec.choose(1, 1, 10, 2, forced="ray").use_ray
    assert not ec.choose(1000, 100, 20_000_000, 2, forced="serial").use_ray


class _NeverStarted:
    def start(self):  # pragma: no cover - the test fails if Ray is started for tiny work
        raise AssertionError("Ray must not start for a tiny run")


def test_auto_evaluator_evaluates_serially_and_says_why(monkeypatch):
    monkeypatch.delenv(ec.EXECUTOR_ENV, raising=False)
    data = synthetic_market(3000, seed=2)
    pop = repair(random_population(np.random.default_rng(3), 12))
    auto = ec.AutoEvaluator(_NeverStarted, population=12, generations=3, workers=2)
    auto.start()
    auto.set_data([data], Costs(), MINUTES_PER_YEAR)
    got = auto.evaluate(pop)
    want = evaluate_population(pop, data, Costs(), MINUTES_PER_YEAR)
    assert got[:, 0].tobytes() == want.tobytes()
    assert auto.name == "serial" and auto.describe().startswith("serial (in process); auto: ")
    assert "too small for Ray" in auto.describe()
    auto.close()


def test_make_evaluator_is_automatic_unless_forced(monkeypatch):
    from qt_pipeline.evolution.ray_eval import RayEvaluator, SerialEvaluator, make_evaluator

    cfg = parse_config({**small_config(), "use_ray": True})
    monkeypatch.delenv(ec.EXECUTOR_ENV, raising=False)
    assert isinstance(make_evaluator(cfg), ec.AutoEvaluator)
    monkeypatch.setenv(ec.EXECUTOR_ENV, "ray")
    assert isinstance(make_evaluator(cfg), RayEvaluator)
    assert isinstance(make_evaluator(parse_config({**small_config(), "use_ray": False})), SerialEvaluator)
    monkeypatch.setenv(ec.EXECUTOR_ENV, "fast")
    with pytest.raises(ValueError, match="QT_EVOLUTION_EXECUTOR='fast' is not one of auto, ray, serial"):
        make_evaluator(cfg)
