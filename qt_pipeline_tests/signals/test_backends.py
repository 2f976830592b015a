"""Zero-change across backends: the engines read through the storage interface and give identical output
with STORAGE_BACKEND=local, sharedfs, neon and hybrid (each is compared with the same in-memory reference)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from qt_pipeline.market.sources.synthetic import SyntheticMarket
from qt_pipeline.signals.engine import SignalParams, compute_signals
from qt_pipeline.signals.regime import RegimeParams
from qt_pipeline.storage.interface import DataStorageInterface
from qt_pipeline_tests.storage.backends import BACKENDS

PARAMS = SignalParams(
    regime=RegimeParams(min_train_hours=48, train_hours=96, refit_hours=24, burn_in_hours=12)
)
START, END = pd.Timestamp("2024-01-04", tz="UTC"), pd.Timestamp("2024-01-06", tz="UTC")


class FrameStore:
    """The reference: bars held in memory, read with the interface's default ``read_range``."""

    location = "memory"

    def __init__(self, bars: pd.DataFrame):
        self.bars = bars

    def read_range(self, symbols, start, end):
        b = self.bars
        sel = b["symbol"].isin(symbols) & (b["timestamp"] >= start) & (b["timestamp"] < end)
        return b[sel].sort_values(["symbol", "timestamp"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    m = SyntheticMarket(21, interval="5min")
    return pd.concat([m.bars(s, "2024-01-01", "2024-01-06") for s in m.symbols()], ignore_index=True)


@pytest.fixture(scope="module")
def reference(bars):
    return compute_signals(FrameStore(bars), ["BTCUSD", "ETHUSD", "SOLUSD"], START, END, PARAMS)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_engines_give_identical_output_on_every_backend(backend, bars, reference, request, tmp_path: Path):
    store: DataStorageInterface = BACKENDS[backend](request, tmp_path)
    try:
        store.write_bars(bars)
        got = compute_signals(store, ["BTCUSD", "ETHUSD", "SOLUSD"], START, END, PARAMS)
    finally:
        store.close()
    assert (reference.regimes["regime"] >= 0).sum() > 50  # the comparison covers real labels
    for name in ("rollup", "market", "pairs", "symbols", "regimes"):
        pd.testing.assert_frame_equal(
            getattr(got, name), getattr(reference, name), check_exact=True, obj=name
        )
