"""Serial or Ray: evolution work too small to pay for Ray is evaluated in process, chosen automatically.

Starting Ray and warming its workers (process start, imports, loading the compiled Numba kernels in every
worker) costs tens of seconds on a small machine, while the main job's default evolution is a few
seconds of serial evaluation. :class:`AutoEvaluator` decides when the data is known
(:meth:`AutoEvaluator.set_data`): it estimates the serial evaluation time of the whole run from the
strategy-bars it will evaluate and uses Ray only when the time Ray saves (``workers`` in parallel)
exceeds its start-up cost:

    serial_s = population x bars per evaluation x generations / SERIAL_RATE
    ray pays off  <=>  serial_s x (1 - 1/workers) > RAY_OVERHEAD_S

The choice and its reason are in :meth:`AutoEvaluator.describe` (logged by the runner, stored in the
``evolved_strategies`` metadata as ``evaluator``). ``QT_EVOLUTION_EXECUTOR=ray`` or ``serial`` forces
one (``auto``, the default, decides); ``use_ray: false`` in the config always means serial, and a
configured ``ray_address`` (an existing cluster) always means Ray. Only the local Ray is automatic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EXECUTOR_ENV = "QT_EVOLUTION_EXECUTOR"
EXECUTORS = ("auto", "ray", "serial")
# strategy-bars per second of one core through the fused kernel, conservatively (random genomes on a
# loaded 2-core VM: 40-100 M/s); a slower estimate only makes Ray's use more likely
SERIAL_RATE = 40e6
# Ray start-up plus the first evaluation of every worker (imports, compiled-kernel load) on 2 cores
RAY_OVERHEAD_S = 25.0


@dataclass(frozen=True)
class ExecutorChoice:
    use_ray: bool
    reason: str
    serial_seconds: float  # estimated serial evaluation time of the whole run


def forced_executor() -> str:
    """``QT_EVOLUTION_EXECUTOR`` (auto | ray | serial); a bad value is refused in one line."""
    raw = os.environ.get(EXECUTOR_ENV, "").strip().lower() or "auto"
    if raw not in EXECUTORS:
        raise ValueError(
            f"{EXECUTOR_ENV}={raw!r} is not one of {', '.join(EXECUTORS)}; unset it to decide automatically"
        )
    return raw


def plan_bars(datasets: Sequence[Any]) -> int:
    """Bars one genome is backtested on per evaluation (every segment and symbol of a plan)."""
    from qt_pipeline.evolution.validation import Plan

    total = 0
    for d in datasets:
        if isinstance(d, Plan):
            total += sum(len(x) for seg in d.segments for x in seg.datasets)
        else:
            total += len(d)
    return total


def choose(
    population: int, generations: int, bars: int, workers: int, forced: str = "auto"
) -> ExecutorChoice:
    """Serial or Ray for ``generations`` evaluations of ``population`` genomes on ``bars`` bars each."""
    work = float(population) * float(bars) * max(1, generations)
    serial_s = work / SERIAL_RATE
    saved = serial_s * (1.0 - 1.0 / max(1, workers))
    est = f"{work / 1e6:,.0f} M strategy-bars, ~{serial_s:.1f} s serial"
    if forced == "ray":
        return ExecutorChoice(True, f"ray forced by {EXECUTOR_ENV} ({est})", serial_s)
    if forced == "serial":
        return ExecutorChoice(False, f"serial forced by {EXECUTOR_ENV} ({est})", serial_s)
    if workers > 1 and saved > RAY_OVERHEAD_S:
        return ExecutorChoice(
            True,
            f"auto: {est}; {workers} Ray workers save ~{saved:.0f} s > ~{RAY_OVERHEAD_S:.0f} s start-up",
            serial_s,
        )
    return ExecutorChoice(
        False,
        f"auto: {est}; too small for Ray ({workers} workers would save ~{saved:.1f} s, start-up ~{RAY_OVERHEAD_S:.0f} s)",
        serial_s,
    )


class AutoEvaluator:
    """Serial or Ray evaluator chosen at :meth:`set_data` (see the module docstring). Same interface as
    :class:`~qt_pipeline.evolution.ray_eval.SerialEvaluator`; ``make_ray`` builds the (unstarted) Ray
    evaluator only when Ray is chosen."""

    def __init__(self, make_ray: Callable[[], Any], population: int, generations: int, workers: int):
        from qt_pipeline.evolution.ray_eval import SerialEvaluator

        self._make_ray = make_ray
        self._population = population
        self._generations = generations
        self._workers = workers
        self._forced = forced_executor()
        self._inner: Any = SerialEvaluator()
        self.choice: ExecutorChoice | None = None

    @property
    def name(self) -> str:
        return str(self._inner.name)

    @property
    def startup_seconds(self) -> float:
        return float(getattr(self._inner, "startup_seconds", 0.0))

    def start(self) -> AutoEvaluator:
        return self  # Ray (if chosen) starts in set_data, once the work is known

    def set_data(self, datasets: Sequence[Any], costs: Any, periods_per_year: float) -> None:
        if self.choice is None:
            self.choice = choose(
                self._population, self._generations, plan_bars(datasets), self._workers, self._forced
            )
            if self.choice.use_ray:
                self._inner = self._make_ray()
                self._inner.start()
        self._inner.set_data(datasets, costs, periods_per_year)

    def evaluate(self, pop: np.ndarray) -> np.ndarray:
        return self._inner.evaluate(pop)

    def describe(self) -> str:
        why = f"; {self.choice.reason}" if self.choice is not None else ""
        return f"{self._inner.describe()}{why}"

    def close(self) -> None:
        self._inner.close()


def auto_or_ray(config: Any, ray_evaluator: Any) -> Any:
    """What ``make_evaluator`` returns for a config with ``use_ray``: the Ray evaluator itself when
    ``QT_EVOLUTION_EXECUTOR=ray`` or when it connects to an existing cluster (a ``ray_address``), else an :class:`AutoEvaluator` that uses it only if the work pays."""
    if forced_executor() == "ray" or getattr(ray_evaluator, "address", None):
        return ray_evaluator  # forced, or an existing cluster the config names (probed before any work)
    return AutoEvaluator(
        lambda: ray_evaluator, config.population_size, config.generations, config.num_workers
    )
