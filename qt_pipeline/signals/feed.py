"""The evolution's view of the signals: per bar, the composite regime code and the symbol's correlation.

:class:`SignalFeed` holds the hourly ``regimes`` (codes 0..3, -1 unknown) and ``correlation_symbols``
(the symbol's mean correlation to the others) and aligns them to any bar series without look-ahead
(:func:`~qt_pipeline.signals.align.align_to_bars`: a bar sees only buckets that closed by its own close).
These are the series the genome's ``regime_mask`` and ``correlation_max`` genes filter on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from qt_pipeline.signals.align import align_to_bars
from qt_pipeline.signals.regime import REGIME_NAMES


@dataclass(frozen=True)
class SignalFeed:
    regimes: pd.DataFrame  # bucket, symbol, regime, ...
    correlations: pd.DataFrame  # bucket, symbol, mean_corr
    step: str = "1h"

    @classmethod
    def from_store(
        cls, signal_store, start: pd.Timestamp, end: pd.Timestamp, step: str = "1h"
    ) -> SignalFeed | None:
        """The stored signals overlapping ``[start - 1 step, end)``; None when none were materialised."""
        s = pd.Timestamp(start) - pd.Timedelta(step)
        reg = signal_store.read("regimes", s, end)
        cor = signal_store.read("correlation_symbols", s, end)
        if reg.empty and cor.empty:
            return None
        return cls(reg, cor, step)

    @classmethod
    def from_frames(cls, frames, step: str = "1h") -> SignalFeed:
        """From :class:`~qt_pipeline.signals.engine.SignalFrames` computed in-process."""
        return cls(frames.regimes, frames.symbols, step)

    def for_bars(self, symbol: str, timestamps: pd.Series) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(regime int8 codes, correlation float64)`` aligned to the bars; None for a series the feed has
        no row of for this symbol (the gene then stays inert, and reports say so)."""
        ts = pd.Series(pd.to_datetime(timestamps, utc=True)).reset_index(drop=True)
        reg = self.regimes[self.regimes["symbol"] == symbol] if len(self.regimes) else self.regimes
        cor = (
            self.correlations[self.correlations["symbol"] == symbol]
            if len(self.correlations)
            else self.correlations
        )
        regime = None
        if len(reg) and len(ts) > 1:
            regime = align_to_bars(
                reg["bucket"], reg["regime"].to_numpy(np.int8), ts, self.step, fill=-1
            ).astype(np.int8)
        corr = None
        if len(cor) and len(ts) > 1:
            corr = align_to_bars(cor["bucket"], cor["mean_corr"].to_numpy(np.float64), ts, self.step)
        return regime, corr

    def coverage(self, symbol: str, timestamps: pd.Series) -> dict[str, float]:
        """Share of bars with a known regime / correlation (for logs and reports)."""
        regime, corr = self.for_bars(symbol, timestamps)
        n = max(1, len(timestamps))
        return {
            "regime": float((regime >= 0).sum()) / n if regime is not None else 0.0,
            "correlation": float(np.isfinite(corr).sum()) / n if corr is not None else 0.0,
        }


def describe_filters(regime_mask: int, correlation_max: float) -> str:
    """The genome's filters in words: which regimes a strategy may enter in, and the correlation cap."""
    parts = []
    if regime_mask:
        names = [REGIME_NAMES[k] for k in range(len(REGIME_NAMES)) if regime_mask >> k & 1]
        parts.append(f"enters only in {' / '.join(names)} regime{'s' if len(names) > 1 else ''}")
    if correlation_max > 0:
        parts.append(
            f"enters only while its mean correlation to the other symbols is within ±{correlation_max:.2f}"
        )
    return "; ".join(parts) if parts else "no regime or correlation filter"
