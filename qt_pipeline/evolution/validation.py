"""Walk-forward segments and portfolio evaluation across symbols.

A :class:`Plan` is what a population is evaluated on: contiguous time **segments** (each holds one
:class:`~qt_pipeline.evolution.backtest.MarketData` per symbol, backtested on its own: every segment
starts flat and computes its indicator warm-up from its own bars, so no indicator value straddles a
segment boundary) and **groups** of segments (a walk-forward fold is one group: rolling = its own
in-sample segment; anchored = every in-sample segment up to it). Each segment is scored as the portfolio
the strategy would run: one sleeve per symbol with capital ``weights[s]`` (equal by default), the
sleeves' equities summed on the union of the symbols' timestamps (``docs/execution_model.md`` section 4);
a group of several segments pools their rows (``_kernels.pool_rows``: the return moments of the
concatenated returns, compounded return, the worst segment's drawdown, summed trades).

:meth:`Plan.evaluate` returns metric rows ``(n, n_groups + n_segments * n_symbols, n_metrics)``: first
one portfolio row per group, then the per-symbol rows of every segment (segment-major). A pure function of
its inputs (row-independent), so Ray chunks concatenate to the serial result bit for bit.

Walk-forward layout (:func:`walk_forward_bounds`): the window is cut into ``k`` equal blocks; block i is
in-sample for its first ``train_fraction`` and out-of-sample for the rest; ``purge_bars`` are dropped at
the start of every out-of-sample segment and ``embargo_bars`` at the start of every in-sample segment
after the first, so no bar is both in and out of sample and no out-of-sample bar is ever seen by the GA.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qt_pipeline.evolution import _kernels as K
from qt_pipeline.evolution import series_cache
from qt_pipeline.evolution.backtest import Costs, MarketData, evaluate_strategies
from qt_pipeline.evolution.genome import N_GENES, Strategy, decode_population

_local = threading.local()


def _buffer(shape: tuple[int, int]) -> np.ndarray:
    """An uninitialised float64 array of ``shape`` from a per-thread buffer reused across calls (a fresh
    multi-MB array per generation costs more in page faults than the portfolio arithmetic)."""
    need = shape[0] * shape[1]
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < need:
        buf = np.empty(max(need, 1))
        _local.buf = buf
    return buf[:need].reshape(shape)


def release() -> None:
    """Drop this thread's portfolio buffer."""
    _local.__dict__.pop("buf", None)


@dataclass(frozen=True)
class Segment:
    """One contiguous window of every symbol's bars."""

    name: str
    datasets: tuple[MarketData, ...]  # one per symbol (same order as Plan.symbols)
    start: pd.Timestamp
    end: pd.Timestamp

    def __post_init__(self) -> None:
        union = np.unique(np.concatenate([d.timestamp for d in self.datasets]))
        object.__setattr__(self, "union", union)
        object.__setattr__(
            self, "umaps", tuple(np.searchsorted(union, d.timestamp).astype(np.int64) for d in self.datasets)
        )

    @property
    def n_union(self) -> int:
        return int(self.union.shape[0])  # type: ignore[attr-defined]

    @property
    def days(self) -> float:
        return (self.end - self.start) / pd.Timedelta(days=1)


@dataclass(frozen=True)
class Plan:
    symbols: tuple[str, ...]
    weights: np.ndarray  # (n_symbols,), sums to 1
    segments: tuple[Segment, ...]
    groups: tuple[tuple[int, ...], ...]  # segment indices per group
    periods_per_year: float

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (len(self.symbols),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"portfolio weights must be {len(self.symbols)} finite numbers >= 0, got {w}")
        object.__setattr__(self, "weights", w / w.sum())
        for g in self.groups:
            if not g or any(not 0 <= i < len(self.segments) for i in g):
                raise ValueError(f"plan group {g} refers to segments outside 0..{len(self.segments) - 1}")

    @property
    def n_rows(self) -> int:
        return len(self.groups) + len(self.segments) * len(self.symbols)

    def symbol_row(self, segment: int, symbol: int) -> int:
        return len(self.groups) + segment * len(self.symbols) + symbol

    def only(self, symbol: int, groups: tuple[tuple[int, ...], ...] | None = None) -> Plan:
        """The plan of one symbol alone (its sleeve with all the capital), optionally other groups."""
        segs = tuple(Segment(s.name, (s.datasets[symbol],), s.start, s.end) for s in self.segments)
        return Plan((self.symbols[symbol],), np.ones(1), segs, groups or self.groups, self.periods_per_year)

    def evaluate(
        self, pop: np.ndarray | Sequence[Strategy], costs: Costs, *, parallel: bool = False
    ) -> np.ndarray:
        """Metric rows ``(n, n_rows, n_metrics)`` of the genomes ``pop`` (or decoded strategies);
        ``parallel``: on Numba's threads (bit-identical, see :func:`.backtest.evaluate_strategies`)."""
        if isinstance(pop, np.ndarray):
            pop = np.ascontiguousarray(pop, dtype=np.float64)
            if pop.ndim != 2 or pop.shape[1] != N_GENES:
                raise ValueError(f"population must have shape (n, {N_GENES}), got {pop.shape}")
            strategies = decode_population(pop)
        else:
            strategies = list(pop)
        n = len(strategies)
        out = np.empty((n, self.n_rows, K.N_METRICS))
        if n == 0:
            return out
        n_seg, n_sym = len(self.segments), len(self.symbols)
        widest = max(seg.n_union for seg in self.segments)
        # portfolio equity rows held at once: a quarter of the evaluation memory budget (series_cache)
        step = n if n_sym == 1 else max(1, min(n, series_cache.port_budget_bytes() // (8 * widest)))
        ppy = self.periods_per_year
        for a in range(0, n, step):
            b = min(n, a + step)
            chunk = strategies[a:b]
            seg_rows = np.empty((b - a, n_seg, K.N_METRICS))  # the portfolio of each segment
            for j, seg in enumerate(self.segments):
                port = _buffer((b - a, seg.n_union)) if n_sym > 1 else None
                for s, data in enumerate(seg.datasets):
                    pf = None
                    if port is not None:
                        umap = seg.umaps[s]  # type: ignore[attr-defined]
                        pf = (umap, port, float(self.weights[s]), 0, seg.n_union, s == 0)
                    out[a:b, self.symbol_row(j, s)] = evaluate_strategies(
                        chunk, data, costs, ppy, parallel=parallel, portfolio=pf
                    )
                if port is None:  # one symbol: the portfolio is that symbol's sleeve
                    seg_rows[:, j] = out[a:b, self.symbol_row(j, 0)]
                else:
                    rows = np.empty((b - a, K.N_METRICS))
                    K.portfolio_metrics(port, 0, seg.n_union, ppy, rows)
                    self._fill_trade_columns(
                        rows, out[a:b, self.symbol_row(j, 0) : self.symbol_row(j, 0) + n_sym]
                    )
                    seg_rows[:, j] = rows
            for gi, g in enumerate(self.groups):
                if len(g) == 1:
                    out[a:b, gi] = seg_rows[:, g[0]]
                else:
                    pooled = np.empty((b - a, K.N_METRICS))
                    K.pool_rows(np.ascontiguousarray(seg_rows[:, list(g)]), ppy, pooled)
                    out[a:b, gi] = pooled
        return out

    def _fill_trade_columns(self, row: np.ndarray, per: np.ndarray) -> None:
        """Trades/win rate/exposure/turnover/trade key of one segment's portfolio rows ``row`` (n, m) from
        its symbols' rows ``per`` (n, S, m)."""
        trades = per[:, :, K.M_NTRADES]
        tot = trades.sum(axis=1)
        row[:, K.M_NTRADES] = tot
        row[:, K.M_WIN] = np.where(
            tot > 0, (per[:, :, K.M_WIN] * trades).sum(axis=1) / np.maximum(tot, 1), 0.0
        )
        row[:, K.M_EXPOSURE] = per[:, :, K.M_EXPOSURE] @ self.weights
        row[:, K.M_TURNOVER] = per[:, :, K.M_TURNOVER] @ self.weights
        key = np.zeros(len(row), dtype=np.int64)
        for c in range(per.shape[1]):
            key = (key * 1_000_003 + per[:, c, K.M_TRADE_KEY].astype(np.int64)) & K.TRADE_KEY_MASK
        row[:, K.M_TRADE_KEY] = key.astype(np.float64)


def walk_forward_bounds(start: pd.Timestamp, end: pd.Timestamp, folds: int,
                        train_fraction: float) -> list[tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]]:  # fmt: skip
    """``[(block start, in-sample end = out-of-sample start, block end)]`` of ``folds`` equal blocks."""
    span = end - start
    out = []
    for i in range(folds):
        a = start + span * i / folds
        b = start + span * (i + 1) / folds
        split = (a + (b - a) * train_fraction).floor("s")
        out.append((a.floor("s"), split, b.floor("s") if i < folds - 1 else end))
    return out


def fold_groups(folds: int, scheme: str) -> tuple[tuple[int, ...], ...]:
    """In-sample groups of the walk-forward folds (segment i = in-sample part of block i)."""
    if scheme == "anchored":
        return tuple(tuple(range(i + 1)) for i in range(folds))
    return tuple((i,) for i in range(folds))
