"""Strategy evolution: genome, indicators, fused backtester, metrics, fitness (plain Python/NumPy/Numba;
no Dagster). The GA loop, Ray evaluator and state store build on this API.

The names below are re-exported lazily (PEP 562): importing a submodule such as
``qt_pipeline.evolution.config`` does not import Numba or compile anything.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "Costs",
            "MarketData",
            "SimResult",
            "evaluate_population",
            "evaluate_strategies",
            "infer_periods_per_year",
            "simulate",
        ),
        "backtest",
    ),  # fmt: skip
    **dict.fromkeys(("FITNESS_FLOOR", "FitnessConfig", "fitness"), "fitness"),
    **dict.fromkeys(
        (
            "GENES",
            "LOWER",
            "N_GENES",
            "UPPER",
            "Gene",
            "Rule",
            "Strategy",
            "always_long",
            "decode",
            "decode_population",
            "genome_from_dict",
            "genome_to_dict",
            "make_rule",
            "random_population",
            "repair",
        ),
        "genome",
    ),  # fmt: skip
    **dict.fromkeys(("METRIC_NAMES", "compute_metrics", "metrics_to_dict"), "metrics"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'qt_pipeline.evolution' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"qt_pipeline.evolution.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
