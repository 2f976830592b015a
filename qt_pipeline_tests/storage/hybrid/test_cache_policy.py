"""The hot/warm/cold policy and the warming plan (pure functions)."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from qt_pipeline.storage.cache_policy import CachePolicy, days_in_range, plan_warming

TODAY = date(2026, 3, 10)


def test_tiers_follow_the_configured_windows():
    p = CachePolicy(hot_days=7, warm_days=30)
    assert p.tier(TODAY, TODAY) == "hot"
    assert p.tier(TODAY - timedelta(days=6), TODAY) == "hot"
    assert p.tier(TODAY - timedelta(days=7), TODAY) == "warm"
    assert p.tier(TODAY - timedelta(days=29), TODAY) == "warm"
    assert p.tier(TODAY - timedelta(days=30), TODAY) == "cold"
    assert p.hot_days_list(TODAY)[0] == TODAY - timedelta(days=6)
    assert p.warm_start(TODAY) == TODAY - timedelta(days=29)
    q = CachePolicy(hot_days=2, warm_days=3)
    assert q.tier(TODAY - timedelta(days=2), TODAY) == "warm"
    assert q.tier(TODAY - timedelta(days=3), TODAY) == "cold"


def test_bad_policy_says_how_to_fix():
    with pytest.raises(ValueError, match="QT_WARM_DAYS"):
        CachePolicy(hot_days=10, warm_days=5)
    with pytest.raises(ValueError, match="QT_HOT_DAYS"):
        CachePolicy(hot_days=0, warm_days=5)


def test_days_in_range_is_half_open():
    t = pd.Timestamp("2026-03-01", tz="UTC")
    assert days_in_range(t, t + pd.Timedelta(days=1)) == [date(2026, 3, 1)]
    assert days_in_range(t, t + pd.Timedelta(days=1, microseconds=1)) == [date(2026, 3, 1), date(2026, 3, 2)]
    assert days_in_range(t + pd.Timedelta(hours=23), t + pd.Timedelta(hours=25)) == [
        date(2026, 3, 1),
        date(2026, 3, 2),
    ]
    assert days_in_range(t, t) == []


def _days(rows: list[tuple[str, date, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["symbol", "day", "rows"])


def test_plan_fetches_missing_newer_and_replaced_days_and_evicts_cold():
    p = CachePolicy(hot_days=3, warm_days=5)
    d0, d1, d2 = TODAY - timedelta(days=2), TODAY - timedelta(days=1), TODAY
    old = TODAY - timedelta(days=9)
    central = _days([("A", d0, 10), ("A", d1, 10), ("A", d2, 5), ("B", d2, 3)])
    local = _days([("A", d0, 10), ("A", d1, 12), ("A", d2, 4), ("A", old, 7)])
    covered = {("A", d0), ("A", d1), ("A", d2)}
    plan = plan_warming(
        p,
        today=TODAY,
        symbols=["A", "B"],
        central_days=central,
        local_days=local,
        covered=covered,
        outbox_pending=False,
    )
    actions = {(f.symbol, f.day): f.action for f in plan.fetch}
    assert ("A", d0) not in actions  # equal and covered: nothing to do
    assert actions[("A", d1)] == "replace"  # the cache has rows the centre no longer has
    assert actions[("A", d2)] == "incremental"  # covered, centre has more: only the newer part
    assert actions[("B", d2)] == "full"
    assert actions[("B", d0)] == "mark"  # known empty day
    assert plan.evict == [("A", old, 7)]
    assert plan.rows_to_evict == 7


def test_plan_never_evicts_or_replaces_while_the_outbox_is_pending():
    p = CachePolicy(hot_days=1, warm_days=2)
    old = TODAY - timedelta(days=5)
    plan = plan_warming(
        p,
        today=TODAY,
        symbols=["A"],
        central_days=_days([("A", TODAY, 1)]),
        local_days=_days([("A", TODAY, 3), ("A", old, 9)]),
        covered={("A", TODAY)},
        outbox_pending=True,
    )
    assert plan.fetch == []
    assert plan.evict == []
    assert "outbox" in plan.evict_blocked_reason
