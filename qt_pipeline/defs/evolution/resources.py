"""Resources of the evolution domain: ``ray_cluster`` (dagster-ray LocalRay, or an existing cluster by
address) and ``evolution_state`` (where run state is checkpointed)."""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_ray import Lifecycle, LocalRay

from qt_pipeline.defs.resources import env_or as _env_or


class RayClusterResource(LocalRay):
    """dagster-ray's :class:`LocalRay`, extended to connect to an existing cluster when ``address`` (or
    the run config's ``ray_address``, or ``QT_RAY_ADDRESS``) is set — no code change between laptop and
    cluster.

    Configure it with ``lifecycle.connect=False`` (as ``evolution_resources`` does): the evolution asset validates its config first and then calls
    :meth:`connect_for`, so bad input fails before the 7–14 s Ray start. At step end the resource's
    cleanup disconnects (a local Ray started here is shut down).
    """

    address: str | None = None
    num_cpus: int | None = None  # local Ray only; default: the run's num_workers

    @property
    def ray_address(self) -> str | None:  # type: ignore[override]
        return self.address or None

    @property
    def name(self) -> str:
        return f"Ray cluster {self.address}" if self.address else "LocalRay"

    def connect_for(
        self, context: Any, *, address: str | None = None, num_workers: int | None = None
    ) -> None:
        """Start a local Ray / connect to ``address`` (probed first); a no-op if Ray is already up."""
        import ray

        from qt_pipeline.config import get_settings
        from qt_pipeline.evolution.ray_eval import probe_ray_address
        from qt_pipeline.redaction import redact

        if ray.is_initialized():
            context.log.info("Ray is already initialised in this process; using it")
            return
        addr = address or self.address or get_settings().ray_address
        options = dict(self.ray_init_options)
        options.setdefault("ignore_reinit_error", True)
        options.setdefault("logging_level", "WARNING")
        env = self.get_env_vars_to_inject()
        if env:
            options.setdefault("runtime_env", {}).setdefault("env_vars", {}).update(env)
        if addr:
            probe_ray_address(addr)
            context.log.info(f"connecting to the Ray cluster at {redact(addr)}")
            self._context = ray.init(address=addr, **options)
        else:
            options.setdefault("num_cpus", self.num_cpus or num_workers)
            options.setdefault("include_dashboard", False)
            context.log.info(f"starting a local Ray (num_cpus={options['num_cpus']})")
            self._context = ray.init(**options)
        self.on_connect(context)

    def connect(self, context: Any) -> Any:  # type: ignore[override]  # lifecycle.connect=True path
        self.connect_for(context)
        return self._context


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
