"""Hot / warm / cold age policy of the hybrid cache, and the warming plan (pure Python, no I/O).

A UTC day's *age* is ``today - day`` in whole days (today has age 0).

* **hot**  — ``age < hot_days`` (default 7): the warming schedule keeps these days complete in the local
  cache (pulls what is missing or newer from the central store).
* **warm** — ``hot_days <= age < warm_days`` (default 30): kept if already cached (read-through fills are
  kept), never pulled by warming.
* **cold** — ``age >= warm_days``: served from the central store; evicted from the cache by warming and
  not kept by read-through.

The warming plan compares the central store's per symbol-day row counts (``symbol_days``) with the
cache's and with the cache's coverage (the symbol-days it knows it holds completely):

* day absent in the cache but present centrally, or not marked covered → fetch the whole day;
* the cache has fewer rows than the centre on a covered day → fetch only what is newer than the cache's
  newest bar of that day (``incremental``); the result is re-checked and a full day fetched if it still
  differs;
* the cache has *more* rows than the centre (the centre replaced/deleted rows) and nothing is pending in
  the outbox → replace the day from the centre;
* counts equal and covered → nothing to do (a value changed in place with the same keys is not detected
  by counts; the consistency check of the central domain compares checksums).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

import pandas as pd

Tier = Literal["hot", "warm", "cold"]


@dataclass(frozen=True)
class CachePolicy:
    hot_days: int = 7
    warm_days: int = 30

    def __post_init__(self) -> None:
        if self.hot_days < 1:
            raise ValueError(f"QT_HOT_DAYS must be >= 1, got {self.hot_days}")
        if self.warm_days < self.hot_days:
            raise ValueError(
                f"QT_WARM_DAYS ({self.warm_days}) must be >= QT_HOT_DAYS ({self.hot_days}): the warm window "
                "contains the hot window"
            )

    @classmethod
    def from_settings(cls, settings: object) -> CachePolicy:
        return cls(hot_days=int(settings.hot_days), warm_days=int(settings.warm_days))  # type: ignore[attr-defined]

    def tier(self, day: date, today: date) -> Tier:
        age = (today - day).days
        if age < self.hot_days:
            return "hot"
        if age < self.warm_days:
            return "warm"
        return "cold"

    def keeps(self, day: date, today: date) -> bool:
        """Whether the cache keeps ``day`` (hot or warm)."""
        return self.tier(day, today) != "cold"

    def hot_start(self, today: date) -> date:
        """First day of the hot window (inclusive); the window ends with ``today``."""
        return today - timedelta(days=self.hot_days - 1)

    def warm_start(self, today: date) -> date:
        """First day kept by the cache (inclusive); days before it are cold."""
        return today - timedelta(days=self.warm_days - 1)

    def hot_days_list(self, today: date) -> list[date]:
        return [self.hot_start(today) + timedelta(days=i) for i in range(self.hot_days)]


def today_utc(now: datetime | pd.Timestamp | None = None) -> date:
    t = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if t.tzinfo is None:
        raise ValueError(f"'now' must be tz-aware, got {now!r}")
    return t.tz_convert("UTC").date()


_DAY_US = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def days_in_range(start: pd.Timestamp, end: pd.Timestamp) -> list[date]:
    """UTC days touched by the half-open range ``[start, end)`` (empty if ``end <= start``).

    Integer arithmetic on epoch microseconds (it sits on the hot read path: ~2 µs for a week, against
    ~160 µs with Timestamp arithmetic)."""
    lo = start.value // 1000  # ns -> us since the epoch (tz-aware Timestamps are UTC-based)
    hi = -((-end.value) // 1000) - 1  # last microsecond inside the range (end exclusive, ceil to us)
    if hi < lo:
        return []
    first, last = lo // _DAY_US, hi // _DAY_US
    return [date.fromordinal(_EPOCH_ORDINAL + d) for d in range(first, last + 1)]


Action = Literal["full", "incremental", "replace", "mark"]


@dataclass(frozen=True)
class FetchItem:
    symbol: str
    day: date
    action: Action
    central_rows: int
    local_rows: int


@dataclass
class WarmingPlan:
    today: date
    fetch: list[FetchItem] = field(default_factory=list)
    evict: list[tuple[str, date, int]] = field(default_factory=list)  # (symbol, day, local rows)
    evict_blocked_reason: str | None = None

    @property
    def rows_to_evict(self) -> int:
        return sum(r for _, _, r in self.evict)


def _index(days: pd.DataFrame) -> dict[tuple[str, date], int]:
    if days is None or days.empty:
        return {}
    return {
        (str(s), d if isinstance(d, date) else pd.Timestamp(d).date()): int(r)
        for s, d, r in zip(days["symbol"], days["day"], days["rows"], strict=True)
    }


def plan_warming(
    policy: CachePolicy,
    *,
    today: date,
    symbols: Iterable[str],
    central_days: pd.DataFrame,
    local_days: pd.DataFrame,
    covered: set[tuple[str, date]],
    outbox_pending: bool,
) -> WarmingPlan:
    """What warming must fetch for the hot window of ``symbols`` and evict beyond the warm window.

    ``central_days`` must hold the centre's ``symbol, day, rows`` for (at least) the hot window of
    ``symbols``; ``local_days`` the cache's for every day it holds. Eviction is blocked while the outbox
    holds batches (the cache may then hold the only copy of those rows).
    """
    plan = WarmingPlan(today=today)
    central = _index(central_days)
    local = _index(local_days)
    hot = policy.hot_days_list(today)
    for symbol in sorted(set(symbols)):
        for day in hot:
            c = central.get((symbol, day), 0)
            loc = local.get((symbol, day), 0)
            is_covered = (symbol, day) in covered
            if c == 0 and loc == 0:
                if not is_covered:
                    plan.fetch.append(FetchItem(symbol, day, "mark", c, loc))
                continue
            if loc > c:
                if not outbox_pending:
                    plan.fetch.append(FetchItem(symbol, day, "replace", c, loc))
                continue
            if loc < c:
                action: Action = "incremental" if (is_covered and loc > 0) else "full"
                plan.fetch.append(FetchItem(symbol, day, action, c, loc))
                continue
            if not is_covered:
                plan.fetch.append(FetchItem(symbol, day, "full", c, loc))
    warm_start = policy.warm_start(today)
    cold = sorted((s, d, r) for (s, d), r in local.items() if d < warm_start)
    if cold and outbox_pending:
        plan.evict_blocked_reason = (
            "the outbox holds batches not yet in the central store; eviction waits until it is replayed"
        )
    else:
        plan.evict = cold
    return plan


__all__ = [
    "CachePolicy",
    "FetchItem",
    "Tier",
    "WarmingPlan",
    "days_in_range",
    "plan_warming",
    "today_utc",
]
