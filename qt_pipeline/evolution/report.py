"""The run's report: every hall-of-fame strategy re-scored in and out of sample, with the strength of
the evidence and what is wrong with it, in words.

Per strategy (one table row; ``strategy_rows`` stores the same with per-fold and per-symbol detail):

* ``is_<metric>`` / ``oos_<metric>``: the portfolio across symbols over all in-sample / out-of-sample
  segments (``docs/execution_model.md``); ``oos_f<k>_<metric>``: out-of-sample fold k alone;
  ``<is|oos>_<metric>@<SYMBOL>``: one symbol's sleeve alone; CAGR and Calmar are NaN ("n/a") when the
  window is shorter than ``fitness.min_horizon_days``;
* ``psr``: probabilistic Sharpe ratio — the probability that the true in-sample Sharpe ratio is > 0
  given the sample's length, skewness and kurtosis (Bailey & López de Prado 2012);
* ``dsr``: deflated Sharpe ratio — the same probability against the Sharpe ratio the best of
  ``n_trials`` genomes would reach by luck alone, with the variance of the Sharpe ratios of every genome
  the run evaluated (Bailey & López de Prado 2014); >= 0.95 is the usual bar for "not luck";
* ``bh_<is|oos>_<metric>``: buy-and-hold of the same portfolio on the same window (the benchmark);
* ``is_turnover``: traded notional as a multiple of equity over the in-sample window;
* ``flags``: what is wrong, in words (";"-separated; empty = nothing found).

Near-duplicates (strategies making the same trades) are collapsed by the hall of fame already.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qt_pipeline.evolution.ga import HallOfFame

TABLE_METRICS = ("sharpe", "total_return", "max_drawdown", "n_trades", "win_rate")
EULER_GAMMA = 0.5772156649015329
DSR_SIGNIFICANT = 0.95
MAX_SHARPE_SE = (
    1.0  # an out-of-sample window whose annualised Sharpe has a larger standard error is too short
)


def probabilistic_sharpe(sr: float, n: float, skew: float, kurt: float, sr_star: float = 0.0) -> float:
    """PSR: P(true per-bar Sharpe > ``sr_star``) for an observed per-bar Sharpe ``sr`` over ``n`` returns
    with skewness ``skew`` and (non-excess) kurtosis ``kurt``. NaN when undefined (n < 2)."""
    from scipy.stats import norm

    if not (n >= 2 and math.isfinite(sr)):
        return float("nan")
    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if not var > 0:
        return float("nan")
    return float(norm.cdf((sr - sr_star) * math.sqrt(n - 1.0) / math.sqrt(var)))


def expected_max_sharpe(trial_sharpes: np.ndarray) -> float:
    """The per-bar Sharpe the best of N trials reaches by luck (False Strategy Theorem):
    ``sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e)))`` with V the trials' Sharpe variance."""
    from scipy.stats import norm

    t = np.asarray(trial_sharpes, dtype=np.float64)
    t = t[np.isfinite(t)]
    n = t.size
    if n < 2:
        return 0.0
    sd = float(np.std(t, ddof=1))
    return sd * (
        (1 - EULER_GAMMA) * float(norm.ppf(1 - 1 / n)) + EULER_GAMMA * float(norm.ppf(1 - 1 / (n * math.e)))
    )


def sharpe_standard_error(n_bars: float, periods_per_year: float) -> float:
    """Standard error of an annualised Sharpe ratio near 0 over ``n_bars`` bars: sqrt(ppy / n)."""
    return math.sqrt(periods_per_year / n_bars) if n_bars > 0 else float("inf")


@dataclass(frozen=True)
class OOSReport:
    """One row per hall-of-fame strategy (rank 1 = best in-sample fitness)."""

    table: pd.DataFrame
    genomes: np.ndarray
    threshold: float
    notes: tuple[str, ...] = ()
    details: tuple[dict[str, Any], ...] = field(default_factory=tuple)  # per strategy: folds, symbols

    @property
    def n_flagged(self) -> int:
        return int((self.table["flags"] != "").sum())

    def strategy_rows(self) -> list[dict[str, Any]]:
        """Rows for :meth:`EvolutionStateStore.save_strategies`."""
        from qt_pipeline.evolution.genome import genome_to_dict
        from qt_pipeline.evolution.metrics import METRIC_NAMES

        rows = []
        for i in range(len(self.table)):
            d = self.table.iloc[i].to_dict()
            det = self.details[i] if i < len(self.details) else {}
            is_m = {m: d[f"is_{m}"] for m in METRIC_NAMES}
            is_m.update(psr=d["psr"], dsr=d["dsr"], benchmark={m: d[f"bh_is_{m}"] for m in TABLE_METRICS})
            is_m.update(_clean({k: v for k, v in det.items() if k.startswith("is_")}))
            oos_m = {m: d[f"oos_{m}"] for m in METRIC_NAMES}
            oos_m.update(benchmark={m: d[f"bh_oos_{m}"] for m in TABLE_METRICS})
            oos_m.update(_clean({k: v for k, v in det.items() if k.startswith("oos_")}))
            rows.append(
                {
                    "rank": int(d["rank"]),
                    "genome": genome_to_dict(self.genomes[i]),
                    "description": d["description"],
                    "generation": int(d["generation"]),
                    "fitness": float(d["fitness"]),
                    "oos_fitness": float(d["oos_fitness"]),
                    "is_metrics": _clean(is_m),
                    "oos_metrics": _clean(oos_m),
                    "flags": d["flags"],
                }
            )
        return rows

    def to_markdown(self, max_rows: int = 10) -> str:
        """In-sample vs out-of-sample table with the evidence columns (Markdown), notes below."""
        head = ["rank", "fitness IS", "fitness OOS", "PSR", "DSR"]
        for m in TABLE_METRICS:
            head += [f"{m} IS", f"{m} OOS"]
        head += ["B&H return OOS", "turnover IS", "flags"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.table.head(max_rows).itertuples(index=False):
            d = r._asdict()
            cells = [
                str(d["rank"]),
                _fmt(d["fitness"]),
                _fmt(d["oos_fitness"]),
                _fmt(d["psr"]),
                _fmt(d["dsr"]),
            ]
            for m in TABLE_METRICS:
                cells += [_fmt(d[f"is_{m}"]), _fmt(d[f"oos_{m}"])]
            cells += [_fmt(d["bh_oos_total_return"]), _fmt(d["is_turnover"]), d["flags"] or "—"]
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines)


def _clean(v: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, NumPy scalars Python ones (nested)."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    v = float(v)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.0f}" if v == int(v) and abs(v) < 1e6 else f"{v:.4g}"


def _window_days(plan: Any, group: tuple[int, ...]) -> float:
    return float(sum(plan.segments[j].days for j in group))


def _mask_horizon(rows: np.ndarray, days: float, min_days: float) -> np.ndarray:
    from qt_pipeline.evolution.metrics import METRIC_INDEX

    if days < min_days:
        rows = rows.copy()
        rows[..., METRIC_INDEX["cagr"]] = np.nan
        rows[..., METRIC_INDEX["calmar"]] = np.nan
    return rows


def build_report(hof: HallOfFame, data: Any, costs: Any, fitness_cfg: Any, config: Any,
                 trial_sharpes: np.ndarray) -> OOSReport:  # fmt: skip
    """Re-score ``hof`` in and out of sample (``data``: :class:`runner.PreparedData`), with evidence and flags."""
    from qt_pipeline.evolution.fitness import aggregate, describe_violations
    from qt_pipeline.evolution.genome import always_long, decode
    from qt_pipeline.evolution.metrics import METRIC_INDEX, METRIC_NAMES

    ix = METRIC_INDEX
    isp, oosp = data.is_plan, data.oos_plan
    ppy = data.periods_per_year
    min_days = float(config.fitness.min_horizon_days)
    threshold = float(config.oos_collapse_threshold)
    syms = list(isp.symbols)
    strategies = [decode(g) for g in hof.genomes]
    is_rows = isp.evaluate(hof.genomes, costs)
    oos_rows = oosp.evaluate(hof.genomes, costs)
    bh_is = isp.evaluate([always_long()], costs)[0]
    bh_oos = oosp.evaluate([always_long()], costs)[0]
    is_days = _window_days(isp, isp.groups[data.all_index])
    oos_days = _window_days(oosp, oosp.groups[data.oos_all_index])
    is_all = _mask_horizon(is_rows[:, data.all_index], is_days, min_days)
    oos_all = _mask_horizon(oos_rows[:, data.oos_all_index], oos_days, min_days)
    is_folds = is_rows[:, list(data.fold_index)]
    oos_folds = oos_rows[:, : len(oosp.segments)]
    # one symbol alone: its sleeve over all in-sample / out-of-sample segments
    per_sym: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for si, sym in enumerate(syms):
        a = isp.only(si, (isp.groups[data.all_index],)).evaluate(hof.genomes, costs)[:, 0]
        b = oosp.only(si, (oosp.groups[data.oos_all_index],)).evaluate(hof.genomes, costs)[:, 0]
        per_sym[sym] = (_mask_horizon(a, is_days, min_days), _mask_horizon(b, oos_days, min_days))
    sr0 = expected_max_sharpe(np.asarray(trial_sharpes, float) / math.sqrt(ppy))
    n_trials = int(np.isfinite(np.asarray(trial_sharpes, float)).sum())
    oos_fit = aggregate(oos_folds, fitness_cfg.metric, fitness_cfg.fold_aggregate)
    oos_bars = float(oos_all[0, ix["n_bars"]]) if len(hof) else 0.0
    se_oos = sharpe_standard_error(oos_bars, ppy)
    has = {
        "regime_data": all(d.regime is not None for seg in isp.segments for d in seg.datasets),
        "correlation_data": all(d.correlation is not None for seg in isp.segments for d in seg.datasets),
    }
    rows, details = [], []
    for i in range(len(hof)):
        m_is, m_oos = is_all[i], oos_all[i]
        sr_bar = m_is[ix["sharpe"]] / math.sqrt(ppy)
        n_is = m_is[ix["n_bars"]]
        psr = probabilistic_sharpe(sr_bar, n_is, m_is[ix["skew"]], m_is[ix["kurtosis"]])
        dsr = probabilistic_sharpe(sr_bar, n_is, m_is[ix["skew"]], m_is[ix["kurtosis"]], sr0)
        row: dict[str, Any] = {
            "rank": i + 1,
            "generation": int(hof.generation[i]),
            "fitness": float(hof.fitness[i]),
            "oos_fitness": float(oos_fit[i]),
            "psr": psr,
            "dsr": dsr,
            "description": strategies[i].describe(**has),
        }
        for m in METRIC_NAMES:
            row[f"is_{m}"] = float(m_is[ix[m]])
        for m in METRIC_NAMES:
            row[f"oos_{m}"] = float(m_oos[ix[m]])
        for m in TABLE_METRICS:
            row[f"bh_is_{m}"] = float(_mask_horizon(bh_is[data.all_index], is_days, min_days)[ix[m]])
            row[f"bh_oos_{m}"] = float(_mask_horizon(bh_oos[data.oos_all_index], oos_days, min_days)[ix[m]])
        for k in range(oos_folds.shape[1]):
            for m in ("sharpe", "total_return", "n_trades"):
                row[f"oos_f{k + 1}_{m}"] = float(oos_folds[i, k, ix[m]])
        for sym, (a, b) in per_sym.items():
            for m in ("sharpe", "total_return", "n_trades"):
                row[f"is_{m}@{sym}"] = float(a[i, ix[m]])
                row[f"oos_{m}@{sym}"] = float(b[i, ix[m]])
        flags = describe_violations(is_rows[i, data.all_index], fitness_cfg, is_folds[i])
        if se_oos > MAX_SHARPE_SE:
            flags.append(
                f"OOS window too short: {oos_days:.1f} days, {oos_bars:,.0f} bars, Sharpe standard error "
                f"±{se_oos:.1f}"
            )
        if not row["oos_n_trades"] > 0:
            flags.append("no trades out of sample")
        s_is, s_oos = row["is_sharpe"], row["oos_sharpe"]
        if math.isfinite(s_is) and math.isfinite(s_oos) and s_is > 0 and s_oos < threshold * s_is:
            flags.append(f"OOS Sharpe {s_oos:.2f} against {s_is:.2f} in sample")
        if math.isfinite(dsr) and dsr < DSR_SIGNIFICANT:
            flags.append(f"not significant after {n_trials} genomes tried (deflated Sharpe {dsr:.2f})")
        if row["oos_total_return"] < row["bh_oos_total_return"]:
            flags.append(
                f"below buy-and-hold out of sample ({row['oos_total_return']:.2%} vs "
                f"{row['bh_oos_total_return']:.2%})"
            )
        row["flags"] = "; ".join(flags)
        rows.append(row)
        details.append(
            {
                "is_folds": [
                    {"fold": k + 1, **{m: float(is_folds[i, k, ix[m]]) for m in TABLE_METRICS}}
                    for k in range(is_folds.shape[1])
                ],
                "oos_folds": [
                    {
                        "fold": k + 1,
                        "start": str(oosp.segments[k].start),
                        "end": str(oosp.segments[k].end),
                        **{m: float(oos_folds[i, k, ix[m]]) for m in TABLE_METRICS},
                        "buy_and_hold_return": float(bh_oos[k, ix["total_return"]]),
                    }
                    for k in range(oos_folds.shape[1])
                ],
                "is_per_symbol": {
                    s: {m: float(per_sym[s][0][i, ix[m]]) for m in TABLE_METRICS} for s in syms
                },
                "oos_per_symbol": {
                    s: {m: float(per_sym[s][1][i, ix[m]]) for m in TABLE_METRICS} for s in syms
                },
            }
        )
    notes = [
        f"annualisation: {data.calendar.describe()}",
        f"in sample: {len(isp.segments)} segment(s), {is_days:.1f} days; out of sample: {len(oosp.segments)} "
        f"segment(s), {oos_days:.1f} days; portfolio of {len(syms)} symbol(s) weighted "
        + ", ".join(f"{s} {w:.0%}" for s, w in zip(syms, isp.weights, strict=True)),
        f"deflated Sharpe: {n_trials} genomes evaluated; luck alone reaches an annualised Sharpe of "
        f"{sr0 * math.sqrt(ppy):.2f} in sample",
    ]
    if min(is_days, oos_days) < min_days:
        notes.append(f"CAGR and Calmar are n/a on windows shorter than {min_days:g} days")
    table = pd.DataFrame(rows)
    return OOSReport(table, hof.genomes.copy(), threshold, tuple(notes), tuple(details))


def plot_fitness_curve(stats: pd.DataFrame, path: str | Path | None = None, *, title: str = "") -> bytes:
    """PNG of best and mean fitness per generation (matplotlib Agg); also written to ``path`` if given."""
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas is used for PNG, no global backend

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    g = stats["generation"].to_numpy()
    ax.plot(g, stats["best_fitness"].to_numpy(), marker="o", label="best")
    mean = stats["mean_fitness"].to_numpy()
    std = stats["std_fitness"].to_numpy()
    # the mean can sit near the large negative penalty floor; clip the band to the plotted range
    ax.plot(g, mean, marker=".", label="mean")
    ax.fill_between(g, mean - std, mean + std, alpha=0.15, label="mean ± std")
    lo = float(np.nanmin(np.minimum(stats["best_fitness"], mean)))
    hi = float(np.nanmax(stats["best_fitness"]))
    pad = max(1e-6, 0.1 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness")
    ax.set_title(title or "fitness per generation")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(png)
    return png
