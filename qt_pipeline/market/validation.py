"""Validation of untrusted OHLCV rows into canonical bars plus reject records with reasons.

:func:`validate_bars` splits a raw batch (all-string columns straight from a CSV, or typed columns) into
accepted canonical bars and reject records (:data:`~qt_pipeline.market.contract.REJECT_COLUMNS`). Nothing
is dropped silently: every input row is either accepted or has at least one reject record; a row with
several problems gets one record per reason (it is still rejected only once). Everything is vectorised.

Decisions (documented here because callers rely on them):

* **Columns.** Column names are matched after stripping whitespace and lower-casing. All of
  :data:`BAR_COLUMNS` are required (``vwap`` and ``trade_count`` too). A missing column rejects every row
  with ``missing_column`` (naming the missing and the found columns); with zero rows one file-level record
  (``line`` NA) is written instead. Extra columns produce **one** file-level ``extra_column`` record
  (``line`` NA) and the rows are still accepted with the extra columns dropped: extra data is
  harmless, and rejecting whole files for it would make every vendor-added column an outage.
* **Numbers.** Strings are parsed with :func:`pandas.to_numeric` after stripping whitespace; an empty or
  unparsable value is ``wrong_type`` (naming the column and the raw value). ``nan``/``inf`` literals and
  missing values in typed input are ``not_finite``.
* **Prices** (open, high, low, close, vwap) must be > 0. ``high >= max(open, close)``,
  ``low <= min(open, close)``, ``high >= low`` and ``low <= vwap <= high`` are checked **exactly** (no
  tolerance): sources deliver the prices they computed, and a tolerance would let a bar that violates its
  own range into the store. Volume must be >= 0, trade_count a non-negative integer (``12.0`` is fine).
* **Timestamps** are bar open times. ISO-8601 strings with an offset (``+02:00``, ``Z``) and tz-aware
  dtypes are converted to UTC. Naive values are localised from ``source_timezone`` (DST gaps and folds →
  ``ambiguous_timestamp``) or, without a zone, rejected as ``naive_timestamp``. Numeric epochs (numbers,
  or digit-only strings) are ``wrong_type``: the unit cannot be known. A timestamp must lie on the
  interval grid (a multiple of ``interval`` since midnight UTC), and a bar may not start later than
  ``now + interval`` (``future_timestamp``: the bar cannot have closed).
* **Symbols** are normalised by stripping surrounding whitespace and upper-casing; anything else that does
  not match :data:`SYMBOL_PATTERN` (max :data:`SYMBOL_MAX_LEN` chars) is ``malformed_symbol``. With
  ``known_symbols``, other symbols are ``unknown_symbol``.
* **Duplicate keys** ``(symbol, timestamp)`` within the batch: if all occurrences are identical rows
  (same parsed values) the first is kept and the others are rejected; if they conflict, every occurrence
  is rejected (we cannot know which one is right). The detail says which.
* ``line`` is ``line_numbers[i]`` when given, else the 0-based row position; ``raw`` is the JSON of the
  original row (values as strings); ``timestamp`` in a reject is the raw string.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import (
    BAR_COLUMNS,
    FLOAT_COLUMNS,
    KEY,
    PRICE_COLUMNS,
    REJECT_COLUMNS,
    SYMBOL_MAX_LEN,
    SYMBOL_PATTERN,
    TIMESTAMP_DTYPE,
    RejectReason,
    empty_bars,
    empty_rejects,
    to_canonical,
    to_canonical_rejects,
)

DEFAULT_INTERVAL = timedelta(minutes=1)

# How to fix each kind of problem; appended to every detail in parentheses.
FIX_HINTS: dict[str, str] = {
    RejectReason.MISSING_COLUMN: "add the column to the file header or map it with QT_LANDING_COLUMN_MAP",
    RejectReason.EXTRA_COLUMN: "the column was ignored; map or remove it to silence this",
    RejectReason.WRONG_TYPE: "write a plain decimal number",
    "wrong_type_timestamp": "write an ISO-8601 timestamp with an offset, e.g. 2024-01-02T09:30:00+00:00",
    RejectReason.NOT_FINITE: "write a finite number or drop the bar",
    RejectReason.NON_POSITIVE_PRICE: "prices must be > 0; fix the price or drop the bar",
    RejectReason.HIGH_BELOW_OPEN_CLOSE: "high must be >= open and close; fix the bar at the source",
    RejectReason.LOW_ABOVE_OPEN_CLOSE: "low must be <= open and close; fix the bar at the source",
    RejectReason.HIGH_BELOW_LOW: "high must be >= low; check for swapped columns",
    RejectReason.NEGATIVE_VOLUME: "volume must be >= 0",
    RejectReason.VWAP_OUTSIDE_RANGE: "vwap must lie within [low, high]",
    RejectReason.BAD_TRADE_COUNT: "trade_count must be a non-negative integer",
    RejectReason.DUPLICATE_KEY: "keep exactly one row per (symbol, timestamp)",
    RejectReason.NAIVE_TIMESTAMP: (
        "set the time zone of this source (QT_LANDING_TIMEZONE / column mapping) or write offsets"
    ),
    RejectReason.AMBIGUOUS_TIMESTAMP: "write timestamps with an explicit UTC offset around DST changes",
    RejectReason.OFF_GRID_TIMESTAMP: "timestamps must be bar open times on the QT_BAR_INTERVAL grid (UTC)",
    RejectReason.MALFORMED_SYMBOL: "symbols are letters/digits with optional . - / _ separators, max 20 chars",
    RejectReason.UNKNOWN_SYMBOL: "add it to QT_SYMBOLS",
    RejectReason.MALFORMED_FILE: "fix the file and drop it into the landing directory again",
    RejectReason.EMPTY_FILE: "the file has no data rows; remove it or re-export it",
    "future_timestamp": "only closed bars may be ingested; check the source clock/time zone",
    "file_too_large": "split the file, or raise QT_LANDING_MAX_FILE_MB / max_file_mb",
}

IMPLAUSIBLE_VALUE = str(getattr(RejectReason, "IMPLAUSIBLE_VALUE", "implausible_value"))
FIX_HINTS[IMPLAUSIBLE_VALUE] = (
    "no market trades at such values; fix the export or widen the source's bounds in QT_LANDING_CONFIG"
)

# A reject reason for bars that cannot have closed yet. It is a plain string so this module works whether
# or not the contract's RejectReason enum lists it.
FUTURE_TIMESTAMP = str(getattr(RejectReason, "FUTURE_TIMESTAMP", "future_timestamp"))

_NONFINITE_LITERALS = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
_EPOCH_RE = r"^[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?$"
# An explicit offset after a time part: ...T10:00Z, ...10:00:00+02:00, ...10:00:00.5-0530, ... UTC
_OFFSET_RE = r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validating one batch.

    ``accepted`` is canonical and sorted by ``(symbol, timestamp)``; ``accepted_source`` and
    ``accepted_line`` give each accepted row's provenance (aligned with ``accepted``) so results of several
    files can be merged (:func:`merge_results`). ``rejected`` is a canonical reject frame.
    """

    accepted: pd.DataFrame
    rejected: pd.DataFrame
    accepted_source: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    accepted_line: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    warnings: tuple[str, ...] = ()  # per-file notes that reject nothing (ignored columns, derived values)

    def summary(self) -> dict:
        if self.rejected.empty:  # the common case, per block of a file: no frame work
            return {"accepted": len(self.accepted), "rejected_rows": 0, "reject_records": 0, "by_reason": {}}
        rows = self.rejected[self.rejected["line"].notna()]
        by_reason = self.rejected["reason"].value_counts().sort_index()
        return {
            "accepted": len(self.accepted),
            "rejected_rows": int(rows[["source", "line"]].drop_duplicates().shape[0]),
            "reject_records": len(self.rejected),
            "by_reason": {str(k): int(v) for k, v in by_reason.items()},
        }

    def grouped_messages(self, limit: int = 50, per_group: int = 3) -> list[str]:
        """Like :meth:`messages`, but each (file, reason) shows at most ``per_group`` examples and then
        one line with the count of the others and their line range — a problem that hits every row of
        a file is printed once with its count, not once per row."""
        out: list[str] = []
        rej = self.rejected
        if rej.empty:
            return out
        key = rej["source"].fillna("").astype(str) + "\x00" + rej["reason"].fillna("").astype(str)
        for _, grp in rej.groupby(key.to_numpy(), sort=False):
            for rec in grp.head(per_group).itertuples(index=False):
                where = rec.source if pd.isna(rec.line) else f"{rec.source}:{int(rec.line)}"
                out.append(f"{where}: {rec.reason}: {rec.detail}")
            rest = grp.iloc[per_group:]
            if len(rest):
                lines = rest["line"].dropna()
                span = f" (lines {int(lines.min())}–{int(lines.max())})" if len(lines) else ""
                first = grp.iloc[0]
                out.append(f"{first['source']}: … {len(rest)} more {first['reason']} like the above{span}")
            if len(out) >= limit:
                break
        return out[:limit]

    def messages(self, limit: int = 20) -> list[str]:
        """Human-readable lines ``<source>:<line>: <reason>: <detail (how to fix)>``."""
        out = []
        for rec in self.rejected.head(limit).itertuples(index=False):
            where = rec.source if pd.isna(rec.line) else f"{rec.source}:{int(rec.line)}"
            out.append(f"{where}: {rec.reason}: {rec.detail}")
        return out


# --------------------------------------------------------------------------------------------------------
# parsing helpers (also used by the landing source to place rows into partitions)


def _as_text(s: pd.Series) -> pd.Series:
    """The values of ``s`` as stripped strings (NaN where missing), for detail messages and parsing."""
    if pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype):
        return s.str.strip()
    if pd.api.types.is_object_dtype(s.dtype):
        is_str = s.map(lambda v: isinstance(v, str))
        if bool(is_str.all()):
            return s.astype("str").str.strip()
        return s.map(lambda v: v.strip() if isinstance(v, str) else (None if _isna(v) else str(v))).astype(
            "str"
        )
    return s.astype("str").where(s.notna())


def _isna(v: object) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def format_interval(td: pd.Timedelta) -> str:
    """``1min``, ``5min``, ``1h``, ``1d``, ``30s`` — how QT_BAR_INTERVAL is usually written."""
    secs = td / pd.Timedelta(seconds=1)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size and secs % size == 0:
            return f"{int(secs // size)}{unit}"
    return f"{secs:g}s"


def check_timezone(name: str | None) -> str | None:
    """Return ``name`` if it is a valid IANA zone (or None); raise ValueError saying how to fix it."""
    if name is None or name == "":
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as 'America/New_York' or 'UTC' "
            "(QT_LANDING_TIMEZONE)"
        ) from None
    return name


@dataclass
class ParsedTimestamps:
    """UTC timestamps (NaT where a row failed) and, per failing row, the reason and detail."""

    utc: pd.Series  # datetime64[us, UTC], NaT where invalid
    reason: pd.Series  # str reason or NaN
    detail: pd.Series  # str detail or NaN
    anchored: np.ndarray | None = None  # bool: date-only values placed at their session open


def _sub_microsecond(values: pd.Series) -> np.ndarray:
    """Where datetime values carry nanoseconds that the canonical (microsecond) dtype cannot hold."""
    if values.dt.unit != "ns":
        return np.zeros(len(values), dtype=bool)
    ns = np.asarray(values.array.asi8, dtype=np.int64)
    return values.notna().to_numpy() & (np.mod(ns, 1000) != 0)


def parse_timestamps(
    s: pd.Series,
    source_timezone: str | None = None,
    *,
    timestamp_format: str | None = None,
    calendar=None,
) -> ParsedTimestamps:
    """Parse raw bar timestamps into UTC, vectorised. See the module docstring for the rules.

    ``timestamp_format`` (strftime) replaces ISO-8601 parsing for text values. Date-only values (a format
    without time directives, or ISO ``YYYY-MM-DD``) are bars of a session: they are placed at the session
    open of ``calendar`` (an exchange calendar) or at midnight in ``source_timezone``; without either they
    are naive like any other value."""
    tz = check_timezone(source_timezone)
    n = len(s)
    idx = s.index
    reason = pd.Series(np.full(n, None, dtype=object), index=idx)
    detail = pd.Series(np.full(n, None, dtype=object), index=idx)
    utc = pd.Series(pd.NaT, index=idx, dtype=TIMESTAMP_DTYPE)
    anchored = np.zeros(n, dtype=bool)
    is_exchange = calendar is not None and hasattr(calendar, "_cal")

    def anchor(naive: pd.Series, where: pd.Series) -> pd.Series:
        """Place date-only values at their session open; returns the mask still to localise."""
        if not where.any() or (tz is None and not is_exchange):
            return where
        from qt_pipeline.market.calendars import AlwaysOpen

        cal = calendar if calendar is not None else AlwaysOpen()
        vals = naive[where]
        days = vals.to_numpy(dtype="datetime64[us]").astype("datetime64[D]")
        us, ok = cal.anchor_dates(days, tz)
        w_idx = vals.index
        good = w_idx[ok]
        utc[good] = pd.to_datetime(us[ok], unit="us", utc=True).astype(TIMESTAMP_DTYPE)
        anchored[idx.get_indexer(good)] = True
        bad = w_idx[~ok]
        if len(bad):
            reason[bad] = RejectReason.OFF_GRID_TIMESTAMP.value
            what = f"a session of {cal.name}" if is_exchange else f"a day in {tz} (DST)"
            detail[bad] = "date '" + shown(bad) + f"' is not {what}; a daily bar needs a trading session"
        return pd.Series(False, index=idx)

    def localize(naive: pd.Series, where: pd.Series) -> None:
        # naive datetime64 values at positions ``where`` (bool mask aligned with idx)
        if not where.any():
            return
        raw_vals = naive[where]
        if tz is None:
            reason[where] = RejectReason.NAIVE_TIMESTAMP.value
            detail[where] = (
                "timestamp '" + shown(where) + "' has no UTC offset and the source has no time zone"
            )
            return
        loc_nat = raw_vals.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        bad = loc_nat.isna()
        if bad.any():
            gap = raw_vals.dt.tz_localize(
                tz, ambiguous=np.zeros(len(raw_vals), dtype=bool), nonexistent="NaT"
            ).isna()
            bad_idx = bad[bad].index
            reason[bad_idx] = RejectReason.AMBIGUOUS_TIMESTAMP.value
            detail[bad_idx] = (
                "local time '"
                + shown(bad_idx)
                + pd.Series(
                    np.where(
                        gap[bad_idx],
                        f"' does not exist in {tz} (DST gap)",
                        f"' occurs twice in {tz} (DST fold)",
                    ),
                    index=bad_idx,
                )
            )
        good = loc_nat[~bad]
        utc[good.index] = good.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)

    def reject_sub_us(values: pd.Series) -> pd.Series:
        lossy = _sub_microsecond(values)
        if lossy.any():
            li = values.index[lossy]
            reason[li] = RejectReason.OFF_GRID_TIMESTAMP.value
            detail[li] = "timestamp '" + shown(li) + "' has sub-microsecond precision"
            return values[~lossy]
        return values

    original = s

    def shown(sel: pd.Series | pd.Index) -> pd.Series:
        return _as_text(original[sel]).fillna("").astype(object)

    dtype = s.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        kept = reject_sub_us(s)
        utc[kept.index] = kept.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)
        missing = s.isna()
        reason[missing] = RejectReason.NOT_FINITE.value
        detail[missing] = "timestamp is missing"
        return ParsedTimestamps(utc, reason, detail)
    if pd.api.types.is_datetime64_dtype(dtype):
        missing = s.isna()
        reason[missing] = RejectReason.NOT_FINITE.value
        detail[missing] = "timestamp is missing"
        lossy = pd.Series(_sub_microsecond(s), index=idx)
        reject_sub_us(s)
        localize(s.astype("datetime64[us]", copy=False) if s.dt.unit != "us" else s, ~missing & ~lossy)
        return ParsedTimestamps(utc, reason, detail)
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        reason[:] = RejectReason.WRONG_TYPE.value
        detail[:] = (
            "column 'timestamp' holds numbers "
            + _as_text(s).fillna("NaN").astype(object)
            + "; numeric epoch "
            "values are not accepted (unit unknown)"
        )
        return ParsedTimestamps(utc, reason, detail)

    # object / string: datetime objects become ISO text (keeping their offset, if any), then one text path
    if pd.api.types.is_object_dtype(dtype):
        is_dt = s.map(lambda v: isinstance(v, datetime | np.datetime64))
        if bool(is_dt.any()):
            s = s.where(~is_dt, s[is_dt].map(lambda v: pd.Timestamp(v).isoformat()))
    text = _as_text(s)
    missing = text.isna() | (text == "")
    done = utc.notna()
    todo = ~missing & ~done
    reason[missing & ~done] = RejectReason.WRONG_TYPE.value
    detail[missing & ~done] = "column 'timestamp' is empty; expected an ISO-8601 timestamp"
    if not todo.any():
        return ParsedTimestamps(utc, reason, detail)
    t = text[todo]
    if timestamp_format is not None:
        from qt_pipeline.market.layout import DATE_ONLY_DIRECTIVES

        parsed = pd.to_datetime(t, format=timestamp_format, errors="coerce")
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):  # the format has %z: an offset per value
            ok = parsed.notna()
            utc[parsed[ok].index] = parsed[ok].dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)
            bad_idx = parsed[~ok].index
        else:
            ok = parsed.notna()
            bad_idx = parsed[~ok].index
            where = pd.Series(False, index=idx)
            where[parsed[ok].index] = True
            full = pd.Series(pd.NaT, index=idx, dtype="datetime64[us]")
            full[parsed[ok].index] = parsed[ok].astype("datetime64[us]")
            if not DATE_ONLY_DIRECTIVES.search(timestamp_format):
                where = anchor(full, where)
            localize(full, where)
        reason[bad_idx] = RejectReason.WRONG_TYPE.value
        detail[bad_idx] = (
            "column 'timestamp' value '"
            + t[bad_idx].astype(object)
            + f"' does not match the source's timestamp format '{timestamp_format}'"
        )
        return ParsedTimestamps(utc, reason, detail, anchored)
    epoch = _regex(t, _EPOCH_RE, full=True)
    if epoch.any():
        e_idx = epoch[epoch].index
        reason[e_idx] = RejectReason.WRONG_TYPE.value
        detail[e_idx] = (
            "column 'timestamp' holds the number '" + t[e_idx].astype(object) + "'; numeric epoch values are "
            "not accepted (unit unknown)"
        )
        t = t[~epoch]
    has_offset = _regex(t, _OFFSET_RE)
    if has_offset.any():
        t_aw = t[has_offset]
        named = _regex(t_aw, r"(?:UTC|GMT)$")
        if named.any():
            t_aw = t_aw.where(~named, t_aw[named].str.replace(r"\s*(?:UTC|GMT)$", "Z", regex=True))
        parsed = pd.to_datetime(t_aw, utc=True, format="ISO8601", errors="coerce")
        ok = parsed.notna()
        lossy = _sub_microsecond(parsed)
        if lossy.any():
            reject_sub_us(parsed)
            parsed, ok = parsed[~lossy], ok[~lossy]
        utc[parsed[ok].index] = parsed[ok].astype(TIMESTAMP_DTYPE)
        bad_idx = parsed[~ok].index
        reason[bad_idx] = RejectReason.WRONG_TYPE.value
        detail[bad_idx] = (
            "column 'timestamp' value '" + t[bad_idx].astype(object) + "' is not a valid ISO-8601 timestamp"
        )
    naive_t = t[~has_offset]
    if len(naive_t):
        parsed = pd.to_datetime(naive_t, format="ISO8601", errors="coerce")
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):  # cannot happen without offsets; be safe
            parsed = parsed.dt.tz_localize(None)
        ok = parsed.notna()
        lossy = _sub_microsecond(parsed)
        if lossy.any():
            reject_sub_us(parsed)
            parsed, ok = parsed[~lossy], ok[~lossy]
        bad_idx = parsed[~ok].index
        reason[bad_idx] = RejectReason.WRONG_TYPE.value
        detail[bad_idx] = (
            "column 'timestamp' value '" + t[bad_idx].astype(object) + "' is not a valid ISO-8601 timestamp"
        )
        where = pd.Series(False, index=idx)
        where[parsed[ok].index] = True
        full = pd.Series(pd.NaT, index=idx, dtype="datetime64[us]")
        full[parsed[ok].index] = parsed[ok].astype("datetime64[us]")
        date_only = pd.Series(False, index=idx)
        date_only[naive_t.index] = _regex(naive_t, r"\d{4}-\d{2}-\d{2}", full=True)
        rest = anchor(full, where & date_only)
        localize(full, (where & ~date_only) | rest)
    return ParsedTimestamps(utc, reason, detail, anchored)


def _arrow_text(s: pd.Series):
    """``s`` as an Arrow string array (zero-copy for Arrow-backed strings)."""
    import pyarrow as pa

    if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
        arr = pa.array(s.array)
        return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return pa.array(s.to_numpy(dtype=object, na_value=None), type=pa.string())


def _regex(s: pd.Series, pattern: str, full: bool = False) -> pd.Series:
    """Boolean Series: where the text of ``s`` matches ``pattern`` (anywhere, or whole with ``full``);
    False where missing. Uses Arrow's RE2 kernels (pandas falls back to Python's re for these)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if full:
        pattern = "^(?:" + pattern.removeprefix("^").removesuffix("$") + ")$"
    try:
        arr = _arrow_text(s)
        hit = pc.match_substring_regex(arr, pattern).fill_null(False)
        return pd.Series(hit.to_numpy(zero_copy_only=False), index=s.index, dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):  # a pattern RE2 cannot run
        m = s.str.fullmatch(pattern) if full else s.str.contains(pattern, regex=True)
        return m.fillna(False).astype(bool)


def normalize_symbols(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``(normalised, malformed_mask)``: stripped, upper-cased symbols and where they are malformed."""
    text = _as_text(s)
    norm = text.str.upper()
    ok = norm.notna() & _regex(norm, SYMBOL_PATTERN, full=True)
    ok &= norm.str.len().fillna(0) <= SYMBOL_MAX_LEN
    return norm, ~ok


# --------------------------------------------------------------------------------------------------------


def _raw_json(frame: pd.DataFrame, positions: np.ndarray) -> list[str]:
    if len(positions) == 0:
        return []
    sub = frame.iloc[positions]
    cols = [str(c) for c in frame.columns]
    texts = [_as_text(sub.iloc[:, j]).astype(object) for j in range(sub.shape[1])]
    out = []
    for i in range(len(sub)):
        row = {}
        for c, col in zip(cols, texts, strict=True):
            v = col.iat[i]
            row[c] = None if _isna(v) else v
        out.append(json.dumps(row, ensure_ascii=False))
    return out


class _Num:
    """A numeric column to be shown in a detail message (formatted only for rejected rows)."""

    def __init__(self, values: pd.Series | np.ndarray):
        self.values = np.asarray(values, dtype="float64")


class _Rejects:
    """Accumulates (row positions, reason, detail) triples; turned into a reject frame at the end.

    Details are built only for the rejected rows: each part is a literal string, a column (array/Series
    aligned with the batch), a :class:`_Num` column, or a callable ``f(positions) -> array of str``.
    """

    def __init__(self, n: int):
        self.n = n
        self.parts: list[tuple[np.ndarray, str, np.ndarray]] = []

    def add(self, mask: pd.Series | np.ndarray, reason: str, *parts: object) -> None:
        m = np.asarray(mask, dtype=bool)
        if not m.any():
            return
        pos = np.flatnonzero(m)
        det = np.full(len(pos), "", dtype=object)
        for part in parts:
            if isinstance(part, str):
                det = det + part
            elif isinstance(part, _Num):
                det = det + np.array([repr(float(v)) for v in part.values[pos]], dtype=object)
            elif callable(part):
                det = det + np.asarray(part(pos), dtype=object)
            else:
                vals = np.asarray(part, dtype=object)[pos]
                det = det + np.array(["" if _isna(v) else str(v) for v in vals], dtype=object)
        self.parts.append((pos, str(reason), det))

    def rejected_mask(self) -> np.ndarray:
        m = np.zeros(self.n, dtype=bool)
        for pos, _, _ in self.parts:
            m[pos] = True
        return m


def validate_bars(
    frame: pd.DataFrame,
    *,
    source: str,
    interval: timedelta | pd.Timedelta | str = DEFAULT_INTERVAL,
    known_symbols: Collection[str] | None = None,
    source_timezone: str | None = None,
    line_numbers: Sequence[int] | np.ndarray | None = None,
    now: pd.Timestamp | None = None,
    timestamp_format: str | None = None,
    calendar=None,
    derived: Mapping[str, str] | None = None,
    bounds=None,
) -> ValidationResult:
    """Split ``frame`` into accepted canonical bars and reject records. See the module docstring.

    ``timestamp_format``/``calendar``: see :func:`parse_timestamps`. ``derived`` maps an optional column
    the frame lacks to how it is derived (``vwap``: ``typical`` | ``close``; ``trade_count``: ``zero``).
    ``bounds`` (:class:`qt_pipeline.market.layout.Bounds`, defaults apply when None) rejects values no
    market has as ``implausible_value``."""
    from qt_pipeline.market.layout import Bounds

    bounds = bounds if bounds is not None else Bounds()
    derived = {k: v for k, v in (derived or {}).items() if k in ("vwap", "trade_count")}
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if now.tzinfo is None:
        raise ValueError("validate_bars(now=...) must be tz-aware")
    now = now.tz_convert("UTC")
    interval_td = pd.Timedelta(interval)
    if interval_td <= pd.Timedelta(0):
        raise ValueError(f"interval must be positive, got {interval!r}")
    check_timezone(source_timezone)
    n = len(frame)
    if line_numbers is None:
        lines = np.arange(n, dtype=np.int64)
    else:
        lines = np.asarray(line_numbers, dtype=np.int64)
        if len(lines) != n:
            raise ValueError(f"line_numbers has {len(lines)} entries for {n} rows of {source}")

    original = frame.reset_index(drop=True)
    names = [str(c).strip().lower() for c in original.columns]
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        return _file_level(
            source,
            RejectReason.MALFORMED_FILE,
            f"column(s) {dup} appear more than once after normalising names; keep one of each "
            f"({FIX_HINTS[RejectReason.MALFORMED_FILE]})",
            now,
            original,
            lines,
        )
    work = original.set_axis(names, axis=1)
    file_level: list[dict] = []
    derived = {k: v for k, v in derived.items() if k not in names}
    missing = [c for c in BAR_COLUMNS if c not in names and c not in derived]
    extra = [c for c in original.columns if str(c).strip().lower() not in BAR_COLUMNS]
    if extra:
        file_level.append(
            reject_record(
                source,
                None,
                RejectReason.EXTRA_COLUMN,
                f"extra column(s) {[str(c) for c in extra]} ignored; rows are kept without them "
                f"({FIX_HINTS[RejectReason.EXTRA_COLUMN]})",
                now,
            )
        )
    if missing:
        detail = (
            f"required column(s) {missing} missing; found {[str(c) for c in original.columns]} "
            f"({FIX_HINTS[RejectReason.MISSING_COLUMN]})"
        )
        if n == 0:
            file_level.append(reject_record(source, None, RejectReason.MISSING_COLUMN, detail, now))
            return ValidationResult(empty_bars(), _reject_frame(file_level, []))
        rej = _Rejects(n)
        rej.add(np.ones(n, dtype=bool), RejectReason.MISSING_COLUMN, detail)
        return _finish(source, original, lines, rej, file_level, now, None, None)

    rej = _Rejects(n)
    # --- symbols ------------------------------------------------------------------------------------
    sym, malformed = normalize_symbols(work["symbol"])
    rej.add(
        malformed,
        RejectReason.MALFORMED_SYMBOL,
        "symbol '",
        lambda pos: _as_text(work["symbol"].iloc[pos]).fillna("").to_numpy(dtype=object),
        f"' is malformed ({FIX_HINTS['malformed_symbol']})",
    )
    if known_symbols is not None:
        known = {str(k).strip().upper() for k in known_symbols}
        unknown = ~malformed & ~sym.isin(known)
        rej.add(
            unknown,
            RejectReason.UNKNOWN_SYMBOL,
            "symbol '",
            sym,
            f"' is not configured ({FIX_HINTS['unknown_symbol']})",
        )

    # --- timestamps ----------------------------------------------------------------------------------
    pts = parse_timestamps(
        work["timestamp"], source_timezone, timestamp_format=timestamp_format, calendar=calendar
    )
    for r in pts.reason.dropna().unique():
        hint = {
            RejectReason.WRONG_TYPE: FIX_HINTS["wrong_type_timestamp"],
            RejectReason.NOT_FINITE: "every bar needs its open time",
        }.get(r, FIX_HINTS[r])
        rej.add(pts.reason == r, r, pts.detail, f" ({hint})")
    ts = pts.utc
    valid_ts = ts.notna().to_numpy()
    ts_us = np.asarray(ts.array.asi8, dtype=np.int64)  # microseconds; NaT where invalid (masked below)
    step_us = interval_td // pd.Timedelta(microseconds=1)
    safe = np.where(valid_ts, ts_us, 0)
    if pd.Timedelta(days=1) % interval_td == pd.Timedelta(0):
        off = np.mod(safe, step_us)
    else:  # grid anchored at each UTC midnight
        off = np.mod(np.mod(safe, 86_400_000_000), step_us)
    if pts.anchored is not None:
        off = np.where(pts.anchored, 0, off)  # a session's bar opens at the session open, on no UTC grid

    def ts_text(pos: np.ndarray) -> np.ndarray:
        return _as_text(work["timestamp"].iloc[pos]).fillna("").to_numpy(dtype=object)

    rej.add(
        valid_ts & (off != 0),
        RejectReason.OFF_GRID_TIMESTAMP,
        "timestamp '",
        ts_text,
        "' (UTC ",
        lambda pos: (
            pd.to_datetime(ts_us[pos], unit="us", utc=True)
            .strftime("%Y-%m-%d %H:%M:%S.%f")
            .to_numpy(dtype=object)
        ),
        f") is not on the {format_interval(interval_td)} grid since midnight UTC "
        f"({FIX_HINTS['off_grid_timestamp']})",
    )
    limit_us = (now + interval_td).value // 1000
    rej.add(
        valid_ts & (safe > limit_us),
        FUTURE_TIMESTAMP,
        "timestamp '",
        ts_text,
        f"' is later than now + {format_interval(interval_td)} ({now.isoformat()}): the bar has not closed "
        f"({FIX_HINTS['future_timestamp']})",
    )

    # --- numbers ------------------------------------------------------------------------------------
    values: dict[str, np.ndarray] = {}
    for col in (*FLOAT_COLUMNS, "trade_count"):
        if col not in derived:
            values[col] = _parse_number(work[col], col, rej)
    if "vwap" in derived:
        h_, l_, c_ = values["high"], values["low"], values["close"]
        vw_ = c_.copy() if derived["vwap"] == "close" else (h_ + l_ + c_) / 3.0
        with np.errstate(invalid="ignore"):
            values["vwap"] = np.minimum(np.maximum(vw_, l_), h_)  # typical price, inside [low, high]
    if "trade_count" in derived:
        values["trade_count"] = np.zeros(n, dtype="float64")  # 0 = not reported by the source
    finite = {c: np.isfinite(v) for c, v in values.items()}
    for col in PRICE_COLUMNS:
        v = values[col]
        rej.add(
            finite[col] & (v <= 0),
            RejectReason.NON_POSITIVE_PRICE,
            f"{col} ",
            _Num(v),
            f" is not positive ({FIX_HINTS['non_positive_price']})",
        )
    o, h, lo, c, vw = (values[k] for k in ("open", "high", "low", "close", "vwap"))
    fin_ohlc = finite["open"] & finite["high"] & finite["low"] & finite["close"]
    mx = np.maximum(o, c)
    mn = np.minimum(o, c)
    rej.add(
        fin_ohlc & (h < mx),
        RejectReason.HIGH_BELOW_OPEN_CLOSE,
        "high ",
        _Num(h),
        " < max(open, close) ",
        _Num(mx),
        f" ({FIX_HINTS['high_below_open_close']})",
    )
    rej.add(
        fin_ohlc & (lo > mn),
        RejectReason.LOW_ABOVE_OPEN_CLOSE,
        "low ",
        _Num(lo),
        " > min(open, close) ",
        _Num(mn),
        f" ({FIX_HINTS['low_above_open_close']})",
    )
    fin_hl = finite["high"] & finite["low"]
    rej.add(
        fin_hl & (h < lo),
        RejectReason.HIGH_BELOW_LOW,
        "high ",
        _Num(h),
        " < low ",
        _Num(lo),
        f" ({FIX_HINTS['high_below_low']})",
    )
    rej.add(
        fin_hl & finite["vwap"] & ((vw < lo) | (vw > h)),
        RejectReason.VWAP_OUTSIDE_RANGE,
        "vwap ",
        _Num(vw),
        " outside [low, high] = [",
        _Num(lo),
        ", ",
        _Num(h),
        f"] ({FIX_HINTS['vwap_outside_range']})",
    )
    vol = values["volume"]
    rej.add(
        finite["volume"] & (vol < 0),
        RejectReason.NEGATIVE_VOLUME,
        "volume ",
        _Num(vol),
        f" is negative ({FIX_HINTS['negative_volume']})",
    )
    tc = values["trade_count"]
    with np.errstate(invalid="ignore"):
        bad_tc = finite["trade_count"] & ((tc < 0) | (np.floor(tc) != tc) | (np.abs(tc) >= 2.0**63))
    rej.add(
        bad_tc,
        RejectReason.BAD_TRADE_COUNT,
        "trade_count ",
        _Num(tc),
        f" is not a non-negative integer ({FIX_HINTS['bad_trade_count']})",
    )

    # --- implausible values (configurable bounds) -----------------------------------------------------
    hint_b = FIX_HINTS[IMPLAUSIBLE_VALUE]
    for col in PRICE_COLUMNS:
        v = values[col]
        with np.errstate(invalid="ignore"):
            out = finite[col] & (v > 0) & ((v < bounds.min_price) | (v > bounds.max_price))
        rej.add(
            out,
            IMPLAUSIBLE_VALUE,
            f"{col} ",
            _Num(v),
            f" is outside the plausible range [{bounds.min_price:g}, {bounds.max_price:g}] ({hint_b})",
        )
    with np.errstate(invalid="ignore"):
        big_vol = finite["volume"] & (vol > bounds.max_volume)
    rej.add(big_vol, IMPLAUSIBLE_VALUE, "volume ", _Num(vol), f" is above {bounds.max_volume:g} ({hint_b})")
    if bounds.max_jump is not None and n > 1:
        ok_rows = finite["close"] & valid_ts & ~malformed.to_numpy()
        order = np.lexsort((ts_us, sym.fillna("").to_numpy(dtype=object).astype(str)))
        order = order[ok_rows[order]]
        if len(order) > 1:
            cl = values["close"][order]
            same = sym.to_numpy(dtype=object)[order][1:] == sym.to_numpy(dtype=object)[order][:-1]
            with np.errstate(divide="ignore", invalid="ignore"):
                jump = np.abs(cl[1:] / cl[:-1] - 1.0)
            hit = np.zeros(n, dtype=bool)
            prev = np.full(n, np.nan)
            sel = same & (jump > bounds.max_jump)
            hit[order[1:][sel]] = True
            prev[order[1:][sel]] = cl[:-1][sel]
            rej.add(
                hit,
                IMPLAUSIBLE_VALUE,
                "close ",
                _Num(values["close"]),
                " moved more than ",
                f"{bounds.max_jump:.0%} from the previous bar's close ",
                _Num(prev),
                f" ({hint_b})",
            )

    # --- duplicate keys -------------------------------------------------------------------------------
    key_ok = ~malformed.to_numpy() & valid_ts
    if key_ok.any():
        keyed = pd.DataFrame({"symbol": sym.to_numpy(dtype=object), "ts": ts_us})
        dup_any = key_ok & keyed.duplicated(keep=False).to_numpy()
        if dup_any.any():
            _duplicates(rej, dup_any, keyed, values, lines)

    return _finish(source, original, lines, rej, file_level, now, sym, (ts, values))


def _parse_number(s: pd.Series, col: str, rej: _Rejects) -> np.ndarray:
    """Parse one numeric column into float64 (NaN where invalid), recording wrong_type / not_finite."""
    hint_wrong = FIX_HINTS[RejectReason.WRONG_TYPE]
    n = len(s)
    if pd.api.types.is_bool_dtype(s.dtype):
        rej.add(np.ones(n, bool), RejectReason.WRONG_TYPE, f"column '{col}' holds booleans ({hint_wrong})")
        return np.full(n, np.nan)
    if pd.api.types.is_numeric_dtype(s.dtype):
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        nf = ~np.isfinite(v)
        rej.add(nf, RejectReason.NOT_FINITE, f"column '{col}' is ", _Num(v), f" ({FIX_HINTS['not_finite']})")
        return v
    text = _as_text(s)
    parsed = None
    if not text.isna().any():
        import pyarrow as pa
        import pyarrow.compute as pc

        try:  # fast path: every value is a plain number (Arrow parses to the correctly rounded double)
            parsed = np.array(pc.cast(_arrow_text(text), pa.float64()).to_numpy(zero_copy_only=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            parsed = None
    if parsed is None:
        parsed = np.array(pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan))
    null = text.isna().to_numpy()
    bad = np.isnan(parsed) & ~null
    if bad.any():  # only look closer at the values pd.to_numeric could not read (or that are 'nan')
        literal_nf = np.zeros(n, dtype=bool)
        literal_nf[bad] = text[bad].str.lower().isin(_NONFINITE_LITERALS).to_numpy()
        empty = np.zeros(n, dtype=bool)
        empty[bad] = (text[bad] == "").to_numpy()
        wrong = bad & ~literal_nf
    else:
        wrong = empty = np.zeros(n, dtype=bool)
    rej.add(
        wrong & empty, RejectReason.WRONG_TYPE, f"column '{col}' is empty; expected a number ({hint_wrong})"
    )
    rej.add(
        wrong & ~empty,
        RejectReason.WRONG_TYPE,
        f"column '{col}' value '",
        text,
        f"' is not a number ({hint_wrong})",
    )
    nf = (~wrong & ~np.isfinite(parsed)) | null
    rej.add(
        nf,
        RejectReason.NOT_FINITE,
        f"column '{col}' is '",
        lambda pos: text.iloc[pos].fillna("<missing>").to_numpy(dtype=object),
        f"' ({FIX_HINTS['not_finite']})",
    )
    parsed[wrong] = np.nan
    return parsed


def _duplicates(
    rej: _Rejects, dup_any: np.ndarray, keyed: pd.DataFrame, values: dict[str, np.ndarray], lines: np.ndarray
) -> None:
    pos = np.flatnonzero(dup_any)
    sub = keyed.iloc[pos].copy()
    sub["pos"] = pos
    sub["line"] = lines[pos]
    vals = pd.DataFrame({c: values[c][pos] for c in values})
    sub["h"] = pd.util.hash_pandas_object(vals, index=False).to_numpy()
    g = sub.groupby(["symbol", "ts"], sort=False)
    sub["n_distinct"] = g["h"].transform("nunique")
    sub["first_line"] = g["line"].transform("first")
    sub["lines"] = g["line"].transform(lambda x: ", ".join(str(v) for v in x))
    identical = sub["n_distinct"] == 1
    is_first = ~sub.duplicated(["symbol", "ts"], keep="first")
    hint = FIX_HINTS[RejectReason.DUPLICATE_KEY]
    drop_ident = identical & ~is_first
    mask = np.zeros(rej.n, dtype=bool)
    detail = pd.Series(np.full(rej.n, "", dtype=object))
    mask[sub["pos"][drop_ident].to_numpy()] = True
    detail.iloc[sub["pos"][drop_ident].to_numpy()] = (
        "exact duplicate of line " + sub["first_line"][drop_ident].astype(str).astype(object) + "; the first "
        f"occurrence was kept ({hint})"
    ).to_numpy()
    conflict = ~identical
    mask[sub["pos"][conflict].to_numpy()] = True
    detail.iloc[sub["pos"][conflict].to_numpy()] = (
        "conflicting rows for the same (symbol, timestamp) at lines "
        + sub["lines"][conflict].astype(object)
        + f"; all occurrences rejected ({hint})"
    ).to_numpy()
    rej.add(mask, RejectReason.DUPLICATE_KEY, detail)


def reject_record(
    source: str, line: int | None, reason: str, detail: str, now: pd.Timestamp, raw: object = None
) -> dict:
    """One reject row not tied to a parsed bar (a file-level problem, or a row that could not be read)."""
    return {
        "source": source,
        "line": line,
        "symbol": None,
        "timestamp": None,
        "reason": str(reason),
        "detail": detail,
        "raw": raw,
        "rejected_at": now,
    }


def _reject_frame(file_level: list[dict], row_frames: list[pd.DataFrame]) -> pd.DataFrame:
    parts = []
    if file_level:
        parts.append(pd.DataFrame(file_level, columns=list(REJECT_COLUMNS)))
    parts.extend(f for f in row_frames if len(f))
    if not parts:
        return empty_rejects()
    parts = [to_canonical_rejects(p) for p in parts]
    return to_canonical_rejects(pd.concat(parts, ignore_index=True)) if len(parts) > 1 else parts[0]


def _file_level(source, reason, detail, now, original, lines) -> ValidationResult:
    n = len(original)
    rej = _Rejects(n)
    if n:
        rej.add(np.ones(n, dtype=bool), reason, detail)
        return _finish(source, original, lines, rej, [], now, None, None)
    return ValidationResult(
        empty_bars(), _reject_frame([reject_record(source, None, reason, detail, now)], [])
    )


def _finish(source, original, lines, rej: _Rejects, file_level, now, sym, parsed) -> ValidationResult:
    rejected_mask = rej.rejected_mask()
    row_frames = []
    if rej.parts:
        pos = np.concatenate([p for p, _, _ in rej.parts])
        reasons = np.concatenate([np.full(len(p), r, dtype=object) for p, r, _ in rej.parts])
        details = np.concatenate([d for _, _, d in rej.parts])
        order = np.lexsort((np.arange(len(pos)), pos))
        pos, reasons, details = pos[order], reasons[order], details[order]
        keyed = pd.DataFrame({"pos": pos, "reason": reasons, "detail": details})
        if keyed.duplicated(["pos", "reason"]).any():
            # one record per (row, reason) — the store is idempotent on (source, line, reason) — so
            # e.g. two non-positive prices of one row become one record naming both
            keyed = keyed.groupby(["pos", "reason"], sort=False)["detail"].agg("; ".join).reset_index()
            pos = keyed["pos"].to_numpy(dtype=np.int64)
            reasons = keyed["reason"].to_numpy(dtype=object)
            details = keyed["detail"].to_numpy(dtype=object)
        uniq, inverse = np.unique(pos, return_inverse=True)
        raw = np.asarray(_raw_json(original, uniq), dtype=object)[inverse]
        cols = {str(c).strip().lower(): c for c in original.columns}

        def raw_col(name: str) -> np.ndarray:
            if name not in cols:
                return np.full(len(pos), None, dtype=object)
            return _as_text(original[cols[name]].iloc[uniq]).to_numpy(dtype=object)[inverse]

        row_frames.append(
            pd.DataFrame(
                {
                    "source": source,
                    "line": lines[pos],
                    "symbol": raw_col("symbol"),
                    "timestamp": raw_col("timestamp"),
                    "reason": reasons,
                    "detail": details,
                    "raw": raw,
                    "rejected_at": now,
                }
            )
        )
    rejected = _reject_frame(file_level, row_frames)
    if parsed is None or rejected_mask.all():
        return ValidationResult(empty_bars(), rejected)
    keep = ~rejected_mask
    ts, values = parsed
    acc = pd.DataFrame(
        {
            "symbol": sym.array[keep],
            "timestamp": ts.array[keep],
            **{c: values[c][keep] for c in FLOAT_COLUMNS},
            "trade_count": values["trade_count"][keep].astype(np.int64),
            "_line": lines[keep],
        }
    )
    if not (
        acc["symbol"].is_monotonic_increasing
        and acc["symbol"].nunique() == 1
        and acc["timestamp"].is_monotonic_increasing
    ):
        acc = acc.sort_values(["symbol", "timestamp"], kind="stable")
    acc_lines = acc["_line"].to_numpy(dtype=np.int64)
    return ValidationResult(to_canonical(acc), rejected, np.full(len(acc), source, dtype=object), acc_lines)


def merge_results(
    results: Sequence[ValidationResult],
    extra_rejects: Sequence[pd.DataFrame] = (),
    warnings: Sequence[str] = (),
) -> ValidationResult:
    """Merge per-file results into one, applying the duplicate-key rule across files too: identical rows
    for a key keep the first (in ``results`` order), conflicting ones are all rejected."""
    rej_parts = [r.rejected for r in results if len(r.rejected)] + [x for x in extra_rejects if len(x)]
    notes = tuple(dict.fromkeys([*warnings, *(w for r in results for w in r.warnings)]))
    if len(results) == 1 and not any(len(x) for x in extra_rejects):
        from dataclasses import replace

        return replace(results[0], warnings=notes)  # already canonical and sorted
    accepted = [r for r in results if len(r.accepted)]
    if not accepted:
        rejected = _reject_frame([], rej_parts)
        if len(rej_parts) > 1:
            rejected = rejected.sort_values(["source", "line"], na_position="first", kind="stable")
        return ValidationResult(empty_bars(), rejected.reset_index(drop=True), warnings=notes)
    acc = pd.concat([r.accepted for r in accepted], ignore_index=True)
    srcs = np.concatenate([r.accepted_source for r in accepted])
    lines = np.concatenate([r.accepted_line for r in accepted])
    if len(accepted) > 1:
        dup = acc.duplicated(list(KEY), keep=False).to_numpy()
        if dup.any():
            now = pd.Timestamp.now(tz="UTC")
            pos = np.flatnonzero(dup)
            sub = acc.iloc[pos]
            h = pd.util.hash_pandas_object(sub, index=False).to_numpy()
            d = pd.DataFrame({"symbol": sub["symbol"].to_numpy(), "ts": sub["timestamp"].to_numpy(), "h": h})
            d["where"] = [f"{s}:{ln}" for s, ln in zip(srcs[pos], lines[pos], strict=True)]
            g = d.groupby(["symbol", "ts"], sort=False)
            d["n_distinct"] = g["h"].transform("nunique")
            d["first"] = g["where"].transform("first")
            d["all"] = g["where"].transform(lambda x: ", ".join(x))
            is_first = ~d.duplicated(["symbol", "ts"], keep="first").to_numpy()
            hint = FIX_HINTS[RejectReason.DUPLICATE_KEY]
            drop = np.where(d["n_distinct"].to_numpy() == 1, ~is_first, True)
            detail = np.where(
                d["n_distinct"].to_numpy() == 1,
                "exact duplicate of "
                + d["first"].astype(object)
                + f"; the first occurrence was kept ({hint})",
                "conflicting rows for the same (symbol, timestamp) at "
                + d["all"].astype(object)
                + f"; all occurrences rejected ({hint})",
            )
            sel = np.flatnonzero(drop)
            recs = pd.DataFrame(
                {
                    "source": srcs[pos][sel],
                    "line": lines[pos][sel],
                    "symbol": sub["symbol"].to_numpy(dtype=object)[sel],
                    "timestamp": [t.isoformat() for t in sub["timestamp"].iloc[sel]],
                    "reason": RejectReason.DUPLICATE_KEY.value,
                    "detail": detail[sel],
                    "raw": [
                        json.dumps({k: str(v) for k, v in row.items()})
                        for row in sub.iloc[sel].to_dict("records")
                    ],
                    "rejected_at": now,
                }
            )
            rej_parts.append(recs)
            keep = np.ones(len(acc), dtype=bool)
            keep[pos[sel]] = False
            acc, srcs, lines = acc[keep], srcs[keep], lines[keep]
    order = np.lexsort((acc["timestamp"].array.asi8, acc["symbol"].to_numpy(dtype=object)))
    rejected = _reject_frame([], rej_parts)
    if len(rej_parts) > 1:
        rejected = rejected.sort_values(["source", "line"], na_position="first", kind="stable")
        rejected = rejected.reset_index(drop=True)
    return ValidationResult(to_canonical(acc.iloc[order]), rejected, srcs[order], lines[order], notes)
