"""Freshness of the bars per symbol (plain Python), on the symbol's market calendar.

The daily ingestion takes a closed UTC day at 00:15 UTC of the next day, so the bars of a session trading
on the UTC day ``D`` are due at ``D 00:00 + QT_FRESHNESS_MAX_LAG_H`` (27 h by default: the whole day, the
00:15 start and the run time). The *due session* of a symbol is the last trading span (of its calendar:
``24/7``, ``fx`` or an exchange of exchange_calendars, from :func:`qt_pipeline.market.layout.symbol_profile`)
whose day is past that deadline; the symbol is fresh when its newest bar is at or after that span's open.
A weekend or a holiday is therefore never stale on an exchange calendar (the due session is the last one
before it), while a 24/7 symbol is due every day — for daily 24/7 bars this is exactly "the newest bar is
at most 27 h old"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd

LOOKBACK_DAYS = 31  # the longest market closure searched for a due session (exchange holidays are shorter)


@dataclass(frozen=True)
class SymbolFreshness:
    symbol: str
    last_bar: pd.Timestamp | None
    lag_h: float | None  # age of the newest bar (hours)
    calendar: str = "24/7"
    due_open: pd.Timestamp | None = None  # open of the due session: the newest bar must be at/after it
    error: str = ""  # the calendar could not say (unknown name, day outside the calendar's range)

    @property
    def is_stale(self) -> bool:
        if self.error or self.last_bar is None:
            return True
        return self.due_open is not None and self.last_bar < self.due_open

    def why(self) -> str:
        if self.error:
            return f"{self.symbol} ({self.error})"
        if self.last_bar is None:
            return f"{self.symbol} (no bars)"
        return (
            f"{self.symbol} (newest {self.last_bar.isoformat()}, {self.lag_h:.1f} h old; the {self.calendar} "
            f"session from {self.due_open.isoformat() if self.due_open is not None else '-'} is due)"
        )


@dataclass
class FreshnessResult:
    store: str
    max_lag_h: float
    symbols: list[SymbolFreshness]

    @property
    def stale(self) -> list[SymbolFreshness]:
        return [s for s in self.symbols if s.is_stale]

    @property
    def ok(self) -> bool:
        return not self.stale

    def describe(self) -> str:
        if self.ok:
            return (
                f"every symbol's last due session (its calendar's, due {self.max_lag_h:g} h after its UTC day "
                f"starts) has bars in the {self.store} store"
            )
        return (
            f"stale in the {self.store} store (a session is due {self.max_lag_h:g} h after its UTC day "
            "starts): " + ", ".join(s.why() for s in self.stale)
        )

    def markdown(self) -> str:
        lines = [
            "| symbol | calendar | newest bar | lag (h) | due session from | fresh |",
            "|---|---|---|---|---|---|",
        ]
        for s in self.symbols:
            newest = s.last_bar.isoformat() if s.last_bar is not None else "-"
            lag = f"{s.lag_h:.1f}" if s.lag_h is not None else "-"
            due = s.due_open.isoformat() if s.due_open is not None else (s.error or "-")
            lines.append(
                f"| {s.symbol} | {s.calendar} | {newest} | {lag} | {due} | {'no' if s.is_stale else 'yes'} |"
            )
        return "\n".join(lines)


def due_session_open(calendar, now: pd.Timestamp, max_lag_h: float) -> pd.Timestamp | None:
    """Open of the last trading span of ``calendar`` (a :class:`~qt_pipeline.market.calendars.MarketCalendar`)
    on the latest UTC day whose deadline (day start + ``max_lag_h``) has passed; ``None`` when no such day
    trades within :data:`LOOKBACK_DAYS` (nothing is due)."""
    lag = pd.Timedelta(hours=max_lag_h)
    day: date = (now - lag).date()  # the latest day whose start + lag is not after now
    for back in range(LOOKBACK_DAYS):
        spans = [(a, b) for a, b in calendar.open_intervals(day - timedelta(days=back)) if b > a]
        if spans:
            return spans[-1][0]
    return None


def _profile_calendar(symbol: str, settings) -> str:
    from qt_pipeline.market.layout import symbol_profile

    return symbol_profile(symbol, settings).calendar


def check_freshness(
    summary: pd.DataFrame,
    symbols: Sequence[str],
    max_lag_h: float,
    *,
    store: str,
    now: datetime | None = None,
    settings=None,
    calendar_of: Callable[[str], str] | None = None,
) -> FreshnessResult:
    """``summary``: a store's ``list_symbols()`` (symbol, rows, first_timestamp, last_timestamp). The
    calendar of each symbol comes from ``calendar_of`` (default: its landing source's ``calendar:``, else
    ``QT_MARKET_CALENDAR``, through ``symbol_profile``)."""
    from qt_pipeline.market.calendars import CalendarError, get_calendar

    now_ts = pd.Timestamp(now or datetime.now(UTC))
    if now_ts.tzinfo is None:
        now_ts = now_ts.tz_localize("UTC")
    name_of = calendar_of or (lambda s: _profile_calendar(s, settings))
    last = {str(r.symbol): r.last_timestamp for r in summary.itertuples(index=False)}
    out = []
    for s in symbols:
        ts = last.get(s)
        last_bar = None if ts is None or pd.isna(ts) else pd.Timestamp(ts)
        if last_bar is not None and last_bar.tzinfo is None:
            last_bar = last_bar.tz_localize("UTC")
        lag = None if last_bar is None else (now_ts - last_bar) / timedelta(hours=1)
        cal_name, due, error = "?", None, ""
        try:
            cal = get_calendar(name_of(s))
            cal_name = cal.name
            due = due_session_open(cal, now_ts, max_lag_h)
        except CalendarError as exc:
            error = str(exc)
        out.append(SymbolFreshness(s, last_bar, lag, cal_name, due, error))
    return FreshnessResult(store, max_lag_h, out)


__all__ = ["LOOKBACK_DAYS", "FreshnessResult", "SymbolFreshness", "check_freshness", "due_session_open"]
