"""Population evaluators: :class:`SerialEvaluator` (in process) and :class:`RayEvaluator` (Ray tasks).

Both return the same thing for the same inputs — metrics of shape ``(n_genomes, n_symbols, n_metrics)``,
bit-identical and in population order — because :func:`qt_pipeline.evolution.backtest.evaluate_population`
is a pure, row-independent function.

Ray use:

* Ray is started (or connected to) once per run in :meth:`RayEvaluator.start`, never per generation. With
  no address it starts a local Ray (``num_cpus=num_workers``, no dashboard); with an address it connects
  to that cluster after a short TCP probe, so an address that does not answer fails *before any work
  starts*. If Ray is already initialised in the process (e.g. by the Dagster ``ray_cluster`` resource) it
  is used as is and left running on :meth:`close`.
* The bar data (one :class:`~qt_pipeline.evolution.backtest.MarketData` per symbol) goes into the object
  store once per run (:meth:`set_data`, ``ray.put``); tasks receive object refs.
* The population is split into chunks of ``batch_size`` genomes (default: one chunk per worker, so genomes of a
  chunk share their indicator series) so task
  overhead stays small; tasks are retried on failure (``max_retries``, ``retry_exceptions=True``).
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from qt_pipeline.redaction import redact


class EvaluatorError(RuntimeError):
    """The evaluator cannot run (e.g. a Ray address that does not answer)."""


def evaluate_chunk(chunk: np.ndarray, costs: Any, periods_per_year: float, *datasets: Any) -> np.ndarray:
    """Metrics ``(len(chunk), len(datasets), n_metrics)`` of ``chunk`` on every dataset (serial); with
    one :class:`~qt_pipeline.evolution.validation.Plan` as the dataset, the plan's rows (portfolio per
    walk-forward group, then per segment and symbol)."""
    from qt_pipeline.evolution.backtest import evaluate_population
    from qt_pipeline.evolution.validation import Plan

    if len(datasets) == 1 and isinstance(datasets[0], Plan):
        return datasets[0].evaluate(chunk, costs)

    return np.stack([evaluate_population(chunk, d, costs, periods_per_year) for d in datasets], axis=1)


class SerialEvaluator:
    """Evaluates in the calling process. Same interface as :class:`RayEvaluator`."""

    name = "serial"

    def __init__(self) -> None:
        self._datasets: tuple[Any, ...] = ()
        self._costs: Any = None
        self._ppy = 0.0
        self.startup_seconds = 0.0

    def start(self) -> SerialEvaluator:
        return self

    def set_data(self, datasets: Sequence[Any], costs: Any, periods_per_year: float) -> None:
        self._datasets, self._costs, self._ppy = tuple(datasets), costs, float(periods_per_year)

    def evaluate(self, pop: np.ndarray) -> np.ndarray:
        if not self._datasets:
            raise EvaluatorError("set_data() must be called before evaluate()")
        return evaluate_chunk(
            np.ascontiguousarray(pop, dtype=np.float64), self._costs, self._ppy, *self._datasets
        )

    def describe(self) -> str:
        return "serial (in process)"

    def close(self) -> None:
        from qt_pipeline.evolution.backtest import release_workspace

        self._datasets = ()
        release_workspace()


def parse_ray_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` to probe for a Ray address, or None for ``auto``/``local`` (nothing to probe).

    Accepts ``ray://host:port`` (Ray client, default port 10001) and ``host:port`` (GCS, default 6379)."""
    a = address.strip()
    if a in ("auto", "local"):
        return None
    if "://" in a:
        u = urlparse(a)
        if not u.hostname:
            raise EvaluatorError(f"Ray address {a!r} has no host; use ray://host:10001 or host:6379")
        return u.hostname, u.port or 10001
    host, _, port = a.rpartition(":")
    if not host:
        return a, 6379
    try:
        return host, int(port)
    except ValueError:
        raise EvaluatorError(
            f"Ray address {a!r} has a bad port {port!r}; use host:6379 or ray://host:10001"
        ) from None


def probe_ray_address(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast with a clear message when nothing listens at ``address``."""
    target = parse_ray_address(address)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise EvaluatorError(
            f"Ray cluster at {redact(address)!r} does not answer (TCP connect to {host}:{port} failed within "
            f"{timeout_s:g} s: {exc.strerror or exc}). Start the cluster or fix ray_address / QT_RAY_ADDRESS; "
            "leave it empty to start a local Ray. Nothing was run or written."
        ) from None


class RayEvaluator:
    """Evaluates batches of genomes as Ray tasks. See the module docstring."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_workers: int = 2,
        batch_size: int | None = None,
        *,
        max_retries: int = 3,
        probe_timeout_s: float = 3.0,
        init_kwargs: dict[str, Any] | None = None,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (automatic), got {batch_size}")
        self.address = address or None
        self.num_workers = num_workers
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.probe_timeout_s = probe_timeout_s
        self.init_kwargs = dict(init_kwargs or {})
        self._owns_ray = False
        self._refs: list[Any] = []
        self._costs: Any = None
        self._ppy = 0.0
        self._remote: Any = None
        self.startup_seconds = 0.0
        self.put_seconds = 0.0

    def start(self) -> RayEvaluator:
        """Probe the address, then start/connect Ray (once). Idempotent."""
        if self._remote is not None:
            return self
        t0 = time.perf_counter()
        if self.address:
            probe_ray_address(self.address, self.probe_timeout_s)
        import ray

        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(
                        address=self.address,
                        ignore_reinit_error=True,
                        logging_level=logging.WARNING,
                        **self.init_kwargs,
                    )
                else:
                    ray.init(
                        num_cpus=self.num_workers,
                        include_dashboard=False,
                        ignore_reinit_error=True,
                        logging_level=logging.WARNING,
                        **self.init_kwargs,
                    )
            except Exception as exc:
                where = f"the Ray cluster at {redact(self.address)!r}" if self.address else "a local Ray"
                raise EvaluatorError(f"cannot start/connect {where}: {redact(exc)}") from None
            self._owns_ray = True
        self._remote = ray.remote(evaluate_chunk).options(
            max_retries=self.max_retries, retry_exceptions=True, num_cpus=1
        )
        self.startup_seconds = time.perf_counter() - t0
        return self

    def set_data(self, datasets: Sequence[Any], costs: Any, periods_per_year: float) -> None:
        """Put the bar data into the object store (once per run)."""
        import ray

        self.start()
        t0 = time.perf_counter()
        self._refs = [ray.put(d) for d in datasets]
        self._costs, self._ppy = costs, float(periods_per_year)
        self.put_seconds = time.perf_counter() - t0

    def _chunk(self, n: int) -> int:
        if self.batch_size:
            return self.batch_size
        # one chunk per worker: genomes of a chunk share indicator series (computed once per chunk),
        # so fewer, larger chunks do less work in total; Ray's task overhead (~ms) is negligible here
        return max(1, math.ceil(n / self.num_workers))

    def evaluate(self, pop: np.ndarray) -> np.ndarray:
        import ray

        if not self._refs:
            raise EvaluatorError("set_data() must be called before evaluate()")
        pop = np.ascontiguousarray(pop, dtype=np.float64)
        size = self._chunk(len(pop))
        futures = [
            self._remote.remote(pop[i : i + size], self._costs, self._ppy, *self._refs)
            for i in range(0, len(pop), size)
        ]
        try:
            parts = ray.get(futures)
        except Exception as exc:
            raise EvaluatorError(
                f"Ray evaluation of {len(pop)} genomes failed after retries: {redact(exc)}"
            ) from None
        return np.concatenate(parts, axis=0)

    def describe(self) -> str:
        where = redact(self.address) if self.address else "local"
        return f"ray ({where}, {self.num_workers} workers, batch {self.batch_size or 'auto'})"

    def close(self) -> None:
        self._refs = []
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False
        self._remote = None


def make_evaluator(config: Any) -> Any:
    """The evaluator an :class:`~qt_pipeline.evolution.config.EvolutionConfig` asks for (not started)."""
    if not config.use_ray:
        return SerialEvaluator()
    from qt_pipeline.config import get_settings
    from qt_pipeline.evolution.executor_choice import auto_or_ray

    address = config.ray_address or get_settings().ray_address
    # serial when the run is too small to pay for Ray's start-up (decided once the data is known)
    return auto_or_ray(config, RayEvaluator(address, config.num_workers, config.batch_size))
