"""Numba kernels shared by :mod:`metrics` and :mod:`backtest` (private).

The metric accumulators are one set of functions used both by the fused backtest loop and by
:func:`qt_pipeline.evolution.metrics.compute_metrics`, so a fused evaluation and "simulate, then compute
metrics from the arrays" give bit-identical numbers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# metric columns (order of METRIC_NAMES)
M_TOTAL, M_CAGR, M_SHARPE, M_SORTINO, M_CALMAR, M_MDD, M_NTRADES, M_WIN, M_EXPOSURE = range(9)
N_METRICS = 9

# strategy parameter columns (one float64 row per strategy)
# rule inputs: xa = bank[A, t - LAG], xb = bank[B, t - LAG]
(
    P_EKIND, P_EA, P_EB, P_ELAG, P_ETH, P_ECMP,
    P_XKIND, P_XA, P_XB, P_XLAG, P_XTH, P_XCMP,
    P_LONG, P_SHORT, P_SIZE, P_SL, P_TP, P_ATR_ROW, P_ATR_MULT, P_REGIME, P_CORR, P_TSTART,
) = range(22)  # fmt: skip
N_PARAMS = 22

# rule kinds in the kernel
K_OPPOSITE, K_SMA, K_EMA, K_RSI, K_BOLL, K_MOM, K_BREAK, K_ALWAYS = -1, 0, 1, 2, 3, 4, 5, 6


# ------------------------------------------------------------------------------------------------------
# metric accumulators
# ------------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def acc_step(r, p, p_prev, s1, s2, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp):  # pragma: no cover
    """Fold one bar (return ``r`` earned with position ``p``; ``p_prev`` is the previous bar's position)."""
    s1 += r
    s2 += r * r
    neg = min(r, 0.0)
    sd += neg * neg
    eq *= 1.0 + r
    if eq > peak:
        if trough < peak:
            dd = 1.0 - trough / peak
            if dd > mdd:
                mdd = dd
        peak = eq
        trough = eq
    elif eq < trough:
        trough = eq
    if p != p_prev:
        if p_prev != 0.0 and teq > 1.0:
            nwin += 1
        if p != 0.0:
            ntr += 1
            teq = 1.0
    if p != 0.0:
        teq *= 1.0 + r
        nexp += 1
    return s1, s2, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp


@njit(cache=True, nogil=True)
def acc_finish(
    n, ppy, p_last, s1, s2, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp, out
):  # pragma: no cover
    """Turn the accumulators of ``n`` bars into the metric row ``out``."""
    if trough < peak:
        dd = 1.0 - trough / peak
        if dd > mdd:
            mdd = dd
    if p_last != 0.0 and teq > 1.0:
        nwin += 1
    if n == 0:
        for j in range(N_METRICS):
            out[j] = 0.0
        return
    mean = s1 / n
    ann = np.sqrt(ppy)
    sharpe = 0.0
    if n > 1:
        var = (s2 - s1 * s1 / n) / (n - 1)
        # returns that are all equal leave only rounding noise in var: treat as zero variance
        if var > 1e-12 * (s2 / n):
            sharpe = mean / np.sqrt(var) * ann
    dd_dev = np.sqrt(sd / n)
    sortino = mean / dd_dev * ann if dd_dev > 0.0 else 0.0
    total = eq - 1.0
    years = n / ppy
    cagr = np.exp(np.log(eq) / years) - 1.0 if eq > 0.0 else -1.0
    calmar = cagr / mdd if mdd > 0.0 else 0.0
    out[M_TOTAL] = total
    out[M_CAGR] = cagr
    out[M_SHARPE] = sharpe
    out[M_SORTINO] = sortino
    out[M_CALMAR] = calmar
    out[M_MDD] = mdd
    out[M_NTRADES] = ntr
    out[M_WIN] = nwin / ntr if ntr > 0 else 0.0
    out[M_EXPOSURE] = nexp / n


@njit(cache=True, nogil=True)
def metrics_from_arrays(returns, position, ppy, out):  # pragma: no cover - compiled
    s1 = 0.0
    s2 = 0.0
    sd = 0.0
    eq = 1.0
    peak = 1.0
    trough = 1.0
    mdd = 0.0
    ntr = 0
    nwin = 0
    teq = 1.0
    nexp = 0
    p_prev = 0.0
    n = returns.shape[0]
    for t in range(n):
        p = position[t]
        s1, s2, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_step(
            returns[t], p, p_prev, s1, s2, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp
        )
        p_prev = p
    acc_finish(n, ppy, p_prev, s1, s2, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp, out)


# ------------------------------------------------------------------------------------------------------
# the fused strategy loop
# ------------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def rule_signal(kind, th, cmp_below, xa, xb, c):  # pragma: no cover - compiled
    """(up, down) of a rule from its two loaded inputs (scalars only: passing arrays into a helper costs
    atomic reference counting per call). False while any input is NaN; no division.

    inputs: crosses xa = fast MA, xb = slow MA; rsi xa = RSI; bollinger xa = SMA, xb = std;
    momentum xa = close[t - p]; breakout xa/xb = Donchian upper/lower at t - 1; c = close[t].
    """
    up = False
    dn = False
    if kind == K_SMA or kind == K_EMA:  # noqa: SIM109 (plain int compares in the kernel)
        up = xa > xb * (1.0 + th)
        dn = xa < xb * (1.0 - th)
    elif kind == K_RSI:
        v = xa - 50.0
        up = v > th
        dn = v < -th
    elif kind == K_BOLL:
        d = c - xa
        w = th * xb
        if xb > 0.0:
            up = d > w
            dn = d < -w
    elif kind == K_MOM:
        up = c > xa * (1.0 + th)
        dn = c < xa * (1.0 - th)
    elif kind == K_BREAK:
        half = 0.5 * (xa - xb)
        if half > 0.0:
            d = c - 0.5 * (xa + xb)
            up = d > th * half
            dn = d < -th * half
    elif kind == K_ALWAYS:
        up = True
    if cmp_below:
        return dn, up
    return up, dn


@njit(cache=True, nogil=True)
def run_strategy(prm, bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr, rate,
                 ppy, out_metrics, out_pos, out_ret, write):  # fmt: skip  # pragma: no cover
    """One strategy over all bars in one pass: positions, stops/targets, costs, equity, metrics.

    position[t] is the position held during bar t (decided at the close of bar t-1). returns[t] is the
    net return of bar t: (1 - open_cost) * (1 + pos*R_t) * (1 - close_cost) - 1, where the opening cost
    of a position is charged on its first bar and the closing cost on its last bar (each |pos| * rate of
    equity at that moment), so every cost belongs to its trade. R_t = close[t]/close[t-1] - 1, or to the
    stop/target fill price when one is hit inside bar t.
    """
    n = close.shape[0]
    ekind = int(prm[P_EKIND])
    ea = int(prm[P_EA])
    eb = int(prm[P_EB])
    elag = int(prm[P_ELAG])
    eth = prm[P_ETH]
    ecmp = prm[P_ECMP] != 0.0
    xkind = int(prm[P_XKIND])
    xa = int(prm[P_XA])
    xb = int(prm[P_XB])
    xlag = int(prm[P_XLAG])
    xth = prm[P_XTH]
    xcmp = prm[P_XCMP] != 0.0
    allow_long = prm[P_LONG] != 0.0
    allow_short = prm[P_SHORT] != 0.0
    size = prm[P_SIZE]
    sl = prm[P_SL]
    tp = prm[P_TP]
    atr_row = int(prm[P_ATR_ROW])
    atr_mult = prm[P_ATR_MULT]
    rmask = int(prm[P_REGIME])
    cmax = prm[P_CORR]
    t_start = int(prm[P_TSTART])
    use_regime = has_regime and rmask != 0
    use_corr = has_corr and cmax > 0.0
    use_atr = atr_mult > 0.0

    # accumulators
    s1 = 0.0
    s2 = 0.0
    sd = 0.0
    eq = 1.0
    peak = 1.0
    trough = 1.0
    mdd = 0.0
    ntr = 0
    nwin = 0
    teq = 1.0
    nexp = 0
    p_prev = 0.0

    pos = 0.0  # held during bar t
    opened = False  # pos was opened at the close of bar t-1
    stop_px = 0.0
    tp_px = 0.0
    for t in range(n):
        # ---- 1. the bar's return for the position held during it (stops/targets inside the bar) ----
        gross = 0.0
        stopped = False
        if pos != 0.0:
            gross = bar_ret[t]
            if pos > 0.0:
                if low[t] <= stop_px:  # stop first: if both could hit in this bar, assume the worse
                    fill = opn[t] if opn[t] < stop_px else stop_px
                    gross = fill / close[t - 1] - 1.0
                    stopped = True
                elif high[t] >= tp_px:
                    gross = tp_px / close[t - 1] - 1.0
                    stopped = True
            else:
                if high[t] >= stop_px:
                    fill = opn[t] if opn[t] > stop_px else stop_px
                    gross = fill / close[t - 1] - 1.0
                    stopped = True
                elif low[t] <= tp_px:
                    gross = tp_px / close[t - 1] - 1.0
                    stopped = True
        # ---- 2. the decision at the close of bar t (for bar t+1) ----
        new_pos = pos
        if stopped:
            new_pos = 0.0  # no re-entry at the close of a bar that stopped us out
        elif t < n - 1 and t >= t_start:
            c = close[t]
            eu, ed = rule_signal(ekind, eth, ecmp, bank[ea, t - elag], bank[eb, t - elag], c)
            if xkind == K_OPPOSITE:
                xu = eu
                xd = ed
            else:
                xu, xd = rule_signal(xkind, xth, xcmp, bank[xa, t - xlag], bank[xb, t - xlag], c)
            if (pos > 0.0 and xd) or (pos < 0.0 and xu):
                new_pos = 0.0
            # entries (also flips when direction is 'both'), gated by the filters
            want = 0.0
            if eu and allow_long and not xd and pos <= 0.0:
                want = size
            elif ed and allow_short and not xu and pos >= 0.0:
                want = -size
            if want != 0.0 and (pos == 0.0 or (allow_long and allow_short)):
                ok = True
                if use_regime:
                    rg = regime[t]
                    ok = rg >= 0 and rg < 8 and ((rmask >> rg) & 1) == 1
                if ok and use_corr:
                    ok = abs(corr[t]) <= cmax  # NaN -> False
                if ok and use_atr:
                    ok = bank[atr_row, t] == bank[atr_row, t]  # ATR warmed up
                if ok:
                    new_pos = want
                    px = close[t]
                    if want > 0.0:
                        stop_px = px * (1.0 - sl) if sl > 0.0 else -np.inf
                        if use_atr:
                            s_atr = px - atr_mult * bank[atr_row, t]
                            if s_atr > stop_px:
                                stop_px = s_atr
                        tp_px = px * (1.0 + tp) if tp > 0.0 else np.inf
                    else:
                        stop_px = px * (1.0 + sl) if sl > 0.0 else np.inf
                        if use_atr:
                            s_atr = px + atr_mult * bank[atr_row, t]
                            if s_atr < stop_px:
                                stop_px = s_atr
                        tp_px = px * (1.0 - tp) if tp > 0.0 else -np.inf
        # ---- 3. net return with costs, metrics ----
        r = 0.0
        if pos != 0.0:
            m = 1.0 + pos * gross
            if opened:
                m *= 1.0 - abs(pos) * rate
            if new_pos != pos:
                m *= 1.0 - abs(pos) * rate
            r = m - 1.0
        s1, s2, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_step(
            r, pos, p_prev, s1, s2, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp
        )
        if write:
            out_pos[t] = pos
            out_ret[t] = r
        p_prev = pos
        opened = new_pos != pos and new_pos != 0.0
        pos = new_pos
    acc_finish(n, ppy, p_prev, s1, s2, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp, out_metrics)


@njit(cache=True, nogil=True)
def run_population(params, bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr,
                   rate, ppy, out):  # fmt: skip  # pragma: no cover
    dummy = np.empty(0)
    for i in range(params.shape[0]):
        run_strategy(params[i], bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr,
                     rate, ppy, out[i], dummy, dummy, False)  # fmt: skip


@njit(cache=True, nogil=True, parallel=True)
def run_population_parallel(params, bank, opn, high, low, close, bar_ret, regime, corr, has_regime,
                            has_corr, rate, ppy, out):  # fmt: skip  # pragma: no cover
    dummy = np.empty(0)
    for i in prange(params.shape[0]):
        run_strategy(params[i], bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr,
                     rate, ppy, out[i], dummy, dummy, False)  # fmt: skip
