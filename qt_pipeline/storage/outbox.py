"""The durable outbox of the hybrid store: batches that reached the local cache but not the central store.

Format — one Parquet file per batch, in a directory (default ``$QT_DATA_DIR/outbox``)::

    000000000042.bars.parquet      canonical bar frame
    000000000043.rejects.parquet   canonical reject frame

Why files and not SQLite: a batch is an immutable blob that is written once, read once and deleted, so
"one file per batch" needs no schema, no vacuum and no shared write lock between the writer and the
replayer; Parquet stores the canonical dtypes with float bits exact (so a replayed batch is identical to
the original); and ``ls`` is the operator's view of the backlog.

Durability (survives SIGKILL and power loss): a batch is written to ``.<seq>.<kind>.parquet.tmp``, the
file is fsync'ed, renamed to its final name, and the directory fsync'ed. A reader only ever considers
final names, so a crash leaves either a complete batch or an ignored temp file (cleaned on the next
start). Sequence numbers come from a counter file under an inter-process file lock (``filelock``), so
two processes appending to the same outbox never collide and order is total.

Replay (:meth:`Outbox.replay`) applies batches strictly in sequence order, one at a time, and deletes a
batch file only *after* the central write of that batch committed. A crash mid-replay therefore leaves
the batch being replayed (and all later ones) in place; replaying it again is harmless because central
writes are idempotent upserts on ``(symbol, timestamp)`` — nothing is lost and nothing duplicated.
Replay stops at the first failure (keeping order: a later batch must never overwrite an earlier one
that is still pending). Only one replayer runs at a time (a second one returns immediately).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from qt_pipeline.market.contract import to_canonical, to_canonical_rejects
from qt_pipeline.redaction import redact
from qt_pipeline.storage.files import atomic_write_parquet, fsync_dir

log = logging.getLogger(__name__)

Kind = Literal["bars", "rejects"]
KINDS: tuple[str, ...] = ("bars", "rejects")
_NAME = re.compile(r"^(?P<seq>\d{12})\.(?P<kind>bars|rejects)\.parquet$")


@dataclass(frozen=True)
class OutboxBatch:
    seq: int
    kind: Kind
    path: Path
    rows: int
    bytes: int


@dataclass
class OutboxStatus:
    directory: str
    batches: int
    rows: int
    bytes: int
    oldest_seq: int | None
    newest_seq: int | None
    oldest_age_s: float | None
    last_error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class ReplayResult:
    replayed_batches: int = 0
    replayed_rows: int = 0
    remaining_batches: int = 0
    seconds: float = 0.0
    error: str | None = None
    skipped_reason: str | None = None  # e.g. another replayer holds the lock
    batches: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.error is None and self.skipped_reason is None and self.remaining_batches == 0


class Outbox:
    """A directory of sequence-numbered batch files. Safe for several processes on one machine."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq_lock = FileLock(str(self.directory / ".seq.lock"))
        self._replay_lock_path = str(self.directory / ".replay.lock")
        self._counter = self.directory / ".seq"
        self.last_error: str | None = None
        self._clean_temp_files()

    # --- writing -------------------------------------------------------------------------------------
    def _clean_temp_files(self) -> None:
        for tmp in self.directory.glob(".*.parquet*.tmp"):  # temp files of writes a crash interrupted
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _next_seq(self) -> int:
        """Next sequence number (caller holds the seq lock): max(counter, newest file) + 1."""
        last = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            last = int(self._counter.read_text().strip() or 0)
        batches = self.list_batches(with_rows=False)
        if batches:
            last = max(last, batches[-1].seq)
        seq = last + 1
        tmp = self._counter.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(str(seq))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._counter)
        return seq

    def append(self, frame: pd.DataFrame, kind: Kind = "bars") -> OutboxBatch:
        """Durably add one batch; returns it once it is on disk (fsync'ed, renamed, directory synced)."""
        if kind not in KINDS:
            raise ValueError(f"outbox batch kind must be one of {KINDS}, not {kind!r}")
        canon = to_canonical(frame) if kind == "bars" else to_canonical_rejects(frame)
        table = pa.Table.from_pandas(canon, preserve_index=False)
        with self._seq_lock:
            seq = self._next_seq()
            final = self.directory / f"{seq:012d}.{kind}.parquet"
            size = atomic_write_parquet(table, final)
        return OutboxBatch(seq, kind, final, len(canon), size)

    # --- reading -------------------------------------------------------------------------------------
    def list_batches(self, *, with_rows: bool = True) -> list[OutboxBatch]:
        out = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if not m:
                continue
            try:
                size = p.stat().st_size
                rows = pq.ParquetFile(p).metadata.num_rows if with_rows else 0
            except (FileNotFoundError, OSError):
                continue  # replayed and deleted meanwhile
            out.append(OutboxBatch(int(m["seq"]), m["kind"], p, rows, size))  # type: ignore[arg-type]
        out.sort(key=lambda b: b.seq)
        return out

    def is_empty(self) -> bool:
        return not any(_NAME.match(p.name) for p in self.directory.iterdir())

    def read(self, batch: OutboxBatch) -> pd.DataFrame:
        df = pq.read_table(batch.path).to_pandas()
        return to_canonical(df) if batch.kind == "bars" else to_canonical_rejects(df)

    def status(self) -> OutboxStatus:
        batches = self.list_batches()
        oldest_age = None
        if batches:
            with contextlib.suppress(OSError):
                oldest_age = max(0.0, time.time() - batches[0].path.stat().st_mtime)
        return OutboxStatus(
            directory=str(self.directory),
            batches=len(batches),
            rows=sum(b.rows for b in batches),
            bytes=sum(b.bytes for b in batches),
            oldest_seq=batches[0].seq if batches else None,
            newest_seq=batches[-1].seq if batches else None,
            oldest_age_s=oldest_age,
            last_error=self.last_error,
        )

    def pending_frame(self, kind: Kind = "bars") -> pd.DataFrame:
        """All pending rows of ``kind`` concatenated in sequence order (for inspection/tests)."""
        frames = [self.read(b) for b in self.list_batches(with_rows=False) if b.kind == kind]
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)

    # --- replay --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _replay_lock(self, wait_s: float) -> Iterator[bool]:
        lock = FileLock(self._replay_lock_path)
        try:
            lock.acquire(timeout=wait_s)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def replay(
        self,
        apply: Callable[[Kind, pd.DataFrame], object],
        *,
        max_batches: int | None = None,
        lock_wait_s: float = 0.0,
        on_batch: Callable[[OutboxBatch], None] | None = None,
    ) -> ReplayResult:
        """Apply pending batches in order with ``apply(kind, frame)`` (an idempotent central write) and
        delete each one after ``apply`` returned. Stops at the first error (recorded, not raised)."""
        t0 = time.perf_counter()
        result = ReplayResult()
        with self._replay_lock(lock_wait_s) as got:
            if not got:
                result.skipped_reason = "another process is replaying this outbox"
                result.remaining_batches = len(self.list_batches(with_rows=False))
                return result
            for batch in self.list_batches(with_rows=False):
                if max_batches is not None and result.replayed_batches >= max_batches:
                    break
                try:
                    frame = self.read(batch)
                    apply(batch.kind, frame)
                except Exception as exc:  # stop in order; the batch stays for the next replay
                    result.error = redact(
                        f"batch {batch.seq} ({batch.path.name}): {type(exc).__name__}: {exc}"
                    )
                    self.last_error = result.error
                    log.warning("outbox replay stopped at %s", result.error)
                    break
                batch.path.unlink()  # only after the central write committed
                fsync_dir(self.directory)
                result.replayed_batches += 1
                result.replayed_rows += len(frame)
                result.batches.append(batch.seq)
                if on_batch is not None:
                    on_batch(batch)
            if result.error is None:
                self.last_error = None
            result.remaining_batches = len(self.list_batches(with_rows=False))
        result.seconds = time.perf_counter() - t0
        return result


__all__ = ["KINDS", "Kind", "Outbox", "OutboxBatch", "OutboxStatus", "ReplayResult"]
