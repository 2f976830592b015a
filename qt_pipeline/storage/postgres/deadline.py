"""Client-side deadlines for every call on an open PostgreSQL connection.

Why: ``connect_timeout`` bounds only the connect. On an established connection whose peer goes silent (a
black-holed network, a middlebox that lost its state, a stuck pooler) a query, a commit or the pool's
pre-ping waits until TCP gives up — about 15 minutes. Two layers bound that:

* libpq's TCP keepalives and ``tcp_user_timeout`` (added to every URL by
  :mod:`~qt_pipeline.storage.postgres.connection`): the kernel drops a connection whose packets are not
  acknowledged. They are client-side socket options, never sent to the server, so they work behind
  PgBouncer in transaction mode. They cannot help when something still acknowledges the packets (a proxy
  or a pooler that accepts bytes and never answers);
* this module: a deadline per call (``execute``, ``executemany``, ``copy_expert``, ``commit``,
  ``rollback`` — the pool's pre-ping is an ``execute``). When a call outlives its deadline a watchdog
  thread shuts the connection's socket down; libpq returns at once with a connection error that
  SQLAlchemy treats as a disconnect (the pooled connection is discarded) and the retry policy treats as
  transient. The error names the deadline that fired.

The default deadline of an engine's connections is ``QT_PG_CALL_TIMEOUT_S`` (unset: the statement timeout
plus a margin, so the client never gives up on a call the server would still finish). A caller that needs
a tighter bound — the hybrid store failing over to its outbox — wraps its work in :func:`call_budget`: a
total wall-clock budget for everything the thread does on any watched connection inside the block (every
call gets at most what is left, a call started after it ran out fails at once), and new connections get a
``connect_timeout`` no longer than what is left (libpq's minimum is 2 s).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extensions

__all__ = [
    "CallDeadlineExceeded",
    "budget_connect_timeout",
    "call_budget",
    "remaining_budget",
    "watched_connection_factory",
]


class CallDeadlineExceeded(psycopg2.OperationalError):
    """A call on an open connection got no answer within its client-side deadline; the connection was
    dropped (its socket shut down), so the pool discards it and the operation may be retried."""


@dataclass(order=True)
class _Entry:
    deadline: float
    seq: int
    fd: int = field(compare=False)
    seconds: float = field(compare=False)
    done: bool = field(default=False, compare=False)
    fired: bool = field(default=False, compare=False)
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)


class _Watchdog:
    """One daemon thread for the process: a heap of armed deadlines; an expired one shuts its socket."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def arm(self, fd: int, seconds: float) -> _Entry:
        entry = _Entry(time.monotonic() + seconds, next(self._seq), fd, seconds)
        with self._cond:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()  # a forked child needs its own thread
                self._heap = []
                self._thread = threading.Thread(target=self._run, name="qt-pg-deadline", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()
        return entry

    @staticmethod
    def disarm(entry: _Entry) -> bool:
        """Mark ``entry`` done; True when it had already fired."""
        with entry.lock:
            entry.done = True
            return entry.fired

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0].deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
            with entry.lock:
                if entry.done:
                    continue
                entry.fired = True
                _shutdown_fd(entry.fd)


def _shutdown_fd(fd: int) -> None:
    """Shut the socket behind ``fd`` down (both directions) without closing libpq's descriptor."""
    with contextlib.suppress(OSError):
        dup = socket.socket(fileno=os.dup(fd))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()


_WATCHDOG = _Watchdog()
_local = threading.local()


@contextlib.contextmanager
def call_budget(total_s: float, *, per_call_s: float | None = None) -> Iterator[None]:
    """Bound everything this thread does on watched connections inside the block to ``total_s`` seconds
    in all (each single call additionally to ``per_call_s`` when given). Nested budgets take the tighter."""
    now = time.monotonic()
    outer = getattr(_local, "scope", None)
    end = now + max(0.0, float(total_s))
    per = per_call_s
    if outer is not None:
        end = min(end, outer[0])
        if outer[1] is not None:
            per = outer[1] if per is None else min(per, outer[1])
    _local.scope = (end, per)
    try:
        yield
    finally:
        _local.scope = outer


def remaining_budget() -> float | None:
    """Seconds left of the innermost :func:`call_budget` of this thread (None outside any)."""
    scope = getattr(_local, "scope", None)
    return None if scope is None else scope[0] - time.monotonic()


def budget_connect_timeout(configured_s: int) -> int:
    """``connect_timeout`` for a new connection made now: the configured one, or less when a budget is
    active (never below libpq's minimum of 2 s)."""
    left = remaining_budget()
    if left is None:
        return configured_s
    if left < 2:  # libpq cannot bound a connect below 2 s: starting one would overrun the budget
        raise CallDeadlineExceeded(
            f"no new connection attempted: only {max(0.0, left):.1f} s of the client-side call budget were "
            "left after the previous attempt failed (the server could not be reached in time)"
        )
    return max(2, min(configured_s, math.floor(left)))


def _timeout_for(default_s: float | None) -> float | None:
    scope = getattr(_local, "scope", None)
    if scope is None:
        return default_s
    end, per = scope
    left = end - time.monotonic()
    if left <= 0:
        raise CallDeadlineExceeded(
            "no call made: the client-side call budget was spent (the server did not answer in time)"
        )
    limits = [x for x in (default_s, per, left) if x is not None]
    return min(limits)


@contextlib.contextmanager
def _watched(conn: psycopg2.extensions.connection, what: str, default_s: float | None) -> Iterator[None]:
    seconds = _timeout_for(default_s)
    if seconds is None or conn.closed:
        yield
        return
    entry = _WATCHDOG.arm(conn.fileno(), seconds)
    try:
        yield
    except psycopg2.Error:
        if _WATCHDOG.disarm(entry):
            raise CallDeadlineExceeded(
                f"server closed the connection unexpectedly: the client dropped it because {what} got no "
                f"answer within {seconds:.1f} s (client-side call deadline; the network or the server is "
                "not answering)"
            ) from None
        raise
    finally:
        _WATCHDOG.disarm(entry)


def watched_connection_factory(default_s: float | None) -> type[psycopg2.extensions.connection]:
    """A psycopg2 connection class whose cursors and commits are bounded by the deadline machinery
    (``default_s`` per call outside any :func:`call_budget`; ``None``: only inside budgets)."""

    class WatchedCursor(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):  # noqa: A002 - psycopg2's signature
            with _watched(self.connection, "a query", default_s):
                return super().execute(query, vars)

        def executemany(self, query, vars_list):
            with _watched(self.connection, "a query", default_s):
                return super().executemany(query, vars_list)

        def copy_expert(self, sql, file, size=8192):
            with _watched(self.connection, "a COPY", default_s):
                return super().copy_expert(sql, file, size)

        def callproc(self, procname, parameters=None):
            with _watched(self.connection, "a procedure call", default_s):
                return super().callproc(procname, parameters)

    class WatchedConnection(psycopg2.extensions.connection):
        call_timeout_s = default_s

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.cursor_factory = WatchedCursor

        def commit(self):
            with _watched(self, "a commit", default_s):
                return super().commit()

        def rollback(self):
            with _watched(self, "a rollback", default_s):
                return super().rollback()

    return WatchedConnection
