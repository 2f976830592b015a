"""The ``hybrid`` backend: a local DuckDB cache in front of the central PostgreSQL/Neon store, with failover.

Writes
    land in the local cache first (its own DuckDB file, ``QT_HYBRID_CACHE_PATH``, default
    ``<data_dir>/hybrid_cache.duckdb`` — never the ingestion file, because the cache evicts), then in
    the central store. Every batch is written ahead to the durable
    :class:`~qt_pipeline.storage.outbox.Outbox` before the centre is tried and leaves it only once the
    central write committed, so a process killed mid-write leaves its batch in the outbox (replayed by the
    next start or ``qt outbox replay``), never only in the cache. A central operation has a failover
    budget in wall-clock time, all retries included (``QT_HYBRID_FAILOVER_S`` + rows /
    ``QT_HYBRID_MIN_ROWS_PER_S``), enforced client-side on every call of an open connection (pre-ping,
    query, COPY, commit — see :mod:`~qt_pipeline.storage.postgres.deadline`), so a refused, black-holed
    (new or established) or cut connection is noticed within it. When the central write fails the
    write still succeeds: the batch stays in the outbox and the store turns **degraded** (``store.state`` / ``store.degraded`` / ``health()`` say since when and
    why, and how long noticing took). While degraded, or while the outbox holds anything, new batches go
    to the outbox too (so a replay can never overwrite a newer direct write with an older batch).
Recovery
    a degraded store re-probes the centre at most every ``QT_HYBRID_PROBE_INTERVAL_S`` on the next write,
    read or ``health()`` call; when it answers, the outbox is replayed in order and the store is healthy
    again. The ``central_health_sensor`` requests ``outbox_replay_job`` on the same transition, and
    ``qt outbox replay`` does it by hand.
Reads
    A *coverage* table in the cache file (``hybrid_coverage``: symbol-days the cache holds completely,
    kept in memory too) decides: a bounded range whose every day is covered is answered by DuckDB alone —
    no Postgres round trip (the hot path). Otherwise the range is read from the centre: if all its days are
    hot or warm (and not in the future) the whole days are fetched, kept in the cache and marked covered
    (read-through), else the centre answers directly. Open-ended ranges (``start`` or ``end`` ``None``)
    always go to the centre (the cache cannot know what lies beyond what it holds). When the centre is
    down, the cache answers and the result carries a warning (``df.attrs["warning"]``,
    ``store.last_read_warning``, logged).
Coverage is conservative across crashes: data is written before its days are marked, and days are
unmarked before their data is evicted. A covered day stays correct for writes made through this store
(they reach both copies); rows another machine writes centrally into a covered hot day show up with the
next warming run (every 15 min by default), which pulls what is newer.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from qt_pipeline.config import Settings
from qt_pipeline.market.contract import (
    ContractError,
    day_bounds,
    empty_bars,
    to_canonical,
    to_canonical_rejects,
)
from qt_pipeline.monitoring.telemetry import TELEMETRY
from qt_pipeline.redaction import redact
from qt_pipeline.storage.cache_policy import (
    CachePolicy,
    days_in_range,
    plan_warming,
    today_utc,
)
from qt_pipeline.storage.duckdb_store import DuckDBStore
from qt_pipeline.storage.interface import (
    HealthStatus,
    RangeStore,
    StorageError,
    StorageUnavailableError,
    TimeBound,
    WriteResult,
    as_utc_us,
)
from qt_pipeline.storage.outbox import Kind, Outbox, ReplayResult
from qt_pipeline.storage.postgres.deadline import call_budget

if TYPE_CHECKING:
    import duckdb

    from qt_pipeline.storage.postgres.store import PostgresStore

log = logging.getLogger(__name__)
T = TypeVar("T")

COVERAGE_TABLE = "hybrid_coverage"
COVERAGE_COMPONENT = "hybrid_coverage"
COVERAGE_VERSION = 1

# Errors that are the caller's fault, not the centre's: they propagate instead of degrading the store.
_CALLER_ERRORS = (ContractError, ValueError, TypeError, KeyError)


@dataclass(frozen=True)
class HybridState:
    mode: str  # "healthy" | "degraded"
    since: datetime
    reason: str = ""
    failover_s: float | None = None  # how long the failing call took before the store switched to local
    last_probe_at: datetime | None = None
    outbox_batches: int = 0
    outbox_rows: int = 0

    @property
    def degraded(self) -> bool:
        return self.mode == "degraded"

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "since": self.since.isoformat(),
            "reason": self.reason,
            "failover_s": self.failover_s,
            "last_probe_at": self.last_probe_at.isoformat() if self.last_probe_at else None,
            "outbox_batches": self.outbox_batches,
            "outbox_rows": self.outbox_rows,
        }


@dataclass
class SymbolCoverage:
    symbol: str
    hot_days_covered: int
    hot_days: int
    cached_days: int
    cached_rows: int
    newest_bar: pd.Timestamp | None
    freshness_lag_s: float | None


@dataclass
class WarmReport:
    today: date
    rows_pulled: int = 0
    rows_evicted: int = 0
    days_fetched: int = 0
    days_evicted: int = 0
    evict_blocked_reason: str | None = None
    seconds: float = 0.0
    coverage: list[SymbolCoverage] = field(default_factory=list)

    def coverage_markdown(self) -> str:
        lines = [
            "| symbol | hot days covered | cached days | cached rows | newest bar | freshness lag (s) |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.coverage:
            newest = c.newest_bar.isoformat() if c.newest_bar is not None else "-"
            lag = f"{c.freshness_lag_s:.0f}" if c.freshness_lag_s is not None else "-"
            lines.append(
                f"| {c.symbol} | {c.hot_days_covered}/{c.hot_days} | {c.cached_days} | {c.cached_rows} | "
                f"{newest} | {lag} |"
            )
        return "\n".join(lines)


@dataclass
class RecoverReport:
    symbols: int = 0
    cache_rows: int = 0
    missing: dict[str, int] = field(default_factory=dict)  # symbol -> rows the centre lacked
    replay: ReplayResult | None = None
    seconds: float = 0.0

    @property
    def rows_missing(self) -> int:
        return sum(self.missing.values())

    @property
    def complete(self) -> bool:
        return self.replay is None or self.replay.complete


class _CentralDown(Exception):
    """Internal: the centre is (known to be) unreachable; the caller falls back to the cache."""


def _now() -> datetime:
    return datetime.now(UTC)


class HybridStore(RangeStore):
    backend_name = "hybrid"

    def __init__(
        self,
        local: DuckDBStore,
        central: RangeStore,
        settings: Settings,
        *,
        outbox: Outbox | None = None,
        policy: CachePolicy | None = None,
        clock: Callable[[], datetime] = _now,
    ):
        self.local = local
        self.central = central
        self.settings = settings
        self.outbox = outbox or Outbox(settings.resolved_outbox_dir)
        self.policy = policy or CachePolicy.from_settings(settings)
        self.probe_interval_s = float(settings.hybrid_probe_interval_s)
        self.failover_s = float(getattr(settings, "hybrid_failover_s", 4.0))
        self.min_rows_per_s = float(getattr(settings, "hybrid_min_rows_per_s", 20_000.0))
        self._clock = clock
        self._lock = threading.RLock()
        self._mode = "healthy"
        self._since = clock()
        self._reason = ""
        self._failover_s: float | None = None
        self._last_probe_mono = 0.0
        self._last_probe_at: datetime | None = None
        self.last_read_warning: str | None = None
        self.last_replay: ReplayResult | None = None
        self._preloaded: dict[int, pd.DataFrame] = {}  # frames of batches this process just wrote ahead
        self._covered: set[tuple[str, date]] = set()
        self._init_coverage()
        if not self.outbox.is_empty():
            # batches left from an earlier process: keep order — go through the outbox until replayed
            self._reason = (
                "outbox holds batches from an earlier run; they are replayed when the centre answers"
            )

    # --- coverage (a table in the cache file + an in-memory set) ------------------------------------
    def _con(self) -> duckdb.DuckDBPyConnection:
        return self.local.connection

    def _init_coverage(self) -> None:
        con = self._con()
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {COVERAGE_TABLE} (symbol VARCHAR NOT NULL, day DATE NOT NULL, "
            "marked_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (symbol, day))"
        )
        con.execute(
            "INSERT INTO schema_version VALUES (?, ?, now()) ON CONFLICT (component) DO NOTHING",
            [COVERAGE_COMPONENT, COVERAGE_VERSION],
        )
        rows = con.execute(f"SELECT symbol, day FROM {COVERAGE_TABLE}").fetchall()
        self._covered = {(str(s), d) for s, d in rows}

    def _mark_covered(self, pairs: Iterable[tuple[str, date]]) -> None:
        pairs = sorted(set(pairs) - self._covered)
        if not pairs:
            return
        df = pd.DataFrame({"symbol": [p[0] for p in pairs], "day": [p[1] for p in pairs]})
        con = self._con()
        con.register("_hybrid_cov", df)
        try:
            con.execute(
                f"INSERT INTO {COVERAGE_TABLE} SELECT symbol, CAST(day AS DATE), now() FROM _hybrid_cov "
                "ON CONFLICT (symbol, day) DO NOTHING"
            )
        finally:
            con.unregister("_hybrid_cov")
        self._covered.update(pairs)

    def _unmark(
        self, *, before: date | None = None, symbol: str | None = None, days: Sequence[date] = ()
    ) -> int:
        con = self._con()
        if before is not None:
            gone = {p for p in self._covered if p[1] < before}
            self._covered -= gone
            con.execute(f"DELETE FROM {COVERAGE_TABLE} WHERE day < ?", [before])
            return len(gone)
        gone = {(str(symbol), d) for d in days} & self._covered
        self._covered -= gone
        for d in days:
            con.execute(f"DELETE FROM {COVERAGE_TABLE} WHERE symbol = ? AND day = ?", [symbol, d])
        return len(gone)

    def covered_days(self, symbol: str | None = None) -> list[tuple[str, date]]:
        return sorted(p for p in self._covered if symbol is None or p[0] == symbol)

    def is_covered(self, symbol: str, start: TimeBound, end: TimeBound) -> bool:
        lo, hi = as_utc_us(start), as_utc_us(end)
        if lo is None or hi is None:
            return False
        covered = self._covered
        return all((symbol, d) in covered for d in days_in_range(lo, hi))

    # --- state --------------------------------------------------------------------------------------
    @property
    def location(self) -> str:
        return redact(f"hybrid(cache={self.local.location}, central={self.central.location})")

    @property
    def degraded(self) -> bool:
        return self._mode == "degraded"

    @property
    def state(self) -> HybridState:
        st = self.outbox.status()
        return HybridState(
            mode=self._mode,
            since=self._since,
            reason=self._reason,
            failover_s=self._failover_s,
            last_probe_at=self._last_probe_at,
            outbox_batches=st.batches,
            outbox_rows=st.rows,
        )

    def _enter_degraded(self, exc: BaseException, what: str, started: float) -> None:
        reason = redact(f"{what} failed: {type(exc).__name__}: {str(exc).strip()}")[:2000]
        elapsed = time.perf_counter() - started
        with self._lock:
            if self._mode != "degraded":
                self._mode = "degraded"
                self._since = self._clock()
                self._failover_s = elapsed
                TELEMETRY.failover_state("degraded", self._since, reason)
                log.error(
                    "hybrid store DEGRADED after %.3f s: %s — writes go to the local cache and the outbox "
                    "(%s), reads are served from the cache",
                    elapsed,
                    reason,
                    self.outbox.directory,
                )
            self._reason = reason
            self._last_probe_mono = time.monotonic()

    def _enter_healthy(self) -> None:
        with self._lock:
            if self._mode != "healthy":
                log.warning("hybrid store healthy again (degraded since %s)", self._since.isoformat())
                self._mode = "healthy"
                self._since = self._clock()
                TELEMETRY.failover_state("healthy", self._since, "")
            self._reason = ""

    def budget_for(self, rows: int = 0) -> float:
        """Failover budget (s) of one central operation moving ``rows`` rows, all retries included."""
        return self.failover_s + max(0, rows) / max(1.0, self.min_rows_per_s)

    def _central(self, what: str, fn: Callable[[], T], *, rows: int = 0) -> T:
        """Run a central call within its failover budget; a failure that is not the caller's fault
        degrades the store."""
        started = time.perf_counter()
        try:
            with call_budget(self.budget_for(rows)):
                return fn()
        except _CALLER_ERRORS:
            raise
        except Exception as exc:
            self._enter_degraded(exc, what, started)
            raise _CentralDown(self._reason) from None

    def _probe_due(self) -> bool:
        return time.monotonic() - self._last_probe_mono >= self.probe_interval_s

    def _sync(self, *, force: bool = False) -> bool:
        """True when the centre may be used directly: healthy and the outbox empty (replaying it if
        needed). A degraded store re-probes at most every ``probe_interval_s`` (or when ``force``)."""
        TELEMETRY.failover_heartbeat()  # the recorded state is still this process's (rate-limited)
        with self._lock:
            if self._mode == "degraded" and not force and not self._probe_due():
                return False
            if self._mode == "healthy" and self.outbox.is_empty():
                return True
            self._last_probe_mono = time.monotonic()
            self._last_probe_at = self._clock()
            if self._mode == "degraded":
                started = time.perf_counter()
                with call_budget(self.budget_for()):
                    h = self.central.health()
                if not h.healthy:
                    self._enter_degraded(StorageUnavailableError(h.message), "health probe", started)
                    return False
            result = self.replay_outbox()
            return result.complete

    def replay_outbox(self, *, max_batches: int | None = None, lock_wait_s: float = 0.0) -> ReplayResult:
        """Replay the outbox into the centre now (in order, idempotent). Healthy again when it drained."""
        with self._lock:
            result = self.outbox.replay(
                self._apply_central_budgeted,
                max_batches=max_batches,
                lock_wait_s=lock_wait_s,
                preloaded=self._preloaded,
            )
            self._preloaded.clear()
            self.last_replay = result
            if result.skipped_reason is not None:
                self._reason = result.skipped_reason  # writes keep queueing behind the other replayer
            elif result.error is not None:
                self._enter_degraded(
                    StorageUnavailableError(result.error),
                    "outbox replay",
                    time.perf_counter() - result.seconds,
                )
            elif result.complete:
                if result.replayed_batches:
                    log.warning(
                        "outbox drained: %d batch(es), %d row(s) in %.3f s",
                        result.replayed_batches,
                        result.replayed_rows,
                        result.seconds,
                    )
                self._enter_healthy()
            return result

    def _apply_central(self, kind: Kind, frame: pd.DataFrame) -> None:
        if kind == "bars":
            self.central.write_bars(frame)
        else:
            self.central.write_rejects(frame)

    def _apply_central_budgeted(self, kind: Kind, frame: pd.DataFrame) -> None:
        with call_budget(self.budget_for(len(frame))):
            self._apply_central(kind, frame)

    # --- writes -------------------------------------------------------------------------------------
    def _forward(self, kind: Kind, frame: pd.DataFrame) -> dict[str, Any]:
        """Send a batch already in the cache to the centre through the outbox: written ahead (durable),
        then the outbox is replayed in order; the batch stays queued when the centre cannot take it."""
        if len(frame) == 0:
            return {"central": "nothing to write"}
        with self._lock:
            batch = self.outbox.append(frame, kind)
            self._preloaded[batch.seq] = frame
            if self._sync() and not batch.path.exists():
                return {"central": "written"}
            self._preloaded.pop(batch.seq, None)
            return {"central": "queued", "outbox_seq": batch.seq, "degraded_reason": self._reason}

    def write_bars(self, bars: pd.DataFrame) -> WriteResult:
        t0 = time.perf_counter()
        local_result = self.local.write_bars(bars)  # bad input raises here: nothing written anywhere
        details = self._forward("bars", to_canonical(bars))
        return WriteResult(
            rows=local_result.rows,
            backend=self.backend_name,
            location=self.location,
            seconds=time.perf_counter() - t0,
            details=details,
        )

    def write_rejects(self, rejects: pd.DataFrame) -> int:
        n = self.local.write_rejects(rejects)
        self._forward("rejects", to_canonical_rejects(rejects))
        return int(n)

    # --- reads --------------------------------------------------------------------------------------
    def _fallback(self, what: str, read: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        df = read()
        warning = redact(
            f"{what} served from the local cache only: the central store is unavailable ({self._reason}); "
            "rows written elsewhere since the last sync may be missing"
        )
        df.attrs["warning"] = warning
        df.attrs["source"] = "local-fallback"
        self.last_read_warning = warning
        log.warning(warning)
        return df

    def read_bars(
        self,
        symbol: str,
        start: TimeBound = None,
        end: TimeBound = None,
        *,
        limit: int | None = None,
        from_end: bool = False,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        lo, hi = as_utc_us(start), as_utc_us(end)

        def local_read() -> pd.DataFrame:
            return self.local.read_bars(symbol, lo, hi, limit=limit, from_end=from_end, columns=columns)

        if lo is not None and hi is not None:
            if hi <= lo:
                return local_read()
            days = days_in_range(lo, hi)
            covered = self._covered
            if all((symbol, d) in covered for d in days):  # the hot path: no Postgres round trip
                TELEMETRY.cache_read(hit=True)
                TELEMETRY.symbol_read(symbol)
                return local_read()
        else:
            days = None
        TELEMETRY.cache_read(hit=False)
        TELEMETRY.symbol_read(symbol)
        with self._lock:
            if self._sync():
                try:
                    today = today_utc(self._clock())
                    if days is not None and all(0 <= (today - d).days < self.policy.warm_days for d in days):
                        self._fill(symbol, [d for d in days if (symbol, d) not in self._covered])
                        return local_read()
                    return self._central(
                        f"central read of {symbol}",
                        lambda: self.central.read_bars(
                            symbol, lo, hi, limit=limit, from_end=from_end, columns=columns
                        ),
                    )
                except _CentralDown:
                    pass
            return self._fallback(f"read_bars({symbol!r}, {lo}, {hi})", local_read)

    def _fill(self, symbol: str, days: list[date]) -> int:
        """Read-through: fetch whole ``days`` of ``symbol`` from the centre, keep them, mark them."""
        if not days:
            return 0
        span_lo, _ = day_bounds(min(days))
        _, span_hi = day_bounds(max(days))
        frame = self._central(
            f"read-through of {symbol} {min(days)}..{max(days)}",
            lambda: self.central.read_bars(symbol, span_lo, span_hi),
        )
        # the outbox is empty here (synced), so the centre is the truth for these days
        self.local.replace_range(symbol, span_lo, span_hi, frame)
        self._mark_covered((symbol, d) for d in days)
        return len(frame)

    def read_range(
        self,
        symbols: Sequence[str] | None = None,
        start: TimeBound = None,
        end: TimeBound = None,
    ) -> pd.DataFrame:
        lo, hi = as_utc_us(start), as_utc_us(end)
        if symbols is not None:
            frames = [self.read_bars(s, lo, hi) for s in sorted(set(symbols))]
            warnings = [f.attrs["warning"] for f in frames if "warning" in f.attrs]
            frames = [f for f in frames if len(f)]
            out = pd.concat(frames, ignore_index=True) if frames else empty_bars()
            if warnings:
                out.attrs["warning"] = warnings[0]
            return out
        with self._lock:
            if self._sync():
                try:
                    return self._central("central read_range", lambda: self.central.read_range(None, lo, hi))
                except _CentralDown:
                    pass
            return self._fallback("read_range(all symbols)", lambda: self.local.read_range(None, lo, hi))

    def list_symbols(self) -> pd.DataFrame:
        with self._lock:
            if self._sync():
                try:
                    return self._central("central list_symbols", self.central.list_symbols)
                except _CentralDown:
                    pass
            return self._fallback("list_symbols()", self.local.list_symbols)

    def read_rejects(self, source: str | None = None) -> pd.DataFrame:
        with self._lock:
            if self._sync():
                try:
                    return self._central("central read_rejects", lambda: self.central.read_rejects(source))
                except _CentralDown:
                    pass
            return self._fallback("read_rejects()", lambda: self.local.read_rejects(source))

    def symbol_days(
        self, start: TimeBound = None, end: TimeBound = None, symbols: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Per symbol-day row counts of the centre (the cache's when the centre is down, with a warning)."""
        with self._lock:
            if self._sync():
                try:
                    return self._central(
                        "central symbol_days",
                        lambda: self.central.symbol_days(start, end, symbols),
                    )
                except _CentralDown:
                    pass
            return self._fallback("symbol_days()", lambda: self.local.symbol_days(start, end, symbols))

    def _require_central(self, what: str, outcome: str) -> None:
        """Sync with the centre now, or raise: ``what`` is not queued behind an outage."""
        if not self._sync(force=True):
            raise StorageUnavailableError(
                f"{what} needs the central store, which is unavailable ({self._reason}); {outcome} — retry "
                "when `qt health` reports it healthy"
            )

    def delete_range(self, symbol: str, start: TimeBound = None, end: TimeBound = None) -> int:
        """Delete in the centre, then in the cache. Needs the centre (not queued): raises when it is down."""
        with self._lock:
            self._require_central(f"delete_range({symbol!r})", "nothing was deleted")
            n = self._central(
                f"central delete_range of {symbol}",
                lambda: self.central.delete_range(symbol, start, end),
            )
            self.local.delete_range(symbol, start, end)
            return int(n)

    def replace_range(self, symbol: str, start: TimeBound, end: TimeBound, bars: pd.DataFrame) -> WriteResult:
        """Replace in the centre, then in the cache. Needs the centre (not queued): raises when it is down."""
        with self._lock:
            self._require_central(f"replace_range({symbol!r})", "nothing was changed")
            res = self._central(
                f"central replace_range of {symbol}",
                lambda: self.central.replace_range(symbol, start, end, bars),
            )
            self.local.replace_range(symbol, start, end, bars)
            return WriteResult(rows=res.rows, backend=self.backend_name, location=self.location)

    # --- warming ------------------------------------------------------------------------------------
    def warm_cache(self, symbols: Iterable[str] | None = None, *, now: datetime | None = None) -> WarmReport:
        """Pull the missing/newer hot window of ``symbols`` from the centre, evict beyond the warm window."""
        t0 = time.perf_counter()
        now_ts = pd.Timestamp(now or self._clock())
        today = today_utc(now_ts)
        symbols = sorted(set(symbols if symbols is not None else self.settings.symbols))
        report = WarmReport(today=today)
        with self._lock:
            if not self._sync(force=True):
                raise StorageUnavailableError(
                    f"cannot warm the cache: the central store is unavailable ({self._reason}); the cache "
                    "keeps serving what it holds — warming runs again on the next schedule tick"
                )
            hot_lo, _ = day_bounds(self.policy.hot_start(today))
            _, hot_hi = day_bounds(today)
            central_days = self._central(
                "central symbol_days",
                lambda: self.central.symbol_days(hot_lo, hot_hi, symbols=symbols),
            )
            local_days = self.local.symbol_days()
            plan = plan_warming(
                self.policy,
                today=today,
                symbols=symbols,
                central_days=central_days,
                local_days=local_days,
                covered=set(self._covered),
                outbox_pending=not self.outbox.is_empty(),
            )
            for item in plan.fetch:
                d_lo, d_hi = day_bounds(item.day)
                if item.action == "mark":
                    self._mark_covered([(item.symbol, item.day)])
                    continue
                if item.action == "incremental":
                    newest = self.local.read_bars(
                        item.symbol, d_lo, d_hi, limit=1, from_end=True, columns=["timestamp"]
                    )
                    after = newest["timestamp"].iloc[0] + pd.Timedelta(microseconds=1)
                    new = self._central(
                        f"warming {item.symbol} {item.day}",
                        functools.partial(self.central.read_bars, item.symbol, after, d_hi),
                    )
                    self.local.write_bars(new)
                    report.rows_pulled += len(new)
                    got = self.local.symbol_days(d_lo, d_hi)
                    got_rows = int(got.loc[got["symbol"] == item.symbol, "rows"].sum())
                    if got_rows == item.central_rows:
                        report.days_fetched += 1
                        continue
                    # counts still differ (rows changed before the newest cached bar): fetch the whole day
                frame = self._central(
                    f"warming {item.symbol} {item.day}",
                    functools.partial(self.central.read_bars, item.symbol, d_lo, d_hi),
                )
                self._unmark(symbol=item.symbol, days=[item.day])
                self.local.replace_range(item.symbol, d_lo, d_hi, frame)
                self._mark_covered([(item.symbol, item.day)])
                report.rows_pulled += len(frame)
                report.days_fetched += 1
            warm_start = self.policy.warm_start(today)
            report.evict_blocked_reason = plan.evict_blocked_reason
            if plan.evict_blocked_reason is None:
                self._unmark(before=warm_start)  # unmark first: a crash leaves data without coverage
                cut, _ = day_bounds(warm_start)
                for sym in sorted({s for s, _, _ in plan.evict}):
                    report.rows_evicted += self.local.delete_range(sym, None, cut)
                report.days_evicted = len(plan.evict)
            report.coverage = self._coverage_summary(symbols, today, now_ts)
        report.seconds = time.perf_counter() - t0
        return report

    def _coverage_summary(self, symbols: list[str], today: date, now: pd.Timestamp) -> list[SymbolCoverage]:
        local_days = self.local.symbol_days()
        summary = self.local.list_symbols().set_index("symbol")
        hot = self.policy.hot_days_list(today)
        out = []
        for s in symbols:
            mine = local_days[local_days["symbol"] == s]
            newest = summary["last_timestamp"].get(s) if s in summary.index else None
            lag = (now.tz_convert("UTC") - newest).total_seconds() if newest is not None else None
            out.append(
                SymbolCoverage(
                    symbol=s,
                    hot_days_covered=sum((s, d) in self._covered for d in hot),
                    hot_days=len(hot),
                    cached_days=len(mine),
                    cached_rows=int(mine["rows"].sum()),
                    newest_bar=newest,
                    freshness_lag_s=lag,
                )
            )
        return out

    # --- repair -------------------------------------------------------------------------------------
    def recover_cache(self, start: Any = None, end: Any = None, *, dry_run: bool = False) -> RecoverReport:
        """Make the centre hold everything the cache holds: rows of the cache whose key the centre lacks
        (written to the cache by a process that died before its batch reached the outbox — possible only
        with versions before the write-ahead outbox — or lost centrally) are queued in the outbox and
        replayed. Keys the centre has are left alone (its value may be newer, written elsewhere)."""
        t0 = time.perf_counter()
        lo, hi = as_utc_us(start), as_utc_us(end)
        report = RecoverReport()
        with self._lock:
            if not self._sync(force=True):
                raise StorageUnavailableError(
                    f"cannot recover the cache into the central store: it is unavailable ({self._reason}); "
                    "nothing was changed — retry when `qt health` reports it healthy"
                )
            for row in self.local.list_symbols().itertuples(index=False):
                s_lo = max(lo, row.first_timestamp) if lo is not None else row.first_timestamp
                s_hi = row.last_timestamp + pd.Timedelta(microseconds=1)
                if hi is not None:
                    s_hi = min(hi, s_hi)
                if s_hi <= s_lo:
                    continue
                mine = self.local.read_bars(row.symbol, s_lo, s_hi)
                try:
                    theirs = self._central(
                        f"central keys of {row.symbol}",
                        functools.partial(
                            self.central.read_bars, row.symbol, s_lo, s_hi, columns=["timestamp"]
                        ),
                    )
                except _CentralDown:
                    raise StorageUnavailableError(
                        f"cannot recover the cache into the central store: {self._reason}; rows queued so "
                        f"far ({report.rows_missing}) are in the outbox — retry when `qt health` reports "
                        "it healthy"
                    ) from None
                missing = mine[~mine["timestamp"].isin(theirs["timestamp"])]
                report.symbols += 1
                report.cache_rows += len(mine)
                if len(missing):
                    report.missing[str(row.symbol)] = len(missing)
                    if not dry_run:
                        self.outbox.append(missing, "bars")
            if report.missing and not dry_run:
                report.replay = self.replay_outbox()
        report.seconds = time.perf_counter() - t0
        return report

    # --- health / lifecycle -------------------------------------------------------------------------
    def health(self) -> HealthStatus:
        try:
            with self._lock:
                self._sync(force=True)
                with call_budget(self.budget_for()):  # a silent centre cannot hold the probe up
                    central = self.central.health()
                local = self.local.health()
                st = self.state
                healthy = central.healthy and not st.degraded
                msg = (
                    f"centre {'up' if central.healthy else 'DOWN'}; "
                    f"{'healthy' if not st.degraded else 'DEGRADED since ' + st.since.isoformat()}; "
                    f"outbox {st.outbox_batches} batch(es)/{st.outbox_rows} row(s)"
                )
                if st.degraded:
                    msg += f"; reason: {st.reason}"
                return HealthStatus(
                    healthy=healthy,
                    backend=self.backend_name,
                    location=self.location,
                    latency_ms=central.latency_ms,
                    message=redact(msg),
                    details={
                        "state": st.as_dict(),
                        "central": {
                            "healthy": central.healthy,
                            "message": redact(central.message),
                            **central.details,
                        },
                        "local": {"healthy": local.healthy, **local.details},
                        "covered_symbol_days": len(self._covered),
                    },
                )
        except Exception as exc:  # health never raises
            return HealthStatus(
                healthy=False,
                backend=self.backend_name,
                location=self.location,
                message=redact(f"{type(exc).__name__}: {exc}"),
            )

    def close(self) -> None:
        for part in (self.local, self.central):
            try:
                part.close()
            except Exception as exc:  # noqa: BLE001 - close both
                log.warning("closing %s failed: %s", type(part).__name__, redact(exc))

    def __repr__(self) -> str:
        return f"HybridStore({self.location}, mode={self._mode})"


def central_settings(settings: Settings) -> Settings:
    """``settings`` with the hybrid path's short central retry budget and connect timeout."""
    return settings.model_copy(
        update={
            "pg_retry_attempts": settings.hybrid_pg_retry_attempts,
            "pg_connect_timeout_s": settings.hybrid_connect_timeout_s,
        }
    )


def make_central(settings: Settings) -> PostgresStore:
    """The central store with the hybrid path's short retry budget (see :func:`central_settings`)."""
    from qt_pipeline.storage.central import open_central

    return open_central(central_settings(settings))


def from_settings(settings: Settings) -> HybridStore:
    """The factory's entry (``STORAGE_BACKEND=hybrid``)."""
    local = DuckDBStore(settings.resolved_hybrid_cache_path)
    try:
        central = make_central(settings)
    except Exception:
        local.close()
        raise
    return HybridStore(local, central, settings)


def replay_outbox(
    settings: Settings, *, max_batches: int | None = None, lock_wait_s: float = 30.0
) -> ReplayResult:
    """Replay ``settings``' outbox into the centre without opening the cache file (used by the replay
    job and ``qt outbox replay``, which may run while another process holds the DuckDB cache)."""
    outbox = Outbox(settings.resolved_outbox_dir)
    if outbox.is_empty():
        return ReplayResult()
    central = make_central(settings)
    try:

        def apply(kind: str, frame: pd.DataFrame) -> None:
            if kind == "bars":
                central.write_bars(frame)
            else:
                central.write_rejects(frame)

        return outbox.replay(apply, max_batches=max_batches, lock_wait_s=lock_wait_s)
    finally:
        central.close()


__all__ = [
    "COVERAGE_TABLE",
    "HybridState",
    "HybridStore",
    "RecoverReport",
    "StorageError",
    "SymbolCoverage",
    "WarmReport",
    "central_settings",
    "from_settings",
    "make_central",
    "replay_outbox",
]
