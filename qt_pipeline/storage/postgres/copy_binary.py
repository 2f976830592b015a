"""PostgreSQL binary COPY encoding of canonical bar tables, vectorised with NumPy.

Why binary: measured on a 2-core VM (docs/architecture.md, "Speed references"), turning rows into CSV
text dominates a Python → COPY load, and the server then parses that text back. The binary format is fixed-width per field, so a whole batch is laid
out with one NumPy structured array per symbol length (no per-row Python), floats travel as their exact
IEEE-754 bits (no text round trip), and the server does no number parsing.

Format (PostgreSQL docs, "COPY — Binary Format"): an 11-byte signature, int32 flags, int32 header
extension length; per row an int16 field count then, per field, an int32 byte length and the value in
network byte order (``timestamptz``: int64 microseconds since 2000-01-01 UTC; ``float8``/``int8``: 8
bytes); an int16 -1 trailer.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in microseconds since the Unix epoch
_FLOAT_FIELDS = ("open", "high", "low", "close", "volume", "vwap")
COLUMNS = ("symbol", "timestamp", *_FLOAT_FIELDS, "trade_count")
CHUNK_ROWS = 65_536


def _row_dtype(symbol_len: int) -> np.dtype:
    fields: list[tuple[str, str]] = [("nfields", ">i2"), ("symbol_len", ">i4"), ("symbol", f"S{symbol_len}")]
    fields += [("ts_len", ">i4"), ("timestamp", ">i8")]
    for name in _FLOAT_FIELDS:
        fields += [(f"{name}_len", ">i4"), (name, ">f8")]
    fields += [("trade_count_len", ">i4"), ("trade_count", ">i8")]
    return np.dtype(fields)  # packed: no alignment padding


def encode_rows(table: pa.Table) -> bytes:
    """The row section (no signature/trailer) for the rows of ``table`` (columns :data:`COLUMNS`)."""
    n = table.num_rows
    if n == 0:
        return b""
    symbol_bytes = table.column("symbol").cast(pa.binary())
    encoded = np.array(symbol_bytes.to_numpy(zero_copy_only=False), dtype=bytes)
    lengths = pc.binary_length(symbol_bytes).to_numpy()
    ts = table.column("timestamp").cast(pa.timestamp("us", tz="UTC")).to_numpy().view("i8") - _PG_EPOCH_US
    floats = {name: table.column(name).to_numpy() for name in _FLOAT_FIELDS}
    trades = table.column("trade_count").to_numpy()
    parts: list[bytes] = []
    for length in np.unique(lengths):
        idx = np.flatnonzero(lengths == length)
        rows = np.empty(len(idx), dtype=_row_dtype(int(length)))
        rows["nfields"] = len(COLUMNS)
        rows["symbol_len"] = length
        rows["symbol"] = encoded[idx]
        rows["ts_len"] = 8
        rows["timestamp"] = ts[idx]
        for name in _FLOAT_FIELDS:
            rows[f"{name}_len"] = 8
            rows[name] = floats[name][idx]
        rows["trade_count_len"] = 8
        rows["trade_count"] = trades[idx]
        parts.append(rows.tobytes())
    return b"".join(parts)


class BinaryCopyStream:
    """File-like object for psycopg2 ``copy_expert(... WITH (FORMAT binary))``: encodes ``table`` in
    chunks as psycopg2 reads, so a large batch is never held twice in memory."""

    def __init__(self, table: pa.Table, chunk_rows: int = CHUNK_ROWS):
        self._table = table
        self._chunk_rows = chunk_rows
        self._offset = 0
        self._state = "signature"
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        if self._state == "signature":
            self._state = "rows"
            data = SIGNATURE
        elif self._state == "rows" and self._offset < self._table.num_rows:
            data = encode_rows(self._table.slice(self._offset, self._chunk_rows))
            self._offset += self._chunk_rows
        elif self._state == "rows":
            self._state = "done"
            data = TRAILER
        else:
            return b""
        self.bytes += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:  # pragma: no cover - psycopg2 only uses read()
        return self.read(size)

    def close(self) -> None:
        """Nothing to release (kept for symmetry with other COPY sources)."""
