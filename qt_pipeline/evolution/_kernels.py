"""Numba kernels shared by :mod:`metrics` and :mod:`backtest` (private).

The metric accumulators are one set of functions used both by the fused backtest loop and by
:func:`qt_pipeline.evolution.metrics.compute_metrics`, so a fused evaluation and "simulate, then compute
metrics from the arrays" give bit-identical numbers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

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
@intrinsic
def fetch_add(typingctx, arr, idx, val):  # pragma: no cover - compiled
    """``arr[idx] += val`` as one atomic step, returning the value before (``val`` 0 reads it): how the
    threads of :func:`run_population_parallel` take strategies without taking one twice."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")

    return types.int64(arr, types.intp, types.int64), codegen


FLAG_BLOCK = 1024  # bars whose rule decisions are computed ahead of the sequential loop at a time


@njit(cache=True, nogil=True)
def rule_flags(kind, th, cmp_below, ra, rb, lag, close, lo, hi, b0, sig, shift):  # pragma: no cover
    """The decisions (up, down) of one rule at the closes of bars ``lo <= t < hi``, as bits
    ``(up | down << 1) << shift`` OR-ed into ``sig[t - b0]``.

    Inputs at bar t: ``xa = ra[t - lag]``, ``xb = rb[t - lag]``, ``c = close[t]``; crosses: xa = fast MA,
    xb = slow MA; rsi: xa = RSI; bollinger: xa = SMA, xb = std; momentum: xa = close[t - p]; breakout:
    xa/xb = Donchian upper/lower at t - 1. A comparison with a NaN input is False (no signal while an
    input warms up); no division. One loop per rule kind and no branch inside, so the compiler
    vectorises it, and the sequential loop of :func:`run_strategy` only tests bits.
    """
    ub = np.uint8(1 << shift)
    db = np.uint8(2 << shift)
    if cmp_below:
        ub, db = db, ub
    z = np.uint8(0)
    m = hi - lo
    if m <= 0:
        return
    xa = ra[lo - lag : hi - lag]
    xb = rb[lo - lag : hi - lag]
    c = close[lo:hi]
    out = sig[lo - b0 : hi - b0]
    if kind == K_SMA or kind == K_EMA:  # noqa: SIM109 (plain int compares in the kernel)
        up_m = 1.0 + th
        dn_m = 1.0 - th
        for k in range(m):
            out[k] |= (ub if xa[k] > xb[k] * up_m else z) | (db if xa[k] < xb[k] * dn_m else z)
    elif kind == K_RSI:
        nth = -th
        for k in range(m):
            v = xa[k] - 50.0
            out[k] |= (ub if v > th else z) | (db if v < nth else z)
    elif kind == K_BOLL:
        for k in range(m):
            d = c[k] - xa[k]
            w = th * xb[k]
            pos = xb[k] > 0.0
            out[k] |= (ub if pos & (d > w) else z) | (db if pos & (d < -w) else z)
    elif kind == K_MOM:
        up_m = 1.0 + th
        dn_m = 1.0 - th
        for k in range(m):
            out[k] |= (ub if c[k] > xa[k] * up_m else z) | (db if c[k] < xa[k] * dn_m else z)
    elif kind == K_BREAK:
        for k in range(m):
            half = 0.5 * (xa[k] - xb[k])
            d = c[k] - 0.5 * (xa[k] + xb[k])
            pos = half > 0.0
            out[k] |= (ub if pos & (d > th * half) else z) | (db if pos & (d < -th * half) else z)
    elif kind == K_ALWAYS:
        for k in range(m):
            out[k] |= ub


@njit(cache=True, nogil=True, inline="always")
def port_step(port, do_port, u, last_u, last_eq, weight, eq):  # pragma: no cover - compiled
    """Put a sleeve's equity ``weight * eq`` of a bar at union column ``u`` of ``port`` (written for the
    first sleeve, ``do_port == 2``, added for the others), forward-filling the columns since ``last_u``
    with the previous equity; returns the new (last_u, last_eq)."""
    if do_port == 2:  # the first sleeve writes (no zero-filled buffer needed), the others add
        for k in range(last_u + 1, u):
            port[k] = weight * last_eq
        port[u] = weight * eq
    else:
        for k in range(last_u + 1, u):
            port[k] += weight * last_eq
        port[u] += weight * eq
    return u, eq


# action bits: the decision at a bar can change something for a strategy that is flat / long / short
A_FLAT, A_LONG, A_SHORT = 16, 32, 64


@njit(cache=True, nogil=True)
def action_table(xsh, allow_long, allow_short):  # pragma: no cover - compiled
    """For each decision byte f (entry up/down in bits 0/1, exit up/down in bits ``xsh``/``xsh + 1``), the
    action bits saying exactly where :func:`run_strategy`'s decision can change the position: flat: an
    allowed entry not vetoed by the exit rule; long: the exit rule says down, or a flip to short
    (direction 'both'); short: the mirror image. Elsewhere the position is kept unchanged."""
    al = 1 if allow_long else 0
    ash = 1 if allow_short else 0
    both = al & ash
    acts = np.zeros(16, dtype=np.uint8)
    for f in range(16):
        eu = f & 1
        ed = (f >> 1) & 1
        xu = (f >> xsh) & 1
        xd = (f >> (xsh + 1)) & 1
        flat = (eu & al & (xd ^ 1)) | (ed & ash & (xu ^ 1))
        lng = xd | (ed & (xu ^ 1) & both)
        sht = xu | (eu & (xd ^ 1) & both)
        acts[f] = flat * A_FLAT | lng * A_LONG | sht * A_SHORT
    return acts


# per-strategy state carried from one span of bars to the next (:func:`run_span`)
(
    S_S1, S_S2, S_S3, S_S4, S_SD, S_EQ, S_PEAK, S_TROUGH, S_MDD, S_NTR, S_NWIN, S_TEQ, S_NEXP,
    S_PPREV, S_TURN, S_KEY, S_LASTU, S_LASTEQ, S_POS, S_OPENED, S_STOP, S_TP, S_AMASK,
) = range(23)  # fmt: skip
N_STATE = 23


@njit(cache=True, nogil=True, inline="always")
def acc_store(st, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp):  # pragma: no cover
    """Keep the accumulators of :func:`acc_step` in a strategy's state row ``st``."""
    st[S_S1] = s1
    st[S_S2] = s2
    st[S_S3] = s3
    st[S_S4] = s4
    st[S_SD] = sd
    st[S_EQ] = eq
    st[S_PEAK] = peak
    st[S_TROUGH] = trough
    st[S_MDD] = mdd
    st[S_NTR] = ntr
    st[S_NWIN] = nwin
    st[S_TEQ] = teq
    st[S_NEXP] = nexp


@njit(cache=True, nogil=True)
def state_init(st, ustart):  # pragma: no cover - compiled
    """The state of a strategy before its first bar (flat, equity 1, empty accumulators)."""
    s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_init()
    acc_store(st, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp)
    st[S_PPREV] = 0.0
    st[S_TURN] = 0.0
    st[S_KEY] = 0.0
    st[S_LASTU] = ustart - 1  # the segment's columns of port are [ustart, uend)
    st[S_LASTEQ] = 1.0
    st[S_POS] = 0.0  # held during bar t
    st[S_OPENED] = 0.0  # pos was opened at the close of bar t-1
    st[S_STOP] = 0.0
    st[S_TP] = 0.0
    st[S_AMASK] = A_FLAT  # the action bit of the current position (flat / long / short)


@njit(cache=True, nogil=True)
def strategy_actions(prm):  # pragma: no cover - compiled
    """:func:`action_table` of the strategy ``prm``."""
    xsh = 0 if int(prm[P_XKIND]) == K_OPPOSITE else 2
    return action_table(xsh, prm[P_LONG] != 0.0, prm[P_SHORT] != 0.0)


@njit(cache=True, nogil=True)
def run_span(prm, bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr, rate, borrow,
             umap, port, weight, do_port, st, acts, sig, c0, c1, out_pos, out_ret,
             write):  # fmt: skip  # pragma: no cover
    """Bars ``c0 <= t < c1`` of one strategy, continuing from (and updating) its state ``st``.

    ``c0`` is a multiple of ``FLAG_BLOCK``; ``acts`` is :func:`strategy_actions` of ``prm``; ``sig`` a scratch
    buffer of ``FLAG_BLOCK`` bytes. Spans in order from 0 to n give exactly one pass over all bars (the
    state holds every value a bar leaves to the next), so :func:`run_population` can run the population
    span by span: a span of every series stays in cache while each strategy reads it, instead of each
    strategy streaming whole rows of the bank from memory. See :func:`run_strategy` for the model.
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
    # stop/target levels exist only with a stop loss, a take profit or an ATR stop: otherwise they are
    # +-inf and the intrabar checks cannot fire (skipping them changes no result)
    has_levels = sl > 0.0 or tp > 0.0 or use_atr
    xsh = 0 if xkind == K_OPPOSITE else 2  # the exit rule's bits (the entry's for the 'opposite' exit)

    s1 = st[S_S1]
    s2 = st[S_S2]
    s3 = st[S_S3]
    s4 = st[S_S4]
    sd = st[S_SD]
    eq = st[S_EQ]
    peak = st[S_PEAK]
    trough = st[S_TROUGH]
    mdd = st[S_MDD]
    ntr = int(st[S_NTR])
    nwin = int(st[S_NWIN])
    teq = st[S_TEQ]
    nexp = int(st[S_NEXP])
    p_prev = st[S_PPREV]
    turnover = st[S_TURN]
    key = int(st[S_KEY])
    last_u = int(st[S_LASTU])
    last_eq = st[S_LASTEQ]
    pos = st[S_POS]
    opened = st[S_OPENED] != 0.0
    stop_px = st[S_STOP]
    tp_px = st[S_TP]
    amask = int(st[S_AMASK])
    for b0 in range(c0, c1, FLAG_BLOCK):
        b1 = min(b0 + FLAG_BLOCK, n)
        lo = max(b0, t_start)  # bars [t_start, n - 1) decide; the other bits stay 0
        hi = min(b1, n - 1)
        sig[:] = 0
        rule_flags(ekind, eth, ecmp, bank[ea], bank[eb], elag, close, lo, hi, b0, sig, 0)
        if xsh:
            rule_flags(xkind, xth, xcmp, bank[xa], bank[xb], xlag, close, lo, hi, b0, sig, 2)
        t = b0
        while t < b1:
            if pos == 0.0 and p_prev == 0.0:
                # flat after flat: nothing changes (r = 0, no trade, equity kept) until a bar whose
                # decision can enter; the skipped bars' portfolio columns are forward-filled below
                t_flat = t
                while t < b1 and (acts[sig[t - b0]] & A_FLAT) == 0:
                    t += 1
                if write:
                    out_pos[t_flat:t] = 0.0
                    out_ret[t_flat:t] = 0.0
                if t == b1:
                    break
            if pos != 0.0 and pos == p_prev and not opened and not write:
                # holding: fold bars with no decision due (the rules' bits say nothing can change) and no
                # stop/target touched, up to the last bar; the general step below takes the others
                hold_end = min(b1, n - 1)
                while t < hold_end and (acts[sig[t - b0]] & amask) == 0:
                    if has_levels:
                        o = opn[t]
                        if pos > 0.0:
                            if o <= stop_px or o >= tp_px or low[t] <= stop_px or high[t] >= tp_px:
                                break
                        elif o >= stop_px or o <= tp_px or high[t] >= stop_px or low[t] <= tp_px:
                            break
                    gross = bar_ret[t]
                    x = abs(pos * (1.0 - pos) * gross) if pos != 1.0 else 0.0  # rebalanced to the target
                    m = 1.0 + pos * gross - x * rate
                    turnover += x
                    if pos < 0.0 and borrow > 0.0:
                        m *= 1.0 + pos * borrow
                    s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_step(
                        m - 1.0, pos, pos, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp
                    )
                    if do_port:
                        last_u, last_eq = port_step(port, do_port, umap[t], last_u, last_eq, weight, eq)
                    t += 1
                if t == b1:
                    break
            # ---- 1. the bar's return for the position held during it (stops/targets inside the bar) ----
            gross = 0.0
            stopped = False
            if pos != 0.0:
                gross = bar_ret[t]
            if pos != 0.0 and has_levels:
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
            elif (acts[sig[t - b0]] & amask) != 0:
                f = sig[t - b0]  # (bars outside [t_start, n - 1) have no bits: no decision)
                eu = (f & 1) != 0
                ed = (f & 2) != 0
                xu = ((f >> xsh) & 1) != 0
                xd = ((f >> xsh) & 2) != 0
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
            if pos != 0.0 or p_prev != 0.0:  # a flat bar after a flat bar folds nothing (r = 0, no trade)
                s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp = acc_step(
                    r, pos, p_prev, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp
                )
                key = trade_key_step(key, t, pos, p_prev)
            if do_port:
                last_u, last_eq = port_step(port, do_port, umap[t], last_u, last_eq, weight, eq)
            if write:
                out_pos[t] = pos
                out_ret[t] = r
            p_prev = pos
            opened = (new_pos != pos) & (new_pos != 0.0)
            if new_pos != pos:
                amask = A_FLAT if new_pos == 0.0 else (A_LONG if new_pos > 0.0 else A_SHORT)
            pos = new_pos
            t += 1
    acc_store(st, s1, s2, s3, s4, sd, eq, peak, trough, mdd, ntr, nwin, teq, nexp)
    st[S_PPREV] = p_prev
    st[S_TURN] = turnover
    st[S_KEY] = key  # < 2**52: exact in a float64
    st[S_LASTU] = last_u
    st[S_LASTEQ] = last_eq
    st[S_POS] = pos
    st[S_OPENED] = 1.0 if opened else 0.0
    st[S_STOP] = stop_px
    st[S_TP] = tp_px
    st[S_AMASK] = amask


@njit(cache=True, nogil=True)
def finish_strategy(n, ppy, st, port, uend, weight, do_port, out_metrics):  # pragma: no cover - compiled
    """After the last span: forward-fill the sleeve to ``uend`` and write the metric row."""
    last_u = int(st[S_LASTU])
    last_eq = st[S_LASTEQ]
    if do_port == 2:
        for k in range(last_u + 1, uend):
            port[k] = weight * last_eq
    elif do_port:
        for k in range(last_u + 1, uend):
            port[k] += weight * last_eq
    acc_finish(n, ppy, st[S_PPREV], st[S_S1], st[S_S2], st[S_S3], st[S_S4], st[S_SD], st[S_EQ], st[S_PEAK],
               st[S_TROUGH], st[S_MDD], int(st[S_NTR]), int(st[S_NWIN]), st[S_TEQ], int(st[S_NEXP]), st[S_TURN],
               st[S_KEY], out_metrics)  # fmt: skip


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

    Speed without changing a bit of the result: bars go in blocks of ``FLAG_BLOCK``; the rules' decisions
    of a block are computed first by vectorised loops (:func:`rule_flags`), and a table
    (:func:`action_table`) says at which bars a decision can change the position at all. Runs of flat
    bars are skipped to the next bar where an entry is possible (they fold nothing: r = 0, equity kept),
    and runs of held bars with no decision due and no stop/target touched are folded by a short loop;
    every other bar takes the general step (:func:`run_span`). The 1e-9 naive-loop test and the
    bit-identity tests between :func:`simulate` (which never takes the held-bar loop) and the population
    path check this.
    """
    st = np.empty(N_STATE)
    state_init(st, ustart)
    sig = np.empty(FLAG_BLOCK, dtype=np.uint8)
    n = close.shape[0]
    run_span(prm, bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr, rate, borrow, umap,
             port, weight, do_port, st, strategy_actions(prm), sig, 0, n, out_pos, out_ret, write)  # fmt: skip
    finish_strategy(n, ppy, st, port, uend, weight, do_port, out_metrics)


@njit(cache=True, nogil=True)
def population_states(params, ustart):  # pragma: no cover - compiled
    """Every strategy's state before its first bar (:func:`state_init`) and its action table."""
    ns = params.shape[0]
    st = np.empty((ns, N_STATE))
    acts = np.empty((ns, 16), dtype=np.uint8)
    for i in range(ns):
        state_init(st[i], ustart)
        acts[i] = strategy_actions(params[i])
    return st, acts


@njit(cache=True, nogil=True)
def finish_population(n, ppy, st, port, prow, uend, weight, do_port, out):  # pragma: no cover - compiled
    """:func:`finish_strategy` of every strategy after the last span (strategy i's sleeve is
    ``port[prow[i]]`` with ``do_port``)."""
    for i in range(st.shape[0]):
        row = port[prow[i]] if do_port else port[0]
        finish_strategy(n, ppy, st[i], row, uend, weight, do_port, out[i])


@njit(cache=True, nogil=True)
def run_population(params, bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr,
                   rate, ppy, borrow, umap, ustart, uend, port, prow, weight, do_port, span,
                   out):  # fmt: skip  # pragma: no cover
    """Every strategy (row of ``params``), span by span: bars ``[0, span)`` of every strategy, then
    ``[span, 2 span)``, ... (``span`` a multiple of ``FLAG_BLOCK``; the caller sizes it so a span of the
    series the strategies read fits in cache). With ``do_port`` strategy i adds its sleeve to
    ``port[prow[i]]``. Bit-identical to :func:`run_strategy` per strategy, whatever ``span``."""
    ns = params.shape[0]
    n = close.shape[0]
    dummy = np.empty(0)
    st, acts = population_states(params, ustart)
    sig = np.empty(FLAG_BLOCK, dtype=np.uint8)
    span = max(FLAG_BLOCK, span // FLAG_BLOCK * FLAG_BLOCK)
    for c0 in range(0, n, span):
        c1 = min(c0 + span, n)
        for i in range(ns):
            row = port[prow[i]] if do_port else port[0]
            run_span(params[i], bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr, rate,
                     borrow, umap, row, weight, do_port, st[i], acts[i], sig, c0, c1, dummy, dummy, False)  # fmt: skip
    finish_population(n, ppy, st, port, prow, uend, weight, do_port, out)


@njit(cache=True, nogil=True, parallel=True)
def run_population_parallel(params, bank, opn, high, low, close, bar_ret, regime, corr, has_regime,
                            has_corr, rate, ppy, borrow, umap, ustart, uend, port, prow, weight, do_port, span,
                            nthreads, out):  # fmt: skip  # pragma: no cover
    """:func:`run_population` on ``nthreads`` of Numba's threads, span by span: the threads work in the
    same span of the bars and series (read from the shared cache, not from memory once per thread), each
    running contiguous strategies in their order (neighbours share series).

    A strategy's cost varies ~10x and drifts (flat, holding, trading), so no fixed split is even: in each
    span thread u owns an equal range of the strategies and runs it from the left, taking one strategy at
    a time (an atomic count per span and range); a thread done with its own range helps the range with
    the most strategies left, from its right end, and when nothing of the span is left it goes on to the
    next span, without waiting for the others. The only wait is a strategy's own order: its span s + 1
    starts once its span s is done (a count per strategy), so a thread the OS (or the hypervisor) stops
    for a moment holds up one strategy, not every thread at the end of each span. A strategy's state is
    its own, whichever thread runs it: bit-identical to :func:`run_population` per strategy.

    Measured on the 2-core VM (500k bars, 200 random genomes): 1.90-1.95x one thread (median of paired
    rounds, 6 runs), against 1.84-1.89x for the same ranges with the threads meeting at the end of every
    span (runs alternated; in rounds of random order 1.7% slower alone and 2.3% slower with a local Ray
    idling beside it, whose processes wake up on both cores). Before that: 1.87x for ranges cut again
    after each span by the cycles each strategy took, 1.52-1.64x for a group of strategies per thread over
    all bars (each group read its series from memory itself) and 1.74-1.84x for strategies handed out in
    chunks of 8 each span."""
    ns = params.shape[0]
    n = close.shape[0]
    dummy = np.empty(0)
    st, acts = population_states(params, ustart)
    sig = np.empty((ns, FLAG_BLOCK), dtype=np.uint8)
    span = max(FLAG_BLOCK, span // FLAG_BLOCK * FLAG_BLOCK)
    nspans = (n + span - 1) // span
    nt = max(1, min(ns, nthreads))
    home = np.empty(nt + 1, dtype=np.int64)  # thread u owns strategies home[u] .. home[u + 1] - 1
    for u in range(nt + 1):
        home[u] = u * ns // nt
    # taken[8 (s nt + u)]: strategies of range u taken in span s; taken[8 (s nt + u) + 4]: those taken from
    # its right end (a cache line per span and range, so threads counting in different ranges do not
    # share one)
    taken = np.zeros(8 * nt * nspans, dtype=np.int64)
    done = np.zeros(ns, dtype=np.int64)  # done[i]: spans strategy i has finished
    for t in prange(nt):
        s = 0  # the span this thread takes from
        u = -1  # the range it takes from (its own first)
        k = 0  # strategies of its own range it ran in span s: home[t], home[t] + 1, ...
        while s < nspans:
            if u < 0:
                u = t + 0  # (a copy: Numba refuses a write to the loop index)
            at = 8 * (s * nt + u)
            lo = home[u]
            m = home[u + 1] - lo
            if fetch_add(taken, at, 1) < m:  # type: ignore[call-arg]  # (typed by Numba)
                if u == t:
                    i = lo + k
                    k += 1
                else:
                    i = lo + m - 1 - fetch_add(taken, at + 4, 1)
                while fetch_add(done, i, 0) < s:  # its span s - 1 still running on another thread
                    pass
                c0 = s * span
                row = port[prow[i]] if do_port else port[0]
                run_span(params[i], bank, opn, high, low, close, bar_ret, regime, corr, has_regime, has_corr,
                         rate, borrow, umap, row, weight, do_port, st[i], acts[i], sig[i], c0, min(c0 + span, n),
                         dummy, dummy, False)  # fmt: skip
                fetch_add(done, i, 1)
                continue
            u = -2  # range u is all taken in span s: help the range with the most strategies left, if any
            most = 0
            for v in range(nt):
                left = home[v + 1] - home[v] - fetch_add(taken, 8 * (s * nt + v), 0)
                if left > most:
                    u, most = v, left
            if u < 0:  # nothing of span s is left: on to the next one
                s += 1
                k = 0
    finish_population(n, ppy, st, port, prow, uend, weight, do_port, out)


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
