"""Evolution on a real multi-node Ray cluster started on this machine with the ``ray`` CLI (a head and a
worker node, each ``ray start`` on its own ports and temp dir) and reached by address, as a cloud cluster
is: the bar data is put into the object store once per run and reaches each node once (held by the
evaluation actor there for every generation); a worker node killed (``kill -9`` of its whole process tree)
in the middle of a generation does not change the result."""

from __future__ import annotations

import threading
import time

import pytest

from qt_pipeline.evolution.config import parse_config
from qt_pipeline.evolution.ray_eval import EvaluatorError, RayEvaluator, SerialEvaluator
from qt_pipeline.evolution.runner import run_evolution
from qt_pipeline.evolution.state import DuckDBStateStore
from qt_pipeline.storage import get_storage
from qt_pipeline_tests.evolution.evo_helpers import small_config, write_bars
from qt_pipeline_tests.evolution.test_resume import assert_same_final_state
from qt_pipeline_tests.infra.local_ray_cluster import LocalRayCluster, RayNode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _alive_node_ids(address: str) -> list[str]:
    from ray._raylet import GcsClient

    infos = GcsClient(address=address).get_all_node_info(timeout=10)
    return sorted(i.node_id.hex() for i in infos.values() if i.state == 0)


@pytest.fixture(scope="module")
def cluster():
    with LocalRayCluster(head_cpus=1) as c:
        c.start_head()
        c.add_node(1)
        yield c


def _kill_when_evaluating(node: RayNode, done: dict) -> None:
    """Kill the node's whole process tree as soon as its evaluation actor is inside a generation (or
    after 2 s, so that later generations certainly meet the loss)."""
    import psutil

    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            names = [p.name() for p in psutil.Process(node.proc.pid).children(recursive=True)]
        except psutil.Error:
            return
        if "ray::EvalActor.evaluate" in names:
            node.kill()
            done["at"] = time.monotonic()
            return
        time.sleep(0.002)
    node.kill()
    done["at"] = time.monotonic()


def test_bars_reach_each_node_once_and_a_killed_worker_node_leaves_the_result_unchanged(
    cluster, settings, tmp_path
) -> None:
    write_bars(settings, {"BTCUSD": 4320, "ETHUSD": 4320})
    store = get_storage("local", settings)
    state = DuckDBStateStore(tmp_path / "evo.duckdb")
    base = small_config(symbols=["BTCUSD", "ETHUSD"], generations=4, population_size=24)
    try:
        run_evolution(parse_config({**base, "run_id": "serial"}), store, state, SerialEvaluator())

        # 1. both nodes work; the data went into the object store once and was loaded once per node
        ev = RayEvaluator(cluster.address, num_workers=2)
        try:
            result = run_evolution(parse_config({**base, "run_id": "cluster"}), store, state, ev)
            stats = ev.stats()
        finally:
            ev.close()
        nodes = _alive_node_ids(cluster.address)
        assert len(nodes) == 2 and result.evaluator.startswith(f"ray ({cluster.address}")
        assert stats["puts"] == 1  # one dataset (the walk-forward plan), put once for 4 generations
        assert len(stats["generations"]) == 4 and stats["actors_started"] == 2
        assert sorted(stats["actor_nodes"]) == nodes and set(stats["actor_nodes"].values()) == {1}
        (locations,) = stats["data_locations"].values()
        assert locations == nodes  # one copy per node, shared by every generation's work there
        assert_same_final_state(state, "serial", "cluster")

        # 2. kill -9 of the worker node while it evaluates a generation: the run finishes (its batch is
        # resent to the head's worker) or fails cleanly and resumes — to the same result either way
        worker = cluster.nodes[1]
        killed: dict = {}
        ev = RayEvaluator(cluster.address, num_workers=2)
        try:
            cfg = {**base, "run_id": "killed", "generations": 6}
            run_evolution(parse_config({**base, "run_id": "reference", "generations": 6}), store, state,
                          SerialEvaluator())  # fmt: skip

            killer = threading.Thread(target=_kill_when_evaluating, args=(worker, killed), daemon=True)

            def kill_after_generation_1(stats, total) -> None:
                if stats.generation == 1:  # watch generation 2 and kill the node while it evaluates
                    killer.start()
                elif stats.generation == 2:  # generation 2 was too quick to catch: the kill is certain
                    killer.join()  # before generation 3 (at most 2 s), so the run meets the loss

            try:
                run_evolution(parse_config(cfg), store, state, ev, kill_after_generation_1)
            except EvaluatorError as exc:
                assert "\n" not in str(exc)
                assert state.get_run("killed").status == "failed"
                run_evolution(parse_config({**cfg, "resume": True}), store, state, ev)
            stats = ev.stats()
        finally:
            ev.close()
        assert "at" in killed and worker.proc.poll() is not None
        assert len(_alive_node_ids(cluster.address)) <= 2  # the GCS may take a while to mark it dead
        assert stats["actors_started"] >= 3, stats  # the lost worker was replaced (pending: no free CPU)
        assert state.get_run("killed").status == "completed"
        assert_same_final_state(state, "reference", "killed")
    finally:
        state.close()
        store.close()
