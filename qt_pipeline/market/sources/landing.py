"""A landing directory of CSV / Parquet files as a market data source.

Files: ``*.csv``, ``*.csv.gz``, ``*.parquet`` anywhere under the directory (hidden files, names starting
with ``_`` and ``*.tmp``/``*.part`` are ignored: writers should write under such a name and rename).

* CSVs are read with the :mod:`csv` module, every value kept as a string, so validation sees the raw
  text and can name an unparsable number. Line numbers are physical file lines (header = line 1; a quoted
  field spanning lines makes a record start at its first line). Rows with the wrong number of fields are
  ``malformed_file`` records with their line; the good rows still go through. A header that is a single
  column containing ``;``, tab or ``|`` means the file uses another delimiter (``malformed_file``, nothing
  read). An empty file (0 bytes, or a header without rows) is ``empty_file``.
* Parquet files keep their types; their ``line`` is the 0-based row position.
* ``column_mapping`` renames source columns (``{"ts": "timestamp", "ticker": "symbol"}``); names are then
  matched case-insensitively. Naive timestamps are in ``timezone`` (``QT_LANDING_TIMEZONE``).

Partitions: a row belongs to the ``(symbol, UTC day)`` of its normalised symbol and parsed timestamp. Rows
that cannot be placed (unparsable timestamp or symbol, missing key column) and the file-level problems
travel with the file's **home partition** — its first ``(symbol, day)`` in sort order — so
``fetch`` for that partition validates and reports them exactly once. A file with no placeable row at all
has no home: :meth:`LandingDirectorySource.inspect` returns all its reject records in ``problems`` (the
sensor/asset writes them to the reject store).
"""

from __future__ import annotations

import codecs
import csv
import gc
import gzip
import hashlib
import json
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import (
    BAR_COLUMNS,
    RejectReason,
    empty_rejects,
    to_canonical_rejects,
)
from qt_pipeline.market.sources.base import MarketDataSource, RawBatch, utc_timestamp
from qt_pipeline.market.validation import (
    FIX_HINTS,
    check_timezone,
    normalize_symbols,
    parse_timestamps,
    validate_bars,
)

PATTERNS: tuple[str, ...] = ("*.csv", "*.csv.gz", "*.parquet")
_OTHER_DELIMITERS = {";": "';'", "\t": "a tab", "|": "'|'"}
_CACHE_FILES = 32


@dataclass(frozen=True)
class LandingFile:
    path: Path
    size: int
    mtime_ns: int
    fingerprint: str  # sha256 of the content

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class FileInspection:
    """What a file holds, cheaply: its partitions and its problems."""

    path: Path
    fingerprint: str
    rows: int  # data rows read (well-formed lines)
    partitions: pd.DataFrame  # symbol, day (datetime.date), rows — sorted
    problems: pd.DataFrame  # reject records not covered by any partition fetch (see module docstring)
    unplaced_rows: int  # rows that belong to no partition (they travel with the home partition)
    home: tuple[str, date] | None  # partition that carries unplaced rows and file-level problems

    @property
    def partition_keys(self) -> list[tuple[str, date]]:
        return list(zip(self.partitions["symbol"], self.partitions["day"], strict=True))


@dataclass
class _Loaded:
    file: LandingFile
    batch: RawBatch
    symbol: np.ndarray  # normalised symbol per row (object; None where unplaced)
    ts_us: np.ndarray  # UTC microseconds per row (int64; meaningless where unplaced)
    placed: np.ndarray  # bool per row
    home: tuple[str, date] | None
    partitions: pd.DataFrame = field(repr=False)


def _problem(source: str, line: int | None, reason: str, detail: str, raw: object = None) -> dict:
    return {
        "source": source,
        "line": line,
        "symbol": None,
        "timestamp": None,
        "reason": str(reason),
        "detail": f"{detail} ({FIX_HINTS[reason]})",
        "raw": None if raw is None else json.dumps(raw, ensure_ascii=False),
        "rejected_at": pd.Timestamp.now(tz="UTC"),
    }


def _problems_frame(records: list[dict]) -> pd.DataFrame:
    return to_canonical_rejects(pd.DataFrame(records)) if records else empty_rejects()


def _empty_raw_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="str") for c in BAR_COLUMNS})


def _decoded_lines(binary: Iterable[bytes], bad: dict[int, str]) -> Iterator[str]:
    """UTF-8 lines of a binary file; a line that does not decode is recorded in ``bad`` (by physical line
    number) and yielded with replacement characters so the CSV reader keeps its place."""
    for number, raw in enumerate(binary, start=1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad[number] = (
                f"byte 0x{raw[exc.start]:02x} at position {exc.start + 1} is not UTF-8; save the file as UTF-8"
            )
            yield raw.decode("utf-8", errors="replace")


class LandingDirectorySource(MarketDataSource):
    """CSV/Parquet files dropped into ``directory``; see the module docstring."""

    name = "landing"

    def __init__(
        self,
        directory: str | Path,
        *,
        column_mapping: Mapping[str, str] | None = None,
        timezone: str | None = None,
    ):
        self.directory = Path(directory)
        self.timezone = check_timezone(timezone)
        mapping = {str(k).strip(): str(v).strip().lower() for k, v in (column_mapping or {}).items()}
        bad = sorted(v for v in mapping.values() if v not in BAR_COLUMNS)
        if bad:
            raise ValueError(
                f"column mapping targets {bad} are not bar columns; map to one of {list(BAR_COLUMNS)} "
                "(QT_LANDING_COLUMN_MAP)"
            )
        self.column_mapping = mapping
        self._mapping_ci = {k.lower(): v for k, v in mapping.items()}
        self._fingerprints: dict[tuple, str] = {}
        self._cache: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()

    def describe(self) -> str:
        return f"landing:{self.directory} tz={self.timezone} mapping={self.column_mapping}"

    # --- files ----------------------------------------------------------------------------------------
    def scan(self) -> list[LandingFile]:
        """The landing files, sorted by path, with a content fingerprint (cached by size + mtime)."""
        if not self.directory.is_dir():
            return []
        paths = set()
        for pattern in PATTERNS:
            for p in self.directory.rglob(pattern):
                rel = p.relative_to(self.directory)
                if any(part.startswith((".", "_")) for part in rel.parts) or not p.is_file():
                    continue
                paths.add(p)
        return [self._stat(p) for p in sorted(paths)]

    def _stat(self, path: Path) -> LandingFile:
        st = path.stat()
        # ctime and inode change on every write or rename-over (and cannot be set back like mtime), so a
        # cached hash is never reused for changed content
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        fp = self._fingerprints.get(key)
        if fp is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            fp = self._fingerprints[key] = h.hexdigest()
        return LandingFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, fingerprint=fp)

    def _map_columns(self, columns: list[str]) -> list[str]:
        out = []
        for c in columns:
            name = str(c).strip()
            if name in self.column_mapping:
                out.append(self.column_mapping[name])
            elif name.lower() in self._mapping_ci:
                out.append(self._mapping_ci[name.lower()])
            else:
                out.append(name.lower())
        return out

    def read_file(self, path: str | Path) -> RawBatch:
        """The whole file as a raw batch (columns mapped, CSV values as strings)."""
        path = Path(path)
        name = path.name.lower()
        if name.endswith(".parquet"):
            return self._read_parquet(path)
        if name.endswith((".csv", ".csv.gz")):
            return self._read_csv(path)
        raise ValueError(f"{path}: not a landing file; expected one of {list(PATTERNS)}")

    def _read_parquet(self, path: Path) -> RawBatch:
        import pyarrow.parquet as pq

        source = str(path)
        try:
            frame = pq.read_table(path).to_pandas()
        except Exception as exc:  # pyarrow raises several types for corrupt files
            rec = _problem(source, None, RejectReason.MALFORMED_FILE, f"not a readable Parquet file: {exc}")
            return RawBatch(_empty_raw_frame(), source, None, _problems_frame([rec]), self.timezone)
        frame = frame.reset_index(drop=True)
        frame.columns = self._map_columns([str(c) for c in frame.columns])
        problems = []
        if len(frame) == 0:
            problems.append(_problem(source, None, RejectReason.EMPTY_FILE, "Parquet file has no rows"))
        return RawBatch(
            frame, source, np.arange(len(frame), dtype=np.int64), _problems_frame(problems), self.timezone
        )

    def _read_csv(self, path: Path) -> RawBatch:
        source = str(path)
        problems: list[dict] = []
        rows: list[list[str]] = []
        lines: list[int] = []
        header: list[str] | None = None
        header_line = 0

        def result() -> RawBatch:
            cols = self._map_columns(header) if header else list(BAR_COLUMNS)
            if rows:
                import pyarrow as pa

                # transpose, then build Arrow-backed string columns directly (much faster than object arrays)
                columns = list(zip(*rows, strict=True))
                frame = pd.DataFrame(
                    {
                        i: pd.array(pa.array(columns[i], type=pa.string()), dtype="str")
                        for i in range(len(cols))
                    }
                )
                frame.columns = cols
            else:
                frame = pd.DataFrame({i: pd.Series([], dtype="str") for i in range(len(cols))})
                frame.columns = cols
            return RawBatch(
                frame, source, np.asarray(lines, dtype=np.int64), _problems_frame(problems), self.timezone
            )

        if path.stat().st_size == 0:
            problems.append(_problem(source, None, RejectReason.EMPTY_FILE, "file is empty (0 bytes)"))
            return result()
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        prev = 0
        bad_utf8: dict[int, str] = {}
        gc_was_enabled = gc.isenabled()
        gc.disable()  # millions of small lists: the cyclic GC would rescan them over and over
        try:
            with opener(path, "rb") as raw_f:
                reader = csv.reader(_decoded_lines(raw_f, bad_utf8), strict=False)
                for rec in reader:
                    start, prev = prev + 1, reader.line_num
                    if not rec or (len(rec) == 1 and not rec[0].strip()):
                        continue  # blank line
                    if bad_utf8 and any(i in bad_utf8 for i in range(start, prev + 1)):
                        why = "; ".join(bad_utf8[i] for i in range(start, prev + 1) if i in bad_utf8)
                        if header is None:
                            problems.append(
                                _problem(
                                    source, None, RejectReason.MALFORMED_FILE, f"header (line {start}): {why}"
                                )
                            )
                            return result()
                        problems.append(_problem(source, start, RejectReason.MALFORMED_FILE, why, rec))
                        continue
                    if header is None:
                        header, header_line = rec, start
                        if len(rec) == 1:
                            for delim, shown in _OTHER_DELIMITERS.items():
                                if delim in rec[0]:
                                    problems.append(
                                        _problem(
                                            source,
                                            None,
                                            RejectReason.MALFORMED_FILE,
                                            f"file uses {shown} as delimiter; expected ',' (header: {rec[0]!r}); "
                                            "no rows were read",
                                        )
                                    )
                                    header = None
                                    return result()
                        continue
                    if len(rec) != len(header):
                        problems.append(
                            _problem(
                                source,
                                start,
                                RejectReason.MALFORMED_FILE,
                                f"line has {len(rec)} fields; the header (line {header_line}) has {len(header)}",
                                rec,
                            )
                        )
                        continue
                    rows.append(rec)
                    lines.append(start)
        except (csv.Error, OSError, EOFError, zlib.error) as exc:
            what = str(exc)
            problems.append(
                _problem(
                    source,
                    None,
                    RejectReason.MALFORMED_FILE,
                    f"could not read the file after line {prev}: {what}; the rows before it were read",
                )
            )
        finally:
            if gc_was_enabled:
                gc.enable()
        if header is None and not problems:
            problems.append(_problem(source, None, RejectReason.EMPTY_FILE, "file has only blank lines"))
        elif header is not None and not rows and not problems:
            problems.append(
                _problem(source, None, RejectReason.EMPTY_FILE, "file has a header but no data rows")
            )
        return result()

    # --- placement --------------------------------------------------------------------------------------
    def _load(self, lf: LandingFile) -> _Loaded:
        key = (str(lf.path), lf.fingerprint)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        batch = self.read_file(lf.path)
        frame = batch.frame
        n = len(frame)
        cols = list(frame.columns)
        if (
            n
            and "symbol" in cols
            and "timestamp" in cols
            and cols.count("symbol") == 1
            and cols.count("timestamp") == 1
        ):
            sym, malformed = normalize_symbols(frame["symbol"])
            pts = parse_timestamps(frame["timestamp"], batch.timezone)
            placed = ~malformed.to_numpy() & pts.utc.notna().to_numpy()
            symbol = np.where(placed, sym.to_numpy(dtype=object), None)
            ts_us = np.where(placed, np.asarray(pts.utc.array.asi8, dtype=np.int64), 0)
        else:
            placed = np.zeros(n, dtype=bool)
            symbol = np.full(n, None, dtype=object)
            ts_us = np.zeros(n, dtype=np.int64)
        if placed.any():
            day = pd.to_datetime(ts_us[placed] // 86_400_000_000 * 86_400, unit="s").date
            parts = (
                pd.DataFrame({"symbol": symbol[placed].astype(str), "day": day})
                .groupby(["symbol", "day"], sort=True)
                .size()
                .rename("rows")
                .reset_index()
            )
            home = (parts["symbol"].iat[0], parts["day"].iat[0])
        else:
            parts = pd.DataFrame(
                {"symbol": pd.Series([], dtype="str"), "day": [], "rows": pd.Series([], dtype="int64")}
            )
            home = None
        loaded = _Loaded(lf, batch, symbol, ts_us, placed, home, parts)
        self._cache[key] = loaded
        while len(self._cache) > _CACHE_FILES:
            self._cache.popitem(last=False)
        return loaded

    def inspect(self, path: str | Path) -> FileInspection:
        """Partitions and problems of one file (cheap: parses only symbol and timestamp for placement)."""
        lf = self._stat(Path(path))
        ld = self._load(lf)
        problems = ld.batch.problems
        if ld.home is None and len(ld.batch.frame):
            result = validate_bars(
                ld.batch.frame,
                source=ld.batch.source,
                source_timezone=ld.batch.timezone,
                line_numbers=ld.batch.line_numbers,
            )
            parts = [p for p in (problems, result.rejected) if len(p)]
            problems = to_canonical_rejects(pd.concat(parts, ignore_index=True)) if parts else empty_rejects()
        return FileInspection(
            path=lf.path,
            fingerprint=lf.fingerprint,
            rows=len(ld.batch.frame),
            partitions=ld.partitions.copy(),
            problems=problems,
            unplaced_rows=int((~ld.placed).sum()),
            home=ld.home,
        )

    # --- MarketDataSource -------------------------------------------------------------------------------
    def symbols(self) -> list[str]:
        found: set[str] = set()
        for lf in self.scan():
            found.update(self._load(lf).partitions["symbol"].tolist())
        return sorted(found)

    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> RawBatch:
        """Rows of all landing files for ``symbol`` with ``start <= timestamp < end`` (plus, for a file
        whose home partition's day starts in the range, its unplaced rows and file-level problems)."""
        symbol = str(symbol).strip().upper()
        start_ts, end_ts = utc_timestamp(start, "start"), utc_timestamp(end, "end")
        lo, hi = start_ts.value // 1000, end_ts.value // 1000
        parts = []
        for lf in self.scan():
            ld = self._load(lf)
            sel = ld.placed & (ld.symbol == symbol) & (ld.ts_us >= lo) & (ld.ts_us < hi)
            is_home = False
            if ld.home is not None and ld.home[0] == symbol:
                home_start = pd.Timestamp(ld.home[1], tz="UTC")
                is_home = start_ts <= home_start < end_ts
            if is_home:
                sel = sel | ~ld.placed
            if not sel.any() and not is_home:
                continue
            b = ld.batch
            idx = np.flatnonzero(sel)
            parts.append(
                RawBatch(
                    frame=b.frame.iloc[idx].reset_index(drop=True),
                    source=b.source,
                    line_numbers=b.line_numbers[idx] if b.line_numbers is not None else idx,
                    problems=b.problems if is_home else empty_rejects(),
                    timezone=b.timezone,
                )
            )
        label = f"landing:{self.directory}"
        if not parts:
            return RawBatch(_empty_raw_frame(), label, np.array([], dtype=np.int64), timezone=self.timezone)
        return RawBatch.combine(label, parts, timezone=self.timezone)

    def partitions(self) -> pd.DataFrame:
        """All (symbol, day) partitions present in the landing directory with their row counts."""
        frames = [self._load(lf).partitions for lf in self.scan()]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(
                {"symbol": pd.Series([], dtype="str"), "day": [], "rows": pd.Series([], dtype="int64")}
            )
        return pd.concat(frames).groupby(["symbol", "day"], sort=True)["rows"].sum().reset_index()
