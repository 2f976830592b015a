"""Out-of-sample report: re-score the hall of fame on the held-out window, flag collapses, plot fitness.

A strategy is flagged when its out-of-sample performance collapses:

* ``oos_collapse`` — in-sample Sharpe > 0 and out-of-sample Sharpe < ``threshold`` × in-sample Sharpe;
* ``sign_flip`` — in-sample and out-of-sample Sharpe have opposite signs (either non-zero);
* ``no_oos_trades`` — no trade at all in the test window;
* ``oos_not_finite`` — the out-of-sample Sharpe is undefined (e.g. flat returns).

Flags are a comma-separated string (empty = none), stored in ``evolution_strategies.flags``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qt_pipeline.evolution.ga import HallOfFame

TABLE_METRICS = ("sharpe", "total_return", "max_drawdown", "n_trades", "win_rate")


def collapse_flags(is_sharpe: float, oos_sharpe: float, oos_trades: float, threshold: float) -> str:
    flags = []
    if not math.isfinite(oos_sharpe):
        flags.append("oos_not_finite")
    else:
        if math.isfinite(is_sharpe) and is_sharpe > 0 and oos_sharpe < threshold * is_sharpe:
            flags.append("oos_collapse")
        if math.isfinite(is_sharpe) and is_sharpe * oos_sharpe < 0:
            flags.append("sign_flip")
    if not (oos_trades > 0):
        flags.append("no_oos_trades")
    return ",".join(flags)


def symbol_fitness(metrics3: np.ndarray, fitness_cfg: Any) -> np.ndarray:
    """Fitness of ``(n, n_symbols, n_metrics)`` metrics: the mean over symbols of per-symbol fitness."""
    from qt_pipeline.evolution.fitness import fitness

    per = np.stack([fitness(metrics3[:, s, :], fitness_cfg) for s in range(metrics3.shape[1])], axis=1)
    return per.mean(axis=1)


@dataclass(frozen=True)
class OOSReport:
    """One row per hall-of-fame strategy (rank 1 = best in-sample fitness)."""

    table: pd.DataFrame  # rank, generation, fitness, oos_fitness, description, flags, is_<m>, oos_<m>
    genomes: np.ndarray
    threshold: float

    @property
    def n_flagged(self) -> int:
        return int((self.table["flags"] != "").sum())

    def strategy_rows(self) -> list[dict[str, Any]]:
        """Rows for :meth:`EvolutionStateStore.save_strategies`."""
        from qt_pipeline.evolution.genome import genome_to_dict
        from qt_pipeline.evolution.metrics import METRIC_NAMES

        rows = []
        for i, r in enumerate(self.table.itertuples(index=False)):
            d = r._asdict()
            rows.append(
                {
                    "rank": d["rank"],
                    "genome": genome_to_dict(self.genomes[i]),
                    "description": d["description"],
                    "generation": d["generation"],
                    "fitness": d["fitness"],
                    "oos_fitness": d["oos_fitness"],
                    "is_metrics": {m: d[f"is_{m}"] for m in METRIC_NAMES},
                    "oos_metrics": {m: d[f"oos_{m}"] for m in METRIC_NAMES},
                    "flags": d["flags"],
                }
            )
        return rows

    def to_markdown(self, max_rows: int = 10) -> str:
        """In-sample vs out-of-sample metrics table (Markdown)."""
        head = ["rank", "fitness IS", "fitness OOS"]
        for m in TABLE_METRICS:
            head += [f"{m} IS", f"{m} OOS"]
        head.append("flags")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.table.head(max_rows).itertuples(index=False):
            d = r._asdict()
            cells = [str(d["rank"]), _fmt(d["fitness"]), _fmt(d["oos_fitness"])]
            for m in TABLE_METRICS:
                cells += [_fmt(d[f"is_{m}"]), _fmt(d[f"oos_{m}"])]
            cells.append(d["flags"] or "—")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    v = float(v)
    if not math.isfinite(v):
        return "nan"
    return f"{v:.0f}" if v == int(v) and abs(v) < 1e6 else f"{v:.4g}"


def build_report(
    hof: HallOfFame,
    test_data: list[Any],
    costs: Any,
    periods_per_year: float,
    fitness_cfg: Any,
    threshold: float,
) -> OOSReport:
    """Re-score ``hof`` on ``test_data`` (one MarketData per symbol) and flag collapses."""
    from qt_pipeline.evolution.genome import decode
    from qt_pipeline.evolution.metrics import METRIC_NAMES
    from qt_pipeline.evolution.ray_eval import evaluate_chunk

    oos3 = evaluate_chunk(hof.genomes, costs, periods_per_year, *test_data)
    oos = oos3.mean(axis=1)
    oos_fit = symbol_fitness(oos3, fitness_cfg)
    idx = {m: i for i, m in enumerate(METRIC_NAMES)}
    has = {
        "regime_data": all(getattr(d, "regime", None) is not None for d in test_data),
        "correlation_data": all(getattr(d, "correlation", None) is not None for d in test_data),
    }
    rows = []
    for i in range(len(hof)):
        row: dict[str, Any] = {
            "rank": i + 1,
            "generation": int(hof.generation[i]),
            "fitness": float(hof.fitness[i]),
            "oos_fitness": float(oos_fit[i]),
            "description": decode(hof.genomes[i]).describe(**has),
        }
        for m in METRIC_NAMES:
            row[f"is_{m}"] = float(hof.metrics[i, idx[m]])
        for m in METRIC_NAMES:
            row[f"oos_{m}"] = float(oos[i, idx[m]])
        row["flags"] = collapse_flags(row["is_sharpe"], row["oos_sharpe"], row["oos_n_trades"], threshold)
        rows.append(row)
    return OOSReport(pd.DataFrame(rows), hof.genomes.copy(), threshold)


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
