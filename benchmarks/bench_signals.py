"""How well the signal engines recover the synthetic market's planted states, and how fast they run.

The synthetic market plants per-symbol regimes (trend_up, trend_down, mean_reverting, high_vol, low_vol)
and market-wide correlation states (decoupled, coupled). The composite regime engine labels 4 codes; the
planted regimes map onto them as trend_up -> trend_up, trend_down -> trend_down, mean_reverting and
low_vol -> range, high_vol -> high_vol. Scored after the warm-up (labels >= 0) and after ``--skip-days``:

* balanced accuracy (mean recall over the classes) and the confusion matrix (rows planted, columns found);
* detection lag: for every planted switch into a class, hours until the engine first says that class
  inside the planted segment (median, p90, and the share of switches detected before the segment ended);
* the same for the correlation regime against the planted correlation states;
* throughput: bars/s of the rollup and of both engines, and the engines' time as a ratio of the time
  the synthetic market took to generate the bars (a baseline measured in the same run).

Target: regime balanced accuracy >= 0.8. Run:
``.venv/bin/python benchmarks/bench_signals.py [--days 120] [--seed 42] [--interval 1min]``. Prints figures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from qt_pipeline.market.sources.synthetic import SyntheticMarket
from qt_pipeline.signals.correlation import CORRELATION_REGIMES, CorrelationParams, correlation_signals
from qt_pipeline.signals.regime import REGIME_NAMES, RegimeParams, regimes
from qt_pipeline.signals.rollup import log_returns, rollup_bars, wide

PLANTED_TO_CODE = {"trend_up": 0, "trend_down": 1, "mean_reverting": 2, "low_vol": 2, "high_vol": 3}


def planted_codes(segments: pd.DataFrame, buckets: pd.Series, mapping) -> np.ndarray:
    out = np.full(len(buckets), -1, dtype=np.int16)
    b = pd.to_datetime(buckets, utc=True).dt.tz_localize(None).to_numpy()
    for seg in segments.itertuples():
        sel = (b >= seg.start.to_datetime64()) & (b < seg.end.to_datetime64())
        out[sel] = mapping(seg)
    return out


def balanced_accuracy(truth: np.ndarray, pred: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (truth, pred), 1)
    rows = cm.sum(axis=1)
    recall = np.diag(cm)[rows > 0] / rows[rows > 0]
    return float(recall.mean()), cm


def detection_lags(truth: np.ndarray, pred: np.ndarray, step_h: float = 1.0) -> list[float | None]:
    """Per planted switch (truth changes to c): hours until pred == c within the new segment (None: never)."""
    lags: list[float | None] = []
    change = np.flatnonzero(np.diff(truth) != 0) + 1
    bounds = np.concatenate([change, [len(truth)]])
    for s, e in zip(change, bounds[1:], strict=False):
        c = truth[s]
        if c < 0:
            continue
        hit = np.flatnonzero(pred[s:e] == c)
        lags.append(float(hit[0]) * step_h if len(hit) else None)
    return lags


def print_scores(
    title: str, names: tuple[str, ...], truths: list[np.ndarray], preds: list[np.ndarray]
) -> float:
    """Scores over the concatenation; lags per series (one per symbol), pooled."""
    truth, pred = np.concatenate(truths), np.concatenate(preds).astype(np.int16)
    ba, cm = balanced_accuracy(truth, pred, len(names))
    print(f"\n== {title}: balanced accuracy {ba:.3f} over {len(truth)} labelled hours")
    width = max(len(n) for n in names) + 2
    print(" " * width + "".join(f"{n:>{width}}" for n in names) + f"{'recall':>{width}}")
    for i, n in enumerate(names):
        r = cm[i, i] / cm[i].sum() if cm[i].sum() else float("nan")
        print(f"{n:<{width}}" + "".join(f"{v:>{width}d}" for v in cm[i]) + f"{r:>{width}.3f}")
    lags = [x for t, p in zip(truths, preds, strict=True) for x in detection_lags(t, p)]
    found = [x for x in lags if x is not None]
    if lags:
        print(
            f"detection lag over {len(lags)} switches: median {np.median(found) if found else float('nan'):.1f} h, "
            f"p90 {np.percentile(found, 90) if found else float('nan'):.1f} h, detected before the segment "
            f"ended {len(found) / len(lags):.1%}"
        )
    return ba


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--interval", default="1min")
    ap.add_argument(
        "--skip-days", type=int, default=30, help="score only after this many days (model training)"
    )
    args = ap.parse_args()

    start = pd.Timestamp("2024-01-01", tz="UTC")
    end = start + pd.Timedelta(days=args.days)
    market = SyntheticMarket(args.seed, interval=args.interval)
    t0 = time.perf_counter()
    bars = pd.concat([market.bars(s, start, end) for s in market.symbols()], ignore_index=True)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    roll = rollup_bars(bars, "1h")
    t_roll = time.perf_counter() - t0
    t0 = time.perf_counter()
    corr = correlation_signals(wide(log_returns(roll), "log_return"), CorrelationParams())
    t_corr = time.perf_counter() - t0
    t0 = time.perf_counter()
    reg = regimes(roll, RegimeParams(), corr["market"])
    t_reg = time.perf_counter() - t0
    n = len(bars)
    print(
        f"synthetic market seed {args.seed}: {len(market.symbols())} symbols x {args.days} days of {args.interval} "
        f"bars = {n:,} bars -> {len(roll):,} hourly buckets"
    )
    print(f"generate bars      {t_gen:7.2f} s  {n / t_gen:12,.0f} bars/s   (baseline)")
    print(f"rollup to 1 h      {t_roll:7.2f} s  {n / t_roll:12,.0f} bars/s   {t_roll / t_gen:5.2f}x baseline")
    print(f"correlation engine {t_corr:7.2f} s  {n / t_corr:12,.0f} bars/s   {t_corr / t_gen:5.2f}x baseline")
    print(f"regime engine      {t_reg:7.2f} s  {n / t_reg:12,.0f} bars/s   {t_reg / t_gen:5.2f}x baseline")

    score_from = start + pd.Timedelta(days=args.skip_days)
    truth_all, pred_all = [], []
    for sym in market.symbols():
        g = reg[reg["symbol"] == sym].reset_index(drop=True)
        t = planted_codes(market.regimes(sym, start, end), g["bucket"], lambda s: PLANTED_TO_CODE[s.regime])
        ok = (g["regime"].to_numpy() >= 0) & (t >= 0) & (g["bucket"] >= score_from).to_numpy()
        truth_all.append(t[ok])
        pred_all.append(g["regime"].to_numpy()[ok])
    ba = print_scores(
        "composite regime engine",
        REGIME_NAMES,
        truth_all,
        pred_all,
    )
    print(f"target balanced accuracy >= 0.80: {'MET' if ba >= 0.8 else 'NOT MET'}")

    mk = corr["market"]
    t = planted_codes(
        market.correlation_states(start, end), mk["bucket"], lambda s: int(s.state == "coupled")
    )
    ok = (mk["corr_regime"].to_numpy() >= 0) & (t >= 0) & (mk["bucket"] >= score_from).to_numpy()
    print_scores(
        "correlation regime",
        CORRELATION_REGIMES,
        [t[ok]],
        [mk["corr_regime"].to_numpy()[ok].astype(np.int16)],
    )


if __name__ == "__main__":
    main()
