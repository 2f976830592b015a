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
    import os

    import ray

    from qt_pipeline.evolution.ray_runtime import SLOW_MACHINE_ENV, init_local_ray

    for key, value in SLOW_MACHINE_ENV.items():  # the budgets the evaluator gives its own local Ray
        os.environ.setdefault(key, value)
    init_local_ray(2, ignore_reinit_error=True)  # as the evaluator's driver process starts its local Ray
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def datasets():
    return [
        MarketData.from_frame(synthetic_bars(s, 3000, seed=i)) for i, s in enumerate(("BTCUSD", "ETHUSD"))
    ]


def test_a_local_ray_runs_without_the_head_processes_no_run_uses(ray_local):
    """init_local_ray (what an evaluator's driver process runs) starts Ray's node and its log monitor but no
    API server ("dashboard") and no autoscaler monitor: on another Ray version this says they are back."""
    import psutil

    cmdlines = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdlines.append(" ".join(child.cmdline()))
        except psutil.Error:
            continue
    assert any(c.split(" ", 1)[0].endswith("/raylet") for c in cmdlines), cmdlines
    assert any("_private/log_monitor.py" in c for c in cmdlines), cmdlines
    assert not [c for c in cmdlines if "dashboard/dashboard.py" in c or "autoscaler/_private/monitor.py" in c]
    assert ray_local.get(ray_local.remote(lambda: 42).remote()) == 42  # and it runs work


def test_a_local_ray_reports_quietly_and_leaves_the_environment_as_it_was(ray_local, monkeypatch):
    """Ray's observability reporting that no one reads in a run's private Ray (task events off, metrics
    and node stats every minute, the OOM check every second) is in force in its processes, workers
    included, while the calling process's environment is left as it was; a value already set wins."""
    import os

    import psutil

    from qt_pipeline.evolution.ray_runtime import QUIET_LOCAL_ENV, _env_defaults

    def quiet_env() -> dict[str, str | None]:
        return {name: os.environ.get(name) for name in QUIET_LOCAL_ENV}

    assert ray_local.get(ray_local.remote(quiet_env).remote()) == QUIET_LOCAL_ENV  # a worker the raylet started
    raylets = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    assert raylets and all(
        {k: p.environ().get(k) for k in QUIET_LOCAL_ENV} == QUIET_LOCAL_ENV for p in raylets
    )
    assert not set(QUIET_LOCAL_ENV) & set(os.environ)  # this process: as before ray.init
    mine, theirs = "RAY_memory_monitor_refresh_ms", "RAY_task_events_report_interval_ms"
    monkeypatch.setenv(mine, "250")
    with _env_defaults(QUIET_LOCAL_ENV):
        assert os.environ[mine] == "250" and os.environ[theirs] == QUIET_LOCAL_ENV[theirs] == "0"
    assert os.environ[mine] == "250" and theirs not in os.environ


def test_the_bars_reach_the_driver_process_through_a_mapped_file_unchanged(datasets, monkeypatch, tmp_path):
    """set_data hands the bars to the Ray driver process as one file of their raw arrays (not through the
    pipe); what the driver rebuilds is equal to the bit, read-only, and the file is the session's."""
    from qt_pipeline.evolution import ray_runtime as rt

    monkeypatch.setattr(rt, "session_temp_dir", lambda sid: tmp_path / sid)
    path, payload, spans = rt.pack_for_driver((list(datasets), Costs(fee_bps=3.0), 525_960.0), "qtr1-ab")
    assert path.startswith(str(tmp_path / "qtr1-ab")) and len(payload) < 4096  # the arrays are in the file
    assert spans[-1][1] == sum(a.nbytes for d in datasets for a in (d.timestamp, d.open, d.high, d.low,
                                                                    d.close, d.volume))  # fmt: skip
    got, costs, ppy = rt.unpack_in_driver(path, payload, spans)
    assert costs == Costs(fee_bps=3.0) and ppy == 525_960.0
    for a, b in zip(got, datasets, strict=True):
        assert a.symbol == b.symbol and a.close.tobytes() == b.close.tobytes()
        assert a.timestamp.tobytes() == b.timestamp.tobytes() and not a.close.flags.writeable


def test_each_worker_takes_its_own_run_of_chunks_then_steals_from_the_far_end():
    from qt_pipeline.evolution.ray_eval import ChunkQueue

    q = ChunkQueue([range(0, 4), range(4, 9)], ["a", "b"])
    assert len(q) == 9
    # a owns chunks 0-3, b owns 4-8: neighbours in locality order (shared series) stay on one worker
    assert [q.take("a"), q.take("a"), q.take("b"), q.take("a"), q.take("a")] == [0, 1, 4, 2, 3]
    assert q.take("a") == 8  # a is done: it steals from the far end of b's run
    assert q.take("b") == 5
    # b dies holding 5: it is sent again first, and b's unsent run goes to whoever asks
    q.resend([5], "b")
    assert [q.take("c"), q.take("a"), q.take("c"), q.take("a")] == [5, 6, 7, None]
    assert len(q) == 0
    # no actor yet (all replacements pending): every chunk is up for grabs in order
    q = ChunkQueue([range(0, 2), range(2, 3)], [])
    assert [q.take("x"), q.take("y"), q.take("x"), q.take("x")] == [0, 1, 2, None]


def test_chunks_halve_within_each_workers_run_and_cover_every_genome():
    from qt_pipeline.evolution.ray_eval import plan_chunks

    for n, workers, batch in ((200, 2, None), (1000, 3, None), (23, 2, None), (200, 2, 30), (3, 4, None)):
        runs = plan_chunks(n, workers, batch)
        assert len(runs) == workers
        flat = [c for run in runs for c in run]
        assert [i for a, b in flat for i in range(a, b)] == list(range(n))  # contiguous, in order, once
        for run in runs:
            sizes = [b - a for a, b in run]
            if batch:
                assert all(s == batch for s in sizes[:-1]) and 0 < sizes[-1] <= batch
            elif sizes:
                assert sizes == sorted(sizes, reverse=True) and sizes[0] >= sum(sizes) // 2
                assert min(sizes) >= max(1, -(-n // (8 * workers))) // 2
    assert [[b - a for a, b in r] for r in plan_chunks(200, 2, None)] == [[50, 25, 13, 12]] * 2
    # one worker (its threads balance the work inside one call): the whole generation at once
    assert plan_chunks(200, 1, None) == [[(0, 200)]] and plan_chunks(0, 1, None) == [[]]
    assert [[b - a for a, b in r] for r in plan_chunks(70, 1, 30)] == [[30, 30, 10]]


def test_ray_result_is_bit_identical_to_serial_and_ordered(ray_local, datasets):
    pop = repair(random_population(np.random.default_rng(4), 23))
    serial = SerialEvaluator()
    serial.set_data(datasets, Costs(), 525_960.0)
    expected = serial.evaluate(pop)
    assert expected.shape == (23, 2, len(METRIC_NAMES))

    ev = RayEvaluator(num_workers=2, batch_size=5, worker_threads=1)  # a process per CPU (as on a cluster)
    ev.set_data(datasets, Costs(), 525_960.0)
    got = ev.evaluate(pop)
    assert got.tobytes() == expected.tobytes()  # bit-identical (NaNs included), order preserved
    # a permuted population gives the permuted rows: results are matched to genomes, not to finish order
    perm = np.random.default_rng(0).permutation(23)
    assert ev.evaluate(pop[perm]).tobytes() == expected[perm].tobytes()
    stats = ev.stats()
    assert stats["puts"] == 2  # the bar data went to the object store once (per dataset), not per evaluation
    assert stats["actors_started"] == 2 and sum(stats["actor_nodes"].values()) == 2  # loaded once per worker
    assert ev.chunk_sizes(23) == [[5, 5, 1], [5, 5, 2]]
    ev.close()  # its workers hold the 2 CPUs for as long as it is open
    two = RayEvaluator(num_workers=2, worker_threads=1)  # automatic batch size
    assert two.chunk_sizes(23) == [[6, 3, 2], [6, 3, 3]]  # one run per worker, chunks halving in size
    # the default on a local Ray: one worker process running both CPUs as threads, the whole generation
    # in one call (its threads share the work span by span)
    auto = RayEvaluator(num_workers=2)
    auto.set_data(datasets, Costs(), 525_960.0)
    assert auto.chunk_sizes(23) == [[23]]
    assert auto.evaluate(pop).tobytes() == expected.tobytes()
    assert auto.evaluate(pop[perm]).tobytes() == expected[perm].tobytes()
    assert auto.describe() == "ray (local, 2 workers: 1 process x 2 threads, batch auto)"
    stats = auto.stats()
    assert stats["actors_started"] == 1 and sum(stats["actor_nodes"].values()) == 1
    auto.close()
    assert ray_local.is_initialized()  # Ray started outside the evaluator is left running


def test_full_run_on_ray_equals_serial_run(ray_local, settings, tmp_path):
    write_bars(settings, {"BTCUSD": 4320})
    store = get_storage("local", settings)
    state = DuckDBStateStore(tmp_path / "evo.duckdb")
    try:
        base = small_config(generations=3)
        a = run_evolution(parse_config({**base, "run_id": "serial"}), store, state, SerialEvaluator())
        ev = RayEvaluator(num_workers=2, batch_size=4)
        try:
            b = run_evolution(parse_config({**base, "run_id": "ray", "use_ray": True}), store, state, ev)
        finally:
            ev.close()  # run_evolution closes only an evaluator it made itself
    finally:
        state.close()
        store.close()
    assert b.evaluator.startswith("ray (local, 2 workers")
    assert a.final.population.tobytes() == b.final.population.tobytes()
    assert a.final.fitness.tobytes() == b.final.fitness.tobytes()
    assert a.hall_of_fame.genomes.tobytes() == b.hall_of_fame.genomes.tobytes()
    assert a.report.table.equals(b.report.table)


@pytest.mark.parametrize("threads", [None, 1], ids=["one-process-2-threads", "process-per-cpu"])
def test_a_worker_killed_mid_task_is_retried_and_the_result_is_unchanged(ray_local, threads):
    """Real fault: SIGKILL the Ray worker (actor) process while it evaluates; its batches are resent (to the
    other worker, or to the replacement of the only one), the worker is replaced, and the population
    result is still bit-identical to the serial one."""
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
    ev = RayEvaluator(num_workers=2, batch_size=30, max_retries=3, worker_threads=threads)
    ev.set_data([data], Costs(), 525_960.0)
    ev.evaluate(pop[:2])  # workers warm
    out: dict = {}
    worker = threading.Thread(target=lambda: out.setdefault("result", ev.evaluate(pop)))
    worker.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and worker.is_alive() and time.monotonic() < deadline:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if " ".join(proc.info["cmdline"] or []).startswith("ray::EvalActor.evaluate"):
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed = proc.info["pid"]
                break
        time.sleep(0.005)
    worker.join(180)
    ev_stats = ev.stats()
    ev.close()
    assert killed is not None, "no running evaluation task was found to kill"
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    assert out["result"].tobytes() == expected.tobytes()
    assert ev_stats["actors_started"] == (3 if threads == 1 else 2)  # the lost worker was replaced


OWNER_SCRIPT = """
import sys, numpy as np
from qt_pipeline.evolution import Costs, MarketData, random_population, repair
from qt_pipeline.evolution.ray_eval import RayEvaluator
from qt_pipeline_tests.evolution.evo_helpers import synthetic_bars

ev = RayEvaluator(num_workers=2)
ev.set_data([MarketData.from_frame(synthetic_bars("BTCUSD", 3000, seed=1))], Costs(), 525_960.0)
pop = repair(random_population(np.random.default_rng(0), 8))
ev.evaluate(pop)
print(ev.session_id, ev._proc.pid, flush=True)
while True:  # generations until killed
    ev.evaluate(pop)
"""


# one owner process per owner-kill test below: its name -> the test that kills it
OWNERS = {
    "kill_owner": "test_kill_9_of_the_owner_leaves_no_ray_process",
    "kill_both": "test_owner_and_driver_killed_together_are_reaped_by_the_next_start",
}


@pytest.fixture(scope="module")
def owners(request, tmp_path_factory):
    """The owners of the owner-kill tests below (those selected), started together: each start (a local Ray
    and its workers' warm-up, ~20 s) overlaps the other's instead of following it. Each test takes its own
    ``(process, data dir)``; an owner a test did not kill (it failed first) is killed here, and its Ray
    reaped, at the end of the module."""
    from qt_pipeline.evolution.ray_runtime import reap_orphans

    selected = {
        item.name for item in request.session.items if getattr(item, "module", None) is request.module
    }
    wanted = [name for name, test in OWNERS.items() if test in selected]
    started = {name: _launch_owner(tmp_path_factory.mktemp(name)) for name in wanted}
    yield started
    for proc, data_dir in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reap_orphans(data_dir)


def _launch_owner(tmp_path):
    """A real evolution driver (RayEvaluator with its local Ray) in its own process, evaluating in a loop
    (with a fresh data dir under ``tmp_path`` and no QT_ settings of this process); returns
    (process, data dir). :func:`_owner_ready` waits for it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "owner.py"
    script.write_text(OWNER_SCRIPT)
    data_dir = tmp_path / "data"
    clean = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("QT_") or k in {"STORAGE_BACKEND", "NEON_DATABASE_URL", "NEON_API_KEY"})
    }  # as the `settings` fixture leaves the environment
    env = {**clean, "QT_DATA_DIR": str(data_dir), "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    return proc, data_dir


def _owner_ready(proc):
    """Waits until the owner evaluates; returns (session id, pid of its Ray driver process)."""
    line = proc.stdout.readline().split()
    assert len(line) == 2, f"owner did not start (exit {proc.poll()})"
    return line[0], int(line[1])


def _wait_gone(session_id: str, timeout_s: float) -> list:
    import time

    from qt_pipeline.evolution.ray_runtime import session_processes

    deadline = time.monotonic() + timeout_s
    left = session_processes(session_id)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = session_processes(session_id)
    return left


def test_kill_9_of_the_owner_leaves_no_ray_process(owners):
    """Real fault: kill -9 of the process running the evolution (the Dagster step / `qt` process) while
    it evaluates. Its local Ray (driver process, gcs_server, raylet, agents, workers) must go too — Ray's
    own agents outlive a killed driver for minutes, so this fails without the session reaper."""
    import psutil

    from qt_pipeline.evolution.ray_runtime import session_processes

    proc, _ = owners["kill_owner"]
    sid, driver = _owner_ready(proc)
    names = {p.name() for p in session_processes(sid)}
    assert {"raylet", "gcs_server"} <= names and any(n.startswith("ray::EvalActor") for n in names), names
    proc.kill()
    proc.wait()
    left = _wait_gone(sid, 60)
    assert left == [], [(p.pid, p.name()) for p in left]
    assert not psutil.pid_exists(driver) or psutil.Process(driver).status() == psutil.STATUS_ZOMBIE


def test_owner_and_driver_killed_together_are_reaped_by_the_next_start(owners):
    """Both the owner and its Ray driver process die at once (kill -9 of both): Ray's agents linger; the
    next start (``reap_orphans``, also run by every ``qt`` command) finds the recorded session and stops them."""
    import os
    import signal

    from qt_pipeline.evolution.ray_runtime import reap_orphans, session_processes

    proc, data_dir = owners["kill_both"]
    sid, driver = _owner_ready(proc)
    os.kill(driver, signal.SIGKILL)
    proc.kill()
    proc.wait()
    record = data_dir / "ray" / "sessions" / f"{sid}.json"
    assert record.exists()
    assert session_processes(sid)  # Ray's agents outlive their raylet and driver
    assert reap_orphans(data_dir) == [sid]
    assert session_processes(sid) == [] and not record.exists()
