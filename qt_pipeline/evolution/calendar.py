"""Calendar-aware annualisation: how many bars a year holds, inferred from the bars' timestamps.

A Sharpe ratio or CAGR annualised with the wrong number of bars per year is wrong by the square root (or
the power) of the error: daily equity bars annualised as a 24/7 market get 365.25 periods instead of
about 252; US-equity minute bars would overstate Sharpe about 2.3x. The rules (``docs/execution_model.md``
section 6):

* **24/7** (crypto): bars on Saturdays and Sundays (UTC) -> ``365.25 days / median bar spacing``;
* **session market**: no Saturday bars -> ``sessions_per_year x bars_per_session``; bars per session is
  the median number of bars per weekday date (first and last date of the window excluded when they may
  be partial), sessions per year 252 (exchange calendar), 260 when Sunday evenings trade (FX);
* a window shorter than a week without a weekend cannot tell the two apart: weekdays covered around the
  clock are taken as 24/7 and the calendar's ``note`` says so.

``EvolutionConfig.periods_per_year`` overrides the inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NS_PER_DAY = 86_400 * 10**9
DAYS_PER_YEAR = 365.25
EXCHANGE_SESSIONS_PER_YEAR = 252.0
FX_SESSIONS_PER_YEAR = 260.0


@dataclass(frozen=True)
class Calendar:
    """The annualisation of a bar series, with the reasoning in words."""

    periods_per_year: float
    kind: str  # "24/7" | "sessions" | "override"
    sessions_per_year: float
    bars_per_session: float
    note: str = ""  # set when the inference is a guess (too little data)

    def describe(self) -> str:
        if self.kind == "override":
            text = f"{self.periods_per_year:,.6g} bars/year (set in the config)"
        elif self.kind == "24/7":
            text = (
                f"24/7 market: {self.periods_per_year:,.6g} bars/year ({self.bars_per_session:,.6g} per day)"
            )
        else:
            text = (
                f"session market: {self.sessions_per_year:g} sessions/year x {self.bars_per_session:,.6g} "
                f"bars/session = {self.periods_per_year:,.6g} bars/year"
            )
        return f"{text}; {self.note}" if self.note else text


def bar_spacing_ns(timestamp: np.ndarray) -> float:
    """The median spacing of int64-ns ``timestamp`` (ascending): the bar interval, gaps ignored."""
    ts = np.asarray(timestamp, dtype=np.int64)
    if ts.shape[0] < 2:
        raise ValueError("need at least 2 timestamps to infer the bar spacing")
    step = float(np.median(np.diff(ts)))
    if step <= 0:
        raise ValueError("timestamps must be strictly increasing to infer the bar spacing")
    return step


def infer_calendar(timestamp: np.ndarray, override: float | None = None) -> Calendar:
    """The :class:`Calendar` of int64-ns UTC ``timestamp`` (ascending); ``override`` wins if given."""
    if override is not None:
        if not (np.isfinite(override) and override > 0):
            raise ValueError(f"periods_per_year must be a positive number, got {override!r}")
        return Calendar(float(override), "override", float("nan"), float("nan"))
    ts = np.asarray(timestamp, dtype=np.int64)
    step = bar_spacing_ns(ts)
    per_day_24_7 = NS_PER_DAY / step
    day = ts // NS_PER_DAY
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday: Monday = 0 ... Sunday = 6
    dates, counts = np.unique(day, return_counts=True)
    dwk = (dates + 3) % 7
    span_days = (ts[-1] - ts[0]) / NS_PER_DAY
    has_sat = bool((weekday == 5).any())
    has_sun = bool((weekday == 6).any())
    if has_sat and has_sun:
        return Calendar(DAYS_PER_YEAR * per_day_24_7, "24/7", DAYS_PER_YEAR, per_day_24_7)
    # bars per weekday session; the window's first/last date may be cut, drop them when others exist
    wk = counts[dwk < 5]
    inner = counts[1:-1][dwk[1:-1] < 5] if len(dates) > 2 else wk
    per_session = float(np.median(inner if inner.size else wk)) if wk.size else float(counts.max())
    saw_weekend = span_days >= 7 or bool(
        ((dates[0] + np.arange(int(dates[-1] - dates[0]) + 1) + 3) % 7 >= 5).any()
    )
    if not saw_weekend and per_session >= 0.9 * per_day_24_7 and per_day_24_7 > 1.5:
        return Calendar(
            DAYS_PER_YEAR * per_day_24_7, "24/7", DAYS_PER_YEAR, per_day_24_7,
            note="the window holds no weekend, so a 24/7 market was assumed; set periods_per_year if the "
            "market closes",
        )  # fmt: skip
    sessions = FX_SESSIONS_PER_YEAR if has_sun else EXCHANGE_SESSIONS_PER_YEAR
    note = ""
    if not saw_weekend:
        note = "the window holds no weekend, so the market's calendar is a guess; set periods_per_year"
    return Calendar(sessions * per_session, "sessions", sessions, per_session, note)
