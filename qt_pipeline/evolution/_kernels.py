"""Numba kernels shared by :mod:`metrics` and :mod:`backtest` (private).

The metric accumulators are one set of functions used both by the fused backtest loop and by
:func:`qt_pipeline.evolution.metrics.compute_metrics`, so a fused evaluation and "simulate, then compute
metrics from the arrays" give bit-identical numbers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# metric columns (order of METRIC_NAMES)
(
    M_TOTAL, M_CAGR, M_SHARPE, M_SORTINO, M_CALMAR, M_MDD, M_NTRADES, M_WIN, M_EXPOSURE,
    M_TURNOVER, M_SKEW, M_KURT, M_NBARS, M_TRADE_KEY, M_S1, M_S2, M_S3, M_S4, M_SD,
) = range(19)  # fmt: skip
N_METRICS = 19
TRADE_KEY_MASK = (1 << 52) - 1  # trade fingerprints fit a float64 mantissa exactly

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
def acc_init():  # pragma: no cover - compiled
    """The accumulators of :func:`acc_step` before the first bar (s1, s2, s3, s4, sd, eq, peak, trough,
    mdd, ntr, nwin, teq, nexp): one definition for the per-bar loop, the metrics of given arrays and the
    walk-forward portfolio path."""
    return 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0, 0, 1.0, 0


@njit(cache=True, nogil=True, inline="always")
def acc_step(
    r, p, p_prev, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp
):  # pragma: no cover
    """Fold one bar (return ``r`` earned with position ``p``; ``p_prev`` is the previous bar's position)."""
    s1 += r
    r2 = r * r
    s2 += r2
    s3 += r2 * r
    s4 += r2 * r2
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
    return s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp


@njit(cache=True, nogil=True)
def acc_finish(
    n, ppy, p_last, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp, turnover, key, out
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
    out[M_TURNOVER] = turnover
    # sample skewness and (non-excess) kurtosis of the per-bar returns, from the raw power sums
    m2 = s2 / n - mean * mean
    skew = 0.0
    kurt = 3.0
    if m2 > 1e-12 * (s2 / n) and m2 > 0.0:
        m3 = s3 / n - 3.0 * mean * s2 / n + 2.0 * mean * mean * mean
        m4 = s4 / n - 4.0 * mean * s3 / n + 6.0 * mean * mean * s2 / n - 3.0 * mean * mean * mean * mean
        skew = m3 / m2**1.5
        kurt = m4 / (m2 * m2)
    out[M_SKEW] = skew
    out[M_KURT] = kurt
    out[M_NBARS] = n
    out[M_TRADE_KEY] = key
    out[M_S1] = s1
    out[M_S2] = s2
    out[M_S3] = s3
    out[M_S4] = s4
    out[M_SD] = sd


@njit(cache=True, nogil=True)
def metrics_from_arrays(returns, position, ppy, turnover, out):  # pragma: no cover - compiled
    s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_init()
    p_prev = 0.0
    key = 0
    n = returns.shape[0]
    for t in range(n):
        p = position[t]
        s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_step(
            returns[t], p, p_prev, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp
        )
        key = trade_key_step(key, t, p, p_prev)
        p_prev = p
    acc_finish(n, ppy, p_prev, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp, turnover,
               float(key), out)  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def trade_key_step(key, t, p, p_prev):  # pragma: no cover - compiled
    """Fold the side (long/flat/short) of bar t into the trade fingerprint when it changes: two runs
    with the same entries and exits on the same bars and sides get the same key, whatever their size."""
    if p != p_prev:
        sp = 1 if p > 0.0 else (-1 if p < 0.0 else 0)
        sq = 1 if p_prev > 0.0 else (-1 if p_prev < 0.0 else 0)
        if sp != sq:
            key = (key * 1000003 + t * 3 + sp + 1) & TRADE_KEY_MASK
    return key


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
                 ppy, borrow, umap, ustart, uend, port, weight, do_port, out_metrics, out_pos, out_ret,
                 write):  # fmt: skip  # pragma: no cover
    """One strategy over all bars in one pass: positions, stops/targets, costs, equity, metrics.

    The contract is ``docs/execution_model.md``. position[t] is the target fraction of equity held during
    bar t (decided at the close of bar t-1). returns[t] is the net return of bar t:
    ``(1 - |pos|*rate if opened at the close of t-1) * (1 - |pos|*borrow if short)
    * (1 + pos*R_t - x_t*rate) - 1`` where R_t = close[t]/close[t-1] - 1 (or to the stop/target fill
    price) and x_t the notional traded at the close of t per unit of equity at the start of the bar:
    |pos*(1+R_t)| when the position is closed, |pos*(1-pos)*R_t| when it is kept (rebalanced back to its
    target fraction), nothing at the last bar (no decision there). ``turnover`` sums every x_t and entry.

    With ``do_port`` (1: add, 2: write — the first sleeve) the sleeve equity ``weight * equity`` goes to
    ``port`` at the union index
    ``umap[t]`` of every bar (forward-filled over the union bars in ``[ustart, uend)`` this symbol does not have),
    so summing the sleeves of every symbol gives the portfolio equity on the union timeline.
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
    s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_init()
    p_prev = 0.0
    turnover = 0.0
    key = 0
    last_u = ustart - 1  # the segment's columns of port are [ustart, uend)
    last_eq = 1.0

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
            o = opn[t]
            if pos > 0.0:
                if o <= stop_px or o >= tp_px:  # gapped through a level: the order fills at the open
                    gross = o / close[t - 1] - 1.0
                    stopped = True
                elif low[t] <= stop_px:  # stop first: if both could hit in this bar, assume the worse
                    gross = stop_px / close[t - 1] - 1.0
                    stopped = True
                elif high[t] >= tp_px:
                    gross = tp_px / close[t - 1] - 1.0
                    stopped = True
            else:
                if o >= stop_px or o <= tp_px:
                    gross = o / close[t - 1] - 1.0
                    stopped = True
                elif high[t] >= stop_px:
                    gross = stop_px / close[t - 1] - 1.0
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
            # x: notional traded at this close per unit of equity at the start of the bar (no division)
            x = 0.0
            if new_pos != pos:  # closed (exit, stop/target, or the first half of a flip): all of it
                x = abs(pos * (1.0 + gross))
            elif t < n - 1 and pos != 1.0:  # kept: rebalanced back to the target fraction
                x = abs(pos * (1.0 - pos) * gross)
            m = 1.0 + pos * gross - x * rate
            turnover += x
            if opened:
                m *= 1.0 - abs(pos) * rate
                turnover += abs(pos)
            if pos < 0.0 and borrow > 0.0:
                m *= 1.0 + pos * borrow
            r = m - 1.0
        s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_step(
            r, pos, p_prev, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp
        )
        key = trade_key_step(key, t, pos, p_prev)
        if do_port:
            u = umap[t]
            if do_port == 2:  # the first sleeve writes (no zero-filled buffer needed), the others add
                for k in range(last_u + 1, u):
                    port[k] = weight * last_eq
                port[u] = weight * eq
            else:
                for k in range(last_u + 1, u):
                    port[k] += weight * last_eq
                port[u] += weight * eq
            last_u = u
            last_eq = eq
        if write:
            out_pos[t] = pos
            out_ret[t] = r
        p_prev = pos
        opened = new_pos != pos and new_pos != 0.0
        pos = new_pos
    if do_port == 2:
        for k in range(last_u + 1, uend):
            port[k] = weight * last_eq
    elif do_port:
        for k in range(last_u + 1, uend):
            port[k] += weight * last_eq
    acc_finish(n, ppy, p_prev, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp, turnover,
               float(key), out_metrics)  # fmt: skip


@njit(cache=True, nogil=True)
def run_population(params, bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr,
                   rate, ppy, borrow, umap, ustart, uend, port, prow, weight, do_port,
                   out):  # fmt: skip  # pragma: no cover
    """Every strategy (row of ``params``); with ``do_port`` strategy i adds its sleeve to ``port[prow[i]]``."""
    dummy = np.empty(0)
    for i in range(params.shape[0]):
        row = port[prow[i]] if do_port else port[0]
        run_strategy(params[i], bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr,
                     rate, ppy, borrow, umap, ustart, uend, row, weight, do_port, out[i], dummy, dummy, False)  # fmt: skip


@njit(cache=True, nogil=True, parallel=True)
def run_population_parallel(params, bank, opn, high, low, close, bar_ret, regime, corr, has_regime,
                            has_corr, rate, ppy, borrow, umap, ustart, uend, port, prow, weight, do_port,
                            out):  # fmt: skip  # pragma: no cover
    dummy = np.empty(0)
    for i in prange(params.shape[0]):
        row = port[prow[i]] if do_port else port[0]
        run_strategy(params[i], bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr,
                     rate, ppy, borrow, umap, ustart, uend, row, weight, do_port, out[i], dummy, dummy, False)  # fmt: skip


@njit(cache=True, nogil=True)
def portfolio_metrics(port, start, stop, ppy, out):  # pragma: no cover - compiled
    """Return metrics of each row of ``port[:, start:stop]`` (a portfolio equity path whose value before
    ``start`` is 1); trades/exposure/turnover are the caller's (they come from the symbols' rows)."""
    for i in range(port.shape[0]):
        s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_init()
        prev = 1.0
        for k in range(start, stop):
            e = port[i, k]
            r = e / prev - 1.0 if prev > 0.0 else 0.0
            prev = e
            s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_step(
                r, 0.0, 0.0, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp
            )
        acc_finish(stop - start, ppy, 0.0, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp, 0.0,
                   0.0, out[i])  # fmt: skip


@njit(cache=True, nogil=True)
def pool_rows(rows, ppy, out):  # pragma: no cover - compiled
    """Pool the metric rows of separately backtested segments (n, k, m) into one row each (n, m): the
    return moments are those of the concatenated returns (from the summed power sums), total return
    compounds, max drawdown is the worst segment's (segments are separate backtests: equity does not
    run across the gap between them), trades/bars add up, exposure and win rate are pooled, turnover
    adds up and the trade fingerprints are chained."""
    for i in range(rows.shape[0]):
        n = 0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        sd = 0.0
        eq = 1.0
        mdd = 0.0
        ntr = 0
        nwin = 0
        nexp = 0.0  # bars in a position (a portfolio's is a weighted average, not an integer)
        turnover = 0.0
        key = 0
        for j in range(rows.shape[1]):
            r = rows[i, j]
            nb = int(r[M_NBARS])
            n += nb
            s1 += r[M_S1]
            s2 += r[M_S2]
            s3 += r[M_S3]
            s4 += r[M_S4]
            sd += r[M_SD]
            eq *= 1.0 + r[M_TOTAL]
            if r[M_MDD] > mdd:
                mdd = r[M_MDD]
            t = int(r[M_NTRADES])
            ntr += t
            nwin += int(round(r[M_WIN] * t))
            nexp += r[M_EXPOSURE] * nb
            turnover += r[M_TURNOVER]
            key = (key * 1000003 + int(r[M_TRADE_KEY])) & TRADE_KEY_MASK
        acc_finish(n, ppy, 0.0, s1, s2, s3, s4, sd, eq, 1.0, 1.0, mdd, ntr, nwin, 1.0, nexp, turnover,
                   float(key), out[i])  # fmt: skip
