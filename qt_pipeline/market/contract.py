"""The OHLCV bar contract: canonical columns, dtypes, key and the reject record.

A *canonical* bar frame has exactly :data:`BAR_COLUMNS` in that order with :data:`BAR_DTYPES`,
timestamps tz-aware UTC at bar open (microsecond resolution, as DuckDB and PostgreSQL store them),
unique on :data:`KEY`. Every store reads and writes canonical frames; :func:`to_canonical` is the
one conversion into that shape (it checks, it never silently fixes — use
:func:`qt_pipeline.market.validation.validate_bars` for untrusted input).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

BAR_COLUMNS: tuple[str, ...] = (
    "symbol",
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "trade_count",
)
KEY: tuple[str, str] = ("symbol", "timestamp")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "vwap")
FLOAT_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "vwap")

TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
BAR_DTYPES: dict[str, object] = {
    "symbol": pd.StringDtype(na_value=np.nan),  # pandas 3 default string dtype ("str")
    "timestamp": TIMESTAMP_DTYPE,
    "open": np.dtype("float64"),
    "high": np.dtype("float64"),
    "low": np.dtype("float64"),
    "close": np.dtype("float64"),
    "volume": np.dtype("float64"),
    "vwap": np.dtype("float64"),
    "trade_count": np.dtype("int64"),
}

# Symbols: upper-case letters/digits, optionally with one separator ('.', '-', '/', '_') between parts,
# 1..20 characters, e.g. BTCUSD, BRK.B, ETH-USD.
SYMBOL_PATTERN = r"^[A-Z0-9]+(?:[./_\-][A-Z0-9]+)*$"
SYMBOL_MAX_LEN = 20


class RejectReason(StrEnum):
    """Machine-readable reasons a row (or a whole file) was rejected."""

    MISSING_COLUMN = "missing_column"
    EXTRA_COLUMN = "extra_column"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    NON_POSITIVE_PRICE = "non_positive_price"
    HIGH_BELOW_OPEN_CLOSE = "high_below_open_close"
    LOW_ABOVE_OPEN_CLOSE = "low_above_open_close"
    HIGH_BELOW_LOW = "high_below_low"
    NEGATIVE_VOLUME = "negative_volume"
    VWAP_OUTSIDE_RANGE = "vwap_outside_range"
    BAD_TRADE_COUNT = "bad_trade_count"
    DUPLICATE_KEY = "duplicate_key"
    NAIVE_TIMESTAMP = "naive_timestamp"
    AMBIGUOUS_TIMESTAMP = "ambiguous_timestamp"
    OFF_GRID_TIMESTAMP = "off_grid_timestamp"
    MALFORMED_SYMBOL = "malformed_symbol"
    UNKNOWN_SYMBOL = "unknown_symbol"
    MALFORMED_FILE = "malformed_file"
    EMPTY_FILE = "empty_file"
    IMPLAUSIBLE_VALUE = "implausible_value"  # outside configured bounds (magnitude, jump)
    FILE_TOO_LARGE = "file_too_large"  # refused before reading (QT_LANDING_MAX_FILE_MB)
    FUTURE_TIMESTAMP = "future_timestamp"  # bar starts later than now + interval: it cannot have closed


# One rejected row (or file-level problem). ``line`` is the 1-based line in the source file (header is
# line 1, so the first data row is line 2) or the 0-based row position in a batch; NA for file-level
# problems. ``raw`` is the offending input row as JSON text so nothing is lost.
REJECT_COLUMNS: tuple[str, ...] = (
    "source",
    "line",
    "symbol",
    "timestamp",
    "reason",
    "detail",
    "raw",
    "rejected_at",
)
REJECT_DTYPES: dict[str, object] = {
    "source": pd.StringDtype(na_value=np.nan),
    "line": pd.Int64Dtype(),
    "symbol": pd.StringDtype(na_value=np.nan),
    "timestamp": pd.StringDtype(na_value=np.nan),  # as found in the input (it may be unparsable)
    "reason": pd.StringDtype(na_value=np.nan),
    "detail": pd.StringDtype(na_value=np.nan),
    "raw": pd.StringDtype(na_value=np.nan),
    "rejected_at": TIMESTAMP_DTYPE,
}
REJECT_KEY: tuple[str, str, str] = ("source", "line", "reason")


class ContractError(ValueError):
    """A frame that should be canonical is not (a programming error, not bad market data)."""


def check_bar_batch(canon: pd.DataFrame, where: str, *, unique_keys: bool = True) -> None:
    """Every backend's last check of a canonical batch before writing: no null/NaN in any bar column
    (NaN counts as missing) and, with ``unique_keys``, no duplicate ``(symbol, timestamp)``. Raises
    :class:`ContractError` naming ``where``, the offending column(s)/keys and the fix."""
    nulls = canon.isna()
    bad = [c for c in canon.columns if nulls[c].any()]
    if bad:
        first = int(nulls[bad].any(axis=1).to_numpy().argmax())
        raise ContractError(
            f"{where}: column(s) {bad} hold null/NaN values (first at batch row {first}); every bar field is "
            "required — validate the frame with qt_pipeline.market.validation (NaN is a not_finite reject) "
            "— nothing was written"
        )
    if not unique_keys:
        return
    dup = canon.duplicated(subset=list(KEY), keep=False)
    if dup.any():
        ex = canon.loc[dup, list(KEY)].head(3)
        shown = ", ".join(f"({s}, {t})" for s, t in ex.itertuples(index=False))
        raise ContractError(
            f"{where}: the batch holds {int(dup.sum())} rows with duplicate (symbol, timestamp) keys, e.g. "
            f"{shown}; deduplicate it (validate_bars reports duplicates as rejects) — nothing was written"
        )


def check_range_batch(
    canon: pd.DataFrame, symbol: str, lo: pd.Timestamp | None, hi: pd.Timestamp | None, where: str
) -> None:
    """A ``replace_range`` batch holds only ``symbol``'s bars inside ``[lo, hi)`` (either bound may be
    ``None``); raises :class:`ContractError` naming the first offending row."""
    other = canon["symbol"] != symbol
    if other.any():
        raise ContractError(
            f"{where}: {int(other.sum())} row(s) are of another symbol, e.g. "
            f"{canon.loc[other, 'symbol'].iloc[0]!r}; pass only {symbol!r} bars — nothing was written"
        )
    outside = pd.Series(False, index=canon.index)
    if lo is not None:
        outside |= canon["timestamp"] < lo
    if hi is not None:
        outside |= canon["timestamp"] >= hi
    if outside.any():
        raise ContractError(
            f"{where}: {int(outside.sum())} row(s) lie outside [start, end), e.g. "
            f"{canon.loc[outside, 'timestamp'].iloc[0].isoformat()}; nothing was written"
        )


def day_bounds(day: date | datetime | str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[00:00, next 00:00)`` UTC of ``day`` (a date, an ISO date string or a timestamp's date)."""
    if isinstance(day, str):
        day = date.fromisoformat(day)
    elif isinstance(day, datetime):
        day = day.date()
    start = pd.Timestamp(day.isoformat(), tz="UTC")
    return start, start + pd.Timedelta(days=1)


_EMPTY: dict[str, pd.DataFrame] = {}


def _empty(kind: str, dtypes: dict) -> pd.DataFrame:
    # built once, handed out as copies: building one costs ~1.7 ms, a copy ~0.06 ms, and every validated
    # block asks for several
    if kind not in _EMPTY:
        _EMPTY[kind] = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in dtypes.items()})
    return _EMPTY[kind].copy()


def empty_bars() -> pd.DataFrame:
    """A canonical frame with no rows."""
    return _empty("bars", BAR_DTYPES)


def empty_rejects() -> pd.DataFrame:
    return _empty("rejects", REJECT_DTYPES)


def select_bar_columns(columns: Sequence[str] | None) -> list[str]:
    """The bar columns a read asks for, in canonical order (all when None). Unknown names and an empty
    selection are a :class:`ContractError` naming the known columns."""
    if columns is None:
        return list(BAR_COLUMNS)
    if isinstance(columns, str):
        columns = [columns]
    unknown = set(columns) - set(BAR_COLUMNS)
    if unknown:
        raise ContractError(f"unknown bar column(s) {sorted(unknown)}; known: {list(BAR_COLUMNS)}")
    cols = [c for c in BAR_COLUMNS if c in columns]
    if not cols:
        raise ContractError(f"columns must name at least one bar column of {list(BAR_COLUMNS)}")
    return cols


def to_canonical(df: pd.DataFrame, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Return ``df`` restricted/reordered to the canonical columns (or the ``columns`` subset, kept in
    canonical order) with canonical dtypes and a fresh RangeIndex.

    Raises :class:`ContractError` if a column is missing or a timestamp column is naive. Values are cast,
    never repaired: float bits are preserved exactly.
    """
    wanted = [c for c in BAR_COLUMNS if columns is None or c in columns]
    if columns is not None:
        unknown = set(columns) - set(BAR_COLUMNS)
        if unknown:
            raise ContractError(f"unknown bar column(s) {sorted(unknown)}; known: {list(BAR_COLUMNS)}")
    return _cast_frame(df, "bar", wanted, BAR_DTYPES, "timestamp", _bar_timestamps)


def _bar_timestamps(s: pd.Series) -> pd.Series:
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        raise ContractError("bar timestamps must be tz-aware (UTC); got naive/non-datetime values")
    return s.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)


def _cast_frame(
    df: pd.DataFrame,
    what: str,
    columns: Sequence[str],
    dtypes: Mapping[str, Any],
    time_column: str,
    cast_time: Callable[[pd.Series], pd.Series],
) -> pd.DataFrame:
    """``columns`` of ``df`` in order, cast to ``dtypes`` (``time_column`` by ``cast_time``), fresh index."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ContractError(f"{what} frame is missing column(s) {missing}")
    out = {}
    for c in columns:
        s = cast_time(df[c]) if c == time_column else df[c].astype(dtypes[c])
        out[c] = s.reset_index(drop=True)
    return pd.DataFrame(out)


def to_canonical_rejects(df: pd.DataFrame) -> pd.DataFrame:
    return _cast_frame(
        df,
        "reject",
        REJECT_COLUMNS,
        REJECT_DTYPES,
        "rejected_at",
        lambda s: pd.to_datetime(s, utc=True).astype(TIMESTAMP_DTYPE),
    )
