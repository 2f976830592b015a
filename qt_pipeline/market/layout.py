"""Landing sources by configuration: how each kind of export is read, without editing the files.

A YAML file named by ``QT_LANDING_CONFIG`` (example: ``configs/landing.example.yaml``) lists *sources*;
each landing file is read with the first source whose ``match`` globs match its path relative to the
landing directory. Without the variable there is one source built from the older variables
(``QT_LANDING_COLUMN_MAP``, ``QT_LANDING_TIMEZONE``, ``QT_MARKET_CALENDAR``), which expects the canonical
columns. Every field of a source (all optional except ``name``)::

    name: us_equity_daily          # shown in messages
    match: ["equities/*.csv"]      # globs on the path relative to the landing directory ('**' = any dirs)
    columns: {Date: timestamp, Open: open, High: high, Low: low, Close: close, Volume: volume}
    ignore_columns: ["Adj Close"]  # dropped silently; any other extra column: one warning per file
    symbol: {filename: '^(?P<symbol>[A-Za-z.]+)_'}   # or {column: Ticker} or {constant: GOOGL}
    timestamp: {format: '%Y-%m-%d', timezone: America/New_York}  # strftime format; default ISO-8601
    calendar: XNYS                 # 24/7 | fx | an exchange_calendars code; date-only bars open at its
                                   # session open (else at midnight in the timezone)
    interval: 1d                   # bar interval of this source (default QT_BAR_INTERVAL)
    symbols: [GOOGL]               # the symbols it delivers (tells the quality check their calendar)
    vwap: auto                     # auto | column | typical | close  (see DERIVED below)
    trade_count: auto              # auto | column | zero
    delimiter: ","
    min_bars: 1                    # quality check: fewest bars on a trading day (default QT_QUALITY_MIN_BARS)
    require_final_newline: true    # a last line without a line break is rejected as possibly cut
    bounds: {min_price: 1.0e-8, max_price: 1.0e9, max_volume: 1.0e15, max_jump: null}

DERIVED: the store keeps ``vwap`` and ``trade_count`` NOT NULL in every backend, so a source without them
*derives* them, and says so in a per-file warning: ``vwap`` = the typical price ``(high + low + close) / 3``
(clipped into ``[low, high]``; ``close`` on request) and ``trade_count`` = ``0`` meaning *not reported*.
``auto`` uses the column when the file has it and derives otherwise; ``column`` requires it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qt_pipeline.market.contract import BAR_COLUMNS

DATE_ONLY_DIRECTIVES = re.compile(r"%[HIMSXTcfpzZ]")


class LayoutError(ValueError):
    """The landing configuration is invalid (the message names the file, the source and the fix)."""


class Bounds(BaseModel):
    """Values no market has: rows outside are rejected as ``implausible_value``."""

    model_config = ConfigDict(extra="forbid")
    min_price: float = 1e-8
    max_price: float = 1e9
    max_volume: float = 1e15
    # largest relative change of close against the previous bar of the symbol (0.5 = 50%); None = off
    max_jump: float | None = None


class SymbolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str | None = None
    constant: str | None = None
    filename: str | None = None  # regex searched in the file name; group 'symbol' (or group 1)

    @model_validator(mode="after")
    def _one(self) -> SymbolSpec:
        given = [k for k in ("column", "constant", "filename") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("symbol: give exactly one of column, constant, filename")
        if self.filename:
            try:
                rx = re.compile(self.filename)
            except re.error as exc:
                raise ValueError(
                    f"symbol.filename {self.filename!r} is not a regular expression: {exc}"
                ) from None
            if rx.groups == 0:
                raise ValueError(f"symbol.filename {self.filename!r} needs a group, e.g. (?P<symbol>[A-Z]+)")
        return self

    def from_filename(self, name: str) -> str | None:
        m = re.search(self.filename or "", name)
        if not m:
            return None
        return m.groupdict().get("symbol") or m.group(1)


class TimestampSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str | None = None  # strftime, e.g. '%d.%m.%Y %H:%M:%S.%f'; None = ISO-8601
    timezone: str | None = None  # IANA zone of naive values

    @property
    def date_only(self) -> bool:
        return self.format is not None and not DATE_ONLY_DIRECTIVES.search(self.format)


class SourceLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    match: list[str] = Field(default_factory=lambda: ["**"])
    columns: dict[str, str] = Field(default_factory=dict)
    ignore_columns: list[str] = Field(default_factory=list)
    symbol: SymbolSpec | None = None  # None = the file's 'symbol' column
    timestamp: TimestampSpec = Field(default_factory=TimestampSpec)
    calendar: str | None = None  # None = QT_MARKET_CALENDAR
    interval: str | None = None  # None = QT_BAR_INTERVAL
    symbols: list[str] = Field(default_factory=list)
    vwap: Literal["auto", "column", "typical", "close"] = "auto"
    trade_count: Literal["auto", "column", "zero"] = "auto"
    delimiter: str = ","
    min_bars: int | None = Field(default=None, ge=0)
    require_final_newline: bool = True
    bounds: Bounds = Field(default_factory=Bounds)

    @field_validator("columns")
    @classmethod
    def _targets(cls, v: dict[str, str]) -> dict[str, str]:
        out = {str(k).strip(): str(t).strip().lower() for k, t in v.items()}
        bad = sorted(t for t in out.values() if t not in BAR_COLUMNS)
        if bad:
            raise ValueError(f"columns targets {bad} are not bar columns; map to one of {list(BAR_COLUMNS)}")
        return out

    @field_validator("symbols")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [s.strip().upper() for s in v]

    @field_validator("delimiter")
    @classmethod
    def _delim(cls, v: str) -> str:
        if len(v) != 1:
            raise ValueError(f"delimiter must be one character, got {v!r}")
        return v

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import pandas as pd

        try:
            td = pd.Timedelta(v)
        except ValueError:
            raise ValueError(f"interval {v!r} is not a time delta such as '1min', '1h', '1D'") from None
        if td <= pd.Timedelta(0):
            raise ValueError(f"interval {v!r} must be positive")
        return v

    @model_validator(mode="after")
    def _checks(self) -> SourceLayout:
        from qt_pipeline.market.validation import check_timezone

        check_timezone(self.timestamp.timezone)
        if self.calendar:
            from qt_pipeline.market.calendars import get_calendar

            get_calendar(self.calendar)
        if self.symbol and self.symbol.constant:
            self.symbols = sorted({*self.symbols, self.symbol.constant.strip().upper()})
        return self

    def matches(self, relative: str) -> bool:
        rel = PurePosixPath(relative)
        for pattern in self.match:
            if pattern in ("**", "**/*") or rel.match(pattern) or fnmatch.fnmatch(str(rel), pattern):
                return True
            if "**/" in pattern and fnmatch.fnmatch(str(rel), pattern.replace("**/", "")):
                return True  # '**/' also matches no directory at all
        return False

    def canonical_name(self, column: str) -> str:
        """The canonical name of a file column (mapping first, then lower-cased)."""
        name = str(column).strip()
        if name in self.columns:
            return self.columns[name]
        low = {k.lower(): v for k, v in self.columns.items()}
        return low.get(name.lower(), name.lower())

    def is_ignored(self, column: str) -> bool:
        return str(column).strip().lower() in {c.strip().lower() for c in self.ignore_columns}


class LandingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: list[SourceLayout]
    max_file_mb: float | None = None  # None = QT_LANDING_MAX_FILE_MB
    chunk_mb: float | None = None  # None = QT_LANDING_CHUNK_MB
    origin: str = "environment"

    def layout_for(self, relative: str | Path) -> SourceLayout | None:
        rel = str(PurePosixPath(*Path(relative).parts)) if str(relative) else ""
        for src in self.sources:
            if src.matches(rel):
                return src
        return None

    def source_for_symbol(self, symbol: str) -> SourceLayout | None:
        sym = symbol.strip().upper()
        for src in self.sources:
            if sym in src.symbols:
                return src
        return None


def default_layout(
    column_mapping: Mapping[str, str] | None = None,
    timezone: str | None = None,
    calendar: str | None = None,
) -> SourceLayout:
    try:
        return SourceLayout(
            name="default",
            columns=dict(column_mapping or {}),
            timestamp=TimestampSpec(timezone=timezone or None),
            calendar=calendar,
        )
    except ValidationError as exc:
        raise LayoutError(_first_error(exc, "QT_LANDING_COLUMN_MAP / QT_LANDING_TIMEZONE")) from None


def _first_error(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}"


def load_landing_config(path: str | Path) -> LandingConfig:
    """Read and check a landing config YAML; errors name the file and the offending field."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LayoutError(f"QT_LANDING_CONFIG={p}: cannot read it ({exc.strerror}); check the path") from None
    except yaml.YAMLError as exc:
        raise LayoutError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list) or not data["sources"]:
        raise LayoutError(
            f"{p}: expected a mapping with a non-empty 'sources:' list (see configs/landing.example.yaml)"
        )
    try:
        cfg = LandingConfig(**data)
    except ValidationError as exc:
        raise LayoutError(_first_error(exc, str(p))) from None
    names = [s.name for s in cfg.sources]
    if len(set(names)) != len(names):
        raise LayoutError(f"{p}: source names must be unique, got {names}")
    cfg.origin = str(p)
    return cfg


def config_from_settings(settings=None) -> LandingConfig:
    """The landing config: ``QT_LANDING_CONFIG`` if set, else one default source from the environment."""
    from qt_pipeline.config import get_settings

    settings = settings or get_settings()
    if settings.landing_config:
        return load_landing_config(settings.landing_config)
    return LandingConfig(
        sources=[
            default_layout(settings.landing_column_map, settings.landing_timezone, settings.market_calendar)
        ]
    )


@dataclass(frozen=True)
class SymbolProfile:
    calendar: str
    interval: str
    min_bars: int
    source: str | None  # the landing source that declares the symbol, if any


def symbol_profile(symbol: str, settings=None) -> SymbolProfile:
    """Calendar, bar interval and the quality check's minimum bars of ``symbol``: from the landing source
    that lists it (``symbols:`` or a constant symbol), else ``QT_MARKET_CALENDAR``, ``QT_BAR_INTERVAL``,
    ``QT_QUALITY_MIN_BARS``."""
    from qt_pipeline.config import get_settings

    settings = settings or get_settings()
    src = config_from_settings(settings).source_for_symbol(symbol) if settings.landing_config else None
    return SymbolProfile(
        calendar=(src.calendar if src and src.calendar else settings.market_calendar),
        interval=(src.interval if src and src.interval else settings.bar_interval),
        min_bars=(src.min_bars if src and src.min_bars is not None else settings.quality_min_bars),
        source=src.name if src else None,
    )


__all__ = [
    "SymbolProfile",
    "symbol_profile",
    "Bounds",
    "LandingConfig",
    "LayoutError",
    "SourceLayout",
    "SymbolSpec",
    "TimestampSpec",
    "config_from_settings",
    "default_layout",
    "load_landing_config",
]
