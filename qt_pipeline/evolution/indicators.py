"""Vectorised technical indicators (NumPy / Numba).

Every function returns float64 arrays of the input's length. The value at index ``t`` uses bars
``<= t`` only (no look-ahead); indices still in the warm-up are NaN:

=====================  =====================================================================
indicator              first valid index
=====================  =====================================================================
``sma(x, p)``          p - 1  (mean of the last p values; computed from one running cumsum,
                       exactly as ``(cs[t+1] - cs[t+1-p]) / p`` with ``cs = [0, cumsum(x)]``)
``ema(x, p)``          p - 1  (seeded with the SMA of the first p values, then alpha = 2/(p+1))
``rolling_std(x, p)``  p - 1  (population std, ddof=0, re-based sliding sums)
``bollinger(x, p, k)`` p - 1  (mid = SMA, upper/lower = mid +/- k * rolling_std)
``rsi(x, p)``          p      (Wilder: seed = mean gain/loss of the first p changes, then
                       avg = (avg*(p-1) + x)/p; 100 if no losses, 50 if no movement at all)
``true_range``         0      (bar 0: high - low; then max(h-l, |h-c[t-1]|, |l-c[t-1]|))
``atr(h, l, c, p)``    p - 1  (Wilder smoothing of the true range, seeded with its SMA)
``momentum(x, p)``     p      (rate of change x[t]/x[t-p] - 1)
``donchian(h, l, p)``  p - 1  (max(high) / min(low) of the last p bars, bar t included)
=====================  =====================================================================

A breakout rule compares the close at ``t`` with the channel of the *previous* bars, i.e. with
``donchian(...)[t-1]`` (see :mod:`qt_pipeline.evolution.backtest`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


def _check(x: np.ndarray, period: int, name: str, min_period: int = 1) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D price/volume array, got shape {np.shape(x)}")
    if isinstance(period, bool) or int(period) != period or period < min_period:
        raise ValueError(f"{name}: period must be an integer >= {min_period}, got {period!r}")
    return a


# The compiled kernels write into a caller-provided ``out`` row (the backtester's shared series bank),
# so no full-length temporaries are allocated per series.


@njit(cache=True, nogil=True)
def sma_into(a, p, out):  # pragma: no cover - compiled
    """out[t] = (cs[t+1] - cs[t+1-p]) / p with cs = [0, cumsum(a)] — the same floating-point operations
    as the NumPy cumsum formula (np.cumsum accumulates sequentially)."""
    n = a.shape[0]
    c = 0.0
    for i in range(n):
        c += a[i]
        out[i] = c  # out[i] holds cs[i+1]
    for i in range(n - 1, p - 1, -1):
        out[i] = (out[i] - out[i - p]) / p
    if n >= p:
        out[p - 1] = (out[p - 1] - 0.0) / p
    for i in range(min(p - 1, n)):
        out[i] = np.nan


@njit(cache=True, nogil=True)
def ema_into(a, p, out):  # pragma: no cover - compiled
    n = a.shape[0]
    for i in range(min(p - 1, n)):
        out[i] = np.nan
    if n < p:
        return
    s = 0.0
    for i in range(p):
        s += a[i]
    e = s / p
    out[p - 1] = e
    alpha = 2.0 / (p + 1.0)
    for i in range(p, n):
        e = e + alpha * (a[i] - e)
        out[i] = e


@njit(cache=True, nogil=True)
def rolling_std_into(a, p, out):  # pragma: no cover - compiled
    """Sliding sums of (x - ref) and (x - ref)^2, where ref is a recent window mean; ref and both sums
    are re-based and recomputed exactly every max(p, 64) bars, so neither cancellation nor rounding
    drift can build up over long series (and no division per bar)."""
    n = a.shape[0]
    for i in range(min(p - 1, n)):
        out[i] = np.nan
    if n < p:
        return
    if p == 1:
        out[:] = 0.0
        return
    every = p if p > 64 else 64
    inv = 1.0 / p
    ref = 0.0
    s1 = 0.0
    s2 = 0.0
    for i in range(p - 1, n):
        if i == p - 1 or (i - p + 1) % every == 0:
            lo = i - p + 1
            m = 0.0
            for j in range(lo, i + 1):
                m += a[j]
            ref = m * inv
            s1 = 0.0
            s2 = 0.0
            for j in range(lo, i + 1):
                d = a[j] - ref
                s1 += d
                s2 += d * d
        else:
            y = a[i] - ref
            z = a[i - p] - ref
            s1 += y - z
            s2 += y * y - z * z
        mu = s1 * inv
        v = s2 * inv - mu * mu
        out[i] = np.sqrt(v) if v > 0.0 else 0.0


@njit(cache=True, nogil=True)
def rsi_into(a, p, out):  # pragma: no cover - compiled
    n = a.shape[0]
    for i in range(min(p, n)):
        out[i] = np.nan
    if n <= p:
        return
    g = 0.0
    lo = 0.0
    for i in range(1, p + 1):
        d = a[i] - a[i - 1]
        if d > 0:
            g += d
        else:
            lo -= d
    g /= p
    lo /= p
    for i in range(p, n):
        if i > p:
            d = a[i] - a[i - 1]
            up = d if d > 0 else 0.0
            dn = -d if d < 0 else 0.0
            g = (g * (p - 1) + up) / p
            lo = (lo * (p - 1) + dn) / p
        if lo == 0.0:
            out[i] = 100.0 if g > 0.0 else 50.0
        else:
            out[i] = 100.0 - 100.0 / (1.0 + g / lo)


@njit(cache=True, nogil=True)
def true_range_into(h, lo, c, out):  # pragma: no cover - compiled
    """TR[0] = h - l; TR[t] = max(h - l, |h - c[t-1]|, |l - c[t-1]|)."""
    for i in range(h.shape[0]):
        r = h[i] - lo[i]
        if i > 0:
            u = abs(h[i] - c[i - 1])
            d = abs(lo[i] - c[i - 1])
            if u > r:
                r = u
            if d > r:
                r = d
        out[i] = r


@njit(cache=True, nogil=True)
def atr_into(h, lo, c, p, out):  # pragma: no cover - compiled
    """Wilder ATR; the true range is written into ``out`` first, then smoothed in place."""
    n = h.shape[0]
    true_range_into(h, lo, c, out)
    if n < p:
        out[:] = np.nan
        return
    s = 0.0
    for i in range(p):
        s += out[i]
    a = s / p
    for i in range(p - 1):
        out[i] = np.nan
    out[p - 1] = a
    for i in range(p, n):
        a = (a * (p - 1) + out[i]) / p
        out[i] = a


@njit(cache=True, nogil=True)
def rolling_extreme_into(a, p, want_max, out):  # pragma: no cover - compiled
    """Rolling max/min over the last p values (van Herk / Gil-Werman: blocks of p, suffix extremes of
    the previous block + prefix extreme of the current one; O(n), branch-free, a p-sized buffer)."""
    n = a.shape[0]
    sgn = 1.0 if want_max else -1.0  # min(x) = -max(-x)
    suf = np.empty(p)
    for i in range(min(p - 1, n)):
        out[i] = np.nan
    if n < p:
        return
    # suffix maxima of block 0
    m = -np.inf
    for j in range(p - 1, -1, -1):
        v = sgn * a[j]
        m = v if v > m else m
        suf[j] = m
    out[p - 1] = sgn * suf[0]
    start = p  # first index of the current block
    while start < n:
        end = min(start + p, n)
        pre = -np.inf
        for i in range(start, end):
            v = sgn * a[i]
            pre = v if v > pre else pre
            w = suf[i - start + 1] if i - start + 1 < p else -np.inf  # window start i-p+1 in the old block
            out[i] = sgn * (w if w > pre else pre)
        # suffix maxima of the current block become the next "previous block"
        if end - start == p:
            m = -np.inf
            for j in range(end - 1, start - 1, -1):
                v = sgn * a[j]
                m = v if v > m else m
                suf[j - start] = m
        start = end


def _new(a: np.ndarray) -> np.ndarray:
    return np.empty(a.shape[0])


def sma(x: np.ndarray, period: int) -> np.ndarray:
    """Simple moving average of the last ``period`` values."""
    a = _check(x, period, "sma")
    out = _new(a)
    sma_into(a, int(period), out)
    return out


def ema(x: np.ndarray, period: int) -> np.ndarray:
    """Exponential moving average (span ``period``), seeded with the SMA of the first ``period`` values."""
    a = _check(x, period, "ema")
    out = _new(a)
    ema_into(a, int(period), out)
    return out


def rolling_std(x: np.ndarray, period: int) -> np.ndarray:
    """Population (ddof=0) standard deviation of the last ``period`` values."""
    a = _check(x, period, "rolling_std")
    out = _new(a)
    rolling_std_into(a, int(period), out)
    return out


def bollinger(x: np.ndarray, period: int, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger bands ``(mid, upper, lower)`` = SMA +/- k population std."""
    mid = sma(x, period)
    sd = rolling_std(x, period)
    return mid, mid + k * sd, mid - k * sd


def rsi(x: np.ndarray, period: int) -> np.ndarray:
    """Wilder's relative strength index in [0, 100]."""
    a = _check(x, period, "rsi")
    out = _new(a)
    rsi_into(a, int(period), out)
    return out


def _hlc(high, low, close, period, name):
    h = _check(high, period, name)
    lo = _check(low, period, name)
    c = _check(close, period, name)
    if not h.shape == lo.shape == c.shape:
        raise ValueError(f"{name}: high/low/close lengths differ ({h.shape[0]}, {lo.shape[0]}, {c.shape[0]})")
    return h, lo, c


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    h, lo, c = _hlc(high, low, close, 1, "true_range")
    out = _new(h)
    true_range_into(h, lo, c, out)
    return out


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Average true range (Wilder smoothing, seeded with the mean of the first ``period`` true ranges)."""
    h, lo, c = _hlc(high, low, close, period, "atr")
    out = _new(h)
    atr_into(h, lo, c, int(period), out)
    return out


def momentum(x: np.ndarray, period: int) -> np.ndarray:
    """Rate of change ``x[t] / x[t - period] - 1``."""
    a = _check(x, period, "momentum")
    p = int(period)
    out = np.full(a.shape[0], np.nan)
    if a.shape[0] > p:
        out[p:] = a[p:] / a[:-p] - 1.0
    return out


def rolling_max(x: np.ndarray, period: int) -> np.ndarray:
    a = _check(x, period, "rolling_max")
    out = _new(a)
    rolling_extreme_into(a, int(period), True, out)
    return out


def rolling_min(x: np.ndarray, period: int) -> np.ndarray:
    a = _check(x, period, "rolling_min")
    out = _new(a)
    rolling_extreme_into(a, int(period), False, out)
    return out


def donchian(high: np.ndarray, low: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """Donchian channel ``(upper, lower)``: highest high / lowest low of the last ``period`` bars."""
    h = _check(high, period, "donchian")
    lo = _check(low, period, "donchian")
    if h.shape != lo.shape:
        raise ValueError(f"donchian: high/low lengths differ ({h.shape[0]}, {lo.shape[0]})")
    return rolling_max(h, period), rolling_min(lo, period)
