"""The durable outbox: ordering, exact round trip, crash leftovers, stop-at-first-error, one replayer."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.storage.outbox import Outbox
from qt_pipeline_tests.storage.backends import make_bars, make_rejects


def test_batches_round_trip_bit_exact_in_sequence_order(tmp_path):
    ob = Outbox(tmp_path / "ob")
    frames = [make_bars(["AAA"], "2026-01-01", 5, seed=i) for i in range(3)]
    seqs = [ob.append(f).seq for f in frames]
    rj = ob.append(make_rejects(), "rejects")
    assert seqs == [1, 2, 3] and rj.seq == 4
    st = ob.status()
    assert (st.batches, st.rows) == (4, 17)
    seen = []
    res = ob.replay(lambda kind, df: seen.append((kind, df)))
    assert res.complete and res.replayed_batches == 4 and res.batches == [1, 2, 3, 4]
    assert [k for k, _ in seen] == ["bars", "bars", "bars", "rejects"]
    for (_, got), want in zip(seen[:3], frames, strict=True):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        np.testing.assert_array_equal(
            got["close"].to_numpy().view(np.uint64), want["close"].to_numpy().view(np.uint64)
        )
    assert ob.is_empty()
    # numbering continues after a drained outbox (a counter file, not only the newest file name)
    assert ob.append(frames[0]).seq == 5


def test_crash_leftover_temp_file_is_ignored_and_cleaned(tmp_path):
    d = tmp_path / "ob"
    ob = Outbox(d)
    ob.append(make_bars(["AAA"], "2026-01-01", 3))
    (d / ".000000000002.bars.parquet.tmp").write_bytes(b"half a parquet file")
    assert [b.seq for b in ob.list_batches()] == [1]
    Outbox(d)  # a new process starts: leftovers of a crashed append are removed
    assert not (d / ".000000000002.bars.parquet.tmp").exists()


def test_replay_stops_at_first_error_and_keeps_that_batch(tmp_path):
    ob = Outbox(tmp_path / "ob")
    for i in range(4):
        ob.append(make_bars(["AAA"], "2026-01-01", 2, seed=i))
    calls = []

    def apply(kind, df):
        calls.append(len(calls))
        if len(calls) == 3:
            raise ConnectionError("server closed the connection unexpectedly postgresql://u:hunter2@h/db")

    res = ob.replay(apply)
    assert res.replayed_batches == 2 and res.remaining_batches == 2
    assert "hunter2" not in res.error and "batch 3" in res.error
    assert [b.seq for b in ob.list_batches()] == [3, 4]
    res2 = ob.replay(lambda k, df: None)
    assert res2.complete and res2.batches == [3, 4]


def test_only_one_replayer_at_a_time(tmp_path):
    ob = Outbox(tmp_path / "ob")
    ob.append(make_bars(["AAA"], "2026-01-01", 2))
    entered, release = threading.Event(), threading.Event()
    results = {}

    def slow(kind, df):
        entered.set()
        release.wait(10)

    t = threading.Thread(target=lambda: results.setdefault("a", ob.replay(slow)))
    t.start()
    assert entered.wait(10)
    other = Outbox(tmp_path / "ob").replay(lambda k, df: pytest.fail("second replayer must not run"))
    release.set()
    t.join(10)
    assert other.skipped_reason and other.remaining_batches == 1
    assert results["a"].complete


def test_bad_kind_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        Outbox(tmp_path).append(make_bars(), "trades")  # type: ignore[arg-type]
