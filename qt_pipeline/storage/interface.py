"""DataStorageInterface: the one storage contract every backend implements (see DESIGN.md).

Semantics every backend honours (the contract test suite in ``qt_pipeline_tests/storage`` checks them):

* ``write_bars`` takes a canonical, already-validated frame (:mod:`qt_pipeline.market.contract`) and
  upserts on ``(symbol, timestamp)``: writing the same frame twice leaves the store exactly as after the
  first write; a row with an existing key replaces the stored values. A write is atomic per call: either
  all of its rows become visible or none do.
* ``read_bars(symbol, start, end)`` returns a canonical frame sorted by timestamp ascending with
  ``start <= timestamp < end`` (either bound may be ``None`` = unbounded). ``limit=N`` keeps the first N
  rows of that range, or the last N (still in ascending order) with ``from_end=True``. ``columns``
  selects a subset of :data:`BAR_COLUMNS` (returned in canonical order; ``symbol``/``timestamp`` are not
  added implicitly). An unknown symbol or an empty range returns an empty canonical frame, not an error.
  Floats round-trip bit-exactly.
* ``list_symbols`` returns one row per stored symbol: ``symbol, rows, first_timestamp, last_timestamp``.
* ``write_rejects`` stores rejected rows (:data:`REJECT_COLUMNS`) idempotently on
  ``(source, line, reason)``; ``read_rejects`` returns them.
* ``health`` never raises: it reports what it could find out.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

SYMBOL_SUMMARY_COLUMNS: tuple[str, ...] = ("symbol", "rows", "first_timestamp", "last_timestamp")


class StorageError(RuntimeError):
    """A storage operation failed. Messages say what failed, where and what to do; never hold secrets.

    ``sqlstate`` is the PostgreSQL error code when the failure came from the central database."""

    def __init__(self, message: str = "", *, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


class StorageUnavailableError(StorageError):
    """The backing store cannot be reached (after the retry budget)."""


@dataclass(frozen=True)
class WriteResult:
    rows: int  # rows in the batch that was upserted
    backend: str
    location: str  # redacted, human-readable: file path, mount, host/db
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthStatus:
    healthy: bool
    backend: str
    location: str
    latency_ms: float | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class DataStorageInterface(abc.ABC):
    """Abstract store of canonical OHLCV bars. Construct through :func:`qt_pipeline.storage.get_storage`."""

    backend_name: str = "abstract"

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the data lives, human-readable and redacted (safe to log)."""

    @abc.abstractmethod
    def write_bars(self, bars: pd.DataFrame) -> WriteResult: ...

    @abc.abstractmethod
    def read_bars(
        self,
        symbol: str,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
        *,
        limit: int | None = None,
        from_end: bool = False,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame: ...

    @abc.abstractmethod
    def list_symbols(self) -> pd.DataFrame: ...

    @abc.abstractmethod
    def write_rejects(self, rejects: pd.DataFrame) -> int: ...

    @abc.abstractmethod
    def read_rejects(self, source: str | None = None) -> pd.DataFrame: ...

    @abc.abstractmethod
    def health(self) -> HealthStatus: ...

    def read_range(
        self,
        symbols: Sequence[str] | None = None,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """All bars of ``symbols`` (all stored symbols if ``None``) in ``[start, end)``, sorted by
        ``(symbol, timestamp)``. Backends may override with a single query."""
        from qt_pipeline.market.contract import empty_bars

        if symbols is None:
            symbols = list(self.list_symbols()["symbol"])
        frames = [self.read_bars(s, start, end) for s in sorted(symbols)]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else empty_bars()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections/files. Safe to call twice."""

    def __enter__(self) -> DataStorageInterface:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_utc(ts: datetime | pd.Timestamp | str | None) -> pd.Timestamp | None:
    """Normalise a bound to a tz-aware UTC ``pd.Timestamp``; naive bounds are rejected (ambiguous)."""
    if ts is None:
        return None
    t = pd.Timestamp(ts)
    if t.tzinfo is None:
        raise ValueError(f"time bound {ts!r} is naive; pass a tz-aware (UTC) timestamp")
    return t.tz_convert("UTC")


def as_utc_us(ts: datetime | pd.Timestamp | str | None) -> pd.Timestamp | None:
    """:func:`as_utc`, rounded *up* to whole microseconds. Stored timestamps are whole microseconds, so
    ``t >= b`` and ``t < b`` are unchanged, and every backend gets a bound it can represent exactly."""
    t = as_utc(ts)
    if t is not None and t.nanosecond:
        t = t.ceil("us")
    return t
