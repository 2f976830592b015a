"""Cache warming: pulls only the missing/newer hot window, replaces days the centre changed, evicts cold."""

from __future__ import annotations

import pandas as pd
import pytest

from qt_pipeline.storage.interface import StorageUnavailableError
from qt_pipeline_tests.storage.hybrid.conftest import NOW, bars_on, day


def _local_equals_central(store, central, symbol, lo, hi) -> None:
    pd.testing.assert_frame_equal(
        store.local.read_bars(symbol, lo, hi), central.read_bars(symbol, lo, hi), check_exact=True
    )


def test_warming_pulls_missing_then_only_newer_and_evicts_cold(hybrid):
    store = hybrid()
    central = hybrid.direct_central()
    hot = pd.concat([bars_on(["WWW"], d, 100, seed=40 + d) for d in (-2, -1, 0)], ignore_index=True)
    central.write_bars(hot)
    cold = bars_on(["WWW"], -45, 50, seed=1)
    store.local.write_bars(cold)  # left in the cache from long ago

    r1 = store.warm_cache(["WWW"])
    assert r1.rows_pulled == 300 and r1.days_fetched == 3
    assert r1.rows_evicted == 50 and len(store.local.read_bars("WWW", day(-45), day(-44))) == 0
    assert store.is_covered("WWW", day(-6), day(1))  # all 7 hot days, empty ones included
    _local_equals_central(store, central, "WWW", day(-6), day(1))
    cov = r1.coverage[0]
    assert cov.hot_days_covered == 7 and cov.cached_rows == 300
    assert cov.freshness_lag_s == (NOW - hot["timestamp"].max()).total_seconds()
    assert "| WWW | 7/7 |" in r1.coverage_markdown()

    r2 = store.warm_cache(["WWW"])  # nothing changed: nothing pulled
    assert r2.rows_pulled == 0 and r2.days_fetched == 0

    newer = bars_on(["WWW"], 0, 20, seed=9).assign(timestamp=lambda f: f["timestamp"] + pd.Timedelta(hours=5))
    central.write_bars(newer)  # another machine appends to today
    central.delete_range("WWW", day(-2), day(-2) + pd.Timedelta(minutes=10))  # and removes rows centrally
    r3 = store.warm_cache(["WWW"])
    assert r3.rows_pulled == 20 + 90  # only the newer part of today + the replaced day -2
    _local_equals_central(store, central, "WWW", day(-6), day(1))


def test_warming_does_not_evict_while_the_outbox_is_pending(hybrid):
    store = hybrid()
    store.local.write_bars(bars_on(["VVV"], -45, 10, seed=2))
    store.outbox.append(bars_on(["VVV"], -45, 10, seed=2))  # pending for the centre
    hybrid.proxy.cut()
    with pytest.raises(StorageUnavailableError, match="cannot warm"):
        store.warm_cache(["VVV"])
    hybrid.proxy.restore()
    r = store.warm_cache(["VVV"])  # replays first, then warms and evicts
    assert r.evict_blocked_reason is None and r.rows_evicted == 10
    assert len(hybrid.direct_central().read_bars("VVV")) == 10
