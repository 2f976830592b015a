"""Resources of the evolution domain: ``ray_cluster`` (dagster-ray LocalRay, or an existing cluster by
address) and ``evolution_state`` (where run state is checkpointed)."""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_ray import Lifecycle, LocalRay

from qt_pipeline.defs.resources import env_or as _env_or


class RayClusterResource(LocalRay):
    """Where evolution runs on Ray: an existing cluster by ``address`` (or the run config's
    ``ray_address``, or ``QT_RAY_ADDRESS``), else a local Ray started for the run.

    The evolution asset does not connect this process to Ray: its evaluator
    (:class:`qt_pipeline.evolution.ray_eval.RayEvaluator`) runs the Ray driver in a child process it owns,
    so a dead Ray (raylet killed, node lost) fails the step with a one-line cause instead of ending the step
    process, and a killed step process takes its local Ray down with it
    (:mod:`qt_pipeline.evolution.ray_runtime`). Configured with ``lifecycle.connect=False``; with
    ``connect=True`` dagster-ray's LocalRay initialises Ray in this process and the evaluator uses it as is.
    """

    address: str | None = None
    num_cpus: int | None = None  # lifecycle.connect=True only (dagster-ray's local ray.init)

    @property
    def ray_address(self) -> str | None:  # type: ignore[override]
        return self.address or None

    @property
    def name(self) -> str:
        return f"Ray cluster {self.address}" if self.address else "LocalRay"


class EvolutionStateResource(dg.ConfigurableResource):
    """Where evolution runs are checkpointed. ``backend`` ``central`` (default, ``QT_EVOLUTION_STATE``):
    the tables of the central store in use (``central_store``: Neon/PostgreSQL, or the embedded server),
    the same store ``qt run``, ``qt evolve`` and ``qt evolution runs`` use; ``duckdb``:
    ``QT_DATA_DIR/evolution.duckdb``."""

    backend: str | None = None  # None = QT_EVOLUTION_STATE

    def resolved_backend(self) -> str:
        from qt_pipeline.config import get_settings

        backend = self.backend or get_settings().evolution_state
        if backend in ("central", "postgres"):
            return "central"
        if backend == "duckdb":
            return "duckdb"
        raise dg.Failure(f"evolution_state.backend must be central or duckdb, got {backend!r}")

    def get_state_store(self, central_store: Any) -> Any:
        """The state store; ``central_store`` (a CentralStoreResource) owns the engine it uses."""
        from pathlib import Path

        from qt_pipeline.config import get_settings
        from qt_pipeline.evolution.state import DuckDBStateStore, PostgresStateStore

        if self.resolved_backend() == "duckdb":
            return DuckDBStateStore(Path(get_settings().data_dir) / "evolution.duckdb")
        return PostgresStateStore(central_store.get_store())  # the resource closes the store


evolution_resources = {
    # connect=False: the asset validates its input first, then connects (see RayClusterResource)
    "ray_cluster": RayClusterResource(lifecycle=Lifecycle(connect=False)),
    "evolution_state": EvolutionStateResource(backend=_env_or("QT_EVOLUTION_STATE", None)),
}
