"""The hybrid store against a real PostgreSQL (through a real TCP proxy) and a real DuckDB cache."""

from __future__ import annotations

import pandas as pd

from qt_pipeline.market.contract import BAR_COLUMNS
from qt_pipeline_tests.storage.hybrid.conftest import bars_on, day, same_symbol_days


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True)


def test_writes_land_locally_then_centrally_and_covered_hot_reads_never_touch_postgres(hybrid):
    store = hybrid()
    bars = pd.concat([bars_on(["AAA"], -1, 90, seed=1), bars_on(["AAA"], 0, 90, seed=2)], ignore_index=True)
    res = store.write_bars(bars)
    assert res.rows == 180 and res.details["central"] == "written" and res.backend == "hybrid"
    _frames_equal(hybrid.direct_central().read_bars("AAA"), bars)
    _frames_equal(store.local.read_bars("AAA"), bars)

    lo, hi = day(-1), day(1)
    assert not store.is_covered("AAA", lo, hi)
    _frames_equal(store.read_bars("AAA", lo, hi), bars)  # read-through: whole days fetched and marked
    assert store.is_covered("AAA", lo, hi)
    assert ("AAA", day(0).date()) in store.covered_days("AAA")

    hybrid.proxy.cut()  # any Postgres round trip would now fail and degrade the store
    got = store.read_bars("AAA", lo + pd.Timedelta(minutes=5), hi, limit=10, from_end=True, columns=["close"])
    _frames_equal(got, bars[["close"]].iloc[-10:])
    assert "warning" not in got.attrs
    assert not store.degraded and store.last_read_warning is None


def test_read_through_keeps_hot_and_warm_days_but_not_cold_ones(hybrid):
    store = hybrid()
    central = hybrid.direct_central()
    warm = bars_on(["BBB"], -10, 30, seed=3)  # written by "another machine", straight to Postgres
    cold = bars_on(["BBB"], -40, 30, seed=4)
    central.write_bars(pd.concat([warm, cold], ignore_index=True))

    _frames_equal(store.read_bars("BBB", day(-10), day(-9)), warm)
    assert store.is_covered("BBB", day(-10), day(-9))
    _frames_equal(store.local.read_bars("BBB"), warm)

    _frames_equal(store.read_bars("BBB", day(-40), day(-39)), cold)
    assert not store.is_covered("BBB", day(-40), day(-39))
    assert len(store.local.read_bars("BBB", day(-40), day(-39))) == 0

    # open-ended ranges go to the centre (the cache cannot know what lies beyond what it holds)
    everything = store.read_bars("BBB")
    assert len(everything) == 60 and list(everything.columns) == list(BAR_COLUMNS)


def test_outage_degrades_queues_falls_back_with_warning_and_recovers(hybrid, capsys):
    store = hybrid()
    before = bars_on(["CCC"], -2, 30, seed=5)
    store.write_bars(before)
    store.read_bars("CCC", day(-2), day(-1))  # covered now

    hybrid.proxy.cut()
    during = bars_on(["CCC", "DDD"], -1, 30, seed=6)
    res = store.write_bars(during)  # succeeds locally, queued
    assert res.rows == 60 and res.details["central"] == "queued"
    st = store.state
    assert st.degraded and st.outbox_batches == 1 and st.outbox_rows == 60
    assert "Connection refused" in st.reason or "connect" in st.reason.lower()
    print(
        f"\n[hybrid] outage noticed and switched to local-only in {st.failover_s:.3f} s (proxy cut, refuse)"
    )
    h = store.health()
    assert not h.healthy and h.details["state"]["mode"] == "degraded"

    covered = store.read_bars("CCC", day(-2), day(-1))  # covered: no warning needed
    assert "warning" not in covered.attrs and len(covered) == 30
    fallback = store.read_bars("DDD", day(-1), day(0))  # not covered: the cache answers, with a warning
    assert len(fallback) == 30 and "central store is unavailable" in fallback.attrs["warning"]
    assert store.last_read_warning == fallback.attrs["warning"]
    syms = store.list_symbols()
    assert set(syms["symbol"]) == {"CCC", "DDD"} and "warning" in syms.attrs

    hybrid.proxy.restore()
    h = store.health()  # probes, replays the outbox, healthy again
    assert h.healthy, h.message
    assert store.state.outbox_batches == 0 and not store.degraded
    print(
        f"[hybrid] outbox drained in {store.last_replay.seconds:.3f} s ({store.last_replay.replayed_rows} rows)"
    )
    assert same_symbol_days(hybrid.direct_central().read_range(), store.local.read_range())


def test_writes_keep_order_behind_a_pending_outbox(hybrid):
    store = hybrid()
    first = bars_on(["EEE"], -1, 20, seed=7)
    store.write_bars(first)
    hybrid.proxy.cut()
    newer = first.copy()
    newer["close"] = newer["close"] * 1.01
    newer["high"] = newer[["high", "close"]].max(axis=1)
    newer["vwap"] = newer["vwap"].clip(newer["low"], newer["high"])
    store.write_bars(newer)
    hybrid.proxy.restore()
    newest = newer.copy()
    newest["trade_count"] = newest["trade_count"] + 1
    res = store.write_bars(newest)  # probe due → replays `newer` first, then writes `newest`
    assert res.details["central"] in ("written", "queued")
    store.health()
    _frames_equal(hybrid.direct_central().read_bars("EEE"), newest)
    _frames_equal(store.local.read_bars("EEE"), newest)
