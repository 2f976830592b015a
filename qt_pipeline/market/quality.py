"""Bar quality expectations, run with Great Expectations 1.x directly on a canonical bar frame.

Validation (:mod:`qt_pipeline.market.validation`) keeps bad rows *out*; this suite checks what is *in* a
store (a stored partition read back), so it catches rows that bypassed validation or were damaged later.
Great Expectations costs seconds to import, so it is imported only inside :func:`run_bar_quality`.

The suite (one expectation per invariant of the bar contract):

* not null: every canonical column;
* prices > 0 (open, high, low, close, vwap), volume >= 0, trade_count >= 0;
* high >= open, high >= close, high >= low, open >= low, close >= low, high >= vwap >= low;
* (symbol, timestamp) unique;
* bar open times on the interval grid (derived column ``grid_offset_s`` == 0);
* row count within ``[min_rows, max_rows]`` (default 1 .. bars per day); the caller derives ``min_rows``
  from the symbol's market calendar (:func:`expected_row_range`): 0 on weekends and holidays, the
  configured minimum on a trading day.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any

import pandas as pd

from qt_pipeline.market.contract import BAR_COLUMNS, PRICE_COLUMNS
from qt_pipeline.market.validation import format_interval

_PAIRS_GE: tuple[tuple[str, str], ...] = (
    ("high", "open"),
    ("high", "close"),
    ("high", "low"),
    ("open", "low"),
    ("close", "low"),
    ("high", "vwap"),
    ("vwap", "low"),
)


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result: ``name`` is human-readable (e.g. ``high >= low``)."""

    name: str
    expectation: str  # GX expectation type, e.g. expect_column_pair_values_a_to_be_greater_than_b
    success: bool
    unexpected_count: int | None = None
    observed: Any = None
    examples: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class QualityReport:
    """Outcome of the bar quality suite on one frame."""

    success: bool
    rows: int
    outcomes: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def describe_failures(self) -> list[str]:
        out = []
        for o in self.failed:
            parts = [f"{o.name} ({o.expectation})"]
            if o.unexpected_count is not None:
                parts.append(f"{o.unexpected_count} of {self.rows} row(s) violate it")
            if o.observed is not None:
                parts.append(f"observed {o.observed}")
            if o.examples:
                parts.append(f"e.g. {o.examples[:3]}")
            out.append(": ".join(parts[:1]) + (" — " + "; ".join(parts[1:]) if parts[1:] else ""))
        return out


def _with_derived_columns(bars: pd.DataFrame, interval: timedelta) -> pd.DataFrame:
    """The frame GX sees: canonical columns plus ``grid_offset_s`` (seconds off the interval grid)."""
    df = bars.loc[:, list(BAR_COLUMNS)].copy()
    step = pd.Timedelta(interval)
    epoch = pd.Timestamp(0, tz="UTC")
    df["grid_offset_s"] = ((df["timestamp"] - epoch) % step).dt.total_seconds().astype("float64")
    # GX 1.x handles numpy dtypes best: give it plain object strings and UTC datetimes.
    df["symbol"] = df["symbol"].astype(object)
    return df


def _expectations(
    interval: timedelta, min_rows: int, max_rows: int | None, check_grid: bool = True
) -> list[tuple[str, Any]]:
    import great_expectations.expectations as gxe

    exps: list[tuple[str, Any]] = []
    for c in BAR_COLUMNS:
        exps.append((f"{c} not null", gxe.ExpectColumnValuesToNotBeNull(column=c)))
    for c in PRICE_COLUMNS:
        exps.append((f"{c} > 0", gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True)))
    exps.append(("volume >= 0", gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0)))
    exps.append(("trade_count >= 0", gxe.ExpectColumnValuesToBeBetween(column="trade_count", min_value=0)))
    for a, b in _PAIRS_GE:
        exps.append(
            (
                f"{a} >= {b}",
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=True),
            )
        )
    exps.append(
        (
            "(symbol, timestamp) unique",
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", "timestamp"]),
        )
    )
    if check_grid:
        exps.append(
            (
                f"timestamp on the {format_interval(pd.Timedelta(interval))} grid",
                gxe.ExpectColumnValuesToBeBetween(column="grid_offset_s", min_value=0, max_value=0),
            )
        )
    exps.append(
        (
            f"row count in [{min_rows}, {max_rows if max_rows is not None else '∞'}]",
            gxe.ExpectTableRowCountToBeBetween(min_value=min_rows, max_value=max_rows),
        )
    )
    return exps


@dataclass(frozen=True)
class _PreparedSuite:
    batch_definition: Any
    suite: Any
    names: dict[str, str]  # expectation id -> human-readable label
    expectations: list[tuple[str, Any]]
    lock: threading.Lock


@lru_cache(maxsize=64)
def _prepared_suite(
    name: str, interval: timedelta, min_rows: int, max_rows: int | None, check_grid: bool
) -> _PreparedSuite:
    """The GX context, batch definition and suite for one parameter set, built once per process.

    Building them costs about a second (every added expectation is serialised through GX's store); the
    suite only depends on these parameters (a few variants: trading day / closed day, interval), so
    every partition validated in this process reuses it. Validation on a prepared suite is serialised by
    its lock (a GX context is not meant for concurrent use)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    data_asset = context.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name=name)
    batch_def = data_asset.add_batch_definition_whole_dataframe(f"{name}_batch")
    exps = _expectations(interval, min_rows, max_rows, check_grid)
    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_bar_quality"))
    names: dict[str, str] = {}
    for label, exp in exps:
        added = suite.add_expectation(exp)
        names[str(added.id)] = label
    return _PreparedSuite(batch_def, suite, names, exps, threading.Lock())


def run_bar_quality(
    bars: pd.DataFrame,
    *,
    interval: timedelta | str = timedelta(minutes=1),
    min_rows: int = 1,
    max_rows: int | None = None,
    name: str = "raw_ohlcv",
    check_grid: bool | None = None,
) -> QualityReport:
    """Run the bar quality suite on a canonical frame (e.g. one stored symbol-day) and report.

    ``max_rows`` defaults to the number of bars in one day at ``interval`` (at least 1). The grid
    expectation is skipped for intervals of a day or more (``check_grid`` None): daily bars open at their
    session open, which is on no UTC grid.
    """
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    td = pd.Timedelta(interval).to_pytimedelta()
    if max_rows is None:
        max_rows = max(1, int(pd.Timedelta("1D") / pd.Timedelta(td)))
    if check_grid is None:
        check_grid = pd.Timedelta(td) < pd.Timedelta(days=1)
    df = _with_derived_columns(bars, td)
    prepared = _prepared_suite(name, td, min_rows, max_rows, check_grid)
    with prepared.lock:
        batch = prepared.batch_definition.get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(prepared.suite, result_format="SUMMARY")
    names, exps = prepared.names, prepared.expectations
    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        assert cfg is not None  # every result of a validation definition carries its expectation
        res = r.result or {}
        examples = res.get("partial_unexpected_list") or []
        outcomes.append(
            ExpectationOutcome(
                name=names.get(str(cfg.id), cfg.type),
                expectation=cfg.type,
                success=bool(r.success),
                unexpected_count=(
                    int(res["unexpected_count"]) if res.get("unexpected_count") is not None else None
                ),
                observed=res.get("observed_value"),
                examples=[_plain(x) for x in examples[:5]],
            )
        )
    order = {label: i for i, (label, _) in enumerate(exps)}
    outcomes.sort(key=lambda o: order.get(o.name, len(order)))
    return QualityReport(success=bool(result.success), rows=len(df), outcomes=outcomes)


def expected_row_range(symbol: str, day, settings=None) -> tuple[int, int, str, str]:
    """``(min_rows, max_rows, calendar name, interval)`` the quality check expects for ``symbol`` on the
    UTC day ``day``: a closed day (weekend, holiday) may be empty; a trading day needs
    ``min(min_bars, bars the session holds)``; never more than one day of bars."""
    from qt_pipeline.market.calendars import get_calendar
    from qt_pipeline.market.layout import symbol_profile

    prof = symbol_profile(symbol, settings)
    cal = get_calendar(prof.calendar)
    step = pd.Timedelta(prof.interval)
    expected = cal.expected_bars(day, step)
    max_rows = max(1, int(pd.Timedelta("1D") // step))
    min_rows = min(prof.min_bars, expected) if expected else 0
    return min_rows, max_rows, cal.name, prof.interval


def _plain(x: Any) -> Any:
    """JSON-friendly example values (GX returns tuples/dicts/numpy scalars)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if hasattr(x, "item"):
        try:
            return x.item()
        except (ValueError, TypeError):
            return str(x)
    if isinstance(x, int | float | str | bool) or x is None:
        return x
    return str(x)


__all__ = ["ExpectationOutcome", "QualityReport", "expected_row_range", "run_bar_quality"]
