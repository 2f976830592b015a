"""Market calendars: which UTC days must have bars, how many, and where a date-only bar opens.

A source declares its calendar by name (landing config ``calendar:``, ``QT_MARKET_CALENDAR``):

* ``24/7`` — always open (crypto): every UTC day is a trading day with ``1 day / interval`` bars;
* ``fx`` — the FX week: open from Sunday 17:00 to Friday 17:00 New York time (the usual retail FX
  convention, so 22:00 UTC in winter and 21:00 UTC in summer), closed on Saturdays;
* an exchange code of `exchange_calendars <https://github.com/gerrymanoim/exchange_calendars>`_
  (``XNYS``, ``XNAS``, ``XLON``, ``XETR``, ``XTKS``…) — sessions, holidays, early closes and session open
  times maintained by that library.

:meth:`MarketCalendar.expected_bars` is what the bar-quality check uses: 0 on a weekend/holiday (an empty
partition is then not a failure) and the number of bars the open hours hold on a trading day (a missing
trading day is a failure). :meth:`MarketCalendar.anchor_dates` places a date-only bar (a daily export's
``Date`` column) at its session open in UTC — for an exchange calendar the real open (09:30 New York =
14:30 UTC in winter), else midnight in the source's time zone.
"""

from __future__ import annotations

import abc
import functools
import warnings
from datetime import date, timedelta

import numpy as np
import pandas as pd

ALWAYS_OPEN = "24/7"
FX_WEEK = "fx"
_ALIASES = {"24/7": ALWAYS_OPEN, "24x7": ALWAYS_OPEN, "always": ALWAYS_OPEN, "crypto": ALWAYS_OPEN}
_ALIASES |= {"fx": FX_WEEK, "forex": FX_WEEK, "fx_week": FX_WEEK}


class CalendarError(ValueError):
    """An unknown calendar name (the message lists what is accepted)."""


class MarketCalendar(abc.ABC):
    name: str

    @abc.abstractmethod
    def open_intervals(self, day: date) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """The UTC ``[open, close)`` spans of trading that fall inside the UTC day ``day``."""

    def is_trading_day(self, day: date) -> bool:
        return any(b > a for a, b in self.open_intervals(day))

    def expected_bars(self, day: date, interval: timedelta | pd.Timedelta | str) -> int:
        """How many bars of ``interval`` the open hours of the UTC day ``day`` hold (0 when closed); a
        bar interval of a day or more counts one bar per trading day."""
        step = pd.Timedelta(interval)
        spans = self.open_intervals(day)
        if not any(b > a for a, b in spans):
            return 0
        if step >= pd.Timedelta(days=1):
            return 1
        return int(sum(-(-(b - a) // step) for a, b in spans if b > a))

    def anchor_dates(self, days: np.ndarray, timezone: str | None) -> tuple[np.ndarray, np.ndarray]:
        """``(utc_microseconds, ok)`` for date-only bars: midnight of each date in ``timezone`` (UTC when
        None). ``days`` is ``datetime64[D]``."""
        local = pd.DatetimeIndex(np.asarray(days, dtype="datetime64[us]"))
        utc = local.tz_localize(timezone or "UTC", ambiguous="NaT", nonexistent="NaT").tz_convert("UTC")
        ok = ~utc.isna()
        return np.asarray(utc.asi8, dtype=np.int64), np.asarray(ok)

    def describe_anchor(self, timezone: str | None) -> str:
        return f"midnight {timezone or 'UTC'}"


class AlwaysOpen(MarketCalendar):
    name = ALWAYS_OPEN

    def open_intervals(self, day: date) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        start = pd.Timestamp(day, tz="UTC")
        return [(start, start + pd.Timedelta(days=1))]


class FXWeek(MarketCalendar):
    """Sunday 17:00 → Friday 17:00 America/New_York (no holidays: FX trades through them)."""

    name = FX_WEEK
    zone = "America/New_York"

    def open_intervals(self, day: date) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        start = pd.Timestamp(day, tz="UTC")
        end = start + pd.Timedelta(days=1)
        out = []
        # the weeks that may overlap this UTC day open on the Sunday on/before it, or the one before
        sunday = day - timedelta(days=(day.weekday() + 1) % 7)
        for back in (0, 7):
            local = pd.Timestamp(sunday - timedelta(days=back))
            opens = (local + pd.Timedelta(hours=17)).tz_localize(self.zone).tz_convert("UTC")
            closes = (local + pd.Timedelta(days=5, hours=17)).tz_localize(self.zone).tz_convert("UTC")
            a, b = max(opens, start), min(closes, end)
            if b > a:
                out.append((a, b))
        return sorted(out)


class ExchangeCalendar(MarketCalendar):
    """A calendar of the ``exchange_calendars`` library (holidays and early closes included)."""

    def __init__(self, code: str):
        self.name = code
        self._cal = _exchange_calendar(code)

    def _sessions_touching(self, day: date) -> pd.DataFrame:
        sched = self._cal.schedule
        start = pd.Timestamp(day, tz="UTC")
        end = start + pd.Timedelta(days=1)
        opens, closes = sched["open"], sched["close"]
        return sched[(opens < end) & (closes > start)]

    def open_intervals(self, day: date) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        start = pd.Timestamp(day, tz="UTC")
        end = start + pd.Timedelta(days=1)
        self._check_range(day)
        out = []
        for rec in self._sessions_touching(day).itertuples(index=False):
            a, b = max(rec.open, start), min(rec.close, end)
            if b > a:
                out.append((a, b))
        return out

    def _check_range(self, day: date) -> None:
        first, last = self._cal.first_session.date(), self._cal.last_session.date()
        if not first - timedelta(days=1) <= day <= last + timedelta(days=1):
            raise CalendarError(
                f"{day} is outside the {self.name} calendar ({first}..{last}); upgrade exchange_calendars "
                "or use calendar '24/7'"
            )

    def anchor_dates(self, days: np.ndarray, timezone: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Each date's session open (UTC); dates that are not sessions are not ok."""
        sched = self._cal.schedule
        idx = pd.DatetimeIndex(np.asarray(days, dtype="datetime64[ns]"))
        opens = sched["open"].reindex(idx)
        ok = opens.notna().to_numpy()
        us = np.zeros(len(idx), dtype=np.int64)
        if ok.any():
            us[ok] = opens[ok].dt.tz_convert("UTC").astype("datetime64[us, UTC]").array.asi8
        return us, ok

    def describe_anchor(self, timezone: str | None) -> str:
        return f"the {self.name} session open"


@functools.lru_cache(maxsize=16)
def _exchange_calendar(code: str):
    import exchange_calendars as xcals

    try:
        with warnings.catch_warnings():
            # exchange_calendars 4.13 uses Series.values on tz-aware data, deprecated by pandas 3.1
            warnings.simplefilter("ignore")
            return xcals.get_calendar(code, start="2000-01-01")
    except xcals.errors.InvalidCalendarName:
        raise CalendarError(
            f"unknown market calendar {code!r}; use '24/7', 'fx' or an exchange code of exchange_calendars "
            "such as XNYS, XNAS, XLON, XETR, XTKS"
        ) from None


@functools.lru_cache(maxsize=32)
def get_calendar(name: str | None) -> MarketCalendar:
    """The calendar called ``name`` (``24/7`` when None/empty)."""
    key = (name or ALWAYS_OPEN).strip()
    alias = _ALIASES.get(key.lower())
    if alias == ALWAYS_OPEN:
        return AlwaysOpen()
    if alias == FX_WEEK:
        return FXWeek()
    return ExchangeCalendar(key.upper())


__all__ = [
    "ALWAYS_OPEN",
    "FX_WEEK",
    "AlwaysOpen",
    "CalendarError",
    "ExchangeCalendar",
    "FXWeek",
    "MarketCalendar",
    "get_calendar",
]
