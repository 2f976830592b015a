"""Process-wide telemetry of the central store's own calls (plain Python, no Dagster).

:func:`instrument_engine` is applied by the :class:`~qt_pipeline.storage.postgres.connection.EngineRegistry`
to every engine it creates. It records, in this process:

* **query latency** of every statement (SQLAlchemy ``before/after_cursor_execute``) and of every ``COPY``
  (the bar reader/writer use raw psycopg2 cursors, counted by a cursor subclass installed on connect), in a
  bounded reservoir per operation (``select``, ``insert``, ``copy_out``, …) — percentiles come from it;
* **pool waits**: checkouts that found the pool at its limit (size + overflow all checked out), and the
  time they waited;
* **bytes read from the central store**: the ``COPY … TO STDOUT`` payload the server sent (bar reads);
* **busy minutes**: the minutes in which a central connection was checked out (the measured active time
  of the compute, used by the cost model when no Neon API key is configured).

The hybrid store adds cache hits/misses, per-symbol reads and its failover state. Counters are flushed as
deltas to the :class:`~qt_pipeline.monitoring.usage.UsageLedger` of the data directory (every
``FLUSH_EVERY_S`` on activity, at exit, and by :meth:`Telemetry.flush`), so the exporter, ``qt cost`` and
the Dagster assets see the usage of every process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESERVOIR_SIZE = 2048  # latest latencies kept per operation
FLUSH_EVERY_S = 15.0
FAILOVER_STATE_KEY = "hybrid_failover"  # the usage ledger's record of the hybrid failover state
PROCESS_STATE_PREFIX = "process/"  # usage-ledger state of each process: its pools and latencies


def process_label() -> str:
    """``host:pid`` of this process (the ``process`` label of pool and latency metrics)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Reservoir:
    """The latest ``size`` observations (a sliding window): percentiles of recent behaviour."""

    def __init__(self, size: int = RESERVOIR_SIZE):
        self._values: deque[float] = deque(maxlen=size)
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        self._values.append(value)
        self.count += 1
        self.total += value

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (``q`` in 0..100) of the window; ``None`` when empty."""
        values = sorted(self._values)
        if not values:
            return None
        rank = max(1, min(len(values), round(q / 100.0 * len(values) + 0.5)))
        return values[rank - 1]

    def __len__(self) -> int:
        return len(self._values)


@dataclass
class _Deltas:
    counters: dict[str, float] = field(default_factory=dict)
    busy_minutes: set[int] = field(default_factory=set)
    symbol_reads: dict[str, int] = field(default_factory=dict)


def _op_of(statement: str) -> str:
    word = statement.lstrip(" (\n\t").split(None, 1)[0].lower() if statement.strip() else "other"
    return (
        word
        if word in {"select", "insert", "update", "delete", "copy", "with", "create", "alter"}
        else "other"
    )


class Telemetry:
    """Counters and reservoirs of this process (thread-safe). ``TELEMETRY`` is the one instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency: dict[str, Reservoir] = {}
        self.counters: dict[str, float] = {}
        self._engines: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pending = _Deltas()
        self._ledger_path: Path | None = None
        self._last_flush = time.monotonic()
        self._failover: dict[str, Any] | None = None
        self._last_heartbeat = 0.0

    # --- recording ----------------------------------------------------------------------------------
    def observe(self, op: str, seconds: float) -> None:
        with self._lock:
            self.latency.setdefault(op, Reservoir()).add(seconds)

    def add(self, name: str, value: float = 1.0) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0.0) + value
            self._pending.counters[name] = self._pending.counters.get(name, 0.0) + value

    def busy(self, start: float, end: float) -> None:
        """A central connection was in use from ``start`` to ``end`` (epoch seconds)."""
        first, last = int(start // 60), int(end // 60)
        with self._lock:
            self._pending.busy_minutes.update(range(first, last + 1))
            self.counters["central_busy_seconds"] = self.counters.get("central_busy_seconds", 0.0) + (
                end - start
            )
        self._maybe_flush()

    def symbol_read(self, symbol: str) -> None:
        with self._lock:
            self._pending.symbol_reads[symbol] = self._pending.symbol_reads.get(symbol, 0) + 1

    def cache_read(self, hit: bool) -> None:
        self.add("cache_hits" if hit else "cache_misses")

    def failover_state(self, mode: str, since: datetime, reason: str) -> None:
        """The hybrid store's state changed: persisted at once (rare, and other processes want it)."""
        state = {"mode": mode, "since": since.astimezone(UTC).isoformat(), "reason": reason}
        with self._lock:
            self._failover = state
        self._write_failover(force=True)

    def failover_heartbeat(self) -> None:
        """The hybrid store is still in its recorded state (it calls this whenever it decides where an
        operation goes): the record's ``heartbeat`` is refreshed at most every ``FLUSH_EVERY_S``, so a
        process that died while degraded leaves a record whose age shows it (``qt_hybrid_state_stale``)."""
        self._write_failover(force=False)

    def _write_failover(self, *, force: bool) -> None:
        now = time.monotonic()
        with self._lock:
            if self._failover is None or self._ledger_path is None:
                return
            if not force and now - self._last_heartbeat < FLUSH_EVERY_S:
                return
            self._last_heartbeat = now
            self._failover["heartbeat"] = datetime.now(UTC).isoformat()
            state, path = dict(self._failover), self._ledger_path
        from qt_pipeline.monitoring.usage import UsageLedger

        with contextlib.suppress(Exception):  # telemetry never breaks the store
            UsageLedger(path).set_state(FAILOVER_STATE_KEY, state)

    # --- engines ------------------------------------------------------------------------------------
    def track_engine(self, engine: Any) -> None:
        with self._lock:
            self._engines.add(engine)

    def engines(self) -> list[Any]:
        with self._lock:
            return list(self._engines)

    # --- persistence --------------------------------------------------------------------------------
    def attach(self, data_dir: Path | str) -> None:
        """Flush usage to ``<data_dir>/monitoring/usage.sqlite`` from now on (the last caller wins)."""
        from qt_pipeline.monitoring.usage import ledger_path

        with self._lock:
            self._ledger_path = ledger_path(data_dir)

    def detach(self) -> None:
        """Stop flushing (pending deltas are dropped): the data directory is going away."""
        with self._lock:
            self._ledger_path = None
            self._pending = _Deltas()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            with contextlib.suppress(Exception):
                self.flush()

    def flush(self) -> None:
        """Write the deltas since the last flush to the attached ledger (nothing when none attached)."""
        with self._lock:
            path = self._ledger_path
            if path is None:
                return
            pending, self._pending = self._pending, _Deltas()
            self._last_flush = time.monotonic()
        from qt_pipeline.monitoring.usage import UsageLedger

        try:
            ledger = UsageLedger(path)
            ledger.record(
                pending.counters, pending.busy_minutes, pending.symbol_reads, day=datetime.now(UTC).date()
            )
            self.failover_heartbeat()
            if self.engines():  # a process that uses the store publishes its pools and latencies
                ledger.set_state(PROCESS_STATE_PREFIX + process_label(), self.process_view())
        except Exception:
            with self._lock:  # keep the deltas for the next flush
                for k, v in pending.counters.items():
                    self._pending.counters[k] = self._pending.counters.get(k, 0.0) + v
                self._pending.busy_minutes |= pending.busy_minutes
                for s, n in pending.symbol_reads.items():
                    self._pending.symbol_reads[s] = self._pending.symbol_reads.get(s, 0) + n
            raise

    def process_view(self) -> dict[str, Any]:
        """This process's pools and latency percentiles (what other processes' collections show)."""
        from qt_pipeline.storage.postgres.health import pool_stats

        pools = []
        for engine in self.engines():
            url = engine.url
            label = f"{url.host or 'socket'}:{url.port or ''}/{url.database or ''}"
            pools.append({"engine": label, **pool_stats(engine)})
        return {"at": datetime.now(UTC).isoformat(), "pools": pools, "latency": self.snapshot()["latency"]}

    def snapshot(self) -> dict[str, Any]:
        """Latency percentiles (seconds) per operation and the counters of this process."""
        with self._lock:
            lat = {
                op: {
                    "count": r.count,
                    "sum": r.total,
                    "p50": r.percentile(50),
                    "p95": r.percentile(95),
                    "p99": r.percentile(99),
                }
                for op, r in self.latency.items()
            }
            return {"latency": lat, "counters": dict(self.counters), "failover": self._failover}

    def reset(self) -> None:
        """Forget everything recorded in this process (tests, benchmarks)."""
        with self._lock:
            self.latency.clear()
            self.counters.clear()
            self._pending = _Deltas()
            self._failover = None
            self._last_heartbeat = 0.0


TELEMETRY = Telemetry()


def _flush_quietly() -> None:
    with contextlib.suppress(Exception):
        TELEMETRY.flush()


atexit.register(_flush_quietly)


class _CountingSink:
    """Wraps the file a ``COPY … TO STDOUT`` writes into and counts the bytes."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.bytes = 0

    def write(self, data: Any) -> Any:
        self.bytes += len(data)
        return self.inner.write(data)


def _counting_cursor(base: type) -> type:
    class CountingCursor(base):
        def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
            text = sql.decode() if isinstance(sql, bytes) else str(sql)
            outgoing = "TO STDOUT" in text.upper()
            sink = _CountingSink(file) if outgoing else file
            t0 = time.perf_counter()
            try:
                return super().copy_expert(sql, sink, size)
            finally:
                TELEMETRY.observe("copy_out" if outgoing else "copy_in", time.perf_counter() - t0)
                if outgoing:
                    TELEMETRY.add("central_bytes_read", float(sink.bytes))

    return CountingCursor


def instrument_engine(engine: Any) -> None:
    """Attach the timing, pool and byte-counting hooks to a SQLAlchemy engine (idempotent per engine)."""
    from sqlalchemy import event

    if getattr(engine, "_qt_instrumented", False):
        return
    engine._qt_instrumented = True
    TELEMETRY.track_engine(engine)
    pool = engine.pool

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        conn.info.setdefault("_qt_t0", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        stack = conn.info.get("_qt_t0")
        if stack:
            TELEMETRY.observe(_op_of(statement), time.perf_counter() - stack.pop())
        TELEMETRY.add("central_queries")

    @event.listens_for(engine, "handle_error")
    def _error(ctx) -> None:  # noqa: ANN001
        TELEMETRY.add("central_query_errors")
        stack = ctx.connection.info.get("_qt_t0") if ctx.connection is not None else None
        if stack:
            stack.pop()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, rec) -> None:  # noqa: ANN001
        base = getattr(dbapi_conn, "cursor_factory", None)
        if base is not None and not getattr(base, "_qt_counting", False):
            cls = _counting_cursor(base)
            cls._qt_counting = True  # type: ignore[attr-defined]
            dbapi_conn.cursor_factory = cls

    @event.listens_for(pool, "checkout")
    def _checkout(dbapi_conn, rec, proxy) -> None:  # noqa: ANN001
        rec.info["_qt_out"] = time.time()
        TELEMETRY._maybe_flush()  # a process holding connections publishes its pools too

    @event.listens_for(pool, "checkin")
    def _checkin(dbapi_conn, rec) -> None:  # noqa: ANN001
        start = rec.info.pop("_qt_out", None)
        if start is not None:
            TELEMETRY.busy(start, time.time())

    _time_pool_waits(pool)


def _time_pool_waits(pool: Any) -> None:
    """Count checkouts that had to wait for a connection (the pool at size + overflow) and how long.
    SQLAlchemy has no event before a checkout, so the pool's ``_do_get`` is wrapped on this instance."""
    inner = getattr(pool, "_do_get", None)
    if inner is None:
        return

    def _do_get() -> Any:
        limit = None
        with contextlib.suppress(Exception):
            limit = pool.size() + max(0, pool._max_overflow)
        full = limit is not None and pool._max_overflow >= 0 and pool.checkedout() >= limit
        if not full:
            return inner()
        t0 = time.perf_counter()
        try:
            return inner()
        finally:
            TELEMETRY.add("pool_waits")
            TELEMETRY.add("pool_wait_seconds", time.perf_counter() - t0)

    pool._do_get = _do_get


@contextlib.contextmanager
def fresh_telemetry() -> Iterator[Telemetry]:
    """``TELEMETRY`` reset before and after the block (tests, benchmarks)."""
    TELEMETRY.reset()
    try:
        yield TELEMETRY
    finally:
        TELEMETRY.reset()


__all__ = [
    "FAILOVER_STATE_KEY",
    "RESERVOIR_SIZE",
    "TELEMETRY",
    "Reservoir",
    "Telemetry",
    "fresh_telemetry",
    "instrument_engine",
]
