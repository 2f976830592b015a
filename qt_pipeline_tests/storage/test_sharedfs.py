"""Shared-FS (Parquet) backend: real concurrent processes, atomic replace, layout, locks, health."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from filelock import FileLock

from qt_pipeline.storage import StorageError, get_storage
from qt_pipeline.storage.sharedfs import SharedFSStore
from qt_pipeline_tests.storage.backends import make_bars
from qt_pipeline_tests.storage.test_contract import assert_same_bars

T0 = pd.Timestamp("2024-01-01", tz="UTC")
MIN = pd.Timedelta("1min")
DAY = pd.Timestamp("2024-01-02", tz="UTC")
SPAWN = mp.get_context("spawn")


# --- process bodies (module level so spawn can import them) -------------------------------------------
def _writer(root: str, frame: pd.DataFrame, batch: int, ready, start, errors) -> None:  # noqa: ANN001
    try:
        store = SharedFSStore(root)
        ready.put("writer")
        start.wait(timeout=120)
        for i in range(0, len(frame), batch):
            store.write_bars(frame.iloc[i : i + batch])
    except BaseException as exc:  # report to the parent instead of dying silently
        errors.put(f"writer: {type(exc).__name__}: {exc}")


def _reader(root: str, symbol: str, day: str, ready, start, stop, results) -> None:  # noqa: ANN001
    counts: list[int] = []
    failures: list[str] = []
    store = SharedFSStore(root)
    path = store.day_file(symbol, pd.Timestamp(day).date())
    ready.put("reader")
    start.wait(timeout=120)
    while not stop.is_set():
        try:
            if path.exists():
                with open(path, "rb") as fh:  # one handle: see sharedfs._read_file
                    n_file = pq.ParquetFile(fh).read().num_rows  # the raw file: must always be complete
                n_store = len(store.read_bars(symbol))  # and through the store
                counts.extend((n_file, n_store))  # in the order they were read
        except Exception as exc:  # noqa: BLE001 - any failure is what the test looks for
            failures.append(f"{type(exc).__name__}: {exc}")
    results.put((counts, failures))


def _run_writers(root: Path, frames: list[pd.DataFrame], batch: int, *, reader_day: str | None = None):
    start = SPAWN.Event()
    stop = SPAWN.Event()
    errors = SPAWN.Queue()
    results = SPAWN.Queue()
    ready = SPAWN.Queue()
    writers = [
        SPAWN.Process(target=_writer, args=(str(root), f, batch, ready, start, errors)) for f in frames
    ]
    reader = None
    if reader_day is not None:
        reader = SPAWN.Process(
            target=_reader, args=(str(root), "AAA", reader_day, ready, start, stop, results)
        )
        reader.start()
    for w in writers:
        w.start()
    for _ in range(len(writers) + (reader is not None)):  # everyone imported and waiting: start together
        ready.get(timeout=120)
    start.set()
    for w in writers:
        w.join(timeout=300)
        assert w.exitcode == 0, f"writer exit code {w.exitcode}"
    stop.set()
    read = None
    if reader is not None:
        read = results.get(timeout=120)
        reader.join(timeout=60)
    errs = []
    while not errors.empty():
        errs.append(errors.get())
    assert not errs, errs
    return read


# --- concurrency -------------------------------------------------------------------------------------
def test_two_processes_different_symbol_days_both_survive(tmp_path: Path):
    root = tmp_path / "shared"
    a = make_bars(["AAA"], T0, 3 * 1440, seed=1, freq="1min").iloc[::6]  # 3 days, 240 rows/day
    b = make_bars(["BBB"], T0, 3 * 1440, seed=2, freq="1min").iloc[::6]
    _run_writers(root, [a, b], batch=60)
    with SharedFSStore(root) as s:
        assert_same_bars(s.read_bars("AAA"), a)
        assert_same_bars(s.read_bars("BBB"), b)
        assert s.list_symbols()["rows"].tolist() == [720, 720]


def test_two_processes_same_symbol_day_union_survives_and_reader_sees_whole_files(tmp_path: Path):
    root = tmp_path / "shared"
    day = make_bars(["AAA"], DAY, 1440, seed=3)  # one symbol-day
    even, odd = day.iloc[0::2], day.iloc[1::2]  # disjoint timestamps, interleaved
    counts, failures = _run_writers(root, [even, odd], batch=24, reader_day="2024-01-02")
    with SharedFSStore(root) as s:
        assert_same_bars(s.read_bars("AAA"), day)  # nothing lost: 60 + 60 read-merge-replace cycles
    assert not failures, failures[:3]
    assert counts, "the reader never saw the file while the writers ran"
    # Rows are only ever added, so every read (raw file or store) sees at least what the previous one saw,
    # and always whole batches — never a partial file.
    assert all(b >= a for a, b in zip(counts, counts[1:], strict=False)), counts[:50]
    assert all(0 < n <= 1440 and n % 24 == 0 for n in counts)


def test_reader_row_count_is_monotone_during_writes(tmp_path: Path):
    root = tmp_path / "shared"
    day = make_bars(["AAA"], DAY, 1440, seed=4)
    counts, failures = _run_writers(root, [day], batch=30, reader_day="2024-01-02")
    assert not failures, failures[:3]
    assert counts
    assert all(b >= a for a, b in zip(counts, counts[1:], strict=False)), counts[:50]
    assert all(n % 30 == 0 for n in counts)
    assert len(set(counts)) > 1  # the reader really overlapped the writes


# --- layout, atomic replace, locks, health -----------------------------------------------------------
def test_layout_compression_and_no_temp_files(tmp_path: Path):
    s = SharedFSStore(tmp_path / "shared")
    bars = make_bars(["BTC/USD"], "2024-01-01 23:59", 2, seed=5)
    s.write_bars(bars)
    d1 = tmp_path / "shared" / "bars" / "symbol=BTC%2FUSD" / "date=2024-01-01" / "part.parquet"
    d2 = tmp_path / "shared" / "bars" / "symbol=BTC%2FUSD" / "date=2024-01-02" / "part.parquet"
    assert d1.exists() and d2.exists()
    meta = pq.ParquetFile(d1).metadata
    assert meta.num_rows == 1 and meta.row_group(0).column(0).compression == "ZSTD"
    assert not list((tmp_path / "shared").rglob("*.tmp"))
    assert_same_bars(s.read_bars("BTC/USD"), bars)
    assert s.list_symbols()["symbol"].tolist() == ["BTC/USD"]


def test_leftover_temp_file_of_crashed_writer_is_ignored(tmp_path: Path):
    s = SharedFSStore(tmp_path / "shared")
    bars = make_bars(["AAA"], DAY, 10, seed=6)
    s.write_bars(bars)
    day_dir = s.day_file("AAA", DAY.date()).parent
    (day_dir / ".part.parquet.deadbeef.tmp").write_bytes(b"PAR1 half a file")
    assert_same_bars(s.read_bars("AAA"), bars)
    more = make_bars(["AAA"], DAY + 10 * MIN, 5, seed=7)
    s.write_bars(more)
    assert_same_bars(s.read_bars("AAA"), pd.concat([bars, more]))


def test_busy_symbol_day_lock_times_out_with_clear_error(tmp_path: Path):
    s = SharedFSStore(tmp_path / "shared", lock_timeout_s=0.2)
    bars = make_bars(["AAA"], DAY, 5, seed=8)
    s.write_bars(bars)
    target = s.day_file("AAA", DAY.date())
    with (
        FileLock(str(target.parent / ".part.parquet.lock")),
        pytest.raises(StorageError, match=r"timed out .* waiting for the lock of .*part\.parquet"),
    ):
        s.write_bars(make_bars(["AAA"], DAY, 5, seed=9))
    assert_same_bars(s.read_bars("AAA"), bars)


def test_unbounded_and_long_ranges_list_days(tmp_path: Path):
    s = SharedFSStore(tmp_path / "shared")
    bars = make_bars(["AAA"], "2023-01-01", 4, seed=10, freq="200D")  # days far apart
    s.write_bars(bars)
    assert_same_bars(s.read_bars("AAA"), bars)
    lo, hi = pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp("2030-01-01", tz="UTC")  # > 400 days
    assert_same_bars(s.read_bars("AAA", lo, hi), bars)
    assert_same_bars(s.read_bars("AAA", bars["timestamp"][1], hi), bars.iloc[1:])


def test_health_reports_unwritable_mount(tmp_path: Path):
    s = SharedFSStore(tmp_path / "shared")
    assert s.health().healthy
    (tmp_path / "shared" / ".health").rmdir()
    (tmp_path / "shared" / ".health").write_text("not a directory")  # probe dir cannot be created
    h = s.health()
    assert not h.healthy
    assert "not writable" in h.message and str(tmp_path / "shared") == h.location


def test_factory_builds_sharedfs_store(settings):
    store = get_storage("sharedfs", settings)
    assert isinstance(store, SharedFSStore)
    assert store.root == settings.resolved_sharedfs_root.resolve()
    store.write_bars(make_bars(["AAA"], T0, 3, seed=11))
    assert store.list_symbols()["rows"].tolist() == [3]


def test_rejects_one_file_per_source_and_long_sources(tmp_path: Path):
    from qt_pipeline_tests.storage.backends import make_rejects

    s = SharedFSStore(tmp_path / "shared")
    long_source = "landing/" + "x" * 300 + ".csv"  # longer than a file name may be
    s.write_rejects(make_rejects("landing/a.csv", [2, None]))
    s.write_rejects(make_rejects(long_source, [7]))
    s.write_rejects(make_rejects("landing/a.csv", [None, 3]))  # merged into the existing file
    files = sorted(p.name for p in (tmp_path / "shared" / "rejects").glob("*.parquet"))
    assert len(files) == 2 and "source=landing%2Fa.csv.parquet" in files
    assert all(len(f) < 255 for f in files)
    assert sorted(s.read_rejects("landing/a.csv")["line"].tolist(), key=str) == sorted([2, 3, pd.NA], key=str)
    assert s.read_rejects(long_source)["source"].tolist() == [long_source]
