"""Population evaluators: :class:`SerialEvaluator` (in process) and :class:`RayEvaluator` (Ray tasks).

Both return the same thing for the same inputs — metrics of shape ``(n_genomes, n_symbols, n_metrics)``,
bit-identical and in population order — because :func:`qt_pipeline.evolution.backtest.evaluate_population`
is a pure, row-independent function.

Ray use:

* Ray is started (or connected to) once per run in :meth:`RayEvaluator.start`, never per generation, in a
  driver process owned by the evaluator (:mod:`qt_pipeline.evolution.ray_runtime`: a dead raylet ends
  its driver process, which must not be the run's own process; a killed owner takes its local Ray down).
  With no address that process starts a local Ray (``num_cpus=num_workers``, no dashboard, its session
  files in ``/tmp/<session id>``); with an address it connects to that cluster after a short TCP probe
  here, so an address that does not answer fails *before any work starts*. If Ray is already initialised
  in this process (a test fixture, a notebook) the work runs here and Ray is left running on :meth:`close`.
* The bar data (the datasets, e.g. one walk-forward plan) goes into the object store once per run
  (:meth:`set_data`, ``ray.put``; handed to the driver process through a mapped file,
  :func:`~qt_pipeline.evolution.ray_runtime.pack_for_driver`) and is loaded once by each
  :class:`EvalActor`. An actor takes ``worker_threads`` CPUs and evaluates on as many Numba threads: on a
  local Ray (one node) by default one actor takes all ``num_workers`` CPUs, whose threads work through the
  bars span by span, in the same span (:func:`~qt_pipeline.evolution._kernels.run_population_parallel`);
  on a cluster an actor per CPU unless ``worker_threads`` is set. The actors start with Ray (:meth:`start`), warm their
  kernels once while the run loads its data, and keep their indicator caches for every generation: a node
  holds one copy of the data, whatever the number of generations or tasks; :meth:`wait_ready` waits until
  they are warm.
* One actor gets the whole generation in one call (its threads share the work). Several actors: a
  generation is split into one contiguous run of genomes per worker (genomes that share indicator
  series together), each cut into chunks of ``batch_size`` genomes or, by default, of halving size (a
  large first chunk, small last ones); a worker that is done takes the last chunks of the others' runs,
  so a worker that drew cheap genomes does not sit idle; a chunk whose actor or node is lost is resent to a live
  actor (``max_retries``) and the actor replaced. Every wait is bounded: a driver process that dies is
  noticed within a second, no result for ``stall_timeout_s`` or no worker up within ``start_timeout_s``
  raises :class:`EvaluatorError` with one line.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from qt_pipeline.redaction import redact


class EvaluatorError(RuntimeError):
    """The evaluator cannot run (e.g. a Ray address that does not answer)."""


def evaluate_chunk(
    chunk: np.ndarray, costs: Any, periods_per_year: float, *datasets: Any, parallel: bool = False
) -> np.ndarray:
    """Metrics ``(len(chunk), len(datasets), n_metrics)`` of ``chunk`` on every dataset (on this thread,
    or with ``parallel`` on Numba's threads, bit-identical); with one
    :class:`~qt_pipeline.evolution.validation.Plan` as the dataset, the plan's rows (portfolio per
    walk-forward group, then per segment and symbol)."""
    from qt_pipeline.evolution.backtest import evaluate_population
    from qt_pipeline.evolution.validation import Plan

    if len(datasets) == 1 and isinstance(datasets[0], Plan):
        return datasets[0].evaluate(chunk, costs, parallel=parallel)
    return np.stack(
        [evaluate_population(chunk, d, costs, periods_per_year, parallel=parallel) for d in datasets], axis=1
    )


class SerialEvaluator:
    """Evaluates in the calling process. Same interface as :class:`RayEvaluator`."""

    name = "serial"

    def __init__(self) -> None:
        self._datasets: tuple[Any, ...] = ()
        self._costs: Any = None
        self._ppy = 0.0
        self.startup_seconds = 0.0

    def start(self) -> SerialEvaluator:
        return self

    def set_data(self, datasets: Sequence[Any], costs: Any, periods_per_year: float) -> None:
        self._datasets, self._costs, self._ppy = tuple(datasets), costs, float(periods_per_year)

    def evaluate(self, pop: np.ndarray) -> np.ndarray:
        if not self._datasets:
            raise EvaluatorError("set_data() must be called before evaluate()")
        return evaluate_chunk(
            np.ascontiguousarray(pop, dtype=np.float64), self._costs, self._ppy, *self._datasets
        )

    def describe(self) -> str:
        return "serial (in process)"

    def close(self) -> None:
        from qt_pipeline.evolution.backtest import release_workspace

        self._datasets = ()
        release_workspace()


def parse_ray_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` to probe for a Ray address, or None for ``auto``/``local`` (nothing to probe).

    Accepts ``ray://host:port`` (Ray client, default port 10001) and ``host:port`` (GCS, default 6379)."""
    a = address.strip()
    if a in ("auto", "local"):
        return None
    if "://" in a:
        u = urlparse(a)
        if not u.hostname:
            raise EvaluatorError(f"Ray address {a!r} has no host; use ray://host:10001 or host:6379")
        return u.hostname, u.port or 10001
    host, _, port = a.rpartition(":")
    if not host:
        return a, 6379
    try:
        return host, int(port)
    except ValueError:
        raise EvaluatorError(
            f"Ray address {a!r} has a bad port {port!r}; use host:6379 or ray://host:10001"
        ) from None


def probe_ray_address(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast with a clear message when nothing listens at ``address``."""
    target = parse_ray_address(address)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise EvaluatorError(
            f"Ray cluster at {redact(address)!r} does not answer (TCP connect to {host}:{port} failed within "
            f"{timeout_s:g} s: {exc.strerror or exc}). Start the cluster or fix ray_address / QT_RAY_ADDRESS; "
            "leave it empty to start a local Ray. Nothing was run or written."
        ) from None


class EvalActor:
    """One evaluation worker (a Ray actor of ``threads`` CPUs, evaluating on as many Numba threads), started
    with Ray: it compiles and warms its kernels once when it starts (on a few synthetic bars) and faults in
    its indicator-series workspace (half the series budget of ``QT_EVOLUTION_MEMORY_MB``: 768 MiB by
    default), then holds the run's bar data (:meth:`load`, resolved from the object store once) and keeps
    its indicator cache from one generation to the next."""

    def __init__(self, threads: int = 1) -> None:
        import numba
        import ray

        from qt_pipeline.evolution import series_cache

        self.datasets: tuple[Any, ...] = ()
        self.costs: Any = None
        self.ppy = 0.0
        self.threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
        self.parallel = self.threads > 1
        numba.set_num_threads(self.threads)
        self.node_id = ray.get_runtime_context().get_node_id()
        t0 = time.perf_counter()
        warm_up(self.parallel)
        # fault in the series workspace of the first dataset now, while Ray starts and the run loads its
        # data, not in the first generation (series_cache.reserve)
        self.reserved_bytes = series_cache.reserve(series_cache.workspace_budget_bytes() // 2)
        self.warmup_seconds = time.perf_counter() - t0

    def info(self) -> tuple[str, float]:
        return self.node_id, self.warmup_seconds

    def load(self, costs: Any, periods_per_year: float, *datasets: Any) -> None:
        self.datasets, self.costs, self.ppy = datasets, costs, float(periods_per_year)

    def evaluate(self, chunk: np.ndarray) -> tuple[np.ndarray, float]:
        import numba

        t0 = time.perf_counter()
        numba.set_num_threads(self.threads)  # (a setting of the calling thread in Numba)
        out = evaluate_chunk(chunk, self.costs, self.ppy, *self.datasets, parallel=self.parallel)
        return out, time.perf_counter() - t0


def warm_up(parallel: bool = False) -> None:
    """Compile (or load from Numba's cache) every kernel an evaluation runs: the bar loop (``parallel``: on
    Numba's threads), indicators and the walk-forward portfolio path, on a few synthetic bars, so no
    generation pays for it."""
    import pandas as pd

    from qt_pipeline.evolution import Costs, random_population, repair
    from qt_pipeline.evolution.backtest import MarketData
    from qt_pipeline.evolution.validation import Plan, Segment

    rng = np.random.default_rng(0)
    n = 3 * 1440
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    ts = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    frame = pd.DataFrame({"timestamp": ts, "open": close, "high": close * 1.001, "low": close * 0.999,
                          "close": close, "volume": 1.0})  # fmt: skip
    data = MarketData.from_frame(frame, symbol="WARM")
    pop = repair(random_population(rng, 4))
    evaluate_chunk(pop, Costs(), 525_960.0, data, parallel=parallel)
    half = n // 2
    segs = tuple(Segment(f"IS {k + 1}", (data.slice(a, a + half),), ts[a], ts[a + half - 1])
                 for k, a in enumerate((0, half)))  # fmt: skip
    plan = Plan(("WARM",), np.ones(1), segs, ((0,), (1,), (0, 1)), 525_960.0)
    evaluate_chunk(pop, Costs(), 525_960.0, plan, parallel=parallel)


IN_FLIGHT = 2  # chunks queued at an actor at once


def locality_order(pop: np.ndarray) -> np.ndarray:
    """Genome indices ordered by entry rule (kind, periods) then exit rule: cut into chunks, genomes that
    need the same indicator series land together, so workers compute fewer series twice."""
    from qt_pipeline.evolution.genome import GENE_INDEX

    names = ("exit_period2", "exit_period", "exit_kind", "entry_period2", "entry_period", "entry_kind")
    return np.lexsort([np.floor(pop[:, GENE_INDEX[n]]) for n in names]) if len(pop) else np.arange(0)


_LOST = ("RayActorError", "WorkerCrashedError", "ObjectLostError", "NodeDiedError")


def _one_line(exc: BaseException) -> str:
    """``Type: first line`` (Ray errors span many lines), redacted."""
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return redact(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def plan_chunks(n: int, workers: int, batch_size: int | None) -> list[list[tuple[int, int]]]:
    """Cut positions ``0..n`` (genomes in locality order) into one contiguous run per worker, each run
    into chunks ``(start, stop)``: of ``batch_size`` genomes when one is given, else *guided*: half of
    what is left of the run, but at least ``n / (8 * workers)`` (a tail under half that joins the last
    chunk). A worker starts with a large chunk (the kernel reads a span of the bars once for every genome
    of a chunk: 8 chunks of 25 cost 8-26% more than one of 200 in measurements on the 2-core VM) and ends
    with small ones, which the others can take over when it falls behind (a genome's cost varies ~10x)."""
    k = max(1, workers)
    if k == 1 and not batch_size:  # nothing to take over from another worker: one call (its threads balance)
        return [[(0, n)] if n else []]
    runs: list[list[tuple[int, int]]] = []
    least = max(1, math.ceil(n / (8 * k)))
    for j in range(k):
        a, b = j * n // k, (j + 1) * n // k
        run: list[tuple[int, int]] = []
        while a < b:
            size = batch_size or max(least, math.ceil((b - a) / 2))
            if not batch_size and b - a - size < least // 2 + 1:
                size = b - a
            run.append((a, min(b, a + size)))
            a += size
        runs.append(run)
    return runs


class ChunkQueue:
    """The chunks of a generation not yet sent, and which actor takes which next.

    Each actor owns a contiguous run of the chunks (:func:`plan_chunks`; in locality order, neighbours
    share indicator series), so fewer series are computed by both workers than when chunks alternate
    between them (exit-rule and ATR series are still needed by both: 200 random genomes need 165 series,
    272 over two halves), and a worker gets a similar part of the genome space every generation. An actor
    whose run is done takes from the far end of the longest other run (its smallest chunks). Chunks to
    send again (their actor died) go first to whichever actor asks."""

    def __init__(self, runs: Sequence[Sequence[int]], actors: Sequence[Any]):
        if actors:
            self.runs: dict[Any, list[int]] = {a: list(r) for a, r in zip(actors, runs, strict=True)}
            self.again: list[int] = []
        else:  # no actor yet (replacements pending): every chunk to whichever asks first
            self.runs, self.again = {}, [c for r in runs for c in r]

    def __len__(self) -> int:
        return len(self.again) + sum(len(r) for r in self.runs.values())

    def take(self, actor: Any) -> int | None:
        """The next chunk for ``actor`` (None: nothing left)."""
        if self.again:
            return self.again.pop(0)
        own = self.runs.get(actor)
        if own:
            return own.pop(0)
        longest = max(self.runs.values(), key=len, default=None)
        return longest.pop() if longest else None

    def resend(self, chunks: Sequence[int], actor: Any) -> None:
        """``chunks`` were lost with ``actor``: send them again first, and hand its run to the others."""
        self.again[:0] = sorted(chunks) + self.runs.pop(actor, [])


class RayPool:
    """The evaluation work on an initialised Ray: :class:`EvalActor` s of ``worker_threads`` CPUs each,
    ``num_workers`` CPUs in all, holding the data.

    A generation is cut into chunks (:func:`plan_chunks`, genomes that share indicator series together),
    each actor working through its own run of them first (:class:`ChunkQueue`),
    ``IN_FLIGHT`` queued at each, and
    collected with bounded waits: an actor lost with its worker or node is replaced (and its chunk resent
    to a live actor, up to ``max_retries`` times per chunk); no result for ``stall_timeout_s`` seconds, or
    no live actor within it, raises :class:`EvaluatorError`. Results are bit-identical to the serial
    evaluator and in population order."""

    def __init__(
        self,
        num_workers: int,
        batch_size: int | None,
        max_retries: int = 3,
        stall_timeout_s: float = 1800.0,
        start_timeout_s: float = 300.0,
        worker_threads: int = 1,
    ):
        self.num_workers, self.batch_size = num_workers, batch_size
        # actors of worker_threads CPUs each, num_workers CPUs in all
        self.worker_threads = max(1, min(worker_threads, num_workers))
        self.num_actors = max(1, num_workers // self.worker_threads)
        self.max_retries, self.stall_timeout_s = max_retries, stall_timeout_s
        self.start_timeout_s = start_timeout_s
        self._started_at = 0.0
        self._refs: list[Any] = []
        self._args: tuple[Any, ...] = ()
        self._actors: list[Any] = []
        self._ready: dict[Any, Any] = {}  # actor -> its info() ref until it answered once
        self.puts = 0  # objects put into the object store (the bar data: once per run)
        self.actors_started = 0
        self.actor_nodes: dict[str, int] = {}  # node id -> actors that loaded the data there
        self.warmup_seconds: list[float] = []
        self.put_seconds = 0.0
        self.generations: list[dict[str, Any]] = []  # wall, slowest worker's compute, overhead share, per worker

    def chunk_sizes(self, n: int) -> list[list[int]]:
        """Genomes per chunk of a generation of ``n``, per worker (:func:`plan_chunks`). One worker: one
        chunk (its threads balance the work inside the call). Several: a few chunks per worker, not one: a
        genome's cost varies ~10x (its trades, stops, how long it holds), and one chunk per worker left
        one worker idle while the other finished (steady generations 1.3x serial)."""
        return [[b - a for a, b in run] for run in plan_chunks(n, self.num_actors, self.batch_size)]

    def _new_actor(self) -> Any:
        import ray

        cls: Any = ray.remote(num_cpus=self.worker_threads, max_restarts=0)(EvalActor)
        actor = cls.remote(self.worker_threads)
        self._ready[actor] = actor.info.remote()
        if self._refs:  # a replacement: it loads the run's data before any chunk sent to it (tasks in order)
            actor.load.remote(*self._args, *self._refs)
        self.actors_started += 1
        return actor

    def start_actors(self) -> None:
        """Start the actors (each warms its kernels once), without waiting: they come up while the run
        loads its data; the first generation (or :meth:`wait_ready`) waits for them."""
        self._started_at = time.monotonic()
        while len(self._actors) < self.num_actors:
            self._actors.append(self._new_actor())

    def wait_ready(self) -> None:
        """Wait until every actor is up and warm (bounded by ``start_timeout_s``); a worker that dies
        while starting fails this with its cause in one line."""
        import ray

        if not self._actors:
            self.start_actors()
        while self._ready:
            done, _ = ray.wait(list(self._ready.values()), num_returns=1, timeout=1.0)
            for actor, ref in list(self._ready.items()):
                if ref in done:
                    try:
                        self._note_ready(actor, ref)
                    except Exception as exc:
                        raise EvaluatorError(f"a Ray worker failed to start: {_one_line(exc)}") from None
            if not done and time.monotonic() - self._started_at > self.start_timeout_s:
                raise self._no_worker_started()

    def _no_worker_started(self) -> EvaluatorError:
        return EvaluatorError(
            f"no Ray worker started within {self.start_timeout_s:g} s ({self.num_actors} workers of "
            f"{self.worker_threads} CPU each requested): does the cluster have free CPUs, or is another run "
            "holding them?"
        )

    def set_data(self, datasets: Sequence[Any], costs: Any, periods_per_year: float) -> None:
        """Put the data into the object store once and hand it to the actors (started now if they were
        not; each resolves the data once and keeps it for every generation)."""
        import ray

        t0 = time.perf_counter()
        self._refs = [ray.put(d) for d in datasets]
        self.puts += len(self._refs)
        self._args = (costs, float(periods_per_year))
        if self._actors:
            for actor in self._actors:
                actor.load.remote(*self._args, *self._refs)
        else:
            self.start_actors()  # each new actor loads the data first
        self.put_seconds = time.perf_counter() - t0

    def _note_ready(self, actor: Any, ref: Any) -> None:
        import ray

        node, warm = ray.get(ref)
        self.actor_nodes[node] = self.actor_nodes.get(node, 0) + 1
        self.warmup_seconds.append(warm)
        self._ready.pop(actor, None)

    def _drop(self, actor: Any) -> None:
        import ray

        if actor in self._actors:
            self._actors.remove(actor)
            self._ready.pop(actor, None)
            with contextlib.suppress(Exception):
                ray.kill(actor)
            self._actors.append(self._new_actor())  # placed wherever Ray finds a CPU (pending until then)

    def evaluate(self, pop: np.ndarray) -> np.ndarray:
        import ray

        if not self._refs:
            raise EvaluatorError("set_data() must be called before evaluate()")
        pop = np.ascontiguousarray(pop, dtype=np.float64)
        order = locality_order(pop)  # genomes that share indicator series go to the same chunk
        plan = plan_chunks(len(pop), max(1, len(self._actors)), self.batch_size)
        chunks = [order[a:b] for run in plan for a, b in run]
        ids = np.cumsum([0] + [len(run) for run in plan])
        out: np.ndarray | None = None
        tries = [0] * len(chunks)
        queue = ChunkQueue([range(ids[j], ids[j + 1]) for j in range(len(plan))], self._actors)
        busy: dict[Any, float] = {}  # actor -> compute seconds this generation
        pending: dict[Any, tuple[int, Any]] = {}
        t0 = time.perf_counter()

        def feed() -> None:
            """Keep up to IN_FLIGHT chunks queued at every live actor (the next one starts without a round
            trip). Only actors that are up get work, unless none is yet (the chunks wait in them): a
            replacement may never find a CPU (its node is gone), and chunks sent to it would stall."""
            live = [a for a in self._actors if a not in self._ready] or self._actors
            load = {a: 0 for a in live}
            for _, a in pending.values():
                if a in load:
                    load[a] += 1
            for actor in sorted(live, key=lambda a: load[a]):
                while load[actor] < IN_FLIGHT:
                    i = queue.take(actor)
                    if i is None:
                        return
                    pending[actor.evaluate.remote(pop[chunks[i]])] = (i, actor)
                    load[actor] += 1

        feed()
        last_progress = time.monotonic()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for actor, ref in list(self._ready.items()):  # actors that finished loading / warming up
                if ray.wait([ref], timeout=0)[0]:
                    try:
                        self._note_ready(actor, ref)
                    except Exception:
                        self._drop(actor)
                    feed()  # (a replacement that came up takes queued chunks)
            if not done:
                if not self.actor_nodes and time.monotonic() - self._started_at > self.start_timeout_s:
                    raise self._no_worker_started()
                if time.monotonic() - last_progress > self.stall_timeout_s:
                    raise EvaluatorError(
                        f"Ray evaluation stalled: no result for {self.stall_timeout_s:g} s "
                        f"({len(pending) + len(queue)} of {len(chunks)} batches outstanding, "
                        f"{len(self._actors) - len(self._ready)} workers ready); is the cluster alive?"
                    )
                continue
            last_progress = time.monotonic()
            ref = done[0]
            i, actor = pending.pop(ref)
            try:
                part, secs = ray.get(ref, timeout=60)
            except Exception as exc:
                if type(exc).__name__ not in _LOST and not isinstance(exc, ray.exceptions.RayActorError):
                    raise EvaluatorError(
                        f"Ray evaluation of {len(pop)} genomes failed: {_one_line(exc)}"
                    ) from None
                tries[i] += 1
                if tries[i] > self.max_retries:
                    raise EvaluatorError(
                        f"Ray evaluation of {len(pop)} genomes failed: a batch was lost {tries[i]} times "
                        f"(workers or nodes died); last: {_one_line(exc)}"
                    ) from None
                # the actor's other chunks are lost with it: resend them all to the live actors
                lost = [i]
                for r, (j, a) in list(pending.items()):
                    if a is actor:
                        del pending[r]
                        lost.append(j)
                queue.resend(lost, actor)
                self._drop(actor)
                feed()
                continue
            if out is None:
                out = np.empty((len(pop), *part.shape[1:]))
            out[chunks[i]] = part
            busy[actor] = busy.get(actor, 0.0) + secs
            feed()
        wall = time.perf_counter() - t0
        slowest = max(busy.values(), default=0.0)
        self.generations.append(
            {
                "wall": wall,
                "compute": slowest,
                "overhead": max(0.0, wall - slowest) / wall if wall else 0.0,
                "worker_compute": sorted(busy.values()),
            }
        )
        return out if out is not None else np.empty((0,))

    def stats(self) -> dict[str, Any]:
        locations: dict[str, list[str]] = {}
        with contextlib.suppress(Exception):  # where each data object is held now (node ids)
            from ray.experimental import get_object_locations

            found = get_object_locations(self._refs, timeout_ms=10_000)
            locations = {r.hex(): sorted(found[r]["node_ids"]) for r in self._refs}
        return {
            "data_locations": locations,
            "puts": self.puts,
            "actors_started": self.actors_started,
            "actor_nodes": dict(self.actor_nodes),
            "warmup_seconds": list(self.warmup_seconds),
            "generations": list(self.generations),
            "data_refs": [r.hex() for r in self._refs],
        }

    def close(self) -> None:
        import ray

        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self._actors, self._ready, self._refs = [], {}, []


class RayEvaluator:
    """Evaluates populations on Ray through a :class:`RayPool`. See the module docstring.

    If Ray is already initialised in this process (a test fixture, a notebook) the pool runs here and Ray
    is left running on :meth:`close`. Otherwise Ray runs in a driver process owned by this evaluator
    (:mod:`qt_pipeline.evolution.ray_runtime`): started once in :meth:`start`, reused by every generation,
    stopped with everything it started in :meth:`close` — and, if this process dies, by itself."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_workers: int = 2,
        batch_size: int | None = None,
        *,
        max_retries: int = 3,
        probe_timeout_s: float = 3.0,
        start_timeout_s: float = 300.0,
        stall_timeout_s: float = 1800.0,
        init_kwargs: dict[str, Any] | None = None,
        worker_threads: int | None = None,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if worker_threads is not None and worker_threads < 1:
            raise ValueError(f"worker_threads must be >= 1 or None (automatic), got {worker_threads}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (automatic), got {batch_size}")
        self.address = address or None
        self.num_workers = num_workers
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.probe_timeout_s = probe_timeout_s
        self.start_timeout_s = start_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.init_kwargs = dict(init_kwargs or {})
        # a local Ray is one node: one worker process with a thread per CPU (its threads work in the same
        # span of the bars and read the series once; two processes read them twice and balance only
        # between tasks); a cluster's nodes are unknown here: a process per CPU unless configured
        self.worker_threads = min(num_workers, worker_threads or (1 if self.address else num_workers))
        self._pool: RayPool | None = None  # in-process mode
        self._proc: Any = None  # driver-process mode
        self._conn: Any = None
        self._record: Any = None
        self._log: Any = None
        self.session_id: str | None = None
        self._started = False
        self.startup_seconds = 0.0
        self.put_seconds = 0.0

    def _pool_args(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "max_retries": self.max_retries,
            "stall_timeout_s": self.stall_timeout_s,
            "start_timeout_s": self.start_timeout_s,
            "worker_threads": self.worker_threads,
        }

    def start(self) -> RayEvaluator:
        """Probe the address, then start/connect Ray (once). Idempotent."""
        if self._started:
            return self
        t0 = time.perf_counter()
        if self.address:
            probe_ray_address(self.address, self.probe_timeout_s)
        import sys

        ray = sys.modules.get("ray")  # not imported here: not initialised here (and not worth importing)
        if ray is not None and ray.is_initialized():
            self._pool = RayPool(**self._pool_args())
            self._pool.start_actors()  # the workers come up and warm while the run loads its data
        else:
            self._spawn_driver()
        self._started = True
        self.startup_seconds = time.perf_counter() - t0
        return self

    # ---- driver process
    def _spawn_driver(self) -> None:
        import os
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        from qt_pipeline.evolution import ray_runtime as rt

        data_dir = _data_dir()
        rt.reap_orphans(data_dir)
        self.session_id = sid = rt.new_session_id()
        self._record = rt.record_session(sid, data_dir)
        self._log = data_dir / "ray" / f"{sid}.log"
        mine, theirs = socket.socketpair()
        env = {**rt.DRIVER_ENV, **os.environ, rt.SESSION_ENV: sid}
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "qt_pipeline.evolution.ray_runtime", str(theirs.fileno()),
                 str(os.getpid()), sid],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # terminal signals go to the owner, which closes the driver
            )  # fmt: skip
        theirs.close()
        self._conn = Connection(mine.detach())
        where = f"the Ray cluster at {redact(self.address)!r}" if self.address else "a local Ray"
        try:
            self._call(
                "start",
                {
                    "address": self.address,
                    "num_cpus": self.num_workers,
                    "temp_dir": str(rt.session_temp_dir(sid)),
                    "init_kwargs": self.init_kwargs,
                    "pool": self._pool_args(),
                },
                timeout_s=self.start_timeout_s,
                doing=f"start/connect {where}",
            )
        except EvaluatorError:
            self._stop_driver()
            raise

    def _call(self, cmd: str, arg: Any = None, *, timeout_s: float | None = None, doing: str = "") -> Any:
        """Send one command to the driver process and wait for its answer, checking every second that the
        process is alive (a dead Ray kills it) — never an unbounded wait on a dead peer."""
        doing = doing or cmd
        try:
            self._conn.send((cmd, arg))
        except OSError:
            raise EvaluatorError(self._driver_died(doing)) from None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                if self._conn.poll(1.0):
                    status, value = self._conn.recv()
                    if status == "err":
                        raise EvaluatorError(f"Ray: cannot {doing}: {value}")
                    return value
            except (EOFError, OSError):
                raise EvaluatorError(self._driver_died(doing)) from None
            if self._proc.poll() is not None:
                raise EvaluatorError(self._driver_died(doing))
            if deadline is not None and time.monotonic() > deadline:
                raise EvaluatorError(
                    f"Ray: cannot {doing}: no answer within {timeout_s:g} s (machine overloaded or cluster "
                    f"unreachable); driver log: {self._log}"
                )

    def _driver_died(self, doing: str) -> str:
        with contextlib.suppress(Exception):
            self._proc.wait(timeout=5)
        code = self._proc.poll()
        hint = ""
        with contextlib.suppress(OSError):
            text = self._log.read_text(errors="replace")
            if "Raylet is terminated" in text or "marked dead" in text:
                hint = "the local Ray node died (raylet killed or out of memory); "
        self._stop_driver(keep_log=True)
        return (
            f"Ray failed while trying to {doing}: {hint}the Ray driver process exited (code {code}); "
            f"its processes were stopped; Ray's log: {self._log}"
        )

    def _stop_driver(self, keep_log: bool = False) -> None:
        from qt_pipeline.evolution import ray_runtime as rt

        if self._proc is not None:
            if self._proc.poll() is None and self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.send(("close", None))
                    if self._conn.poll(30):
                        self._conn.recv()  # the workers are stopped: a cluster's CPUs are free again
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=5)  # ray.shutdown(); a local session is reaped below anyway
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
        if self._conn is not None:
            self._conn.close()
        if self.session_id is not None:
            rt.reap_session(self.session_id)
        if self._record is not None:
            rt.forget_session(self._record)
        if self._log is not None and not keep_log:
            self._log.unlink(missing_ok=True)
        self._proc = self._conn = self._record = None
        self._started = False

    # ---- the evaluator interface
    def set_data(self, datasets: Sequence[Any], costs: Any, periods_per_year: float) -> None:
        """Put the bar data into the object store (once per run) and start the workers that hold it."""
        self.start()
        args = (list(datasets), costs, float(periods_per_year))
        if self._pool is not None:
            self._pool.set_data(*args)
            self.put_seconds = self._pool.put_seconds
        else:
            from qt_pipeline.evolution import ray_runtime as rt

            assert self.session_id is not None
            path, payload, spans = rt.pack_for_driver(args, self.session_id)
            try:
                self.put_seconds = self._call(
                    "set_data", (path, payload, spans), doing="put the bar data into the object store"
                )
            finally:
                os.unlink(path)  # (the driver's mapping, if any, lives on until it is dropped)

    def chunk_sizes(self, n: int) -> list[list[int]]:
        return RayPool(**self._pool_args()).chunk_sizes(n)

    def wait_ready(self) -> None:
        """Wait until the workers are up and warm (they start with :meth:`start` and otherwise finish
        warming during the first generation); e.g. before timing a generation."""
        self.start()
        if self._pool is not None:
            self._pool.wait_ready()
        else:
            self._call("wait_ready", timeout_s=self.start_timeout_s, doing="start the Ray workers")

    def evaluate(self, pop: np.ndarray) -> np.ndarray:
        if not self._started:
            raise EvaluatorError("set_data() must be called before evaluate()")
        pop = np.ascontiguousarray(pop, dtype=np.float64)
        if self._pool is not None:
            return self._pool.evaluate(pop)
        return self._call("evaluate", pop, doing=f"evaluate {len(pop)} genomes")

    def stats(self) -> dict[str, Any]:
        """Object puts, actors started and the nodes that loaded the data, warm-up and per-generation
        timings (wall, slowest worker's compute, overhead share)."""
        if self._pool is not None:
            return self._pool.stats()
        return self._call("stats") if self._started else {}

    def describe(self) -> str:
        where = redact(self.address) if self.address else "local"
        procs = RayPool(**self._pool_args()).num_actors
        return (
            f"ray ({where}, {self.num_workers} workers: {procs} process{'es' if procs > 1 else ''} x "
            f"{self.worker_threads} thread{'s' if self.worker_threads > 1 else ''}, batch {self.batch_size or 'auto'})"
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
            self._started = False
        else:
            self._stop_driver()


def _data_dir() -> Any:
    from pathlib import Path

    from qt_pipeline.config import get_settings

    path = Path(get_settings().data_dir)
    (path / "ray").mkdir(parents=True, exist_ok=True)
    return path


def make_evaluator(config: Any) -> Any:
    """The evaluator an :class:`~qt_pipeline.evolution.config.EvolutionConfig` asks for (not started)."""
    if not config.use_ray:
        return SerialEvaluator()
    from qt_pipeline.config import get_settings
    from qt_pipeline.evolution.executor_choice import auto_or_ray

    address = config.ray_address or get_settings().ray_address
    # serial when the run is too small to pay for Ray's start-up (decided once the data is known)
    ray = RayEvaluator(address, config.num_workers, config.batch_size, worker_threads=config.worker_threads)
    return auto_or_ray(config, ray)
