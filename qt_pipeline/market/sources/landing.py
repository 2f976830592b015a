"""A landing directory of CSV / Parquet files as a market data source.

Files: ``*.csv``, ``*.csv.gz``, ``*.parquet`` anywhere under the directory (hidden files, names starting
with ``_`` and ``*.tmp``/``*.part`` are ignored: writers should write under such a name and rename).
Each file is read with the first *source layout* of the landing config whose ``match`` fits it
(:mod:`qt_pipeline.market.layout`: column names, symbol from a column/constant/file name, timestamp
format and zone, calendar, derived vwap/trade_count, bounds); a file no source matches is rejected whole.

* Files are **streamed** in bounded memory, ``QT_LANDING_CHUNK_MB`` (``chunk_bytes``) being the bound: a
  CSV file is read, parsed, validated and staged one *block* at a time, 1/16 of the chunk
  (``block_bytes``; a block costs ~12-16x its size while it is parsed and validated), cut at record ends
  by :func:`_record_blocks` (outside quotes; nothing is read ahead), parsed with ``pyarrow.csv`` (every
  value kept as text, so validation sees the raw value and can name an unparsable number). Parquet is
  read with ``ParquetFile.iter_batches`` (its unit is still its row group). A file larger than
  ``max_file_bytes`` (``QT_LANDING_MAX_FILE_MB``) is refused before reading (``file_too_large``). Peak
  memory stays within ~2x the chunk from 16 MiB (the default) up; below that a fixed ~3 MiB (validation)
  to ~12 MiB (the staging pass: Parquet writer, Arrow's allocator) dominates
  (``benchmarks/bench_landing.py --memory-only``).
* **One read per file.** A file larger than 1/8 chunk (``keep_bytes``; smaller ones are kept in memory once
  read) is read once: :meth:`LandingDirectorySource._load`
  places its rows and writes them with their placement (``_line, _sym, _ts, _placed``) to a staging
  directory of Parquet parts (row groups of ~1/8 chunk, 64 per part: :class:`_StageWriter`) under
  ``staging_dir`` (``QT_DATA_DIR/landing_staging`` from
  settings), keyed by the file's path, content and layout, with its summary (partitions, home, problems)
  beside it. Every partition fetch — in this process or in another partition run — reads only the row
  groups that can hold its rows. Accept/reject/quarantine are unchanged: the staged rows are the raw rows
  and are validated by the fetch exactly as streamed ones. ``passes`` counts full reads of landing files.
* CSV line numbers are physical file lines (header = line 1 after any blank lines; a quoted field spanning
  lines makes a record start at its first line). Rows with the wrong number of fields and lines that are
  not UTF-8 are ``malformed_file`` records with their line; the good rows still go through. A header that is
  a single column containing ``;``, tab or ``|`` means the file uses another delimiter (``malformed_file``,
  nothing read). An empty file (0 bytes, or a header without rows) is ``empty_file``. A last line without
  a line break is rejected as possibly cut (``require_final_newline``); a gzip file cut short fails its
  own end-of-stream check.
* Parquet files keep their types; their ``line`` is the 1-based row number.
* Extra columns are dropped with one warning per file (``ignore_columns`` silences it); so are derived
  ``vwap``/``trade_count`` notes. Warnings reject nothing.

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
import gzip
import hashlib
import json
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import (
    BAR_COLUMNS,
    RejectReason,
    empty_rejects,
    to_canonical_rejects,
)
from qt_pipeline.market.filecheck import release_arrow_memory
from qt_pipeline.market.layout import LandingConfig, SourceLayout, default_layout
from qt_pipeline.market.sources.base import MarketDataSource, RawBatch, utc_timestamp
from qt_pipeline.market.validation import (
    FIX_HINTS,
    check_timezone,
    normalize_symbols,
    parse_timestamps,
    reject_record,
)

PATTERNS: tuple[str, ...] = ("*.csv", "*.csv.gz", "*.parquet")
_OTHER_DELIMITERS = {";": "';'", "\t": "a tab", "|": "'|'"}
_CACHE_FILES = 4096  # placement summaries kept (small: partition counts and problems per file)
_STAGE_VERSION = "2"  # bump when the staging layout changes: older staged files are then ignored
STAGING_DIRNAME = "landing_staging"
DEFAULT_MAX_FILE_MB = 4096.0
DEFAULT_CHUNK_MB = 16.0
# A CSV file is parsed, validated and staged a block at a time, 1/16 of the chunk: a block costs ~12-16x
# its size while it is parsed and validated (raw bytes, Arrow strings, numeric columns, masks), so the peak
# stays within ~2x the chunk (benchmarks/bench_landing.py --memory-only).
PARSE_BLOCKS_PER_CHUNK = 16


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
    # a file of at most one chunk: its chunks with their placement ``(batch, symbol, ts_us, placed)`` kept
    # for the partition fetches that follow (dropped again when the cache's byte budget is exceeded)
    leaves: list[tuple[RawBatch, np.ndarray, np.ndarray, np.ndarray]] | None
    home: tuple[str, date] | None  # partition that carries unplaced rows and file-level problems
    partitions: pd.DataFrame = field(repr=False)
    rows: int = 0
    problems: pd.DataFrame = field(default_factory=empty_rejects, repr=False)
    unplaced: int = 0
    # a larger file: its rows with their placement, written once to a staging Parquet file that the
    # partition fetches read (None: no staging, the file is streamed again by every fetch)
    stage: Path | None = None
    warnings: tuple[str, ...] = ()
    layout: Any = None
    timezone: str | None = None


def _problem(source: str, line: int | None, reason: str, detail: str, raw: object = None) -> dict:
    return reject_record(
        source,
        line,
        reason,
        f"{detail} ({FIX_HINTS[reason]})",
        pd.Timestamp.now(tz="UTC"),
        None if raw is None else json.dumps(raw, ensure_ascii=False),
    )


def _problems_frame(records: list[dict]) -> pd.DataFrame:
    return to_canonical_rejects(pd.DataFrame(records)) if records else empty_rejects()


def _problems_only(
    source: str, recs: list[dict], tz: str | None, layout: SourceLayout | None = None
) -> RawBatch:
    """A batch without rows that carries file-level problems (nothing, or nothing more, could be read)."""
    return RawBatch(_empty_raw_frame(), source, None, _problems_frame(recs), tz, layout=layout)


def _empty_raw_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="str") for c in BAR_COLUMNS})


def pacsv_count_newlines(col) -> np.ndarray | None:
    """Line breaks inside each value (quoted fields that span lines), or None when there are none."""
    import pyarrow.compute as pc

    if not pc.any(pc.match_substring(col, "\n")).as_py():
        return None
    return np.asarray(pc.count_substring(col, "\n").to_numpy(zero_copy_only=False), dtype=np.int64)


def _record_end(buf: bytes | bytearray, quote: bytes = b'"') -> int:
    """Where the last complete record of ``buf`` ends (just after its line break, outside quotes); 0 when
    ``buf`` holds no complete record. A line break inside a quoted field ends no record: the quotes
    before a record-ending break are even in number (``""`` escapes keep the count even)."""
    nl = b"\n" if b"\n" in buf else b"\r"
    i = buf.rfind(nl)
    if i < 0:
        return 0
    if quote not in buf:
        return i + 1
    q = buf.count(quote, 0, i)
    while q % 2:
        j = buf.rfind(nl, 0, i)
        if j < 0:
            return 0
        q -= buf.count(quote, j, i)
        i = j
    return i + 1


def _record_blocks(
    path: Path, compressed: bool, block_bytes: int
) -> Iterator[tuple[bytes | memoryview, bool]]:
    """The file's bytes in blocks of about ``block_bytes``, each ending at a record boundary, read one at a
    time (nothing is read ahead). ``True`` marks the file's unterminated last line (bytes after its last
    line break), yielded alone; a file that ends with a line break has none. A record longer than a
    block (or an unterminated quote) grows the block until it ends; past 16 blocks the block is cut at its
    last line break regardless, and the parser names the broken quote."""
    import pyarrow as pa

    carry = b""
    with pa.input_stream(str(path), compression="gzip" if compressed else None) as f:
        while True:
            data = f.read(block_bytes)
            if not data:
                if carry:
                    yield carry, True
                return
            buf = carry + data if carry else data
            del data
            end = _record_end(buf)
            if end == 0 and len(buf) > 16 * block_bytes:
                end = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1
            if end == 0:
                carry = buf
                continue
            carry = buf[end:]
            block = memoryview(buf)[:end]
            del buf
            yield block, False
            del block


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class _StageWriter:
    """The staging copy of one landing file being written to ``tmp``: a directory of Parquet parts, renamed
    into place by :meth:`finish`. A row group's footer metadata (~6 KB) is held until its part is closed,
    so a part holds at most ``GROUPS_PER_PART`` row groups: one file of row groups would hold memory in
    proportion to the landing file."""

    GROUPS_PER_PART = 64

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.writer: Any = None
        self.schema: Any = None
        self.groups = 0
        self.parts = 0

    def write(self, group: list) -> _StageWriter | None:
        """Append the gathered tables (emptying ``group``) as one row group; None (the staging copy
        removed) when they cannot be staged (types that change between blocks)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = self.schema if self.schema is not None else group[0].schema
            table = pa.concat_tables([t if t.schema == schema else t.cast(schema) for t in group])
            group.clear()
            if self.writer is None:
                self.tmp.mkdir(parents=True, exist_ok=True)
                path = self.tmp / f"part-{self.parts:05d}.parquet"
                self.writer = pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=["_sym"])
                self.schema, self.parts = schema, self.parts + 1
            self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
            self.groups += 1
            if self.groups % self.GROUPS_PER_PART == 0:
                self.writer.close()
                self.writer = None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError):
            group.clear()
            self.discard()
            return None
        return self

    def finish(self, stage: Path) -> None:
        """Close the last part and move the copy to ``stage`` (kept as it is if another process got there
        first: the same path means the same content)."""
        import os

        if self.writer is not None:
            self.writer.close()
            self.writer = None
        try:
            os.replace(self.tmp, stage)
        except OSError:
            if not stage.is_dir():
                raise
            _remove(self.tmp)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        _remove(self.tmp)


@dataclass
class _Plan:
    """How one file's columns become canonical ones (decided once per file from its header)."""

    keep: list[tuple[int, str]]  # (file column position, canonical name)
    constant_symbol: str | None
    warnings: list[str]
    problems: list[dict]


def default_staging_dir(settings) -> Path:
    """Where the landing source stages large files: ``<QT_DATA_DIR>/landing_staging``."""
    return Path(settings.data_dir) / STAGING_DIRNAME


class LandingDirectorySource(MarketDataSource):
    """CSV/Parquet files dropped into ``directory``; see the module docstring."""

    name = "landing"

    def __init__(
        self,
        directory: str | Path,
        *,
        column_mapping: Mapping[str, str] | None = None,
        timezone: str | None = None,
        config: LandingConfig | None = None,
        calendar: str | None = None,
        max_file_mb: float | None = None,
        chunk_mb: float | None = None,
        staging_dir: str | Path | None = None,
        staging: bool = True,
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
        self.config = config or LandingConfig(sources=[default_layout(mapping, self.timezone, calendar)])
        mb = max_file_mb if max_file_mb is not None else self.config.max_file_mb
        self.max_file_mb = mb if mb is not None else DEFAULT_MAX_FILE_MB
        self.max_file_bytes = int(self.max_file_mb * 2**20)
        cm = chunk_mb if chunk_mb is not None else self.config.chunk_mb
        self.chunk_bytes = max(int((cm if cm is not None else DEFAULT_CHUNK_MB) * 2**20), 4096)
        # the unit a CSV file is parsed and handed on in: a fraction of the chunk, so that a block parsed,
        # validated and staged stays within the chunk's memory (see PARSE_BLOCKS_PER_CHUNK)
        self.block_bytes = max(self.chunk_bytes // PARSE_BLOCKS_PER_CHUNK, 4096)
        # files up to this size are kept in memory once read (their rows cost ~4x the file as frames and
        # placement), larger ones are staged on disk
        self.keep_bytes = self.chunk_bytes // 8
        self._fingerprints: dict[tuple, str] = {}
        self._cache: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
        # a file larger than one chunk is split once into a staging Parquet file (keyed by its content
        # and the layout that read it) that every partition fetch reads; ``staging=False`` streams the
        # whole file again per fetch (the old behaviour, kept for the benchmark's same-run comparison)
        self.staging = staging
        self._staging_dir = Path(staging_dir) if staging_dir is not None else None
        self._staging_tmp: Any = None
        self.passes = 0  # full reads of landing files (iter_chunks started): one per file when staged

    @property
    def staging_dir(self) -> Path:
        """Where staged files live (given, or a temporary directory removed with this source)."""
        if self._staging_dir is None:
            import tempfile

            self._staging_tmp = tempfile.TemporaryDirectory(prefix="qt_landing_staging_")
            self._staging_dir = Path(self._staging_tmp.name)
        return self._staging_dir

    @classmethod
    def from_settings(cls, settings=None, directory: str | Path | None = None) -> LandingDirectorySource:
        from qt_pipeline.config import get_settings
        from qt_pipeline.market.layout import config_from_settings

        settings = settings or get_settings()
        return cls(
            directory or settings.resolved_landing_dir,
            column_mapping=settings.landing_column_map,
            timezone=settings.landing_timezone,
            config=config_from_settings(settings),
            calendar=settings.market_calendar,
            max_file_mb=settings.landing_max_file_mb,
            chunk_mb=settings.landing_chunk_mb,
            staging_dir=default_staging_dir(settings),
        )

    def describe(self) -> str:
        names = [s.name for s in self.config.sources]
        return f"landing:{self.directory} sources={names} ({self.config.origin})"

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

    def layout_for(self, path: str | Path) -> SourceLayout | None:
        """The configured source that reads ``path`` (first whose ``match`` fits), or None."""
        path = Path(path)
        try:
            return self.config.layout_for(path.resolve().relative_to(self.directory.resolve()))
        except ValueError:  # outside the landing directory (qt validate): try its trailing parts
            parts = path.resolve().parts[1:]
            for i in range(len(parts)):
                found = self.config.layout_for(Path(*parts[i:]))
                if found is not None:
                    return found
            return None

    def read_file(self, path: str | Path) -> RawBatch:
        """The whole file as a raw batch (columns mapped, CSV values as strings). Use
        :meth:`iter_chunks` to read a large file in bounded memory."""
        path = Path(path)
        parts = list(self.iter_chunks(path))
        if not parts:
            return RawBatch(
                _empty_raw_frame(), str(path), np.array([], dtype=np.int64), timezone=self.timezone
            )
        if len(parts) == 1:
            return parts[0]
        return RawBatch.combine(str(path), parts, timezone=parts[0].timezone)

    def iter_chunks(self, path: str | Path) -> Iterator[RawBatch]:
        """The file as raw batches of at most ~``chunk_bytes`` of input each (leaves with physical line
        numbers; file-level problems and warnings ride on the first batch that knows them)."""
        path = Path(path)
        name = path.name.lower()
        source = str(path)
        self.passes += 1
        if not name.endswith((".parquet", ".csv", ".csv.gz")):
            raise ValueError(f"{path}: not a landing file; expected one of {list(PATTERNS)}")
        layout = self.layout_for(path)
        tz = self.timezone
        if layout is None:
            rec = _problem(
                source,
                None,
                RejectReason.MALFORMED_FILE,
                f"no source of the landing config ({self.config.origin}) matches this file; add a 'match' "
                "glob for it",
            )
            yield _problems_only(source, [rec], tz)
            return
        tz = layout.timestamp.timezone or self.timezone
        size = path.stat().st_size
        if size > self.max_file_bytes:
            rec = _problem(
                source,
                None,
                RejectReason.FILE_TOO_LARGE,
                f"file is {size / 2**20:.4g} MiB ({size} bytes), above the limit of {self.max_file_mb:g} MiB "
                "(QT_LANDING_MAX_FILE_MB); nothing was read",
            )
            yield _problems_only(source, [rec], tz, layout)
            return
        if name.endswith(".parquet"):
            yield from self._parquet_chunks(path, layout, tz)
        else:
            yield from self._csv_chunks(path, layout, tz)

    def _plan(self, path: Path, header: list[str], layout: SourceLayout) -> _Plan:
        source = str(path)
        warnings: list[str] = []
        problems: list[dict] = []
        keep: list[tuple[int, str]] = []
        extra: list[str] = []
        spec = layout.symbol
        for i, col in enumerate(header):
            if (
                spec is not None
                and spec.column is not None
                and str(col).strip().lower() == spec.column.lower()
            ):
                keep.append((i, "symbol"))
                continue
            canon = layout.canonical_name(str(col))
            if spec is not None and spec.column is None and canon == "symbol":
                canon = "_symbol_in_file"  # the source's symbol comes from its name or a constant
            if layout.is_ignored(str(col)) or canon == "_symbol_in_file":
                continue
            if canon not in BAR_COLUMNS:
                extra.append(str(col))
                continue
            if canon == "vwap" and layout.vwap in ("typical", "close"):
                continue
            if canon == "trade_count" and layout.trade_count == "zero":
                continue
            keep.append((i, canon))
        if extra:
            warnings.append(
                f"{source}: extra column(s) {extra} ignored (list them under ignore_columns of source "
                f"'{layout.name}' to silence this)"
            )
        names = {c for _, c in keep}
        constant = None
        if spec is not None and spec.constant:
            constant = spec.constant.strip()
        elif spec is not None and spec.filename:
            constant = spec.from_filename(path.name)
            if constant is None:
                problems.append(
                    _problem(
                        source,
                        None,
                        RejectReason.MALFORMED_FILE,
                        f"file name {path.name!r} does not match the symbol pattern {spec.filename!r} of "
                        f"source '{layout.name}'; rename the file or fix the pattern",
                    )
                )
                constant = ""
        if "vwap" not in names and layout.vwap != "column":
            how = "close" if layout.vwap == "close" else "the typical price (high + low + close) / 3"
            warnings.append(f"{source}: vwap derived as {how} (source '{layout.name}' has no vwap column)")
        if "trade_count" not in names and layout.trade_count != "column":
            warnings.append(f"{source}: trade_count stored as 0 = not reported (source '{layout.name}')")
        return _Plan(keep, constant, warnings, problems)

    def _frame(self, columns: list, plan: _Plan, n: int) -> pd.DataFrame:
        data = {canon: columns[i] for i, canon in plan.keep}
        if plan.constant_symbol is not None:
            data = {"symbol": pd.array([plan.constant_symbol] * n, dtype="str"), **data}
        frame = pd.DataFrame(data) if data else pd.DataFrame(index=range(n))
        if len({c for _, c in plan.keep}) != len(plan.keep):  # two file columns map to one name
            frame = pd.concat([columns[i].rename(c) for i, c in plan.keep], axis=1)
        return frame

    def _no_rows(
        self, source: str, width: int, plan: _Plan, recs: list[dict], tz: str | None, layout: SourceLayout
    ) -> RawBatch:
        """The one batch of a file with a header but no rows (its problems and warnings ride on it)."""
        return RawBatch(
            self._frame([pd.Series([], dtype="str")] * width, plan, 0),
            source,
            np.array([], dtype=np.int64),
            _problems_frame(recs),
            tz,
            layout=layout,
            warnings=tuple(plan.warnings),
        )

    def _parquet_chunks(self, path: Path, layout: SourceLayout, tz: str | None) -> Iterator[RawBatch]:
        import pyarrow.parquet as pq

        source = str(path)
        try:
            pf = pq.ParquetFile(path)
            meta = pf.metadata
            header = [str(c) for c in pf.schema_arrow.names]
            row_bytes = max(1, sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)))
            row_bytes = max(1, row_bytes // max(1, meta.num_rows))
            batches = pf.iter_batches(batch_size=max(1024, self.block_bytes // row_bytes))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files
            rec = _problem(source, None, RejectReason.MALFORMED_FILE, f"not a readable Parquet file: {exc}")
            yield _problems_only(source, [rec], tz, layout)
            return
        plan = self._plan(path, header, layout)
        first = True
        row = 0
        try:
            for rb in batches:
                n = rb.num_rows
                cols = [rb.column(i).to_pandas() for i in range(rb.num_columns)]
                frame = self._frame(cols, plan, n)
                lines = np.arange(row + 1, row + n + 1, dtype=np.int64)  # 1-based row numbers
                row += n
                yield RawBatch(
                    frame,
                    source,
                    lines,
                    _problems_frame(plan.problems if first else []),
                    tz,
                    layout=layout,
                    warnings=tuple(plan.warnings) if first else (),
                )
                first = False
        except Exception as exc:  # noqa: BLE001
            rec = _problem(
                source, None, RejectReason.MALFORMED_FILE, f"Parquet file unreadable after row {row}: {exc}"
            )
            yield _problems_only(source, [rec], tz, layout)
            return
        if first:
            recs = [
                *plan.problems,
                _problem(source, None, RejectReason.EMPTY_FILE, "Parquet file has no rows"),
            ]
            yield self._no_rows(source, len(header), plan, recs, tz, layout)

    def _csv_header(self, path: Path, layout: SourceLayout) -> tuple[list[str] | None, int, list[dict]]:
        """``(header fields, physical line of the header, problems)`` read with the csv module."""
        source = str(path)
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        number = 0
        try:
            with opener(path, "rb") as f:
                for raw in f:
                    number += 1
                    if number == 1 and raw.startswith(codecs.BOM_UTF8):
                        raw = raw[len(codecs.BOM_UTF8) :]
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        why = f"byte 0x{raw[exc.start]:02x} at position {exc.start + 1} is not UTF-8"
                        return (
                            None,
                            number,
                            [
                                _problem(
                                    source,
                                    None,
                                    RejectReason.MALFORMED_FILE,
                                    f"header (line {number}): {why}",
                                )
                            ],
                        )
                    if not text.strip():
                        continue
                    return next(csv.reader([text], delimiter=layout.delimiter)), number, []
        except (OSError, EOFError, zlib.error) as exc:
            return (
                None,
                number,
                [_problem(source, None, RejectReason.MALFORMED_FILE, f"could not read the file: {exc}")],
            )
        what = "file is empty (0 bytes)" if number == 0 else "file has only blank lines"
        return None, number, [_problem(source, None, RejectReason.EMPTY_FILE, what)]

    def _csv_chunks(self, path: Path, layout: SourceLayout, tz: str | None) -> Iterator[RawBatch]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        source = str(path)
        header, header_line, problems = self._csv_header(path, layout)
        if header is None:
            yield _problems_only(source, problems, tz, layout)
            return
        if len(header) == 1:
            for delim, shown in _OTHER_DELIMITERS.items():
                if delim in header[0] and delim != layout.delimiter:
                    rec = _problem(
                        source,
                        None,
                        RejectReason.MALFORMED_FILE,
                        f"file uses {shown} as delimiter; expected {layout.delimiter!r} (header: {header[0]!r}); "
                        f"no rows were read (set delimiter for source '{layout.name}' in QT_LANDING_CONFIG)",
                    )
                    yield _problems_only(source, [rec], tz, layout)
                    return
        plan = self._plan(path, header, layout)
        names = [f"c{i}" for i in range(len(header))]
        gz = path.name.lower().endswith(".gz")
        check_cut = not gz and layout.require_final_newline
        # invalid records of the block being parsed: (record number in the file, text, fields)
        invalid: list[tuple[int, str, int]] = []
        offset = [0]  # added to pyarrow's record numbers, which restart with each block

        def on_invalid(row) -> str:
            num = int(row.number) + offset[0] if row.number is not None else -1
            invalid.append((num, row.text, row.actual_columns))
            return "skip"

        parse_opts = pacsv.ParseOptions(
            delimiter=layout.delimiter, invalid_row_handler=on_invalid, ignore_empty_lines=False
        )
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.binary()), check_utf8=False, strings_can_be_null=False
        )
        state = {"extra": 0, "records": header_line, "data": 0}  # records: the last one consumed
        first = True

        def malformed(num: int, text: str, actual: int, line: int | None = None) -> dict:
            return _problem(
                source,
                line if line is not None else num + state["extra"],
                RejectReason.MALFORMED_FILE,
                f"line has {actual} fields; the header (line {header_line}) has {len(header)}",
                next(csv.reader([text], delimiter=layout.delimiter), [text]),
            )

        def leaf(rb, block_invalid: list, last_of_block: bool, cut_last: bool) -> RawBatch | None:
            """One parsed batch as a raw batch (its malformed records and, for the first, the file's
            problems and warnings riding on it); None when it holds nothing at all."""
            nonlocal first
            n = rb.num_rows
            inv_nums = np.array([x[0] for x in block_invalid], dtype=np.int64)
            # record numbers of the good rows: consecutive after the last one, skipping invalid ones
            base = state["records"] + 1 + np.arange(n, dtype=np.int64)
            shift = np.searchsorted(inv_nums - np.arange(len(inv_nums)), base, side="right")
            records = base + shift
            cols: list = []
            bad_rows: dict = {}
            extra_nl = np.zeros(n, dtype=np.int64)
            for j in range(rb.num_columns):
                col = rb.column(j)
                try:
                    scol = col.cast(pa.large_string())  # what pandas keeps: no second copy
                except pa.ArrowInvalid:
                    fixed = []
                    for i, v in enumerate(col.to_pylist()):
                        try:
                            fixed.append(v.decode("utf-8"))
                        except UnicodeDecodeError as exc:
                            bad_rows.setdefault(
                                i,
                                f"byte 0x{v[exc.start]:02x} at position {exc.start + 1} is not UTF-8; "
                                "save the file as UTF-8",
                            )
                            fixed.append(v.decode("utf-8", errors="replace"))
                    scol = pa.array(fixed, type=pa.large_string())
                nl = pacsv_count_newlines(scol)
                if nl is not None:
                    extra_nl += nl
                cols.append(scol)
            upto = None if last_of_block else (int(records[-1]) if n else None)
            mine = [x for x in block_invalid if upto is None or x[0] <= upto]
            del block_invalid[: len(mine)]
            # physical lines: a record's number plus the line breaks inside the quoted values of every
            # record before it (good or malformed)
            rec_all = np.concatenate([records, np.array([x[0] for x in mine], dtype=np.int64)])
            nl_all = np.concatenate([extra_nl, np.array([x[1].count("\n") for x in mine], dtype=np.int64)])
            order = np.argsort(rec_all, kind="stable")
            before = np.empty_like(nl_all)
            before[order] = np.cumsum(nl_all[order]) - nl_all[order]
            lines = records + state["extra"] + before[:n]
            inv_lines = rec_all[n:] + state["extra"] + before[n:]
            blank = np.ones(n, dtype=bool)
            for c in cols:
                blank &= np.asarray(pc.equal(pc.binary_length(c), 0).to_numpy(zero_copy_only=False))
            chunk_problems = [
                malformed(num, text, actual, int(ln))
                for (num, text, actual), ln in zip(mine, inv_lines, strict=True)
            ]
            keep = ~blank
            for i, why in bad_rows.items():
                keep[i] = False
                chunk_problems.append(
                    _problem(
                        source, int(lines[i]), RejectReason.MALFORMED_FILE, why, [c[i].as_py() for c in cols]
                    )
                )
            last_invalid = mine[-1][0] if mine else -1
            if cut_last and n and keep[n - 1] and int(records[n - 1]) > last_invalid:
                # the file's last line has no line break: it may have been cut mid-copy
                cut = int(lines[n - 1])
                keep[n - 1] = False
                chunk_problems.append(
                    _problem(
                        source,
                        cut,
                        RejectReason.MALFORMED_FILE,
                        f"line {cut} does not end with a line break: the file may have been cut while it was "
                        "copied, so its last value may be incomplete; re-export the file (or, if the line is "
                        f"complete, end it with a newline; require_final_newline: false for source "
                        f"'{layout.name}')",
                        [c[n - 1].as_py() for c in cols],
                    )
                )
            state["records"] = max(state["records"], int(records[-1]) if n else -1, last_invalid)
            state["data"] += n - int(blank.sum()) + len(mine)  # records that are not blank lines
            state["extra"] += int(nl_all.sum())
            idx = np.flatnonzero(keep)
            series = [pd.Series(pd.array(c, dtype="str")) for c in cols]
            if len(idx) != n:
                series = [s.iloc[idx].reset_index(drop=True) for s in series]
            recs = ([*problems, *plan.problems] if first else []) + chunk_problems
            if not len(idx) and not recs and not (first and plan.warnings):
                return None
            batch = RawBatch(
                self._frame(series, plan, len(idx)),
                source,
                lines[idx],
                _problems_frame(recs),
                tz,
                layout=layout,
                warnings=tuple(plan.warnings) if first else (),
            )
            first = False
            return batch

        def parse(block, skip: int):
            return pacsv.read_csv(
                pa.py_buffer(block),
                read_options=pacsv.ReadOptions(
                    block_size=len(block) + 1, use_threads=False, skip_rows=skip, column_names=names
                ),
                parse_options=parse_opts,
                convert_options=convert,
            )

        yielded = False
        first_block = True
        try:
            for block, last in _record_blocks(path, gz, self.block_bytes):
                skip = header_line if first_block else 0
                first_block = False
                # the block's records follow the last one consumed; pyarrow counts the rows it skips
                offset[0] = state["records"] - skip
                table = parse(block, skip)
                del block
                batches = table.to_batches()
                if not batches:  # every record of the block was malformed: an empty batch carries them
                    batches = [
                        pa.record_batch([pa.array([], f.type) for f in table.schema], schema=table.schema)
                    ]
                del table
                for k, rb in enumerate(batches):
                    end = k == len(batches) - 1
                    batch = leaf(rb, invalid, end, check_cut and last and end)
                    batches[k] = None
                    del rb
                    # only ``batch`` (its frame shares the string arrays) outlives this step
                    release_arrow_memory()
                    if batch is not None:
                        yielded = True
                        yield batch
                    del batch
        except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as exc:
            rec = _problem(
                source,
                None,
                RejectReason.MALFORMED_FILE,
                f"could not read the file after line {state['records'] + state['extra']}: {exc}; "
                "the rows before it were read",
            )
            yield _problems_only(source, [rec], tz, layout)
            return
        if not state["data"]:
            empty = _problem(source, None, RejectReason.EMPTY_FILE, "file has a header but no data rows")
            if yielded:  # only notes (warnings) went before
                yield _problems_only(source, [empty], tz, layout)
            else:
                yield self._no_rows(source, len(header), plan, [*problems, *plan.problems, empty], tz, layout)

    # --- placement --------------------------------------------------------------------------------------
    def _place(self, batch: RawBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(symbol, ts_us, placed)`` per row of a leaf batch (only symbol and timestamp are parsed)."""
        frame = batch.frame
        n = len(frame)
        cols = list(frame.columns)
        if n and cols.count("symbol") == 1 and cols.count("timestamp") == 1:
            from qt_pipeline.market.calendars import get_calendar

            lay = batch.layout
            sym, malformed = normalize_symbols(frame["symbol"])
            pts = parse_timestamps(
                frame["timestamp"],
                batch.timezone,
                timestamp_format=lay.timestamp.format if lay is not None else None,
                calendar=get_calendar(lay.calendar) if lay is not None and lay.calendar else None,
            )
            placed = ~malformed.to_numpy() & pts.utc.notna().to_numpy()
            symbol = np.array(sym.to_numpy(dtype=object), dtype=object, copy=True)
            symbol[~placed] = None
            ts_us = np.where(placed, np.asarray(pts.utc.array.asi8, dtype=np.int64), 0)
            return symbol, ts_us, placed
        return np.full(n, None, dtype=object), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)

    @staticmethod
    def _partition_counts(symbol: np.ndarray, ts_us: np.ndarray, placed: np.ndarray) -> pd.DataFrame:
        if not placed.any():
            return pd.DataFrame(
                {"symbol": pd.Series([], dtype="str"), "day": [], "rows": pd.Series([], dtype="int64")}
            )
        day = pd.to_datetime(ts_us[placed] // 86_400_000_000 * 86_400, unit="s").date
        return (
            pd.DataFrame({"symbol": symbol[placed].astype(str), "day": day})
            .groupby(["symbol", "day"], sort=True)
            .size()
            .rename("rows")
            .reset_index()
        )

    def _stage_path(self, lf: LandingFile) -> Path:
        """The staging file of ``lf``: keyed by its path, its content and how it is read (layout, zone)."""
        spec = repr((_STAGE_VERSION, str(lf.path), self.layout_for(lf.path), self.timezone))
        key = hashlib.sha256(spec.encode()).hexdigest()[:24]
        folder = hashlib.sha256(str(lf.path).encode()).hexdigest()[:16]
        return self.staging_dir / folder / f"{lf.fingerprint[:32]}-{key}.staged"

    def _load(self, lf: LandingFile) -> _Loaded:
        """Placement of every row of a file, read once, chunk by chunk. Kept: the partition counts, home
        and file-level problems; for a file of at most one chunk its rows and placement (while the cache's
        byte budget allows); for a larger file its rows and placement are written to a staging Parquet
        file on the way, so each partition fetch reads only its own rows (row groups pruned by symbol
        and time) instead of parsing the file again. A staging file written by another process (another
        partition run) is reused: its summary is stored next to it."""
        key = (str(lf.path), lf.fingerprint)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        stage = self._stage_path(lf) if self.staging and lf.size > self.keep_bytes else None
        if stage is not None:
            loaded = self._read_stage(lf, stage)
            if loaded is None:
                loaded = self._scan_file(lf, stage)
        else:
            loaded = self._scan_file(lf, None)
        self._remember(key, loaded)
        return loaded

    def _remember(self, key: tuple[str, str], loaded: _Loaded) -> None:
        """Cache ``loaded``; rows kept for small files are bounded by bytes (1/8 chunk of input in all),
        placement summaries by count."""
        self._cache[key] = loaded
        kept = 0
        for k in reversed(self._cache):
            ld = self._cache[k]
            if ld.leaves is not None:
                kept += ld.file.size
                if kept > self.keep_bytes and k != key:
                    ld.leaves = None  # streamed again (one chunk) if a fetch needs it
        while len(self._cache) > _CACHE_FILES:
            self._cache.popitem(last=False)

    def _scan_file(self, lf: LandingFile, stage: Path | None) -> _Loaded:
        """One pass over the file: placement of every row (and, with ``stage``, the staging file)."""
        import os

        keep: list[tuple[RawBatch, np.ndarray, np.ndarray, np.ndarray]] | None = (
            [] if lf.size <= self.keep_bytes else None
        )
        counts, problems, rows, unplaced = [], [], 0, 0
        warnings: dict[str, None] = {}
        layout, tz = None, self.timezone
        group: list = []  # staged blocks not yet written (one row group)
        writer = (
            _StageWriter(stage.with_name(f"{stage.name}.{os.getpid()}.tmp")) if stage is not None else None
        )
        try:
            for chunk in self.iter_chunks(lf.path):
                symbol, ts_us, placed = self._place(chunk)
                layout, tz = chunk.layout, chunk.timezone
                warnings.update(dict.fromkeys(chunk.warnings))
                if keep is not None:
                    keep.append((chunk, symbol, ts_us, placed))
                if writer is not None and len(chunk.frame):
                    table = self._stage_table(chunk, symbol, ts_us, placed)
                    if table is None:
                        writer.discard()  # this file cannot be staged: fetches stream it
                        writer = None
                    else:
                        # blocks are gathered into row groups of about an eighth of a chunk
                        group.append(table)
                        if sum(t.nbytes for t in group) >= self.chunk_bytes // 8:
                            writer = writer.write(group)
                        del table
                counts.append(self._partition_counts(symbol, ts_us, placed))
                if len(counts) >= 64:  # folded as it goes: one row per partition, not one frame per block
                    counts = [self._sum_counts(counts)]
                if len(chunk.problems):
                    problems.append(chunk.problems)
                rows += len(chunk.frame)
                unplaced += int((~placed).sum())
                del chunk, symbol, ts_us, placed
                release_arrow_memory()
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        if group and writer is not None:
            writer = writer.write(group)
        parts = self._sum_counts(counts)
        home = (parts["symbol"].iat[0], parts["day"].iat[0]) if len(parts) else None
        probs = to_canonical_rejects(pd.concat(problems, ignore_index=True)) if problems else empty_rejects()
        loaded = _Loaded(lf, keep, home, parts, rows, probs, unplaced, None, tuple(warnings), layout, tz)
        if writer is not None and writer.parts and stage is not None:
            summary = {k: getattr(loaded, k) for k in ("home", "partitions", "rows", "problems", "unplaced")}
            summary.update(warnings=loaded.warnings, timezone=tz)
            writer.finish(stage)
            meta_tmp = writer.tmp.with_suffix(".meta.tmp")
            pd.to_pickle(summary, meta_tmp)
            os.replace(meta_tmp, stage.with_suffix(".meta.pkl"))
            for old in stage.parent.glob("*"):  # earlier versions of the file
                if not old.name.startswith(stage.stem) and not old.name.endswith(".tmp"):
                    _remove(old)
            loaded.stage = stage
        elif writer is not None:
            writer.discard()
        return loaded

    def _sum_counts(self, counts: list[pd.DataFrame]) -> pd.DataFrame:
        counts = [c for c in counts if len(c)]
        if not counts:
            return self._partition_counts(np.array([]), np.array([]), np.zeros(0, dtype=bool))
        return pd.concat(counts).groupby(["symbol", "day"], sort=True)["rows"].sum().reset_index()

    @staticmethod
    def _stage_table(chunk: RawBatch, symbol, ts_us, placed):
        """``chunk``'s rows with their placement as a table to stage; None if they cannot be staged (two
        file columns mapped to one name)."""
        import pyarrow as pa

        frame = chunk.frame
        if frame.columns.duplicated().any():
            return None
        table = pa.Table.from_pandas(frame, preserve_index=False)
        return (
            table.append_column("_line", pa.array(chunk.line_numbers, type=pa.int64()))
            .append_column("_sym", pa.array(symbol, type=pa.string()))
            .append_column("_ts", pa.array(ts_us, type=pa.int64()))
            .append_column("_placed", pa.array(placed, type=pa.bool_()))
        )

    def _read_stage(self, lf: LandingFile, stage: Path) -> _Loaded | None:
        """The summary of a file staged earlier (by this or another process), or None."""
        meta = stage.with_suffix(".meta.pkl")
        if not (stage.is_dir() and meta.is_file()):
            return None
        try:
            m = pd.read_pickle(meta)
        except Exception:  # noqa: BLE001 - a torn or foreign file: stage again
            return None
        return _Loaded(
            lf,
            None,
            m["home"],
            m["partitions"],
            m["rows"],
            m["problems"],
            m["unplaced"],
            stage,
            tuple(m["warnings"]),
            self.layout_for(lf.path),
            m["timezone"],
        )

    def _fetch_staged(self, ld: _Loaded, symbol: str, lo: int, hi: int, is_home: bool) -> RawBatch | None:
        """The rows of ``symbol`` in ``[lo, hi)`` µs (plus, for the home partition, the unplaced rows and
        the file's problems) from the staging file: only row groups that can hold them are read."""
        import pyarrow.dataset as ds

        assert ld.stage is not None
        want = (ds.field("_sym") == symbol) & (ds.field("_ts") >= lo) & (ds.field("_ts") < hi)
        if is_home:
            want = want | ~ds.field("_placed")
        table = ds.dataset(ld.stage, format="parquet").to_table(filter=want, use_threads=False)
        if not table.num_rows and not is_home:
            return None
        table = table.sort_by("_line")
        lines = table.column("_line").to_numpy()
        frame = table.drop_columns(["_line", "_sym", "_ts", "_placed"]).to_pandas()
        return RawBatch(
            frame,
            str(ld.file.path),
            lines,
            ld.problems if is_home else empty_rejects(),
            ld.timezone,
            layout=ld.layout,
            warnings=ld.warnings if is_home else (),
        )

    def inspect(self, path: str | Path) -> FileInspection:
        """Partitions and problems of one file (cheap: parses only symbol and timestamp for placement).
        A file with no placeable row is validated whole (in chunks) so all its rejects are returned."""
        lf = self._stat(Path(path))
        ld = self._load(lf)
        problems = ld.problems
        if ld.home is None and ld.rows:
            from qt_pipeline.market.sources import validate_batch

            parts = [problems] if len(problems) else []
            for chunk in self.iter_chunks(lf.path):
                res = validate_batch(replace(chunk, problems=empty_rejects()))
                if len(res.rejected):
                    parts.append(res.rejected)
            problems = to_canonical_rejects(pd.concat(parts, ignore_index=True)) if parts else empty_rejects()
        return FileInspection(
            path=lf.path,
            fingerprint=lf.fingerprint,
            rows=ld.rows,
            partitions=ld.partitions.copy(),
            problems=problems,
            unplaced_rows=ld.unplaced,
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
            is_home = False
            if ld.home is not None and ld.home[0] == symbol:
                home_start = pd.Timestamp(ld.home[1], tz="UTC")
                is_home = start_ts <= home_start < end_ts
            p = ld.partitions
            touches = (
                bool(
                    (
                        (p["symbol"] == symbol)
                        & (p["day"] >= (start_ts - pd.Timedelta(days=1)).date())
                        & (p["day"] <= end_ts.date())
                    ).any()
                )
                if len(p)
                else False
            )
            if not touches and not is_home:
                continue
            if ld.stage is not None and ld.stage.is_dir():
                got = self._fetch_staged(ld, symbol, lo, hi, is_home)
                if got is not None:
                    parts.append(got)
                continue
            leaves: Iterable[tuple[RawBatch, np.ndarray, np.ndarray, np.ndarray]] = (
                ld.leaves
                if ld.leaves is not None
                else ((c, *self._place(c)) for c in self.iter_chunks(lf.path))
            )
            for b, sym_, ts_, placed_ in leaves:
                sel = placed_ & (sym_ == symbol) & (ts_ >= lo) & (ts_ < hi)
                if is_home:
                    sel = sel | ~placed_
                if not sel.any() and not (is_home and len(b.problems)):
                    continue
                idx = np.flatnonzero(sel)
                parts.extend(self._select(b, idx, is_home))
        label = f"landing:{self.directory}"
        if not parts:
            return RawBatch(_empty_raw_frame(), label, np.array([], dtype=np.int64), timezone=self.timezone)
        return RawBatch.combine(label, parts, timezone=self.timezone)

    @staticmethod
    def _select(b: RawBatch, idx: np.ndarray, is_home: bool) -> list[RawBatch]:
        """The rows ``idx`` (positions in ``b.frame``) of ``b`` as leaves (``b`` may be composite)."""
        out = []
        offset = 0
        for leaf in b.leaves():
            n = len(leaf.frame)
            mine = idx[(idx >= offset) & (idx < offset + n)] - offset
            offset += n
            if not len(mine) and not (is_home and len(leaf.problems)):
                continue
            out.append(
                replace(
                    leaf,
                    frame=leaf.frame.iloc[mine].reset_index(drop=True),
                    line_numbers=leaf.line_numbers[mine] if leaf.line_numbers is not None else mine,
                    problems=leaf.problems if is_home else empty_rejects(),
                    warnings=leaf.warnings if is_home else (),
                )
            )
        return out

    def partitions(self) -> pd.DataFrame:
        """All (symbol, day) partitions present in the landing directory with their row counts."""
        frames = [self._load(lf).partitions for lf in self.scan()]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(
                {"symbol": pd.Series([], dtype="str"), "day": [], "rows": pd.Series([], dtype="int64")}
            )
        return pd.concat(frames).groupby(["symbol", "day"], sort=True)["rows"].sum().reset_index()
