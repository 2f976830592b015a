"""PNG pictures of the signals (matplotlib Agg, no pyplot): a regime timeline and a correlation heat map."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from qt_pipeline.signals.regime import REGIME_NAMES

_REGIME_COLOURS = ("#2ca02c", "#d62728", "#7f7f7f", "#ff7f0e")  # trend_up, trend_down, range, high_vol


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def regime_timeline_png(
    regimes: pd.DataFrame, market: pd.DataFrame | None = None, *, title: str = ""
) -> bytes:
    """One row per symbol: the composite regime as coloured bands over time; below it the market's average
    pairwise correlation (regime window) when ``market`` is given."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    syms = sorted(regimes["symbol"].astype(str).unique()) if len(regimes) else []
    rows = max(1, len(syms)) + (1 if market is not None and len(market) else 0)
    fig = Figure(figsize=(8, 0.7 * rows + 1.4), dpi=100)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    step = 1.0 / 24.0  # one hourly bucket, in matplotlib date units (days)
    for ax, s in zip(axes, syms, strict=False):
        g = regimes[regimes["symbol"] == s]
        t = mdates.date2num(g["bucket"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy())
        code = g["regime"].to_numpy()
        if len(code):
            cut = np.flatnonzero(np.diff(code) != 0) + 1
            starts, ends = np.r_[0, cut], np.r_[cut, len(code)]
            for k, colour in enumerate(_REGIME_COLOURS):
                runs = [
                    (t[a], t[b - 1] + step - t[a]) for a, b in zip(starts, ends, strict=True) if code[a] == k
                ]
                if runs:
                    ax.broken_barh(runs, (0, 1), facecolors=colour, linewidth=0)
        ax.set_yticks([])
        ax.set_ylim(0, 1)
        ax.set_ylabel(s, rotation=0, ha="right", va="center")
        ax.xaxis_date()
    if market is not None and len(market):
        ax = axes[-1]
        cols = [c for c in market.columns if c.startswith("avg_corr_")]
        t = market["bucket"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
        for c in cols:
            ax.plot(t, market[c].to_numpy(), linewidth=0.8, label=c.replace("avg_corr_", "avg corr, window "))
        ax.set_ylim(-1, 1)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.legend(loc="lower left", fontsize=7)
    handles = [Patch(color=c, label=n) for c, n in zip(_REGIME_COLOURS, REGIME_NAMES, strict=True)]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8)
    fig.suptitle(title or "composite regime", y=0.02, fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout(rect=(0, 0.03, 1, 0.9))
    return _png(fig)


def correlation_heatmap_png(matrix: pd.DataFrame, *, title: str = "") -> bytes:
    """Heat map of a symbol x symbol correlation matrix (values annotated)."""
    from matplotlib.figure import Figure

    n = len(matrix)
    fig = Figure(figsize=(1.2 + 0.9 * n, 0.9 + 0.9 * n), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    m = matrix.to_numpy(dtype=float)
    im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(n), list(matrix.columns), rotation=45, ha="right")
    ax.set_yticks(range(n), list(matrix.index))
    for i in range(n):
        for j in range(n):
            v = m[i, j]
            colour = "white" if abs(v) > 0.6 else "black"
            ax.text(
                j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8, color=colour
            )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title or "correlation", fontsize=9)
    fig.tight_layout()
    return _png(fig)
