"""Where materialised signals live: one Parquet file per (signal, UTC day) under ``<data dir>/signals``.

Backend-neutral on purpose: the engines' output does not depend on the bar store, so it is kept next to the
other machine-local artefacts (evolution reports, the DuckDB cache). A file is written to a temporary name
and renamed, so a reader never sees half a day; writing a day again replaces it (idempotent).
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

SIGNAL_NAMES: tuple[str, ...] = ("correlation_market", "correlation_pairs", "correlation_symbols", "regimes")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class SignalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings) -> SignalStore:
        return cls(Path(settings.data_dir) / "signals")

    def _path(self, name: str, day: date) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"signal name {name!r} is not allowed (lower-case letters, digits, '_')")
        return self.root / name / f"{day.isoformat()}.parquet"

    def write_day(self, name: str, day: date, frame: pd.DataFrame) -> Path:
        path = self._path(name, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        frame.reset_index(drop=True).to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    def write_days(self, name: str, frame: pd.DataFrame, days: list[date]) -> list[Path]:
        """Split ``frame`` by UTC day of ``bucket`` and write each of ``days`` (an empty day is written
        empty, so a recomputed day never keeps stale rows)."""
        day_of = frame["bucket"].dt.tz_convert("UTC").dt.date if len(frame) else pd.Series([], dtype=object)
        return [
            self.write_day(name, d, frame[(day_of == d).to_numpy()] if len(frame) else frame) for d in days
        ]

    def days(self, name: str) -> list[date]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(
            date.fromisoformat(p.stem) for p in folder.glob("*.parquet") if not p.name.startswith(".")
        )

    def read(
        self, name: str, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
    ) -> pd.DataFrame:
        """Rows of ``name`` with ``start <= bucket < end`` (either may be None), sorted as written."""
        days = self.days(name)
        if start is not None:
            s = pd.Timestamp(start).tz_convert("UTC").date()
            days = [d for d in days if d >= s]
        if end is not None:
            e = (pd.Timestamp(end).tz_convert("UTC") - pd.Timedelta(microseconds=1)).date()
            days = [d for d in days if d <= e]
        frames = [pd.read_parquet(self._path(name, d)) for d in days]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame()
        out = pd.concat(frames, ignore_index=True)
        if start is not None:
            out = out[out["bucket"] >= pd.Timestamp(start)]
        if end is not None:
            out = out[out["bucket"] < pd.Timestamp(end)]
        return out.reset_index(drop=True)


def day_range(start: date, end_exclusive: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end_exclusive - start).days)]
