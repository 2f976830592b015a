"""The backtester's per-process indicator cache: reuse across generations never changes a bit, never
mixes datasets, and stays within its memory budget."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from qt_pipeline.evolution import Costs, random_population, repair
from qt_pipeline.evolution import series_cache as sc
from qt_pipeline.evolution.backtest import evaluate_population, release_workspace, simulate

from . import MINUTES_PER_YEAR, synthetic_market

PPY = MINUTES_PER_YEAR
COSTS = Costs(fee_bps=2.0, slippage_bps=1.0)


@pytest.fixture(autouse=True)
def fresh_workspace():
    release_workspace()
    yield
    release_workspace()


def _pop(seed: int, n: int = 40) -> np.ndarray:
    return repair(random_population(np.random.default_rng(seed), n))


def _fresh(pop, data, **kw) -> np.ndarray:
    """Metrics computed with an empty cache (what the first generation of a process sees)."""
    release_workspace()
    out = evaluate_population(pop, data, COSTS, PPY, **kw)
    release_workspace()
    return out


def test_later_generations_reuse_series_and_get_identical_metrics():
    data = synthetic_market(2500, seed=3)
    a, b = _pop(1), _pop(2)
    want_a, want_b = _fresh(a, data), _fresh(b, data)
    got_a = evaluate_population(a, data, COSTS, PPY)
    computed_after_a = sc.stats()["computed"]
    got_b = evaluate_population(b, data, COSTS, PPY)
    again_a = evaluate_population(a, data, COSTS, PPY)
    st = sc.stats()
    assert got_a.tobytes() == want_a.tobytes()
    assert got_b.tobytes() == want_b.tobytes()
    assert again_a.tobytes() == want_a.tobytes()
    assert computed_after_a > 0 and st["reused"] > 0
    assert st["computed"] < 2 * computed_after_a  # b shares series with a; a again computes nothing new
    assert st["datasets"] == 1 and st["resident_bytes"] > 0
    # and each row is exactly what a single-strategy simulation (no cache at all) gives
    for i in (0, 7, 19):
        assert simulate(a[i], data, COSTS, PPY).metrics.tobytes() == again_a[i].tobytes()


def test_datasets_of_the_same_length_never_share_series():
    d1, d2 = synthetic_market(2000, seed=4), synthetic_market(2000, seed=5)
    pop = _pop(3)
    want1, want2 = _fresh(pop, d1), _fresh(pop, d2)
    assert want1.tobytes() != want2.tobytes()
    got1 = evaluate_population(pop, d1, COSTS, PPY)
    got2 = evaluate_population(pop, d2, COSTS, PPY)
    assert got1.tobytes() == want1.tobytes() and got2.tobytes() == want2.tobytes()
    assert sc.stats()["datasets"] == 2
    # the same values in new arrays are the same dataset (keyed by content, not identity)
    clone = synthetic_market(2000, seed=4)
    assert evaluate_population(pop, clone, COSTS, PPY).tobytes() == want1.tobytes()
    assert sc.stats()["datasets"] == 2


def test_a_small_budget_evicts_and_recomputes_without_changing_a_bit():
    data = synthetic_market(1500, seed=6)
    pop = _pop(4, 60)
    want = _fresh(pop, data)
    # 1 byte -> the minimum of 8 rows: the population is split into many chunks that evict each other
    small = evaluate_population(pop, data, COSTS, PPY, bank_budget_bytes=1)
    assert small.tobytes() == want.tobytes()
    cache, _ = sc.cache_for(sc.fingerprint(data.high, data.low, data.close), len(data), 1)
    assert cache.high_water == sc.MIN_ROWS and cache.computed > sc.MIN_ROWS  # rows were reused for others
    # a later call with the default budget grows the same cache and still agrees
    assert evaluate_population(pop, data, COSTS, PPY).tobytes() == want.tobytes()


def test_the_workspace_budget_caps_resident_memory(monkeypatch):
    d1, d2 = synthetic_market(3000, seed=7), synthetic_market(3000, seed=8)
    pop = _pop(5, 60)
    want1, want2 = _fresh(pop, d1), _fresh(pop, d2)
    row_bytes = 3000 * 8
    monkeypatch.setattr(sc, "WORKSPACE_BUDGET_BYTES", 30 * row_bytes)
    assert evaluate_population(pop, d1, COSTS, PPY).tobytes() == want1.tobytes()
    assert evaluate_population(pop, d2, COSTS, PPY).tobytes() == want2.tobytes()
    assert evaluate_population(pop, d1, COSTS, PPY).tobytes() == want1.tobytes()
    # the least recently used dataset is dropped to make room: resident memory stays within the budget
    assert sc.stats()["resident_bytes"] <= 30 * row_bytes + sc.MIN_ROWS * row_bytes


def test_many_datasets_cycle_through_the_budget_without_starving_or_changing_a_bit(monkeypatch):
    """A study over many symbols: each dataset gets its share of rows (older datasets are dropped) and
    resident memory never exceeds the workspace, whatever the number of datasets."""
    n = 2000
    datas = [synthetic_market(n, seed=20 + i) for i in range(6)]
    pop = _pop(7, 50)
    want = [_fresh(pop, d) for d in datas]
    row_bytes = n * 8
    monkeypatch.setattr(sc, "WORKSPACE_BUDGET_BYTES", 80 * row_bytes)
    peak = 0
    for _ in range(2):  # two generations
        for d, w in zip(datas, want, strict=True):
            assert evaluate_population(pop, d, COSTS, PPY).tobytes() == w.tobytes()
            st = sc.stats()
            peak = max(peak, st["resident_bytes"])
            # the dataset in use has its share (half the workspace), not the minimum left over by others
            cache, allowed = sc.cache_for(sc.fingerprint(d.high, d.low, d.close), n)
            assert allowed == 40
    assert peak <= 80 * row_bytes
    assert sc.stats()["datasets"] < len(datas)


def test_the_memory_budget_comes_from_the_environment_or_the_run(monkeypatch):
    monkeypatch.setattr(sc, "_memory_mb", None)
    monkeypatch.delenv(sc.MEMORY_ENV, raising=False)
    assert sc.memory_budget_bytes() == sc.DEFAULT_MEMORY_MB * 2**20
    monkeypatch.setenv(sc.MEMORY_ENV, "512")
    assert sc.memory_budget_bytes() == 512 * 2**20
    assert sc.workspace_budget_bytes() == 384 * 2**20 and sc.port_budget_bytes() == 128 * 2**20
    sc.set_memory_budget_mb(256)  # the run's config wins over the environment
    assert sc.memory_budget_bytes() == 256 * 2**20
    sc.set_memory_budget_mb(None)
    monkeypatch.setenv(sc.MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match="QT_EVOLUTION_MEMORY_MB='lots' is not a whole number"):
        sc.memory_budget_bytes()
    with pytest.raises(ValueError, match=">= 16"):
        sc.set_memory_budget_mb(1)


def test_threads_have_their_own_caches():
    data = synthetic_market(2000, seed=9)
    pops = [_pop(10 + i) for i in range(4)]
    want = [_fresh(p, data) for p in pops]
    got: dict[int, bytes] = {}

    def work(i: int) -> None:
        for _ in range(3):
            got[i] = evaluate_population(pops[i], data, COSTS, PPY, parallel=i % 2 == 0).tobytes()
        release_workspace()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(4)] == [w.tobytes() for w in want]


def test_grouping_fits_the_budget_covers_every_strategy_and_shares_few_series():
    from qt_pipeline.evolution import backtest as B
    from qt_pipeline.evolution.genome import decode

    pop = _pop(7, 200)
    needs = [B._strategy_needs(decode(v))[0] for v in pop]
    distinct = {k for n in needs for k in n}
    limit = len(distinct) * 2 // 3  # the series do not all fit: the population is cut into chunks
    chunks = sc.group_by_budget(needs, limit)
    assert sorted(i for idx, _ in chunks for i in idx) == list(range(len(pop)))
    for idx, keys in chunks:
        assert idx and len(keys) <= limit and len(set(keys)) == len(keys)
        assert {k for i in idx for k in needs[i]} == set(keys)  # exactly the series its strategies read
    loads = sum(len(keys) for _, keys in chunks)

    # what taking the strategies in sorted order of their series gives (the grouping before)
    sorted_loads, keys_ = 0, set()
    for i in sorted(range(len(needs)), key=lambda i: sorted(needs[i])):
        new = set(needs[i]) - keys_
        if keys_ and len(keys_) + len(new) > limit:
            sorted_loads += len(keys_)
            keys_ = set()
        keys_ |= set(needs[i])
    sorted_loads += len(keys_)
    assert len(distinct) <= loads < sorted_loads
    # evaluated with that budget the result is the same bits as with room for every series
    data = synthetic_market(1500, seed=5)
    want = _fresh(pop, data)
    assert _fresh(pop, data, bank_budget_bytes=limit * 8 * 1500).tobytes() == want.tobytes()


def test_rows_asked_for_again_later_are_evicted_last():
    cache = sc.SeriesCache(10, 8)
    computed: list[tuple[str, int]] = []

    def compute(key, row):
        computed.append(key)
        row[:] = key[1]

    first = [("sma", p) for p in range(8)]
    cache.ensure(first, compute, 8)
    # two new series; ("sma", 0) and ("sma", 1) are least recently used but needed again soon
    rows = cache.ensure([("ema", 1), ("ema", 2)], compute, 8, later=[("sma", 0), ("sma", 1)])
    assert set(cache.rows) == {*first[:2], *first[4:], ("ema", 1), ("ema", 2)}
    assert cache.buf[rows[("ema", 2)]][0] == 2.0
    computed.clear()
    cache.ensure(first[:2], compute, 8)
    assert computed == []  # kept
    # when every other row is wanted, a 'later' row still makes room rather than failing
    cache.ensure([*first[4:], ("ema", 1), ("ema", 2), ("rsi", 3)], compute, 8, later=first[:2])
    assert ("rsi", 3) in cache.rows and len(cache.rows) == 8


def test_missing_series_are_computed_on_threads_each_into_its_own_row():
    """``ensure(workers=k)`` computes the missing series on k threads (the indicators release the GIL);
    each lands in its own row, and a failed computation registers none of the call's new rows."""
    import time

    cache = sc.SeriesCache(10, 8)
    threads: set[int] = set()

    def compute(key, row):
        threads.add(threading.get_ident())
        time.sleep(0.02)  # (overlapping calls: more than one thread takes a share)
        row[:] = key[1]

    keys = [("sma", p) for p in range(6)]
    rows = cache.ensure(keys, compute, 8, workers=3)
    assert [cache.buf[rows[k]][0] for k in keys] == [float(p) for p in range(6)]
    assert len(set(rows.values())) == 6 and cache.computed == 6 and len(threads) > 1

    def failing(key, row):
        if key[1] == 12:
            raise ValueError("indicator failed")
        row[:] = key[1]

    with pytest.raises(ValueError, match="indicator failed"):
        cache.ensure([("ema", 11), ("ema", 12), *keys[:2]], failing, 8, workers=2)
    assert set(cache.rows) == set(keys) and cache.computed == 6  # the accepted rows are untouched
    assert [cache.buf[cache.rows[k]][0] for k in keys] == [float(p) for p in range(6)]
    cache.ensure([("rsi", 1), ("rsi", 2)], compute, 8)  # the two rows of the failed call are free again
    assert set(cache.rows) == {*keys, ("rsi", 1), ("rsi", 2)}


def test_a_dropped_dataset_hands_its_buffer_to_the_next_one(monkeypatch):
    """Cycling through more datasets than the workspace holds takes over the buffer of the dataset it
    drops (its pages are resident: no fresh pages to fault in and zero per dataset), also when the lengths
    differ by a bar, and never changes a bit or exceeds the workspace."""
    n = 2000
    datas = [synthetic_market(n - i % 2, seed=40 + i) for i in range(5)]  # 2000 and 1999 bars
    pop = _pop(8, 50)
    want = [_fresh(pop, d) for d in datas]
    row_bytes = n * 8
    monkeypatch.setattr(sc, "WORKSPACE_BUDGET_BYTES", 80 * row_bytes)
    buffers = set()
    for _ in range(2):
        for d, w in zip(datas, want, strict=True):
            assert evaluate_population(pop, d, COSTS, PPY).tobytes() == w.tobytes()
            cache, _ = sc.cache_for(sc.fingerprint(d.high, d.low, d.close), len(d))
            buffers.add(cache.buf.__array_interface__["data"][0])
            assert sc.stats()["resident_bytes"] <= 80 * row_bytes
    # two datasets fit (half the workspace each): 10 datasets in turn share those two buffers
    assert len(buffers) <= 3


def test_a_reserved_workspace_is_faulted_in_ahead_and_taken_by_the_first_dataset(monkeypatch):
    """What a Ray worker does while it starts: the buffer is resident before the first generation, the
    first dataset's cache writes into it (no fresh pages), and the result does not change."""
    import resource

    n = 3000
    data = synthetic_market(n, seed=12)
    pop = _pop(9, 40)
    want = _fresh(pop, data)
    monkeypatch.setattr(sc, "WORKSPACE_BUDGET_BYTES", 64 * 2**20)
    assert sc.reserve(2**40) == 32 * 2**20  # capped at a dataset's share (half the workspace)
    assert sc.stats()["resident_bytes"] == 32 * 2**20  # counted against the workspace while it waits
    reserved = sc._local.reserved.buf
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    assert evaluate_population(pop, data, COSTS, PPY).tobytes() == want.tobytes()
    cache, _ = sc.cache_for(sc.fingerprint(data.high, data.low, data.close), n)
    assert np.shares_memory(cache.buf, reserved)
    # its rows: as many whole rows of n bars as the reserved bytes hold, still counted as resident
    assert sc.stats()["resident_bytes"] == cache.capacity * n * 8 > 32 * 2**20 - n * 8
    assert sc._local.reserved is None
    # writing the series touched no fresh page of the bank (a fresh bank of this size would fault in
    # one page per 4 KiB row segment: several hundred; the kernel's own allocations are a few)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults < cache.high_water * n * 8 // 4096 // 2
    assert sc.reserve(0) == 0 and sc._local.reserved is None
