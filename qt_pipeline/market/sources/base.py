"""The market data source contract: what ingestion sees of any source (synthetic, landing files, exchange).

A source returns *raw* rows (:class:`RawBatch`); it never decides what is valid — that is
:func:`qt_pipeline.market.validation.validate_bars`'s job, so every source gets the same rules and the
same reject reasons. A new source (e.g. an ``ExchangeSource`` over an HTTP API) only implements
:class:`MarketDataSource`; callers (:func:`qt_pipeline.market.sources.ingest_batches`, the Dagster assets)
do not change.

Several files can contribute to one fetch. The choice made here: a :class:`RawBatch` is a tree of at most
one level — a *leaf* batch holds the rows of one source unit (one file, one synthetic partition) with
its own ``source`` label, ``line_numbers`` and ``timezone``; a *composite* batch (``parts`` non-empty)
holds one leaf per file, and its ``frame``/``line_numbers`` are the concatenation of the parts (with a
per-row :attr:`RawBatch.row_sources`). Validation runs per leaf (each file has its own header, columns and
time zone) and the results are merged with cross-file duplicate detection
(:func:`qt_pipeline.market.validation.merge_results`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import empty_rejects, to_canonical_rejects


@dataclass
class RawBatch:
    """Raw rows with canonical column names (after any column mapping), any dtypes.

    ``line_numbers`` are physical file lines (CSV: header = line 1) or row positions, aligned with
    ``frame``; ``problems`` are file-level reject records (malformed/empty file, bad lines) in
    :data:`~qt_pipeline.market.contract.REJECT_COLUMNS`; ``timezone`` is the zone naive timestamps are in.
    """

    frame: pd.DataFrame
    source: str
    line_numbers: np.ndarray | None = None
    problems: pd.DataFrame = field(default_factory=empty_rejects)
    timezone: str | None = None
    parts: tuple[RawBatch, ...] = ()
    layout: Any = None  # the landing SourceLayout the rows were read with (format, calendar, bounds…)
    warnings: tuple[str, ...] = ()  # notes about the file that reject nothing (ignored columns…)

    def __post_init__(self) -> None:
        if self.line_numbers is not None:
            self.line_numbers = np.asarray(self.line_numbers, dtype=np.int64)
            if len(self.line_numbers) != len(self.frame):
                raise ValueError(
                    f"RawBatch({self.source}): {len(self.line_numbers)} line numbers for {len(self.frame)} rows"
                )

    @classmethod
    def combine(cls, source: str, parts: Sequence[RawBatch], timezone: str | None = None) -> RawBatch:
        """A composite batch of ``parts`` (leaves; composite parts are flattened)."""
        leaves: list[RawBatch] = []
        for p in parts:
            leaves.extend(p.leaves())
        if len(leaves) == 1 and not len(leaves[0].problems) and leaves[0].source == source:
            return leaves[0]
        frames = [p.frame for p in leaves if len(p.frame.columns)]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        lines = np.concatenate(
            [
                p.line_numbers if p.line_numbers is not None else np.arange(len(p.frame), dtype=np.int64)
                for p in leaves
            ]
            or [np.array([], dtype=np.int64)]
        )
        problems = [p.problems for p in leaves if len(p.problems)]
        return cls(
            frame=frame,
            source=source,
            line_numbers=lines if len(frame) == len(lines) else None,
            problems=to_canonical_rejects(pd.concat(problems, ignore_index=True))
            if problems
            else empty_rejects(),
            timezone=timezone,
            parts=tuple(leaves),
            warnings=tuple(dict.fromkeys(w for p in leaves for w in p.warnings)),
        )

    def leaves(self) -> Iterator[RawBatch]:
        """The single-source batches (this one if it is a leaf). Validate each of these separately."""
        if self.parts:
            yield from self.parts
        else:
            yield self

    @property
    def row_sources(self) -> np.ndarray:
        """Per-row source label aligned with ``frame``."""
        return np.concatenate(
            [np.full(len(p.frame), p.source, dtype=object) for p in self.leaves()]
            or [np.array([], dtype=object)]
        )


class MarketDataSource(abc.ABC):
    """A place bars come from. Implementations: :class:`~.synthetic.SyntheticMarket`,
    :class:`~.landing.LandingDirectorySource`; an exchange API source plugs in the same way."""

    name: str = "abstract"

    @abc.abstractmethod
    def symbols(self) -> list[str]:
        """The symbols this source can deliver (sorted)."""

    @abc.abstractmethod
    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> RawBatch:
        """Raw rows of ``symbol`` with bar open time in ``[start, end)`` (UTC)."""

    def describe(self) -> str:
        """Human-readable, secret-free description (for logs and asset metadata)."""
        return self.name


def utc_timestamp(value: object, what: str) -> pd.Timestamp:
    """``value`` as a tz-aware UTC Timestamp; naive values are taken as UTC (callers pass partition
    bounds, which are UTC by construction)."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}={value!r} is not a timestamp") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
