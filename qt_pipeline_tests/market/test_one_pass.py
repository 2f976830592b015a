"""A landing file larger than one chunk is read once: its first touch splits it into a staging file under
the data directory, and every partition fetch (in this process or in another one, as each Dagster
partition run is) reads only its rows from there — counted with the reader's ``passes`` counter, not
timed. What a fetch returns is the same as streaming the file again (``staging=False``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from qt_pipeline.market.sources import ingest_batches
from qt_pipeline.market.sources.landing import LandingDirectorySource

NOW = pd.Timestamp("2030-01-01", tz="UTC")
DAYS = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")


def _write(path: Path) -> None:
    rows = []
    for sym in ("AAA", "BBB", "CCC"):
        t = pd.date_range(DAYS[0], DAYS[-1] + pd.Timedelta(hours=23), freq="30min")
        close = 100 + np.arange(len(t)) * 0.01
        for ts, c in zip(t, close, strict=True):
            rows.append(
                f"{sym},{ts:%Y-%m-%dT%H:%M:%SZ},{c:.2f},{c + 1:.2f},{c - 1:.2f},{c:.2f},5,{c:.2f},3,x"
            )
    rows[10] = rows[10].replace(",5,", ",-5,")  # negative volume: rejected in its partition
    rows.insert(20, "AAA,2024-01-01T10:00:00Z,1,2")  # wrong field count: a file-level problem
    rows.insert(30, "AAA,not-a-time,1,2,0.5,1,1,1,1,x")  # unplaced: travels with the home partition
    head = "symbol,timestamp,open,high,low,close,volume,vwap,trade_count,note"
    path.write_text(head + "\n" + "\n".join(rows) + "\n")


def _fetch_all(src: LandingDirectorySource) -> dict:
    out = {}
    for sym, day in src.partitions()[["symbol", "day"]].itertuples(index=False):
        start = pd.Timestamp(day, tz="UTC")
        res = ingest_batches(src, sym, start, start + pd.Timedelta(days=1), interval="30min", now=NOW)
        rej = (
            res.rejected.drop(columns=["rejected_at"]).sort_values(["line", "reason"]).reset_index(drop=True)
        )
        out[(sym, day)] = (res.accepted.reset_index(drop=True), list(res.accepted_line), rej, res.warnings)
    return out


def test_every_partition_of_a_large_file_is_served_from_one_pass(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    _write(landing / "bars.csv")
    chunk_mb = 4096 / 2**20  # the smallest chunk: the ~58 KB file is ~15 chunks
    staged = LandingDirectorySource(landing, chunk_mb=chunk_mb, staging_dir=tmp_path / "stage")
    streamed = LandingDirectorySource(landing, chunk_mb=chunk_mb, staging=False)
    got, want = _fetch_all(staged), _fetch_all(streamed)
    assert len(got) == 12  # 3 symbols x 4 days
    assert staged.passes == 1  # placement and all 12 fetches: one read of the file
    assert streamed.passes == 13  # the old way: placement + one read per partition
    assert got.keys() == want.keys()
    for k in want:
        pd.testing.assert_frame_equal(got[k][0], want[k][0])
        assert got[k][1] == want[k][1], k
        pd.testing.assert_frame_equal(got[k][2], want[k][2], check_dtype=False)
        assert set(got[k][3]) == set(want[k][3]), k
    home = got[("AAA", DAYS[0].date())]
    reasons = set(home[2]["reason"])
    assert {"malformed_file", "negative_volume"} <= reasons, reasons  # file-level problem + row reject
    assert home[2]["line"].isin([22, 32]).sum() >= 2  # the bad lines by their physical line numbers
    assert sum(len(v[0]) for v in got.values()) == 3 * (4 * 48 - 1) - 1  # last bar 23:00; one rejected
    assert any("extra column" in w for w in home[3]), home[3]
    # another process (another partition run) reuses the staging file: no read of the landing file
    again = LandingDirectorySource(landing, chunk_mb=chunk_mb, staging_dir=tmp_path / "stage")
    day = DAYS[2]
    res = ingest_batches(again, "BBB", day, day + pd.Timedelta(days=1), interval="30min", now=NOW)
    assert again.passes == 0 and len(res.accepted) == 48


def test_a_changed_file_is_staged_again(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    path = landing / "bars.csv"
    _write(path)
    kw = {"chunk_mb": 4096 / 2**20, "staging_dir": tmp_path / "stage"}
    day = DAYS[1]
    first = ingest_batches(
        LandingDirectorySource(landing, **kw),
        "CCC",
        day,
        day + pd.Timedelta(days=1),
        interval="30min",
        now=NOW,
    )
    assert len(first.accepted) == 48
    text = path.read_text().splitlines()
    path.write_text("\n".join(line for line in text if not line.startswith("CCC,2024-01-02T1")) + "\n")
    src = LandingDirectorySource(landing, **kw)
    res = ingest_batches(src, "CCC", day, day + pd.Timedelta(days=1), interval="30min", now=NOW)
    assert src.passes == 1 and len(res.accepted) == 48 - 20
    staged = [p.name for p in (tmp_path / "stage").rglob("*.parquet")]
    assert len(staged) == 1, staged  # the old version's staging file is gone


STOP_EARLY = r"""
import sys
from pathlib import Path
from qt_pipeline.market.sources.landing import LandingDirectorySource
src = LandingDirectorySource(Path(sys.argv[1]).parent, chunk_mb=4096 / 2**20)
for _ in range(3):
    for chunk in src.iter_chunks(Path(sys.argv[1])):
        break  # a consumer that stops after the first chunk (or fails in it)
print("done")
"""


def test_a_consumer_that_stops_early_does_not_hang(tmp_path):
    """pyarrow's reader, destroyed while its I/O thread waited in the read-ahead gate, waited for that
    thread forever (the gate was closed only after the reader was gone)."""
    import subprocess
    import sys

    _write(tmp_path / "bars.csv")
    out = subprocess.run(
        [sys.executable, "-c", STOP_EARLY, str(tmp_path / "bars.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr


def test_rows_of_small_files_are_kept_up_to_an_eighth_of_a_chunk_of_bytes(tmp_path):
    """Small files' parsed rows stay in memory for their fetches only up to 1/8 chunk of input in all
    (they cost ~4x their size; before: the last 32 files whatever their size); a file whose rows were
    dropped is read again."""
    head = "symbol,timestamp,open,high,low,close,volume,vwap,trade_count"
    for i, sym in enumerate(("AAA", "BBB", "CCC")):
        t = pd.date_range(DAYS[0], periods=60, freq="1min")
        body = [f"{sym},{ts:%Y-%m-%dT%H:%M:%SZ},1,2,0.5,1,1,1,{i}" for ts in t]
        (tmp_path / f"{sym}.csv").write_text(head + "\n" + "\n".join(body) + "\n")
    sizes = [p.stat().st_size for p in sorted(tmp_path.glob("*.csv"))]
    chunk = 8 * 4096
    src = LandingDirectorySource(tmp_path, chunk_mb=chunk / 2**20)
    assert src.keep_bytes == chunk // 8
    assert all(s <= src.keep_bytes < 2 * s for s in sizes), sizes  # each file fits; two exceed the budget
    src.partitions()  # one read per file
    assert src.passes == 3
    kept = [ld.file.path.name for ld in src._cache.values() if ld.leaves is not None]
    assert kept == ["CCC.csv"], kept  # the most recent only: rows bounded by bytes
    for sym in ("AAA", "CCC"):
        res = ingest_batches(src, sym, DAYS[0], DAYS[1], interval="1min", now=NOW)
        assert len(res.accepted) == 60
    assert src.passes == 4  # AAA read again (its rows were dropped), CCC served from memory
