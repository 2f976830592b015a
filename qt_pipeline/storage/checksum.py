"""Order-independent checksums of canonical bar frames, computed identically for every backend.

A row's hash covers every canonical column; floats are hashed by their IEEE-754 bits (so 0.1 and
0.1000000000000000055 differ, and the comparison is exact). The checksum of a set of rows is the sum of
row hashes modulo 2**64, so it does not depend on row order or on how a range was split into batches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qt_pipeline.market.contract import BAR_COLUMNS, to_canonical

CHECKSUM_COLUMNS: tuple[str, ...] = ("symbol", "day", "rows", "checksum")


def row_hashes(bars: pd.DataFrame) -> np.ndarray:
    """uint64 hash per row of a canonical frame (all columns, floats by bit pattern)."""
    canon = to_canonical(bars)
    return pd.util.hash_pandas_object(canon[list(BAR_COLUMNS)], index=False).to_numpy(dtype=np.uint64)


def frame_checksum(bars: pd.DataFrame) -> tuple[int, int]:
    """``(rows, checksum)`` of a canonical frame; the checksum is order independent."""
    h = row_hashes(bars)
    return len(h), int(h.sum(dtype=np.uint64)) if len(h) else 0


def symbol_day_checksums(bars: pd.DataFrame) -> pd.DataFrame:
    """One row per (symbol, UTC day): ``symbol, day (date), rows, checksum (uint64 as int)``."""
    if bars.empty:
        return pd.DataFrame(
            {
                "symbol": pd.Series([], dtype="str"),
                "day": pd.Series([], dtype="object"),
                "rows": pd.Series([], dtype="int64"),
                "checksum": pd.Series([], dtype="uint64"),
            }
        )
    canon = to_canonical(bars)
    h = pd.Series(row_hashes(canon), dtype=np.uint64)
    keys = pd.DataFrame({"symbol": canon["symbol"], "day": canon["timestamp"].dt.floor("D").dt.date, "h": h})
    grouped = keys.groupby(["symbol", "day"], sort=True)["h"]
    out = pd.DataFrame(
        {
            "rows": grouped.size(),
            "checksum": grouped.agg(lambda s: s.to_numpy(np.uint64).sum(dtype=np.uint64)),
        }
    )
    out = out.reset_index()
    out["checksum"] = out["checksum"].astype(np.uint64)
    return out[list(CHECKSUM_COLUMNS)]
