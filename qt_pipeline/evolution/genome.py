"""The strategy genome: typed, bounded genes and their decoding into a :class:`Strategy`.

A genome is a float64 vector of length :data:`N_GENES`. Float genes are used as they are; int genes and
choice genes (stored as the index into ``Gene.choices``) are decoded by rounding. :func:`repair` clips
to the bounds and rounds the int/choice genes, so a repaired genome decodes without any guessing and
``repair(repair(x)) == repair(x)``.

Signals. Every indicator rule is reduced to a *signed oscillator* ``v_t`` (computed from bars <= t) and
a non-negative threshold ``th`` in the indicator's own units:

====================  =========================================  ===============================
kind                  v_t                                        th (from ``level`` in [0, 1])
====================  =========================================  ===============================
``sma_cross``         SMA(fast)_t / SMA(slow)_t - 1              0.05 * level**2
``ema_cross``         EMA(fast)_t / EMA(slow)_t - 1              0.05 * level**2
``rsi``               RSI(p)_t - 50                              40 * level  (RSI 50..90 / 50..10)
``bollinger``         (close_t - SMA(p)_t) / std(p)_t  (z-score)  3 * level  (band width in std)
``momentum``          close_t / close_{t-p} - 1                  0.1 * level**2
``breakout``          position of close_t in the Donchian        0.5 + level  (>1: outside the
                      channel of the *previous* p bars (-1..1)   channel)
====================  =========================================  ===============================

With comparison ``above`` (trend following) the rule says *up* when ``v > th`` and *down* when
``v < -th``; with ``below`` (mean reversion) the two are swapped (e.g. "up when RSI < 50 - th").
The entry rule's *up* opens a long, its *down* a short (as allowed by ``direction``). The exit rule's
*down* closes a long and its *up* closes a short; exit kind ``opposite`` uses the entry rule itself
(a long is closed when the entry rule says down). With ``direction='both'`` an entry signal against an
open position flips it.

Risk genes: ``stop_loss`` / ``take_profit`` are fractions of the entry price (0 = off; the gene ranges
extend below 0 so that "off" is reachable by mutation: negative values decode to 0), ``atr_stop`` is a
stop distance in multiples of ATR(``atr_period``) at the entry bar (0 = off; the tighter of the two stops
wins), ``position_size`` in (0, 1] is the fraction of equity exposed.

Filter slots (gate *new entries* only; inactive when the market data carries no such series):
``regime_mask`` is a bitmask of allowed regime codes 0..3 (bit k allows code k, named
``REGIME_NAMES[k]``: trend_up, trend_down, range, high_vol; 0 = off);
``correlation_max`` is the largest allowed |correlation| (decoded 0 = off; gene values <= 0 or >= 1 are
off).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from qt_pipeline.regime_codes import REGIME_NAMES

PERIODS: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200,
                            250, 300, 400)  # fmt: skip
ENTRY_KINDS: tuple[str, ...] = ("sma_cross", "ema_cross", "rsi", "bollinger", "momentum", "breakout")
EXIT_KINDS: tuple[str, ...] = ("opposite", *ENTRY_KINDS)
CROSS_KINDS: frozenset[str] = frozenset({"sma_cross", "ema_cross"})
COMPARISONS: tuple[str, ...] = ("above", "below")
DIRECTIONS: tuple[str, ...] = ("long", "short", "both")
N_REGIMES = len(REGIME_NAMES)  # regime codes 0..3 understood by the regime filter

GeneKind = Literal["float", "int", "choice"]


@dataclass(frozen=True)
class Gene:
    """One bounded gene. For ``choice`` genes ``low=0``, ``high=len(choices)-1`` and the stored value is
    the index into ``choices``."""

    name: str
    kind: GeneKind
    low: float
    high: float
    choices: tuple[Any, ...] | None = None
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("float", "int", "choice"):
            raise ValueError(
                f"gene {self.name!r}: kind must be 'float', 'int' or 'choice', got {self.kind!r}"
            )
        if self.kind == "choice":
            if not self.choices:
                raise ValueError(f"gene {self.name!r}: a choice gene needs a non-empty 'choices' tuple")
            if (self.low, self.high) != (0, len(self.choices) - 1):
                raise ValueError(f"gene {self.name!r}: choice bounds must be (0, {len(self.choices) - 1})")
        if not self.low <= self.high:
            raise ValueError(f"gene {self.name!r}: low {self.low} > high {self.high}")

    def decode(self, x: float) -> Any:
        """The gene's native value (float, int or the chosen item) of a stored float."""
        v = min(max(float(x), self.low), self.high)
        if self.kind == "float":
            return v
        i = int(np.rint(v))
        if self.kind == "choice":
            assert self.choices is not None  # a choice gene has choices (checked when it is built)
            return self.choices[i]
        return i

    def encode(self, value: Any) -> float:
        """The stored float of a native value (inverse of :meth:`decode` for in-range values)."""
        if self.kind == "choice":
            try:
                return float(self.choices.index(value))  # type: ignore[union-attr]
            except ValueError:
                raise ValueError(
                    f"gene {self.name!r}: {value!r} is not one of the choices {list(self.choices)}"  # type: ignore[arg-type]
                ) from None
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"gene {self.name!r}: expected a number, got {value!r}") from None
        if not math.isfinite(v) or not self.low <= v <= self.high:
            raise ValueError(f"gene {self.name!r}: {value!r} is outside [{self.low}, {self.high}]")
        if self.kind == "int" and v != round(v):
            raise ValueError(f"gene {self.name!r}: expected an integer, got {value!r}")
        return v


def _choice(name: str, choices: tuple[Any, ...], doc: str = "") -> Gene:
    return Gene(name, "choice", 0, len(choices) - 1, tuple(choices), doc)


GENES: tuple[Gene, ...] = (
    _choice("entry_kind", ENTRY_KINDS, "indicator of the entry rule"),
    _choice("entry_period", PERIODS, "main period (fast MA for crosses)"),
    _choice("entry_period2", PERIODS, "slow MA period (crosses only)"),
    Gene("entry_level", "float", 0.0, 1.0, doc="normalised threshold, see module doc"),
    _choice("entry_comparison", COMPARISONS, "above = trend following, below = mean reversion"),
    _choice("exit_kind", EXIT_KINDS, "indicator of the exit rule; opposite = reverse of the entry rule"),
    _choice("exit_period", PERIODS),
    _choice("exit_period2", PERIODS),
    Gene("exit_level", "float", 0.0, 1.0),
    _choice("exit_comparison", COMPARISONS),
    _choice("direction", DIRECTIONS),
    Gene("stop_loss", "float", -0.05, 0.10, doc="fraction of entry price; <= 0 is off"),
    Gene("take_profit", "float", -0.10, 0.20, doc="fraction of entry price; <= 0 is off"),
    Gene("position_size", "float", 0.1, 1.0, doc="fraction of equity exposed"),
    _choice("atr_period", PERIODS),
    Gene("atr_stop", "float", -2.0, 6.0, doc="stop distance in ATRs at entry; <= 0 is off"),
    Gene("regime_mask", "int", 0, 2**N_REGIMES - 1, doc="allowed regime codes bitmask; 0 is off"),
    Gene("correlation_max", "float", -0.25, 1.0, doc="max |corr| to enter; <= 0 or >= 1 is off"),
)
N_GENES: int = len(GENES)
GENE_INDEX: dict[str, int] = {g.name: i for i, g in enumerate(GENES)}
LOWER: np.ndarray = np.array([g.low for g in GENES], dtype=np.float64)
UPPER: np.ndarray = np.array([g.high for g in GENES], dtype=np.float64)
_ROUNDED: np.ndarray = np.array([g.kind != "float" for g in GENES])
LOWER.setflags(write=False)
UPPER.setflags(write=False)


# ------------------------------------------------------------------------------------------------------
# decoded strategy
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One indicator rule. ``period2`` is the slow period of a cross (``None`` otherwise);
    ``threshold`` is in the indicator's units (see the module doc)."""

    kind: str
    period: int
    period2: int | None
    level: float
    threshold: float
    comparison: str

    def _phrase(self, positive: bool) -> str:
        """Text of ``v > th`` (positive) or ``v < -th`` (negative) for this rule's oscillator v."""
        th, p, k = self.threshold, self.period, self.kind
        if k in CROSS_KINDS:
            ma = "SMA" if k == "sma_cross" else "EMA"
            side = "above" if positive else "below"
            return f"{ma}({p}) is more than {th:.3%} {side} {ma}({self.period2})"
        if k == "rsi":
            return f"RSI({p}) is above {50 + th:.1f}" if positive else f"RSI({p}) is below {50 - th:.1f}"
        if k == "bollinger":
            band = "above the upper" if positive else "below the lower"
            return f"the close is {band} Bollinger band ({p} bars, {th:.2f} std)"
        if k == "momentum":
            return f"the {p}-bar rate of change is {'above +' if positive else 'below -'}{th:.3%}"
        if k == "breakout":
            side = "above" if positive else "below"
            return (
                f"the close is more than {th:.2f} half-widths {side} the middle of the previous "
                f"{p} bars' Donchian channel"
            )
        if k == "always":
            return "always" if positive else "never"
        return f"{k}({p}) {'>' if positive else '<'} {th}"

    def describe_side(self, side: Literal["up", "down"]) -> str:
        """Text of the rule's *up* (bullish) or *down* (bearish) condition."""
        positive = (side == "up") == (self.comparison == "above")
        return self._phrase(positive)

    def describe(self) -> str:
        return f"up when {self.describe_side('up')}; down when {self.describe_side('down')}"


def _threshold(kind: str, level: float) -> float:
    if kind in CROSS_KINDS:
        return 0.05 * level * level
    if kind == "rsi":
        return 40.0 * level
    if kind == "bollinger":
        return 3.0 * level
    if kind == "momentum":
        return 0.1 * level * level
    if kind == "breakout":
        return 0.5 + level
    if kind == "always":
        return 0.0
    raise ValueError(f"unknown rule kind {kind!r}; known: {ENTRY_KINDS}")


def make_rule(kind: str, period: int, period2: int | None = None, level: float = 0.0,
              comparison: str = "above") -> Rule:  # fmt: skip
    """Build a rule from native values (crosses get fast = min, slow = max period)."""
    if comparison not in COMPARISONS:
        raise ValueError(f"rule comparison must be one of {COMPARISONS}, got {comparison!r}")
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"rule level must be in [0, 1], got {level!r}")
    if kind != "always" and (int(period) != period or period < 1):
        raise ValueError(f"rule period must be a positive integer, got {period!r}")
    if kind in CROSS_KINDS:
        if period2 is None or int(period2) != period2 or period2 < 1:
            raise ValueError(f"a {kind} rule needs a positive integer period2 (the slow MA), got {period2!r}")
        fast, slow = sorted((int(period), int(period2)))
        if fast == slow:
            raise ValueError(f"a {kind} rule needs two different periods, got {period} and {period2}")
        return Rule(kind, fast, slow, float(level), _threshold(kind, level), comparison)
    return Rule(kind, int(period), None, float(level), _threshold(kind, level), comparison)


@dataclass(frozen=True)
class Strategy:
    """A decoded genome. ``exit is None`` means "exit when the entry rule reverses"."""

    entry: Rule
    exit: Rule | None
    direction: str = "long"
    stop_loss: float = 0.0
    take_profit: float = 0.0
    position_size: float = 1.0
    atr_period: int = 14
    atr_stop: float = 0.0
    regime_mask: int = 0
    correlation_max: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not 0.0 < self.position_size <= 1.0:
            raise ValueError(f"position_size must be in (0, 1], got {self.position_size!r}")
        for name in ("stop_loss", "take_profit", "atr_stop"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite fraction >= 0 (0 = off), got {v!r}")
        if not 0 <= self.regime_mask < 2**N_REGIMES:
            raise ValueError(f"regime_mask must be in [0, {2**N_REGIMES - 1}], got {self.regime_mask!r}")
        if not 0.0 <= self.correlation_max < 1.0:
            raise ValueError(f"correlation_max must be in [0, 1) (0 = off), got {self.correlation_max!r}")
        if self.atr_stop > 0 and self.atr_period < 1:
            raise ValueError(f"atr_period must be >= 1, got {self.atr_period!r}")

    def describe(self, *, regime_data: bool = True, correlation_data: bool = True) -> str:
        """Plain-English description. ``regime_data``/``correlation_data`` say whether the data the
        strategy runs on carries those series: a filter gene without its series is inactive (the backtester
        ignores it), and the text says so instead of promising a filter that does not act."""
        d = {"long": "Long-only", "short": "Short-only", "both": "Long/short"}[self.direction]
        ex = self.exit or self.entry
        parts = []
        if self.entry.kind == "always":
            parts.append(f"{d} strategy that is in the market from the first bar's close to the end")
        else:
            sides = []
            if self.direction in ("long", "both"):
                sides.append(f"goes long when {self.entry.describe_side('up')} and exits the long when "
                             f"{ex.describe_side('down')}")  # fmt: skip
            if self.direction in ("short", "both"):
                sides.append(f"goes short when {self.entry.describe_side('down')} and exits the short when "
                             f"{ex.describe_side('up')}")  # fmt: skip
            parts.append(f"{d} strategy that " + "; it ".join(sides))
        risk = [f"position size {self.position_size:.0%} of equity"]
        risk.append(f"stop-loss {self.stop_loss:.2%}" if self.stop_loss > 0 else "no fixed stop-loss")
        if self.atr_stop > 0:
            risk.append(f"ATR stop {self.atr_stop:.2f} x ATR({self.atr_period})")
        risk.append(f"take-profit {self.take_profit:.2%}" if self.take_profit > 0 else "no take-profit")
        parts.append(", ".join(risk))
        filters = []
        if self.regime_mask and regime_data:
            names = [REGIME_NAMES[k] for k in range(N_REGIMES) if self.regime_mask >> k & 1]
            filters.append(f"enters only in {' / '.join(names)} regime{'s' if len(names) > 1 else ''}")
        if self.correlation_max > 0 and correlation_data:
            filters.append(f"enters only while |correlation| <= {self.correlation_max:.2f}")
        if not filters:
            missing = [
                n for n, have in (("regime", regime_data), ("correlation", correlation_data)) if not have
            ]
            why = f" (the data has no {' or '.join(missing)} series)" if missing else ""
            filters.append(f"no regime or correlation filter{why}")
        parts.append("; ".join(filters))
        if self.direction == "both" and self.entry.kind != "always":
            parts.append("an opposite entry signal flips the position")
        return "; ".join(parts) + ". Orders act on the bar after the signal."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Strategy:
        d = dict(d)
        d["entry"] = Rule(**d["entry"])
        d["exit"] = None if d.get("exit") is None else Rule(**d["exit"])
        return cls(**d)


def always_long(position_size: float = 1.0) -> Strategy:
    """A buy-and-hold strategy: long from the close of the first bar to the end (for baselines/tests)."""
    return Strategy(entry=Rule("always", 0, None, 0.0, 0.0, "above"), exit=None, direction="long",
                    position_size=position_size)  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# population helpers
# ------------------------------------------------------------------------------------------------------
def _as_2d(pop: np.ndarray, what: str = "population") -> np.ndarray:
    a = np.asarray(pop, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != N_GENES:
        raise ValueError(f"{what} must have shape (n, {N_GENES}) (one genome per row), got {np.shape(pop)}")
    if not np.isfinite(a).all():
        rows = sorted(set(np.nonzero(~np.isfinite(a))[0].tolist()))[:5]
        raise ValueError(f"{what} holds non-finite genes (rows {rows}); genomes must be finite floats")
    return a


def random_population(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random repaired genomes, uniform within each gene's bounds (choices uniform over items)."""
    if n < 0:
        raise ValueError(f"population size must be >= 0, got {n}")
    u = rng.random((n, N_GENES))
    lo = LOWER - 0.5 * _ROUNDED  # so that rounding gives each int/choice value the same probability
    hi = UPPER + 0.5 * _ROUNDED
    pop = lo + u * (hi - lo)
    return repair(pop)


def repair(pop: np.ndarray) -> np.ndarray:
    """Clip every gene to its bounds and round int/choice genes (idempotent). Accepts one genome or a
    population; returns a new float64 array of the same shape."""
    a = np.asarray(pop, dtype=np.float64)
    one = a.ndim == 1
    a = _as_2d(a).copy()
    np.clip(a, LOWER, UPPER, out=a)
    a[:, _ROUNDED] = np.rint(a[:, _ROUNDED])
    return a[0] if one else a


def decode(vec: np.ndarray) -> Strategy:
    """The strategy a genome stands for (the genome is repaired first, so any finite vector decodes)."""
    return _decode_repaired(repair(_as_2d(vec, "genome")[0]).tolist())


def decode_population(pop: np.ndarray) -> list[Strategy]:
    """:func:`decode` of every genome (row) of ``pop``, repaired once for the whole population: a GA
    decodes every generation, and repairing and reading each row through NumPy cost ~20 us a genome."""
    return [_decode_repaired(row) for row in repair(_as_2d(pop)).tolist()]


# (name, None | int | choices) per gene: how a repaired gene (clipped, int/choice genes whole) reads
_NATIVE: tuple[tuple[str, Any], ...] = tuple(
    (g.name, g.choices if g.kind == "choice" else int if g.kind == "int" else None) for g in GENES
)


def _decode_repaired(v: list[float]) -> Strategy:
    """The strategy of a repaired genome given as Python floats (what :meth:`Gene.decode` gives for
    in-range values, without clipping and rounding again)."""
    g: dict[str, Any] = {
        name: x if how is None else int(x) if how is int else how[int(x)]
        for (name, how), x in zip(_NATIVE, v, strict=True)
    }

    def rule(prefix: str, kind: str) -> Rule:
        p1i = int(v[GENE_INDEX[f"{prefix}_period"]])
        if kind in CROSS_KINDS:
            p2i = int(v[GENE_INDEX[f"{prefix}_period2"]])
            fi, si = min(p1i, p2i), max(p1i, p2i)
            if fi == si:  # degenerate cross: use the next longer slow period (or next shorter fast one)
                if si < len(PERIODS) - 1:
                    si += 1
                else:
                    fi -= 1
            return make_rule(kind, PERIODS[fi], PERIODS[si], g[f"{prefix}_level"], g[f"{prefix}_comparison"])
        return make_rule(kind, PERIODS[p1i], None, g[f"{prefix}_level"], g[f"{prefix}_comparison"])

    entry = rule("entry", g["entry_kind"])
    exit_ = None if g["exit_kind"] == "opposite" else rule("exit", g["exit_kind"])
    cmax = g["correlation_max"]
    return Strategy(
        entry=entry,
        exit=exit_,
        direction=g["direction"],
        stop_loss=max(0.0, g["stop_loss"]),
        take_profit=max(0.0, g["take_profit"]),
        position_size=g["position_size"],
        atr_period=g["atr_period"],
        atr_stop=max(0.0, g["atr_stop"]),
        regime_mask=g["regime_mask"],
        correlation_max=cmax if 0.0 < cmax < 1.0 else 0.0,
    )


def genome_to_dict(vec: np.ndarray) -> dict[str, Any]:
    """``{gene name: native value}`` of a (repaired) genome — JSON-friendly; floats are kept exactly."""
    v = repair(_as_2d(vec, "genome")[0])
    out: dict[str, Any] = {}
    for gene, x in zip(GENES, v, strict=True):
        val = gene.decode(x)
        out[gene.name] = val.item() if isinstance(val, np.generic) else val
    return out


def genome_from_dict(d: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`genome_to_dict`. Raises ``ValueError`` naming any missing/unknown/bad gene."""
    missing = [g.name for g in GENES if g.name not in d]
    unknown = sorted(set(d) - set(GENE_INDEX))
    if missing or unknown:
        raise ValueError(
            f"genome dict does not match the gene set: missing {missing}, unknown {unknown}; "
            f"expected exactly {list(GENE_INDEX)}"
        )
    return np.array([g.encode(d[g.name]) for g in GENES], dtype=np.float64)
