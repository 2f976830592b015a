"""The composite regime codes: produced by :mod:`qt_pipeline.signals.regime`, filtered on by the evolution's
``regime_mask`` gene (bit k allows code k) and named in its strategy descriptions. Kept in this neutral
module so neither package imports the other for a constant (``signals.ablation`` imports the evolution)."""

REGIME_NAMES: tuple[str, ...] = ("trend_up", "trend_down", "range", "high_vol")  # codes 0..3

__all__ = ["REGIME_NAMES"]
