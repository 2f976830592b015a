"""RayEvaluator on a real local Ray (num_cpus=2, started once for this module) == SerialEvaluator."""

from __future__ import annotations

import numpy as np
import pytest

from qt_pipeline.evolution import Costs, MarketData, random_population, repair
from qt_pipeline.evolution.config import parse_config
from qt_pipeline.evolution.metrics import METRIC_NAMES
from qt_pipeline.evolution.ray_eval import RayEvaluator, SerialEvaluator
from qt_pipeline.evolution.runner import run_evolution
from qt_pipeline.evolution.state import DuckDBStateStore
from qt_pipeline.storage import get_storage
from qt_pipeline_tests.evolution.evo_helpers import small_config, synthetic_bars, write_bars

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def datasets():
    return [
        MarketData.from_frame(synthetic_bars(s, 3000, seed=i)) for i, s in enumerate(("BTCUSD", "ETHUSD"))
    ]


def test_ray_result_is_bit_identical_to_serial_and_ordered(ray_local, datasets):
    pop = repair(random_population(np.random.default_rng(4), 23))
    serial = SerialEvaluator()
    serial.set_data(datasets, Costs(), 525_960.0)
    expected = serial.evaluate(pop)
    assert expected.shape == (23, 2, len(METRIC_NAMES))

    ev = RayEvaluator(num_workers=2, batch_size=5)
    ev.set_data(datasets, Costs(), 525_960.0)
    refs = list(ev._refs)
    got = ev.evaluate(pop)
    assert got.tobytes() == expected.tobytes()  # bit-identical (NaNs included), order preserved
    # a permuted population gives the permuted rows: results are matched to genomes, not to finish order
    perm = np.random.default_rng(0).permutation(23)
    assert ev.evaluate(pop[perm]).tobytes() == expected[perm].tobytes()
    assert ev._refs == refs  # the bar data went to the object store once, not per evaluation
    auto = RayEvaluator(num_workers=2)  # automatic batch size: one chunk per worker
    auto.set_data(datasets, Costs(), 525_960.0)
    assert auto._chunk(23) == 12
    assert auto.evaluate(pop).tobytes() == expected.tobytes()
    ev.close()
    auto.close()
    assert ray_local.is_initialized()  # Ray started outside the evaluator is left running


def test_full_run_on_ray_equals_serial_run(ray_local, settings, tmp_path):
    write_bars(settings, {"BTCUSD": 4320})
    store = get_storage("local", settings)
    state = DuckDBStateStore(tmp_path / "evo.duckdb")
    try:
        base = small_config(generations=3)
        a = run_evolution(parse_config({**base, "run_id": "serial"}), store, state, SerialEvaluator())
        b = run_evolution(
            parse_config({**base, "run_id": "ray", "use_ray": True}),
            store,
            state,
            RayEvaluator(num_workers=2, batch_size=4),
        )
    finally:
        state.close()
        store.close()
    assert b.evaluator.startswith("ray (local, 2 workers")
    assert a.final.population.tobytes() == b.final.population.tobytes()
    assert a.final.fitness.tobytes() == b.final.fitness.tobytes()
    assert a.hall_of_fame.genomes.tobytes() == b.hall_of_fame.genomes.tobytes()
    assert a.report.table.equals(b.report.table)


def test_a_worker_killed_mid_task_is_retried_and_the_result_is_unchanged(ray_local):
    """Real fault: SIGKILL the Ray worker process while it runs an evaluation task; the task is retried
    (max_retries) and the population result is still bit-identical to the serial one."""
    import os
    import signal
    import threading
    import time

    import psutil

    data = MarketData.from_frame(synthetic_bars("BTCUSD", 300_000, seed=5))
    pop = repair(random_population(np.random.default_rng(8), 60))
    serial = SerialEvaluator()
    serial.set_data([data], Costs(), 525_960.0)
    expected = serial.evaluate(pop)
    ev = RayEvaluator(num_workers=2, batch_size=30, max_retries=3)
    ev.set_data([data], Costs(), 525_960.0)
    ev.evaluate(pop[:2])  # workers warm
    out: dict = {}
    worker = threading.Thread(target=lambda: out.setdefault("result", ev.evaluate(pop)))
    worker.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and worker.is_alive() and time.monotonic() < deadline:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if " ".join(proc.info["cmdline"] or []).startswith("ray::evaluate_chunk"):
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed = proc.info["pid"]
                break
        time.sleep(0.005)
    worker.join(180)
    ev.close()
    assert killed is not None, "no running evaluation task was found to kill"
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    assert out["result"].tobytes() == expected.tobytes()
