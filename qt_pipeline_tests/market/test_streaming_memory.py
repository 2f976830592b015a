"""Landing files are read in bounded memory: a file 4x larger, read with the same chunk size, needs no more
memory than the smaller one — memory follows the chunk, not the file.

Each file is validated chunk by chunk (what ``qt validate`` and the benchmark run), placed, and one of its
partitions ingested (what the ``raw_ohlcv`` asset does per partition) in a fresh Python process that reports its peak memory: Arrow's allocation peak (the CSV reader's buffers; pyarrow read up to 32
blocks ahead before, i.e. whole files of up to 32 chunks) plus the peak of Python allocations
(tracemalloc: pandas frames, validation). Not a timing assertion: byte counts. The peak against the chunk
size (RSS, at realistic sizes) is what ``benchmarks/bench_landing.py --memory-only`` prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CHUNK_MB = 1.0
CHILD = r"""
import json, sys, tracemalloc
from pathlib import Path
import pandas as pd
import pyarrow as pa
from qt_pipeline.market.filecheck import check_file
from qt_pipeline.market.sources.landing import LandingDirectorySource

path, warm, chunk_mb = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
src = LandingDirectorySource(path.parent, chunk_mb=chunk_mb)
now = pd.Timestamp("2030-01-01", tz="UTC")
check_file(src, warm, interval="1min", now=now)  # first-call costs (imports, caches) are not the file's
pool = pa.default_memory_pool()
arrow_before = pool.max_memory()
tracemalloc.start()
rep = check_file(src, path, interval="1min", now=now)
# the ingestion path too: placement of every row, then one partition (the file's last day) fetched
from qt_pipeline.market.sources import ingest_batches
day = pd.Timestamp(src.partitions()["day"].iloc[-1], tz="UTC")
last_day = len(ingest_batches(src, "BTCUSD", day, day + pd.Timedelta(days=1), interval="1min", now=now).accepted)
py_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"arrow_peak": pool.max_memory(), "arrow_before": arrow_before, "py_peak": py_peak,
                  "accepted": rep.accepted, "chunks": rep.chunks, "rejected": rep.rejected_rows,
                  "last_day": last_day}))
"""


def _write(path: Path, rows: int) -> None:
    t = pd.date_range("2024-01-01", periods=rows, freq="1min", tz="UTC")
    rng = np.random.default_rng(rows)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, rows)))
    open_ = np.concatenate([[100.0], close[:-1]])
    pd.DataFrame(
        {
            "symbol": "BTCUSD",
            "timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": open_.round(4),
            "high": (np.maximum(open_, close) * 1.001).round(4),
            "low": (np.minimum(open_, close) * 0.999).round(4),
            "close": close.round(4),
            "volume": rng.uniform(0.1, 50, rows).round(4),
            "vwap": close.round(4),
            "trade_count": rng.integers(1, 900, rows),
        }
    ).to_csv(path, index=False)


def _measure(paths: dict[str, Path], warm: Path) -> dict[str, dict]:
    """Each file measured in its own fresh process, all at once (the processes share nothing; each reports
    its own peaks)."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(warm), str(CHUNK_MB)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, path in paths.items()
    }
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{err[-3000:]}"
            results[name] = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def test_peak_memory_follows_the_chunk_not_the_file(tmp_path):
    sizes = {"small": 20_000, "large": 80_000}  # ~1.8 MiB and ~7.3 MiB: ~25 and ~100 blocks of 64 KiB
    paths = {}
    for name, rows in sizes.items():
        d = tmp_path / name
        d.mkdir()
        paths[name] = d / "bars.csv"
        _write(paths[name], rows)
    warm = tmp_path / "small" / "warm.csv"
    _write(warm, 500)
    m = _measure(paths, warm)
    for name, rows in sizes.items():  # every row read and accepted: the measurement covers the whole file
        assert m[name]["accepted"] == rows and m[name]["rejected"] == 0, m
        assert 0 < m[name]["last_day"] <= 1440, m
    assert m["large"]["chunks"] >= 3 * m["small"]["chunks"], m
    chunk = CHUNK_MB * 2**20
    peak = {n: max(v["arrow_peak"], v["arrow_before"]) + v["py_peak"] for n, v in m.items()}
    # 4x the file, 4x the blocks: the peak does not grow with the file. The duplicate check keeps runs of
    # consecutive bars (one here), not a key per bar, so nothing per row is left (it was 8 bytes per bar)
    assert abs(peak["large"] - peak["small"]) < chunk / 2, (peak, m)
    # Arrow's buffers (the block being parsed) stay below the chunk: the reader reads nothing ahead
    for v in m.values():
        assert v["arrow_peak"] - v["arrow_before"] < chunk, m
