"""Vectorised, fused backtester: many strategies per call over one symbol's bars.

Timing (no look-ahead). ``position[t]`` is the position held during bar t; it is decided at the close
of bar t-1 from indicator values that use bars <= t-1 only. The return of bar t is
``position[t] * (close[t] / close[t-1] - 1)``. Changing bars after t therefore changes no position at or
before t+1 and no return at or before t. The last bar takes no decision (there is no next bar).

The execution model — fills, fees, sizing, rebalancing, borrow, portfolio, metrics — is specified in
``docs/execution_model.md`` (the contract; a naive per-bar loop of it is compared with this module in
``qt_pipeline_tests/evolution/test_execution_model.py``). In short: stop and target levels are fixed at
entry and checked from the next bar on; a bar that opens through a level fills at the open, otherwise
the stop is assumed first (the worse case) and fills at its level, then the target at its level; after
such an exit the strategy stays flat for the rest of that bar. A position is a constant fraction of
equity: entries, exits and the rebalancing back to the target fraction each cost ``rate`` per unit of
traded notional; shorts pay ``borrow_bps_per_year`` per bar held. A position still open at the end is
marked to market, so buy-and-hold from the first close returns exactly ``(1 - rate) * close[-1] /
close[0] - 1``.

Warm-up. A strategy takes no decision before every indicator it uses is defined (see
:mod:`qt_pipeline.evolution.indicators` for each warm-up length); while flat in warm-up its returns are 0.

Filters. With ``MarketData.regime`` present and ``regime_mask != 0`` a new position is only opened at a
bar whose regime code k (0..3) has bit k set in the mask (other codes, e.g. -1 "unknown", block). With
``MarketData.correlation`` present and ``correlation_max > 0`` a new position needs
``|correlation[t]| <= correlation_max`` (NaN blocks). Filters never force an exit. Both series must
themselves be free of look-ahead (value at t known at the close of t).

Performance. Each distinct indicator series (kind, period) is computed once into a shared bank and
reused by the whole population — and by later calls on the same bars, i.e. later GA generations (see
:mod:`qt_pipeline.evolution.series_cache`); then one fused Numba loop per strategy computes positions,
stops, costs, equity and all metric accumulators in a single pass without per-strategy temporaries,
the population span by span so that a span of the series stays in cache (:func:`span_for`). The
result is a pure function of the inputs (no cross-strategy reductions), bit-identical in any process,
for any span and with or without ``parallel=True``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd

from qt_pipeline.evolution import _kernels as K
from qt_pipeline.evolution import indicators as ind
from qt_pipeline.evolution import series_cache
from qt_pipeline.evolution.genome import N_GENES, Rule, Strategy, decode_population
from qt_pipeline.evolution.metrics import METRIC_NAMES

NS_PER_YEAR = 365.25 * 86_400 * 1e9
# memory for one dataset's indicator series: None = half the series workspace of the evaluation memory
# budget (768 MiB of the default 2 GiB: ~190 series of 500k bars, every series a population of 200 asks
# for in one pass; a smaller budget works in chunks and recomputes the series they share)
DEFAULT_BANK_BUDGET_BYTES: int | None = None

_PRICE_FIELDS = ("open", "high", "low", "close")

# bytes of bars a span of the population kernel may touch: the population runs span by span (every
# strategy over bars [0, span), then [span, 2 span), ...) so that the span of each series stays in the
# core's cache while the strategies that read it pass over it; measured best near half a 1 MiB L2
SPAN_ENV = "QT_EVOLUTION_SPAN_KB"
SPAN_CACHE_BYTES: int | None = None  # fixed (tests); None: QT_EVOLUTION_SPAN_KB, default 512 KiB


def _span_bytes() -> int:
    if SPAN_CACHE_BYTES is not None:
        return SPAN_CACHE_BYTES
    return series_cache.env_whole_number(SPAN_ENV, "KiB", 1, 512) * 1024


def span_for(n_rows: int) -> int:
    """Bars per span when the strategies read ``n_rows`` series rows (plus the 5 bar arrays)."""
    per_bar = 8 * (n_rows + 5)
    return max(K.FLAG_BLOCK, _span_bytes() // per_bar // K.FLAG_BLOCK * K.FLAG_BLOCK)


def release_workspace() -> None:
    """Free this thread's cached indicator series and portfolio buffer (evaluators call it when they close)."""
    from qt_pipeline.evolution import validation

    series_cache.release()
    validation.release()


def _vec(name: str, a: object, dtype: type = np.float64) -> np.ndarray:
    arr: np.ndarray = np.ascontiguousarray(a, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"MarketData.{name} must be a 1-D array, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class MarketData:
    """One symbol's bars as C-contiguous arrays (read-only), ascending unique timestamps (int64 ns UTC).

    ``regime`` (int8 codes, -1 = unknown) and ``correlation`` (float64, NaN = unknown) are the optional
    per-bar filter series from the signals layer; when None the corresponding filter is inactive.
    """

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    regime: np.ndarray | None = None
    correlation: np.ndarray | None = None
    symbol: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "timestamp", _vec("timestamp", self.timestamp, np.int64))
        n = self.timestamp.shape[0]
        for name in (*_PRICE_FIELDS, "volume"):
            a = _vec(name, getattr(self, name))
            if a.shape[0] != n:
                raise ValueError(f"MarketData.{name} has {a.shape[0]} values but there are {n} timestamps")
            set_(self, name, a)
        for name in _PRICE_FIELDS:
            a = getattr(self, name)
            bad = np.nonzero(~(np.isfinite(a) & (a > 0)))[0]
            if bad.size:
                raise ValueError(
                    f"MarketData{self._where()}.{name} must be finite and > 0; bad value {float(a[bad[0]])!r} at "
                    f"bar {int(bad[0])} ({bad.size} bad bars) — validate/clean the bars before backtesting"
                )
        if n > 1:
            back = np.nonzero(np.diff(self.timestamp) <= 0)[0]
            if back.size:
                i = int(back[0]) + 1
                raise ValueError(
                    f"MarketData{self._where()} timestamps must be strictly increasing; bar {i} "
                    f"({pd.Timestamp(int(self.timestamp[i]), tz='UTC')}) does not come after bar {i - 1}"
                    " — sort by timestamp and drop duplicates first"
                )
        if self.regime is not None:
            r = np.asarray(self.regime)
            if r.shape != (n,):
                raise ValueError(f"MarketData.regime must have one code per bar ({n}), got shape {r.shape}")
            if not np.issubdtype(r.dtype, np.integer):
                raise ValueError(f"MarketData.regime must hold integer codes (int8), got dtype {r.dtype}")
            if r.size and (r.min() < -128 or r.max() > 127):
                raise ValueError("MarketData.regime codes must fit int8 (-1 = unknown, 0..3 regimes)")
            set_(self, "regime", _vec("regime", r, np.int8))
        if self.correlation is not None:
            c = _vec("correlation", self.correlation)
            if c.shape[0] != n:
                raise ValueError(
                    f"MarketData.correlation must have one value per bar ({n}), got {c.shape[0]}"
                )
            set_(self, "correlation", c)

    def _where(self) -> str:
        return f"[{self.symbol}]" if self.symbol else ""

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    def slice(self, a: int | None, b: int | None = None) -> MarketData:
        """Bars ``a:b`` (Python slice semantics, step 1) as a new MarketData sharing memory."""
        s = slice(a, b)
        return MarketData(
            timestamp=self.timestamp[s],
            open=self.open[s],
            high=self.high[s],
            low=self.low[s],
            close=self.close[s],
            volume=self.volume[s],
            regime=None if self.regime is None else self.regime[s],
            correlation=None if self.correlation is None else self.correlation[s],
            symbol=self.symbol,
        )

    @classmethod
    def from_frame(cls, df: pd.DataFrame, *, regime: object = None, correlation: object = None,
                   symbol: str | None = None) -> MarketData:  # fmt: skip
        """From a canonical bar frame of one symbol (see :mod:`qt_pipeline.market.contract`).

        A frame holding several symbols needs ``symbol=`` to pick one. Rows must be in ascending
        timestamp order (as every store returns them). ``regime``/``correlation`` are optional per-row
        arrays/Series aligned with the frame's rows.
        """
        need = ("timestamp", *_PRICE_FIELDS, "volume")
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ValueError(f"bar frame is missing column(s) {missing}; expected a canonical bar frame")
        sym = symbol
        if "symbol" in df.columns:
            syms = pd.unique(df["symbol"].dropna())
            if symbol is not None:
                df = df[df["symbol"] == symbol]
                if len(df) == 0:
                    raise ValueError(f"bar frame has no rows for symbol {symbol!r}; it holds {list(syms)}")
            elif len(syms) > 1:
                raise ValueError(
                    f"bar frame holds {len(syms)} symbols {list(syms)[:5]}; pass symbol= to pick one"
                )
            elif len(syms) == 1:
                sym = str(syms[0])
        ts = df["timestamp"]
        if not isinstance(ts.dtype, pd.DatetimeTZDtype):
            raise ValueError("bar timestamps must be tz-aware UTC datetimes (canonical bar frame)")
        ts_ns = pd.DatetimeIndex(ts).tz_convert("UTC").as_unit("ns").asi8

        def aligned(x: object, name: str) -> np.ndarray | None:
            if x is None:
                return None
            if isinstance(x, pd.Series) and symbol is not None and len(x) != len(df):
                x = x.loc[df.index]
            return np.asarray(x)

        return cls(
            timestamp=ts_ns,
            open=df["open"].to_numpy(np.float64),
            high=df["high"].to_numpy(np.float64),
            low=df["low"].to_numpy(np.float64),
            close=df["close"].to_numpy(np.float64),
            volume=df["volume"].to_numpy(np.float64),
            regime=aligned(regime, "regime"),
            correlation=aligned(correlation, "correlation"),
            symbol=sym or "",
        )


@dataclass(frozen=True)
class Costs:
    """Trading costs (see ``docs/execution_model.md``): ``fee_bps + slippage_bps`` per unit of traded
    notional (entries, exits and rebalancing), charged on equity; ``borrow_bps_per_year`` is the annual
    borrow/funding rate of a short position, charged per bar held as ``|pos| * rate / periods_per_year``."""

    fee_bps: float = 1.0
    slippage_bps: float = 1.0
    borrow_bps_per_year: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fee_bps", "slippage_bps", "borrow_bps_per_year"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0 <= v < 10_000):
                raise ValueError(
                    f"Costs.{name} must be a finite number of basis points in [0, 10000), got {v!r}"
                )

    @property
    def rate(self) -> float:
        return (self.fee_bps + self.slippage_bps) / 1e4

    def borrow_per_bar(self, periods_per_year: float) -> float:
        return self.borrow_bps_per_year / 1e4 / periods_per_year


@dataclass(frozen=True)
class SimResult:
    """One strategy's bar-by-bar result: ``position[t]`` held during bar t, net ``returns[t]``,
    ``equity[t] = prod(1 + returns[:t+1])`` (starting from 1), number of trades, metric row."""

    position: np.ndarray
    returns: np.ndarray
    equity: np.ndarray
    trades: int
    metrics: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def turnover(self) -> float:
        """Traded notional over the run as a multiple of equity (entries, exits, rebalancing)."""
        return float(self.metrics[K.M_TURNOVER])


def infer_periods_per_year(timestamp: np.ndarray) -> float:
    """Bars per year from the median spacing of int64-ns timestamps (365.25-day years, 24/7 markets)."""
    from qt_pipeline.evolution.calendar import bar_spacing_ns

    return NS_PER_YEAR / bar_spacing_ns(timestamp)


# ------------------------------------------------------------------------------------------------------
# indicator bank
# ------------------------------------------------------------------------------------------------------
_SeriesKey = tuple[str, int]
_SERIES: dict[str, Callable[[MarketData, int, np.ndarray], None]] = {  # (data, period, out row)
    "close": lambda d, p, out: np.copyto(out, d.close),
    "sma": lambda d, p, out: ind.sma_into(d.close, p, out),
    "ema": lambda d, p, out: ind.ema_into(d.close, p, out),
    "rsi": lambda d, p, out: ind.rsi_into(d.close, p, out),
    "std": lambda d, p, out: ind.rolling_std_into(d.close, p, out),
    "dhi": lambda d, p, out: ind.rolling_extreme_into(d.high, p, True, out),
    "dlo": lambda d, p, out: ind.rolling_extreme_into(d.low, p, False, out),
    "atr": lambda d, p, out: ind.atr_into(d.high, d.low, d.close, p, out),
}
_KIND_CODE = {
    "sma_cross": K.K_SMA,
    "ema_cross": K.K_EMA,
    "rsi": K.K_RSI,
    "bollinger": K.K_BOLL,
    "momentum": K.K_MOM,
    "breakout": K.K_BREAK,
    "always": K.K_ALWAYS,
}


def _rule_needs(rule: Rule) -> tuple[list[_SeriesKey], int, int]:
    """(series keys [a, b] of the rule's kernel inputs, their lag, first bar the rule is defined at)."""
    k, p = rule.kind, rule.period
    if k == "sma_cross":
        return [("sma", p), ("sma", rule.period2)], 0, rule.period2 - 1  # type: ignore[list-item, operator]
    if k == "ema_cross":
        return [("ema", p), ("ema", rule.period2)], 0, rule.period2 - 1  # type: ignore[list-item, operator]
    if k == "rsi":
        return [("rsi", p)], 0, p
    if k == "bollinger":
        return [("sma", p), ("std", p)], 0, p - 1
    if k == "momentum":
        return [("close", 0)], p, p  # xa = close[t - p]
    if k == "breakout":
        return [("dhi", p), ("dlo", p)], 1, p  # the channel of the previous p bars
    if k == "always":
        return [], 0, 0
    raise ValueError(f"unknown rule kind {k!r}")


def _strategy_needs(s: Strategy) -> tuple[list[_SeriesKey], int]:
    keys, _, t0 = _rule_needs(s.entry)
    if s.exit is not None:
        k2, _, t2 = _rule_needs(s.exit)
        keys = keys + k2
        t0 = max(t0, t2)
    if s.atr_stop > 0:
        keys = [*keys, ("atr", s.atr_period)]
        t0 = max(t0, s.atr_period - 1)
    return keys, t0


def _params(s: Strategy, rows: dict[_SeriesKey, int], t0: int) -> np.ndarray:
    prm = np.zeros(K.N_PARAMS)

    def put(rule: Rule | None, kind_i: int, a_i: int, b_i: int, lag_i: int, th_i: int, cmp_i: int) -> None:
        if rule is None:
            prm[kind_i] = K.K_OPPOSITE
            return
        keys, lag, _ = _rule_needs(rule)
        prm[kind_i] = _KIND_CODE[rule.kind]
        prm[a_i] = rows[keys[0]] if keys else 0
        prm[b_i] = rows[keys[-1]] if keys else 0
        prm[lag_i] = lag
        prm[th_i] = rule.threshold
        prm[cmp_i] = 1.0 if rule.comparison == "below" else 0.0

    put(s.entry, K.P_EKIND, K.P_EA, K.P_EB, K.P_ELAG, K.P_ETH, K.P_ECMP)
    put(s.exit, K.P_XKIND, K.P_XA, K.P_XB, K.P_XLAG, K.P_XTH, K.P_XCMP)
    prm[K.P_LONG] = s.direction in ("long", "both")
    prm[K.P_SHORT] = s.direction in ("short", "both")
    prm[K.P_SIZE] = s.position_size
    prm[K.P_SL] = s.stop_loss
    prm[K.P_TP] = s.take_profit
    prm[K.P_ATR_ROW] = rows[("atr", s.atr_period)] if s.atr_stop > 0 else 0
    prm[K.P_ATR_MULT] = s.atr_stop
    prm[K.P_REGIME] = s.regime_mask
    prm[K.P_CORR] = s.correlation_max
    prm[K.P_TSTART] = t0
    return prm


class _Prepared:
    """Everything shared by all strategies of one call (bar returns, filter arrays, the series bank)."""

    def __init__(self, data: MarketData, costs: Costs, periods_per_year: float):
        if not (np.isfinite(periods_per_year) and periods_per_year > 0):
            raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
        if len(data) < 2:
            raise ValueError(f"need at least 2 bars to backtest, got {len(data)}")
        self.data = data
        self.rate = costs.rate
        self.ppy = float(periods_per_year)
        self.borrow = costs.borrow_per_bar(self.ppy)
        c = data.close
        self.bar_ret = np.empty(len(data))
        self.bar_ret[0] = 0.0
        np.divide(c[1:], c[:-1], out=self.bar_ret[1:])
        self.bar_ret[1:] -= 1.0
        self.has_regime = data.regime is not None
        self.has_corr = data.correlation is not None
        self.regime = data.regime if data.regime is not None else np.zeros(1, dtype=np.int8)
        self.corr = data.correlation if data.correlation is not None else np.zeros(1)

    def bank(self, keys: Sequence[_SeriesKey]) -> tuple[np.ndarray, dict[_SeriesKey, int]]:
        """The series ``keys`` as rows of a fresh C-contiguous 2-D array (no cache: :func:`simulate`)."""
        bank = np.empty((max(1, len(keys)), len(self.data)))
        if not keys:
            bank[0] = 0.0
        rows: dict[_SeriesKey, int] = {}
        for i, key in enumerate(keys):
            _SERIES[key[0]](self.data, key[1], bank[i])
            rows[key] = i
        return bank, rows


def _token(d: MarketData) -> bytes:
    """The series-cache key of ``d``'s bars, hashed once per MarketData (its arrays are read-only; a GA
    evaluates the same objects every generation, and hashing 1M bars costs ~15 ms per call)."""
    tok: bytes | None = d.__dict__.get("_series_token")
    if tok is None:
        tok = series_cache.fingerprint(d.high, d.low, d.close)
        object.__setattr__(d, "_series_token", tok)
    return tok


def _as_strategies(pop: np.ndarray | Sequence[Strategy]) -> list[Strategy]:
    if isinstance(pop, np.ndarray) or (len(pop) and not isinstance(pop[0], Strategy)):
        a = np.asarray(pop, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != N_GENES:
            raise ValueError(f"population must have shape (n, {N_GENES}) (one genome per row), got {a.shape}")
        bad = np.nonzero(~np.isfinite(a).all(axis=1))[0]
        if bad.size:
            raise ValueError(
                f"population rows {bad[:5].tolist()} hold non-finite genes ({bad.size} rows); "
                "every gene must be a finite float (use genome.repair on GA offspring)"
            )
        return decode_population(a)
    return list(pop)


_NO_UMAP = np.zeros(1, dtype=np.int64)


def evaluate_strategies(strategies: Sequence[Strategy], data: MarketData, costs: Costs,
                        periods_per_year: float, *, parallel: bool = False,
                        bank_budget_bytes: int | None = DEFAULT_BANK_BUDGET_BYTES,
                        portfolio: tuple[np.ndarray, np.ndarray, float, int, int, bool] | None = None) -> np.ndarray:  # fmt: skip
    """Metric rows (n, len(METRIC_NAMES)) of decoded strategies; see :func:`evaluate_population`.

    ``portfolio=(umap, port, weight, ustart, uend, first)``: also add ``weight`` x strategy i's equity to
    row i of ``port`` at column ``umap[t]`` of bar t, forward-filled over the columns ``[ustart, uend)``;
    ``first`` writes instead of adding, so ``port`` needs no zeroing (see :mod:`.validation`)."""
    prep = _Prepared(data, costs, periods_per_year)
    out = np.empty((len(strategies), len(METRIC_NAMES)))
    if not strategies:
        return out
    needs = [_strategy_needs(s) for s in strategies]
    d = prep.data
    # indicator series come from this thread's cache for these bars (computed once, reused by later
    # generations); strategies are grouped into chunks whose series fit the rows the cache may use
    token = _token(d)
    cache, limit = series_cache.cache_for(token, len(data), bank_budget_bytes)
    chunks = series_cache.group_by_budget((n[0] for n in needs), limit)
    kernel: Callable[..., None] = K.run_population
    threads = numba.get_num_threads() if parallel else 1
    if threads > 1:  # the threads take strategies one span at a time, each span's one at a time
        kernel = functools.partial(K.run_population_parallel, nthreads=threads)
    if portfolio is None:
        umap, port, weight, ustart, uend, do_port = _NO_UMAP, np.zeros((1, 1)), 0.0, 0, 0, 0
    else:
        umap, port, weight, ustart, uend, first = portfolio
        do_port = 2 if first else 1
        if (
            umap.shape != (len(data),)
            or port.shape[0] != len(strategies)
            or not 0 <= ustart <= umap[0] <= umap[-1] < uend <= port.shape[1]
        ):
            raise ValueError("portfolio union map/equity rows do not match the bars/strategies")

    def compute(key: _SeriesKey, out_row: np.ndarray) -> None:
        _SERIES[key[0]](d, key[1], out_row)

    while chunks:
        # the chunk with the most series already cached first: when the series do not all fit, the rows
        # the previous call (generation) left behind are used before they are evicted
        best = max(range(len(chunks)), key=lambda j: sum(k in cache.rows for k in chunks[j][1]))
        idx, keys_ = chunks.pop(best)
        rows = cache.ensure(keys_, compute, limit, later={k for _, ks in chunks for k in ks}, workers=threads)
        params = np.stack([_params(strategies[i], rows, needs[i][1]) for i in idx])
        res = np.empty((len(idx), len(METRIC_NAMES)))
        prow = np.asarray(idx, dtype=np.int64) if do_port else _NO_UMAP
        kernel(params, cache.buf, d.open, d.high, d.low, d.close, prep.bar_ret, prep.regime, prep.corr,
               prep.has_regime, prep.has_corr, prep.rate, prep.ppy, prep.borrow, umap, ustart, uend, port, prow, weight,
               do_port, span_for(len(keys_)), out=res)  # fmt: skip
        out[idx] = res
    return out


def evaluate_population(pop: np.ndarray, data: MarketData, costs: Costs, periods_per_year: float, *,
                        parallel: bool = False,
                        bank_budget_bytes: int | None = DEFAULT_BANK_BUDGET_BYTES) -> np.ndarray:  # fmt: skip
    """Metrics of every genome of ``pop`` (n, N_GENES) over ``data``: float64 (n, len(METRIC_NAMES)).

    A pure function of its inputs: bit-identical for the same inputs in any process, whatever
    ``parallel`` (Numba threads over strategies) or ``bank_budget_bytes`` (memory for shared indicator
    series; the population is processed in chunks that fit it).
    """
    return evaluate_strategies(_as_strategies(pop), data, costs, periods_per_year, parallel=parallel,
                               bank_budget_bytes=bank_budget_bytes)  # fmt: skip


def simulate(vec: np.ndarray | Strategy, data: MarketData, costs: Costs,
             periods_per_year: float = 252.0) -> SimResult:  # fmt: skip
    """Bar-by-bar result of one genome (or an already decoded :class:`Strategy`, e.g. ``always_long()``).

    ``periods_per_year`` only affects ``SimResult.metrics``.
    """
    s = vec if isinstance(vec, Strategy) else _as_strategies(np.asarray(vec, dtype=np.float64)[None, :])[0]
    prep = _Prepared(data, costs, periods_per_year)
    keys, t0 = _strategy_needs(s)
    bank, rows = prep.bank(list(dict.fromkeys(keys)))
    prm = _params(s, rows, t0)
    n = len(data)
    pos = np.empty(n)
    ret = np.empty(n)
    met = np.empty(len(METRIC_NAMES))
    d = prep.data
    K.run_strategy(prm, bank, d.open, d.high, d.low, d.close, prep.bar_ret, prep.regime, prep.corr,
                   prep.has_regime, prep.has_corr, prep.rate, prep.ppy, prep.borrow, _NO_UMAP, 0, 0,
                   np.zeros(1), 0.0, 0, met, pos, ret, True)  # fmt: skip
    return SimResult(position=pos, returns=ret, equity=np.cumprod(1.0 + ret), trades=int(met[K.M_NTRADES]),
                     metrics=met)  # fmt: skip
