"""Signals layer: bar rollups, the correlation engine and the composite regime engine (no Dagster imports).

* :mod:`~qt_pipeline.signals.rollup` — OHLCV rollups and log returns (same semantics as ``dbt_timescale``);
* :mod:`~qt_pipeline.signals.correlation` — rolling pairwise correlations, correlation regime, breaks;
* :mod:`~qt_pipeline.signals.regime` — composite regime (trend, volatility, correlation, hidden Markov model);
* :mod:`~qt_pipeline.signals.engine` — both engines from any bar store (``compute_signals``);
* :mod:`~qt_pipeline.signals.store` — materialised signals (Parquet per day);
* :mod:`~qt_pipeline.signals.align` — signals aligned to bars without look-ahead (for evolution);
* :mod:`~qt_pipeline.signals.plots` — PNG regime timeline and correlation heat map.
"""

from qt_pipeline.signals.correlation import CorrelationParams, correlation_signals
from qt_pipeline.signals.engine import SignalFrames, SignalParams, compute_signals
from qt_pipeline.signals.regime import REGIME_NAMES, RegimeParams, regimes
from qt_pipeline.signals.rollup import log_returns, rollup_bars

__all__ = [
    "REGIME_NAMES",
    "CorrelationParams",
    "RegimeParams",
    "SignalFrames",
    "SignalParams",
    "compute_signals",
    "correlation_signals",
    "log_returns",
    "regimes",
    "rollup_bars",
]
