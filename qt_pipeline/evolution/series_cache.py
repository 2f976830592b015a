"""Indicator series kept between evaluations of the same bars (private to the backtester).

A GA evaluates a new population on the *same* bars every generation, and the genome can only ask for a
bounded set of indicator series (8 kinds x a few dozen periods). Computing them once per process and
reusing them across generations removes most of the non-kernel work of an evaluation, and keeping the
rows in one long-lived 2-D buffer avoids the page faults of a fresh multi-hundred-MB bank per call
(measured on a 2-core VM: ~1.4 s per 660 MB of fresh pages against ~0.25 s of indicator arithmetic for
200 genomes x 500k bars).

* One cache per dataset, keyed by a SHA-1 of the bars the indicators read (high, low, close) and their
  length: a different dataset, or the same arrays with changed values, never sees another's series.
* Caches are per thread (concurrent evaluations never share a buffer) and bounded by the evaluation
  memory budget (:func:`memory_budget_bytes`: ``QT_EVOLUTION_MEMORY_MB``, or the evolution config's
  ``memory_budget_mb``; default 2048 MiB per worker). Three quarters of it is the series workspace
  (:func:`workspace_budget_bytes`), one quarter the portfolio equity rows of :mod:`.validation`
  (:func:`port_budget_bytes`). A dataset's buffer holds at most half the workspace (or
  ``budget_bytes`` when a caller gives one); when the rows of every cached dataset would exceed the
  workspace, the least recently used *datasets* are dropped first (a study over many symbols cycles
  through them, so starving the current one would recompute its series per chunk), and only then does
  a cache stop growing and reuse its own least recently used rows.
* A row is an exact copy of what computing the series now would give (indicators are deterministic
  functions of the bars), so results are bit-identical with or without the cache.

:func:`release` drops this thread's caches (evaluators call it when they close).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

MEMORY_ENV = "QT_EVOLUTION_MEMORY_MB"
DEFAULT_MEMORY_MB = 2048  # per worker (process or evaluating thread): series workspace + portfolio rows
WORKSPACE_BUDGET_BYTES: int | None = None  # fixed workspace (tests); None: 3/4 of the memory budget
MIN_ROWS = 8  # a strategy reads at most 5 series (entry 2, exit 2, ATR)
_memory_mb: int | None = None  # set_memory_budget_mb (the run's config) wins over the environment

SeriesKey = tuple[str, int]
ComputeFn = Callable[[SeriesKey, np.ndarray], None]  # (key, out row)

_local = threading.local()


def set_memory_budget_mb(mb: int | None) -> None:
    """Set this process's evaluation memory budget (None: ``QT_EVOLUTION_MEMORY_MB`` or the default)."""
    global _memory_mb
    if mb is not None and (isinstance(mb, bool) or int(mb) != mb or mb < 16):
        raise ValueError(f"evolution memory budget must be a whole number of MiB >= 16, got {mb!r}")
    _memory_mb = None if mb is None else int(mb)


def memory_budget_bytes() -> int:
    """The evaluation memory budget per worker in bytes (see the module docstring)."""
    if _memory_mb is not None:
        return _memory_mb * 2**20
    return env_whole_number(MEMORY_ENV, "MiB", 16, DEFAULT_MEMORY_MB) * 2**20


def env_whole_number(name: str, unit: str, minimum: int, default: int) -> int:
    """The whole number in the environment variable ``name`` (``default`` when unset or blank); anything
    else, or less than ``minimum``, is one clear line naming the variable, the unit and an example."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(f"{name}={raw!r} is not a whole number of {unit} >= {minimum}; set e.g. {name}={default} or unset it")
    return value


def workspace_budget_bytes() -> int:
    """Bytes of indicator series one thread may keep, all datasets together."""
    if WORKSPACE_BUDGET_BYTES is not None:
        return WORKSPACE_BUDGET_BYTES
    return memory_budget_bytes() * 3 // 4


def port_budget_bytes() -> int:
    """Bytes of portfolio equity rows :class:`~.validation.Plan` holds at once."""
    return memory_budget_bytes() // 4


def fingerprint(*arrays: np.ndarray) -> bytes:
    h = hashlib.sha1(usedforsecurity=False)
    for a in arrays:
        h.update(np.int64(a.shape[0]).tobytes())
        h.update(np.ascontiguousarray(a).data)
    return h.digest()


def _allocate(rows: int, n: int) -> np.ndarray:
    """An uninitialised C-contiguous ``(rows, n)`` float64 array. Large ones are anonymous mappings
    advised to use transparent huge pages where the OS offers them: first-touch page faults of a
    660 MB bank drop from ~0.7 s to ~0.15 s on the 2-core VM."""
    nbytes = rows * n * 8
    if nbytes >= 32 * 2**20 and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except (OSError, ValueError):
            return np.empty((rows, n))
        with contextlib.suppress(OSError):  # THP disabled: ordinary pages, still correct
            m.madvise(mmap.MADV_HUGEPAGE)
        return np.frombuffer(m, dtype=np.float64).reshape(rows, n)  # the array keeps the mapping alive
    return np.empty((rows, n))


class _Reserved:
    """A buffer faulted in ahead of use (:func:`reserve`), taken over by the next dataset's cache."""

    def __init__(self, buf: np.ndarray):
        self.buf = buf
        self.resident_bytes = buf.nbytes


class SeriesCache:
    """The series of one dataset: rows of one C-contiguous ``(capacity, n)`` buffer, LRU-evicted."""

    def __init__(self, n: int, capacity: int, recycle: SeriesCache | _Reserved | None = None):
        self.n = n
        self.capacity = max(MIN_ROWS, capacity)
        self.buf: np.ndarray
        self.resident_floor = 0  # bytes of the buffer already resident when it was taken over
        if recycle is not None and recycle.buf.size >= self.capacity * n:
            # the buffer of a dropped dataset or a reserved one: its first pages are resident already (no
            # page faults and no zeroing when rows are written; a study over many symbols cycles through
            # datasets)
            self.buf = recycle.buf.reshape(-1)[: self.capacity * n].reshape(self.capacity, n)
            self.resident_floor = min(recycle.resident_bytes, self.buf.nbytes)
        else:
            # address space only; pages become resident as rows are first written
            self.buf = _allocate(self.capacity, n)
        self.rows: OrderedDict[SeriesKey, int] = OrderedDict()  # key -> row, least recently used first
        self.high_water = 0  # rows ever written (resident memory)
        self.free: list[int] = []  # rows below high_water holding no series (a computation failed)
        self.computed = 0  # series computed (for tests and benchmarks)
        self.reused = 0

    @property
    def resident_bytes(self) -> int:
        return max(self.high_water * self.n * 8, self.resident_floor)

    def allowed_rows(self, spare_bytes: int) -> int:
        """How many rows this cache may use given ``spare_bytes`` of workspace budget left."""
        held = max(self.high_water, self.resident_floor // (8 * self.n))  # rows counted as resident already
        return max(MIN_ROWS, min(self.capacity, held + max(0, spare_bytes) // (8 * self.n)))

    def ensure(
        self,
        keys: Sequence[SeriesKey],
        compute: ComputeFn,
        limit: int,
        later: Iterable[SeriesKey] = (),
        workers: int = 1,
    ) -> dict[SeriesKey, int]:
        """Rows holding every series of ``keys`` (at most ``limit`` distinct keys), computing the
        missing ones into free rows or into the rows of the least recently used keys not asked for;
        keys in ``later`` (asked for again soon, e.g. by the next chunks of the same call) are evicted
        only when no other row is left. ``workers`` > 1 computes the missing series on that many threads
        (``compute`` must release the GIL: the indicators are ``nogil`` Numba functions)."""
        want = list(dict.fromkeys(keys))
        if len(want) > limit:
            raise ValueError(f"{len(want)} series asked for but only {limit} rows allowed")
        wanted = set(want)
        later_set = set(later)
        for k in want:
            if k in self.rows:
                self.rows.move_to_end(k)
        missing = [k for k in want if k not in self.rows]
        self.reused += len(want) - len(missing)
        todo: list[tuple[SeriesKey, int]] = []
        for k in missing:
            if self.free:
                row = self.free.pop()
            elif self.high_water < limit:
                row = self.high_water
                self.high_water += 1
            else:
                victim = next((v for v in self.rows if v not in wanted and v not in later_set), None)
                if victim is None:
                    victim = next((v for v in self.rows if v not in wanted), None)
                if victim is None:  # pragma: no cover - excluded by the limit check above
                    raise RuntimeError("series cache has no evictable row")
                row = self.rows.pop(victim)
            todo.append((k, row))
        try:
            if workers > 1 and len(todo) > 1:
                with ThreadPoolExecutor(min(workers, len(todo))) as pool:
                    list(pool.map(lambda kr: compute(kr[0], self.buf[kr[1]]), todo))
            else:
                for k, row in todo:
                    compute(k, self.buf[row])
        except BaseException:
            self.free.extend(row for _, row in todo)  # none registered half-written; the rows stay usable
            raise
        for k, row in todo:
            self.rows[k] = row
        self.computed += len(todo)
        return {k: self.rows[k] for k in want}


def _caches() -> OrderedDict[bytes, SeriesCache]:
    c = getattr(_local, "caches", None)
    if c is None:
        c = OrderedDict()
        _local.caches = c
    return c


def cache_for(token: bytes, n: int, budget_bytes: int | None = None) -> tuple[SeriesCache, int]:
    """This thread's cache for the dataset ``token`` (``n`` bars) and how many rows it may use now
    (``budget_bytes`` for this dataset; default half the workspace). Least recently used datasets are
    dropped while this one would get fewer rows than its share."""
    workspace = workspace_budget_bytes()
    if budget_bytes is None:
        budget_bytes = workspace // 2
    per_call = max(MIN_ROWS, min(budget_bytes, workspace) // (8 * max(n, 1)))
    caches = _caches()
    cache = caches.get(token)
    if cache is None:
        # room for the new dataset's share first, dropping the least recently used datasets; the reserved
        # buffer, else the largest buffer dropped, is taken over rather than freed and mapped again
        recycle: SeriesCache | _Reserved | None = getattr(_local, "reserved", None)
        _local.reserved = None
        while caches and workspace - sum(c.resident_bytes for c in caches.values()) < per_call * 8 * n:
            _, old = caches.popitem(last=False)
            if recycle is None or old.buf.size > recycle.buf.size:
                recycle = old
        cache = SeriesCache(n, per_call, recycle)
        caches[token] = cache
    caches.move_to_end(token)
    while True:
        spare = workspace - sum(c.resident_bytes for c in caches.values())
        allowed = min(cache.allowed_rows(spare), per_call)
        if allowed >= per_call or len(caches) == 1:
            return cache, allowed
        caches.popitem(last=False)  # the least recently used other dataset (this one is the newest)


def reserve(nbytes: int) -> int:
    """Map and fault in a buffer of ``nbytes`` (at most a dataset's share, half the workspace) for this
    thread's next dataset; returns its size. A Ray worker does this while it starts (overlapped with Ray's
    start and the run's data loading): the first generation then writes its series into resident pages.
    First touches of fresh memory were most of a cold generation on the 2-core VM (660 MB: 1.0 s the
    first time in a process, 0.06 s after) and two workers touching pages at once did not go faster."""
    nbytes = max(0, min(int(nbytes), workspace_budget_bytes() // 2)) // 8 * 8
    if nbytes == 0:
        _local.reserved = None
        return 0
    buf = _allocate(1, nbytes // 8).reshape(-1)
    buf[::512] = 0.0  # one write per 4 KiB page
    _local.reserved = _Reserved(buf)
    return nbytes


def release() -> None:
    """Drop every cache of this thread and its reserved buffer (frees the buffers)."""
    _local.caches = None
    _local.reserved = None


def stats() -> dict[str, Any]:
    """Counters of this thread's caches (computed/reused series, resident bytes)."""
    caches = _caches()
    return {
        "datasets": len(caches),
        "computed": sum(c.computed for c in caches.values()),
        "reused": sum(c.reused for c in caches.values()),
        "resident_bytes": sum(c.resident_bytes for c in caches.values()) + _reserved_bytes(),
    }


def _reserved_bytes() -> int:
    r = getattr(_local, "reserved", None)
    return r.resident_bytes if r is not None else 0


def group_by_budget(
    needs: Iterable[Sequence[SeriesKey]], max_rows: int
) -> list[tuple[list[int], list[SeriesKey]]]:
    """Split strategies (their series keys) into chunks whose distinct series fit ``max_rows``, keeping
    the series the chunks share (each is computed again in every chunk that needs it) few.

    Greedy: a chunk takes next the strategy that adds the fewest series not yet in it (a strategy whose
    series are all in already costs nothing), until no remaining strategy fits; counts are kept per
    strategy and updated through an index from series to strategies, so grouping is linear in the
    number of (strategy, series) pairs. With 200 random genomes (165 series) in 100 rows: 273 series
    over all chunks, against 373 when strategies are taken in sorted order. Every strategy lands in
    exactly one chunk, and a strategy needs at most ``MIN_ROWS`` series, so every chunk is non-empty."""
    sets = [list(dict.fromkeys(n)) for n in needs]
    if any(len(s) > max_rows for s in sets):
        raise ValueError(f"a strategy needs more than {max_rows} series")
    users: dict[SeriesKey, list[int]] = {}
    for i, s in enumerate(sets):
        for k in s:
            users.setdefault(k, []).append(i)
    remaining = set(range(len(sets)))
    chunks: list[tuple[list[int], list[SeriesKey]]] = []
    while remaining:
        new_count = {i: len(sets[i]) for i in sorted(remaining)}
        buckets: list[dict[int, None]] = [{} for _ in range(max(new_count.values()) + 1)]
        for i, c in new_count.items():
            buckets[c][i] = None
        idx: list[int] = []
        keys: dict[SeriesKey, None] = {}
        while True:
            room = max_rows - len(keys)
            fits = next((c for c in range(min(room, len(buckets) - 1) + 1) if buckets[c]), None)
            if fits is None:
                break
            i = next(iter(buckets[fits]))
            del buckets[fits][i]
            remaining.discard(i)
            idx.append(i)
            for k in sets[i]:
                if k in keys:
                    continue
                keys[k] = None
                for j in users[k]:
                    if j in remaining:
                        cj = new_count[j]
                        del buckets[cj][j]
                        new_count[j] = cj - 1
                        buckets[cj - 1][j] = None
        chunks.append((idx, list(keys)))
    return chunks
