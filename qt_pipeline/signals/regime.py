"""Composite regime engine: per symbol and bucket, a regime label from trend, volatility, correlation and
a hidden Markov model — with no look-ahead (the label at bucket ``t`` uses data of buckets ``<= t`` only).

Sources, from the hourly rollup (:func:`~qt_pipeline.signals.rollup.rollup_bars`) of one symbol:

* **volatility**: ``log_vol`` = ½·log of the realized variance (sum of squared bar returns inside the
  bucket), averaged over the last ``vol_smooth`` buckets;
* **hidden Markov model** (hmmlearn ``GaussianHMM``, ``hmm_states`` states) over ``log_vol``. It is
  refitted at fixed points (every ``refit_hours`` on the UTC grid, and at the first day boundary with
  ``min_train_hours`` of history) on the trailing ``train_hours`` of data *before* the refit point, and
  then applied with the **forward filter only** (filtered probabilities; hmmlearn's ``predict`` smooths
  with the backward pass, which would look ahead). Each state is classed ``calm``/``normal``/``turbulent``
  by its mean against the median of its training data (factor ``vol_ratio``);
* **trend**: ``trend_score`` = sum of the last ``trend_window`` log returns over the square root of their
  realized variance (a t-statistic of the drift);
* **correlation**: the market correlation regime of the correlation engine (optional input).

Composite code (what the evolution's ``regime_mask`` gene filters on): ``turbulent`` → 3 ``high_vol``;
``calm`` → 2 ``range``; otherwise ``trend_score > trend_threshold`` → 0 ``trend_up``, ``< -trend_threshold``
→ 1 ``trend_down``, else 2 ``range``. -1 ``unknown`` during warm-up (no model fitted yet, trend window not
full). ``regime_label`` adds the correlation regime, e.g. ``trend_up/coupled``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qt_pipeline.regime_codes import REGIME_NAMES  # codes 0..3 (shared with the evolution)
from qt_pipeline.signals.rollup import ORIGIN

VOL_STATES: tuple[str, ...] = ("calm", "normal", "turbulent")
UNKNOWN = -1
REGIME_COLUMNS: tuple[str, ...] = (
    "bucket",
    "symbol",
    "log_return",
    "log_vol",
    "trend_score",
    "hmm_state",
    "hmm_prob",
    "vol_state",
    "corr_regime",
    "regime",
    "regime_name",
    "regime_label",
)
_EPS = 1e-14


@dataclass(frozen=True)
class RegimeParams:
    trend_window: int = 12  # buckets
    trend_threshold: float = 0.4
    vol_smooth: int = 3  # buckets
    vol_ratio: float = (
        1.8  # a state whose mean vol is this factor above (below) the median is turbulent (calm)
    )
    hmm_states: int = 4
    train_hours: int = 720  # trailing training window of each fit
    min_train_hours: int = 72  # the first fit waits for this much history
    refit_hours: int = 168  # refit on this UTC grid (a multiple of 24)
    burn_in_hours: int = 48  # the filter restarts this long before each refit point
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.refit_hours <= 0 or self.refit_hours % 24:
            raise ValueError(f"refit_hours must be a positive multiple of 24, got {self.refit_hours}")
        if self.hmm_states < 2:
            raise ValueError(f"hmm_states must be >= 2, got {self.hmm_states}")
        if not 0 < self.min_train_hours <= self.train_hours:
            raise ValueError("need 0 < min_train_hours <= train_hours")
        if self.trend_window < 2 or self.vol_smooth < 1:
            raise ValueError("trend_window must be >= 2 and vol_smooth >= 1")

    @property
    def lookback(self) -> pd.Timedelta:
        """History to read before the first bucket wanted so its labels equal those of a longer run."""
        return pd.Timedelta(
            hours=self.train_hours + self.refit_hours + self.burn_in_hours + self.trend_window
        )


def _fit_hmm(x: np.ndarray, p: RegimeParams):
    from hmmlearn.hmm import GaussianHMM

    model = GaussianHMM(
        n_components=p.hmm_states,
        covariance_type="diag",
        n_iter=50,
        tol=1e-2,  # log-likelihood units over hundreds of hours: finer changes no label
        random_state=p.random_state,
        init_params="stc",
        params="stmc",
    )
    qs = np.linspace(0.1, 0.95, p.hmm_states)
    model.means_ = np.quantile(x, qs)[:, None]
    hmm_log = logging.getLogger("hmmlearn")
    level = hmm_log.level
    hmm_log.setLevel(logging.ERROR)  # "model is not converging" chatter on tiny likelihood wiggles
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x[:, None])
    finally:
        hmm_log.setLevel(level)
    return model


def _forward(model, x: np.ndarray) -> np.ndarray:
    """Filtered state probabilities P(state_t | x_0..x_t) (forward pass only: no look-ahead)."""
    mu = model.means_[:, 0]
    var = np.maximum(np.asarray(model.covars_).reshape(len(mu), -1)[:, 0], 1e-8)
    ll = -0.5 * (np.log(2 * np.pi * var)[None, :] + (x[:, None] - mu[None, :]) ** 2 / var[None, :])
    lik = np.exp(ll - ll.max(axis=1, keepdims=True))  # per-row scaling cancels in the normalisation
    a = np.asarray(model.transmat_, dtype=np.float64)
    out = np.empty_like(lik)
    alpha = np.asarray(model.startprob_, dtype=np.float64) * lik[0]
    out[0] = alpha / alpha.sum()
    for t in range(1, len(x)):
        alpha = (out[t - 1] @ a) * lik[t]
        total = alpha.sum()
        out[t] = alpha / total if total > 0 else 1.0 / len(alpha)
    return out


def _refit_points(buckets: pd.DatetimeIndex, valid: np.ndarray, p: RegimeParams) -> list[int]:
    """Row indices where a new model takes over (see the module docstring)."""
    hours = ((buckets - ORIGIN) // pd.Timedelta(hours=1)).to_numpy()
    day_start = hours % 24 == 0
    grid = hours % p.refit_hours == 0
    n_valid = np.cumsum(valid) - valid  # valid observations strictly before each row
    enough = n_valid >= p.min_train_hours
    first = np.flatnonzero(day_start & enough)
    if len(first) == 0:
        return []
    pts = [int(first[0])] + [int(i) for i in np.flatnonzero(grid & enough) if i > first[0]]
    return pts


def symbol_regimes(
    rollup: pd.DataFrame, params: RegimeParams | None = None, corr_regime: pd.Series | None = None
) -> pd.DataFrame:
    """Run the engine on one symbol's hourly rollup (``bucket, close, realized_var`` sorted by bucket;
    :func:`~qt_pipeline.signals.rollup.rollup_bars`). ``corr_regime`` (bucket-indexed int codes of the
    correlation engine) is joined in when given. Returns :data:`REGIME_COLUMNS`."""
    p = params or RegimeParams()
    r = rollup.sort_values("bucket").reset_index(drop=True)
    n = len(r)
    symbol = str(r["symbol"].iloc[0]) if n else ""
    buckets = pd.DatetimeIndex(r["bucket"])
    close = r["close"].to_numpy(dtype=np.float64)
    ret = np.log(close / np.concatenate([[np.nan], close[:-1]]))
    rv = r["realized_var"].to_numpy(dtype=np.float64)
    rv_s = pd.Series(rv).rolling(p.vol_smooth, min_periods=p.vol_smooth).mean().to_numpy()
    log_vol = 0.5 * np.log(rv_s + _EPS)
    log_vol[np.isnan(rv_s)] = np.nan
    rs = pd.Series(ret).rolling(p.trend_window, min_periods=p.trend_window).sum().to_numpy()
    vs = (
        pd.Series(np.where(np.isnan(ret), np.nan, rv))
        .rolling(p.trend_window, min_periods=p.trend_window)
        .sum()
    )
    trend = rs / np.sqrt(vs.to_numpy() + _EPS)

    hmm_state = np.full(n, UNKNOWN, dtype=np.int8)
    hmm_prob = np.full(n, np.nan)
    vol_state = np.full(n, UNKNOWN, dtype=np.int8)
    valid = ~np.isnan(log_vol)
    pts = _refit_points(buckets, valid, p) if n else []
    for k, start in enumerate(pts):
        stop = pts[k + 1] if k + 1 < len(pts) else n
        t0 = buckets[start]
        train = (buckets >= t0 - pd.Timedelta(hours=p.train_hours)) & (buckets < t0) & valid
        x_train = log_vol[train]
        model = _fit_hmm(x_train, p)
        med = float(np.median(x_train))
        mu = model.means_[:, 0]
        cls = np.where(mu > med + np.log(p.vol_ratio), 2, np.where(mu < med - np.log(p.vol_ratio), 0, 1))
        burn = int(np.searchsorted(buckets, t0 - pd.Timedelta(hours=p.burn_in_hours)))
        seg = np.arange(burn, stop)
        seg = seg[valid[seg]]
        if len(seg) == 0:
            continue
        probs = _forward(model, log_vol[seg])
        keep = seg >= start
        rows = seg[keep]
        st = probs[keep].argmax(axis=1)
        hmm_state[rows] = st
        hmm_prob[rows] = probs[keep].max(axis=1)
        vol_state[rows] = cls[st]

    code = np.full(n, UNKNOWN, dtype=np.int8)
    known = (vol_state >= 0) & ~np.isnan(trend)
    code[known & (vol_state == 2)] = 3
    code[known & (vol_state == 0)] = 2
    normal = known & (vol_state == 1)
    code[normal & (trend > p.trend_threshold)] = 0
    code[normal & (trend < -p.trend_threshold)] = 1
    code[normal & (np.abs(trend) <= p.trend_threshold)] = 2

    if corr_regime is not None:
        cr = corr_regime.reindex(buckets).fillna(UNKNOWN).to_numpy().astype(np.int8)
    else:
        cr = np.full(n, UNKNOWN, dtype=np.int8)
    names = np.array(("unknown", *REGIME_NAMES), dtype=object)[code + 1]
    corr_names = np.array(("unknown", "decoupled", "coupled"), dtype=object)[cr + 1]
    label = np.where(cr >= 0, names + "/" + corr_names, names)
    return pd.DataFrame(
        {
            "bucket": buckets,
            "symbol": pd.array([symbol] * n, dtype="str"),
            "log_return": ret,
            "log_vol": log_vol,
            "trend_score": trend,
            "hmm_state": hmm_state,
            "hmm_prob": hmm_prob,
            "vol_state": vol_state,
            "corr_regime": cr,
            "regime": code,
            "regime_name": pd.array(names.astype(str), dtype="str"),
            "regime_label": pd.array(label.astype(str), dtype="str"),
        }
    )


def regimes(
    rollup: pd.DataFrame, params: RegimeParams | None = None, market: pd.DataFrame | None = None
) -> pd.DataFrame:
    """:func:`symbol_regimes` for every symbol of an hourly rollup; ``market`` is the ``market`` frame of
    :func:`~qt_pipeline.signals.correlation.correlation_signals` (its ``corr_regime`` joins in)."""
    corr = None
    if market is not None and len(market):
        corr = pd.Series(market["corr_regime"].to_numpy(), index=pd.DatetimeIndex(market["bucket"]))
    frames = [symbol_regimes(g, params, corr) for _, g in rollup.groupby("symbol", sort=True, observed=True)]
    if not frames:
        return pd.DataFrame({c: [] for c in REGIME_COLUMNS})
    return (
        pd.concat(frames, ignore_index=True)
        .sort_values(["bucket", "symbol"], kind="stable")
        .reset_index(drop=True)
    )
