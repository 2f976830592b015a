"""Durable file writes shared by the file-based parts of storage (shared-FS store, outbox, cold tier).

:func:`atomic_write_parquet` writes to a unique temp file in the target directory, fsyncs it, renames it
over the target and fsyncs the directory: a reader sees the old file or the complete new one, never a
partial file, and a crash leaves at most a ``.<name>.<hex>.tmp`` file behind.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def fsync_dir(directory: Path) -> None:
    """fsync a directory (so a rename in it is durable); a file system that refuses is tolerated."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - some file systems refuse to open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - e.g. some network file systems
        pass
    finally:
        os.close(fd)


def temp_path(final: Path) -> Path:
    """A unique temp name next to ``final``: ``.<name>.<hex>.tmp``."""
    return final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"


def atomic_write_parquet(table: pa.Table, final: Path, *, compression: str = "zstd") -> int:
    """Write ``table`` to ``final`` atomically and durably (temp file + fsync + rename + directory
    fsync); returns the file's size in bytes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression=compression)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)
    return final.stat().st_size


__all__ = ["atomic_write_parquet", "fsync_dir", "temp_path"]
