"""A synthetic, regime-switching market: deterministic OHLCV bars with a recorded ground truth.

Model (all in log-price, drift and volatility per UTC day):

* **Regimes** follow an hourly Markov chain over :data:`REGIMES` (trending up/down, mean-reverting,
  high/low volatility). The chain is simulated per ``(seed, symbol, calendar month)`` from its own RNG
  (so any month can be produced on its own), with geometric sojourns (mean :data:`MEAN_SOJOURN_HOURS`).
* **Common market factor**: the hourly shocks ``z`` of every symbol load on one market factor ``f``:
  ``z = sqrt(rho) * f + sqrt(1 - rho) * e`` with ``e`` the symbol's own shock. ``rho`` follows a second,
  market-wide hourly Markov chain over :data:`CORRELATION_STATES` (decoupled / coupled, mean sojourn
  :data:`MEAN_CORRELATION_SOJOURN_HOURS`), simulated per ``(seed, calendar month)``; ``f`` of day ``d``
  comes from an RNG derived from ``(seed, d)``. So two symbols' hourly returns have correlation ``rho``
  (``rho/sqrt(2)`` when exactly one of them is mean-reverting); :meth:`SyntheticMarket.correlation_states`
  returns the planted states.
* **Coarse path**: one log-price point per hour. Hourly increments are ``drift/24 + vol/sqrt(24) * z``;
  in the mean-reverting regime ``vol/sqrt(24) * (z_h - z_{h-1}) / sqrt(2)`` (a level that keeps
  returning to where the regime found it). Increments of day ``d`` come from RNGs derived from
  ``(seed, symbol, d)`` and ``(seed, d)`` only.
* **Daily anchors** make days continuous: the open of day ``d`` is the base price times
  ``exp(sum of the daily increments from 2020-01-01 to d)`` — summed in a fixed order, so it does not
  depend on which days were generated before or in which order.
* **Bars**: a Brownian bridge (from a second per-day RNG) fills each hour between its coarse points with
  ``K`` sub-steps per bar; open/close are the bar's first/last point, high/low its extremes, vwap a
  weighted mean of its points (strictly inside ``[low, high]``); volume follows an intraday U shape times
  the regime's activity and log-normal noise; trade_count is an integer ~ volume / average trade size.

The same ``(seed, symbol, day)`` always produces the same bytes. :meth:`SyntheticMarket.regimes` and
:meth:`SyntheticMarket.correlation_states` return the planted regime and correlation segments so analytics
(regime detection, the correlation engine) can be checked against ground truth.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import BAR_COLUMNS, SYMBOL_MAX_LEN, SYMBOL_PATTERN, empty_bars, to_canonical
from qt_pipeline.market.sources.base import MarketDataSource, RawBatch, utc_timestamp


@dataclass(frozen=True)
class Regime:
    name: str
    drift: float  # expected log return per day
    volatility: float  # standard deviation of log returns per day
    activity: float  # volume multiplier
    mean_reverting: bool = False


REGIMES: tuple[Regime, ...] = (
    Regime("trend_up", drift=0.04, volatility=0.02, activity=1.2),
    Regime("trend_down", drift=-0.04, volatility=0.02, activity=1.3),
    Regime("mean_reverting", drift=0.0, volatility=0.015, activity=0.9, mean_reverting=True),
    Regime("high_vol", drift=0.0, volatility=0.06, activity=1.8),
    Regime("low_vol", drift=0.0, volatility=0.006, activity=0.6),
)
REGIME_NAMES: tuple[str, ...] = tuple(r.name for r in REGIMES)
MEAN_SOJOURN_HOURS = 36.0
EPOCH = date(2020, 1, 1)  # daily anchors are summed from here (backwards for earlier days)
SUB_STEPS = 4  # minimum path points per bar (for high/low/vwap)

_DRIFT = np.array([r.drift for r in REGIMES])
_VOL = np.array([r.volatility for r in REGIMES])
_ACTIVITY = np.array([r.activity for r in REGIMES])
_MEAN_REV = np.array([r.mean_reverting for r in REGIMES])


@dataclass(frozen=True)
class CorrelationState:
    name: str
    rho: float  # share of every symbol's hourly shock variance that comes from the market factor


CORRELATION_STATES: tuple[CorrelationState, ...] = (
    CorrelationState("decoupled", rho=0.05),
    CorrelationState("coupled", rho=0.8),
)
CORRELATION_STATE_NAMES: tuple[str, ...] = tuple(c.name for c in CORRELATION_STATES)
MEAN_CORRELATION_SOJOURN_HOURS = 120.0
_RHO = np.array([c.rho for c in CORRELATION_STATES])
_MARKET = "__market_factor__"  # RNG key of the market-wide streams (never a valid symbol)
CORRELATION_COLUMNS: tuple[str, ...] = ("start", "end", "state", "rho")

_BASE_PRICES = {"BTCUSD": 40_000.0, "ETHUSD": 2_200.0, "SOLUSD": 100.0}

REGIME_COLUMNS: tuple[str, ...] = ("symbol", "start", "end", "regime", "drift", "volatility")


def _symbol_key(symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "little")


def _rng(seed: int, symbol: str, stream: int, *parts: int) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, _symbol_key(symbol), stream, *parts]))
    )


def _month_hours(year: int, month: int) -> int:
    return (date(year + month // 12, month % 12 + 1, 1) - date(year, month, 1)).days * 24


def _sojourns(rng: np.random.Generator, hours: int, mean_sojourn_hours: float) -> np.ndarray:
    """Geometric run lengths (hours) of a Markov chain, enough of them to cover ``hours``."""
    p_leave = 1.0 / mean_sojourn_hours
    runs = rng.geometric(p_leave, size=max(16, int(hours * p_leave * 3)))
    while runs.sum() < hours:  # pragma: no cover - astronomically unlikely with 3x the expected runs
        runs = np.concatenate([runs, rng.geometric(p_leave, size=len(runs))])
    return runs


def _hourly(states: np.ndarray, runs: np.ndarray, hours: int) -> np.ndarray:
    """Each run's state repeated for its length: a read-only int8 series of ``hours`` values."""
    out = np.repeat(states.astype(np.int8), runs)[:hours]
    out.setflags(write=False)
    return out


@lru_cache(maxsize=512)
def _month_states(seed: int, symbol: str, year: int, month: int) -> np.ndarray:
    """Hourly regime indices (int8) for one calendar month."""
    hours = _month_hours(year, month)
    rng = _rng(seed, symbol, 1, year, month)
    state0 = int(rng.integers(len(REGIMES)))
    runs = _sojourns(rng, hours, MEAN_SOJOURN_HOURS)
    steps = rng.integers(1, len(REGIMES), size=len(runs))
    return _hourly((state0 + np.concatenate([[0], np.cumsum(steps[:-1])])) % len(REGIMES), runs, hours)


@lru_cache(maxsize=128)
def _month_corr_states(seed: int, year: int, month: int) -> np.ndarray:
    """Hourly market correlation-state indices (int8) for one calendar month (two-state Markov chain)."""
    hours = _month_hours(year, month)
    rng = _rng(seed, _MARKET, 4, year, month)
    state0 = int(rng.integers(len(CORRELATION_STATES)))
    runs = _sojourns(rng, hours, MEAN_CORRELATION_SOJOURN_HOURS)
    return _hourly((state0 + np.arange(len(runs))) % len(CORRELATION_STATES), runs, hours)


def _day_corr_states(seed: int, day: date) -> np.ndarray:
    month = _month_corr_states(seed, day.year, day.month)
    return month[(day.day - 1) * 24 : day.day * 24]


@lru_cache(maxsize=1024)
def _market_factor(seed: int, ordinal: int) -> np.ndarray:
    """25 hourly market-factor shocks of one day (index 0 is the shock before the first hour)."""
    out = _rng(seed, _MARKET, 5, ordinal).standard_normal(25)
    out.setflags(write=False)
    return out


def _day_states(seed: int, symbol: str, day: date) -> np.ndarray:
    month = _month_states(seed, symbol, day.year, day.month)
    return month[(day.day - 1) * 24 : day.day * 24]


@lru_cache(maxsize=4096)
def _coarse_increments(seed: int, symbol: str, ordinal: int) -> np.ndarray:
    """24 hourly log-price increments of one day (read-only)."""
    day = date.fromordinal(ordinal)
    states = _day_states(seed, symbol, day)
    own = _rng(seed, symbol, 2, ordinal).standard_normal(25)
    rho_h = _RHO[_day_corr_states(seed, day)]
    rho = np.concatenate([rho_h[:1], rho_h])
    z = np.sqrt(rho) * _market_factor(seed, ordinal) + np.sqrt(1.0 - rho) * own
    scale = _VOL[states] / math.sqrt(24.0)
    noise = np.where(_MEAN_REV[states], (z[1:] - z[:-1]) / math.sqrt(2.0), z[1:])
    inc = _DRIFT[states] / 24.0 + scale * noise
    inc.setflags(write=False)
    return inc


def _day_total(seed: int, symbol: str, ordinal: int) -> float:
    return float(np.cumsum(_coarse_increments(seed, symbol, ordinal))[-1])


class _Anchors:
    """Log-price at the start of each day, summed sequentially from EPOCH (forwards and backwards)."""

    def __init__(self, seed: int, symbol: str, base_log: float):
        self.seed, self.symbol = seed, symbol
        self.epoch = EPOCH.toordinal()
        self.forward = [base_log]  # forward[i] = anchor of epoch + i
        self.backward: list[float] = []  # backward[i] = anchor of epoch - 1 - i

    def get(self, ordinal: int) -> float:
        i = ordinal - self.epoch
        if i >= 0:
            while len(self.forward) <= i:
                k = self.epoch + len(self.forward) - 1
                self.forward.append(self.forward[-1] + _day_total(self.seed, self.symbol, k))
            return self.forward[i]
        j = -i - 1
        while len(self.backward) <= j:
            k = self.epoch - len(self.backward) - 1
            prev = self.backward[-1] if self.backward else self.forward[0]
            self.backward.append(prev - _day_total(self.seed, self.symbol, k))
        return self.backward[j]


class SyntheticMarket(MarketDataSource):
    """Deterministic regime-switching OHLCV bars for any symbol; see the module docstring."""

    name = "synthetic"

    def __init__(
        self,
        seed: int = 42,
        *,
        symbols: Sequence[str] = ("BTCUSD", "ETHUSD", "SOLUSD"),
        interval: timedelta | pd.Timedelta | str = timedelta(minutes=1),
    ):
        self.seed = int(seed)
        self._symbols = sorted({s.strip().upper() for s in symbols})
        self.interval = pd.Timedelta(interval)
        if self.interval <= pd.Timedelta(0) or pd.Timedelta(days=1) % self.interval != pd.Timedelta(0):
            raise ValueError(f"synthetic interval {interval!r} must be positive and divide one day evenly")
        self.bars_per_day = int(pd.Timedelta(days=1) // self.interval)
        g = math.gcd(self.bars_per_day, 24)
        self.sub_steps = SUB_STEPS * (24 // g)
        self._anchors: dict[str, _Anchors] = {}

    # --- MarketDataSource -----------------------------------------------------------------------------
    @property
    def source_label(self) -> str:
        return f"synthetic:seed={self.seed}"

    def describe(self) -> str:
        return f"{self.source_label} interval={self.interval} symbols={self._symbols}"

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> RawBatch:
        return RawBatch(frame=self.bars(symbol, start, end), source=self.source_label, timezone="UTC")

    # --- generation -----------------------------------------------------------------------------------
    def base_price(self, symbol: str) -> float:
        if symbol in _BASE_PRICES:
            return _BASE_PRICES[symbol]
        u = (_symbol_key(symbol) % 10_000) / 10_000
        return float(round(10 ** (1 + 3 * u), 2))

    def _anchor(self, symbol: str, ordinal: int) -> float:
        a = self._anchors.get(symbol)
        if a is None:
            a = self._anchors[symbol] = _Anchors(self.seed, symbol, math.log(self.base_price(symbol)))
        return a.get(ordinal)

    def day_arrays(self, symbol: str, day: date) -> dict[str, np.ndarray]:
        """Column arrays of one UTC day of bars (timestamps as int64 microseconds)."""
        symbol = _check_symbol(symbol)
        ordinal = day.toordinal()
        n, k = self.bars_per_day, self.sub_steps
        points = n * k
        m = points // 24  # path points per hour
        states = _day_states(self.seed, symbol, day)
        inc = _coarse_increments(self.seed, symbol, ordinal)
        anchor = self._anchor(symbol, ordinal)
        rng = _rng(self.seed, symbol, 3, ordinal)

        # Brownian bridge inside each hour, pinned to the coarse hourly points
        eps = rng.standard_normal((24, m)) * (_VOL[states] / math.sqrt(points))[:, None]
        w = np.cumsum(eps, axis=1)
        frac = np.arange(1, m + 1) / m
        bridge = w - frac[None, :] * w[:, -1:] + frac[None, :] * inc[:, None]
        starts = np.concatenate([[0.0], np.cumsum(inc)[:-1]])
        path = np.empty(points + 1)
        path[0] = anchor
        path[1:] = anchor + (starts[:, None] + bridge).ravel()
        prices = np.exp(path)

        idx = np.arange(n) * k
        windows = prices[idx[:, None] + np.arange(k + 1)[None, :]]  # (n, k+1), shared endpoints
        open_ = windows[:, 0]
        close = windows[:, -1]
        high = windows.max(axis=1)
        low = windows.min(axis=1)
        weights = rng.random((n, k + 1)) + 0.25
        vwap = np.clip((windows * weights).sum(axis=1) / weights.sum(axis=1), low, high)

        bar_hour = (np.arange(n) * 24) // n
        bar_state = states[bar_hour]
        t = (np.arange(n) + 0.5) / n
        u_shape = 1.0 + 2.5 * (2.0 * t - 1.0) ** 2
        minutes = self.interval / pd.Timedelta(minutes=1)
        base_volume = 1e6 / self.base_price(symbol) * minutes / 1440.0 * 10.0
        volume = base_volume * u_shape * _ACTIVITY[bar_state] * np.exp(0.35 * rng.standard_normal(n))
        avg_trade = base_volume / 40.0
        trade_count = np.maximum(
            1, np.rint(volume / avg_trade * np.exp(0.1 * rng.standard_normal(n)))
        ).astype(np.int64)
        day_us = (ordinal - date(1970, 1, 1).toordinal()) * 86_400_000_000
        step_us = self.interval // pd.Timedelta(microseconds=1)
        return {
            "timestamp": day_us + np.arange(n, dtype=np.int64) * step_us,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "vwap": vwap,
            "trade_count": trade_count,
        }

    def bars(self, symbol: str, start: object, end: object) -> pd.DataFrame:
        """Canonical bars of ``symbol`` with ``start <= timestamp < end`` (UTC)."""
        symbol = _check_symbol(symbol)
        start_ts, end_ts = utc_timestamp(start, "start"), utc_timestamp(end, "end")
        if end_ts <= start_ts:
            return empty_bars()
        first = start_ts.floor("D").date()
        last = (end_ts - pd.Timedelta(microseconds=1)).floor("D").date()
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        parts = [self.day_arrays(symbol, d) for d in days]
        cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
        ts = cols["timestamp"]
        keep = (ts >= start_ts.value // 1000) & (ts < end_ts.value // 1000)
        frame = pd.DataFrame(
            {
                "symbol": pd.array(np.full(int(keep.sum()), symbol, dtype=object), dtype="str"),
                "timestamp": pd.to_datetime(ts[keep], unit="us", utc=True).as_unit("us"),
                **{c: cols[c][keep] for c in BAR_COLUMNS[2:]},
            }
        )
        return to_canonical(frame)

    def regimes(self, symbol: str, start: object, end: object) -> pd.DataFrame:
        """Planted regime segments overlapping ``[start, end)``, clipped to it:
        ``symbol, start, end, regime, drift, volatility`` (drift/volatility per day, in log terms)."""
        symbol = _check_symbol(symbol)
        start_ts, end_ts = utc_timestamp(start, "start"), utc_timestamp(end, "end")
        empty = pd.DataFrame({c: [] for c in REGIME_COLUMNS})
        if end_ts <= start_ts:
            return empty
        first_hour = start_ts.floor("h")
        hours = pd.date_range(first_hour, end_ts, freq="h", inclusive="left", unit="us")
        days = sorted({(h.year, h.month, h.day) for h in (hours[0], hours[-1])})
        day0 = date(*days[0])
        n_days = (date(*days[-1]) - day0).days + 1
        states = np.concatenate(
            [_day_states(self.seed, symbol, day0 + timedelta(days=i)) for i in range(n_days)]
        )
        offset = first_hour.hour
        states = states[offset : offset + len(hours)]
        change = np.flatnonzero(np.diff(states.astype(np.int16)) != 0) + 1
        seg_start = np.concatenate([[0], change])
        seg_end = np.concatenate([change, [len(states)]])
        st = hours[seg_start]
        en = hours[seg_end - 1] + pd.Timedelta(hours=1)
        reg = states[seg_start]
        out = pd.DataFrame(
            {
                "symbol": symbol,
                "start": pd.Series(st).clip(lower=start_ts).to_numpy(),
                "end": pd.Series(en).clip(upper=end_ts).to_numpy(),
                "regime": [REGIME_NAMES[i] for i in reg],
                "drift": _DRIFT[reg],
                "volatility": _VOL[reg],
            }
        )
        out["start"] = pd.to_datetime(out["start"], utc=True).dt.as_unit("us")
        out["end"] = pd.to_datetime(out["end"], utc=True).dt.as_unit("us")
        return out

    def correlation_states(self, start: object, end: object) -> pd.DataFrame:
        """Planted market correlation segments overlapping ``[start, end)``, clipped to it:
        ``start, end, state, rho`` (``rho``: the correlation of any two symbols' hourly shocks)."""
        start_ts, end_ts = utc_timestamp(start, "start"), utc_timestamp(end, "end")
        if end_ts <= start_ts:
            return pd.DataFrame({c: [] for c in CORRELATION_COLUMNS})
        hours = pd.date_range(start_ts.floor("h"), end_ts, freq="h", inclusive="left", unit="us")
        day0 = hours[0].date()
        n_days = (hours[-1].date() - day0).days + 1
        states = np.concatenate(
            [_day_corr_states(self.seed, day0 + timedelta(days=i)) for i in range(n_days)]
        )
        states = states[hours[0].hour : hours[0].hour + len(hours)]
        change = np.flatnonzero(np.diff(states.astype(np.int16)) != 0) + 1
        seg_start = np.concatenate([[0], change])
        seg_end = np.concatenate([change, [len(states)]])
        st = pd.Series(hours[seg_start]).clip(lower=start_ts)
        en = pd.Series(hours[seg_end - 1] + pd.Timedelta(hours=1)).clip(upper=end_ts)
        reg = states[seg_start]
        return pd.DataFrame(
            {
                "start": pd.to_datetime(st, utc=True).dt.as_unit("us").to_numpy(),
                "end": pd.to_datetime(en, utc=True).dt.as_unit("us").to_numpy(),
                "state": [CORRELATION_STATE_NAMES[i] for i in reg],
                "rho": _RHO[reg],
            }
        ).assign(
            start=lambda d: pd.to_datetime(d["start"], utc=True).dt.as_unit("us"),
            end=lambda d: pd.to_datetime(d["end"], utc=True).dt.as_unit("us"),
        )


def _check_symbol(symbol: str) -> str:
    s = str(symbol).strip().upper()
    if not re.fullmatch(SYMBOL_PATTERN, s) or len(s) > SYMBOL_MAX_LEN:
        raise ValueError(f"symbol {symbol!r} is malformed; use letters/digits with . - / _ separators")
    return s
