"""Freshness on the symbol's market calendar: over a weekend (and a holiday) an exchange-calendar symbol is
fresh with Friday's bars while a 24/7 symbol with the same bars is stale; the calendar comes from the
settings (QT_MARKET_CALENDAR) through symbol_profile."""

from __future__ import annotations

import pandas as pd

from qt_pipeline.monitoring.freshness import check_freshness


def _summary(last: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": list(last),
            "rows": [1] * len(last),
            "first_timestamp": [pd.Timestamp(v, tz="UTC") for v in last.values()],
            "last_timestamp": [pd.Timestamp(v, tz="UTC") for v in last.values()],
        }
    )


SUNDAY_NOON = pd.Timestamp("2024-01-07 12:00", tz="UTC")  # Friday 2024-01-05 was a trading day in New York
FRIDAY_NYSE_BARS = {"SPY": "2024-01-05 20:55", "QQQ": "2024-01-04 20:55", "BTC": "2024-01-05 20:55"}


def test_exchange_symbol_is_fresh_over_the_weekend_a_24_7_symbol_is_not(settings):
    calendars = {"SPY": "XNYS", "QQQ": "XNYS", "BTC": "24/7"}
    res = check_freshness(
        _summary(FRIDAY_NYSE_BARS),
        list(calendars),
        27,
        store="local",
        now=SUNDAY_NOON,
        calendar_of=calendars.__getitem__,
    )
    by = {s.symbol: s for s in res.symbols}
    # SPY: Friday's session (14:30–21:00 UTC) is the last one due; its bars are 39 h old, still fresh
    assert not by["SPY"].is_stale and by["SPY"].lag_h > 27
    assert by["SPY"].due_open == pd.Timestamp("2024-01-05 14:30", tz="UTC")
    # QQQ lacks Friday's session: stale, and the message names the due session
    assert by["QQQ"].is_stale
    # BTC trades every day: Saturday (due Sunday 03:00) is missing
    assert by["BTC"].is_stale and by["BTC"].due_open == pd.Timestamp("2024-01-06", tz="UTC")
    assert [s.symbol for s in res.stale] == ["QQQ", "BTC"]
    assert "the XNYS session from 2024-01-05T14:30:00+00:00 is due" in res.describe()

    # before Friday's session is due (Saturday 02:00 < Friday 00:00 + 27 h) Thursday's is the due one
    early = check_freshness(
        _summary(FRIDAY_NYSE_BARS),
        ["QQQ"],
        27,
        store="local",
        now=pd.Timestamp("2024-01-06 02:00", tz="UTC"),
        calendar_of=calendars.__getitem__,
    )
    assert early.ok


def test_holiday_is_not_due_and_the_calendar_comes_from_the_settings(settings):
    # Monday 2024-01-15 (Martin Luther King Jr. Day): on Tuesday noon the due XNYS session is Friday's
    tuesday = pd.Timestamp("2024-01-16 12:00", tz="UTC")
    bars = {"SPY": "2024-01-12 15:00"}
    nyse = settings.model_copy(update={"market_calendar": "XNYS"})
    assert check_freshness(_summary(bars), ["SPY"], 27, store="central", now=tuesday, settings=nyse).ok
    always = settings.model_copy(update={"market_calendar": "24/7"})
    res = check_freshness(_summary(bars), ["SPY"], 27, store="central", now=tuesday, settings=always)
    assert not res.ok and res.symbols[0].calendar == "24/7"
    # an unknown calendar is a failed symbol with the calendar's own message, not a crash
    bad = settings.model_copy(update={"market_calendar": "NOPE"})
    res = check_freshness(_summary(bars), ["SPY"], 27, store="central", now=tuesday, settings=bad)
    assert not res.ok and "unknown market calendar 'NOPE'" in res.describe()
