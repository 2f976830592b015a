"""The ``hybrid`` backend: a local DuckDB cache in front of the central PostgreSQL/Neon store, with failover.

Writes
    land in the local cache first (its own DuckDB file, ``QT_HYBRID_CACHE_PATH``, default
    ``<data_dir>/hybrid_cache.duckdb`` — never the ingestion file, because the cache evicts), then in
    the central store. When the central write fails (after a deliberately short retry budget,
    ``QT_HYBRID_PG_RETRY_ATTEMPTS``/``QT_HYBRID_CONNECT_TIMEOUT_S``, so an outage is noticed fast) the
    write still succeeds: the batch goes to the durable :class:`~qt_pipeline.storage.outbox.Outbox` and
    the store turns **degraded** (``store.state`` / ``store.degraded`` / ``health()`` say since when and
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

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from qt_pipeline.market.contract import (
    ContractError,
    day_bounds,
    empty_bars,
    to_canonical,
    to_canonical_rejects,
)
from qt_pipeline.redaction import redact
from qt_pipeline.storage.cache_policy import (
    CachePolicy,
    days_in_range,
    plan_warming,
    today_utc,
)
from qt_pipeline.storage.interface import (
    DataStorageInterface,
    HealthStatus,
    StorageError,
    StorageUnavailableError,
    WriteResult,
    as_utc_us,
)
from qt_pipeline.storage.outbox import Outbox, ReplayResult

log = logging.getLogger(__name__)

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


class _CentralDown(Exception):
    """Internal: the centre is (known to be) unreachable; the caller falls back to the cache."""


def _now() -> datetime:
    return datetime.now(UTC)


class HybridStore(DataStorageInterface):
    backend_name = "hybrid"

    def __init__(
        self,
        local: DataStorageInterface,
        central: DataStorageInterface,
        settings: Any,
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
        self._covered: set[tuple[str, date]] = set()
        self._init_coverage()
        if not self.outbox.is_empty():
            # batches left from an earlier process: keep order — go through the outbox until replayed
            self._reason = (
                "outbox holds batches from an earlier run; they are replayed when the centre answers"
            )

    # --- coverage (a table in the cache file + an in-memory set) ------------------------------------
    def _con(self):
        return self.local.connection  # type: ignore[attr-defined]

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
        gone = {(symbol, d) for d in days} & self._covered
        self._covered -= gone
        for d in days:
            con.execute(f"DELETE FROM {COVERAGE_TABLE} WHERE symbol = ? AND day = ?", [symbol, d])
        return len(gone)

    def covered_days(self, symbol: str | None = None) -> list[tuple[str, date]]:
        return sorted(p for p in self._covered if symbol is None or p[0] == symbol)

    def is_covered(self, symbol: str, start: Any, end: Any) -> bool:
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
            self._reason = ""

    def _central(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run a central call; a failure that is not the caller's fault degrades the store."""
        started = time.perf_counter()
        try:
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
        with self._lock:
            if self._mode == "degraded" and not force and not self._probe_due():
                return False
            if self._mode == "healthy" and self.outbox.is_empty():
                return True
            self._last_probe_mono = time.monotonic()
            self._last_probe_at = self._clock()
            if self._mode == "degraded":
                started = time.perf_counter()
                h = self.central.health()
                if not h.healthy:
                    self._enter_degraded(StorageUnavailableError(h.message), "health probe", started)
                    return False
            result = self.replay_outbox()
            return result.complete

    def replay_outbox(self, *, max_batches: int | None = None, lock_wait_s: float = 0.0) -> ReplayResult:
        """Replay the outbox into the centre now (in order, idempotent). Healthy again when it drained."""
        with self._lock:
            result = self.outbox.replay(self._apply_central, max_batches=max_batches, lock_wait_s=lock_wait_s)
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

    def _apply_central(self, kind: str, frame: pd.DataFrame) -> None:
        if kind == "bars":
            self.central.write_bars(frame)
        else:
            self.central.write_rejects(frame)

    # --- writes -------------------------------------------------------------------------------------
    def _forward(self, kind: str, frame: pd.DataFrame) -> dict[str, Any]:
        """Send a batch already in the cache to the centre, or to the outbox when that is not possible."""
        if len(frame) == 0:
            return {"central": "nothing to write"}
        with self._lock:
            if self._sync():
                try:
                    self._central(
                        f"central write of {len(frame)} {kind} row(s)",
                        lambda: self._apply_central(kind, frame),
                    )
                    return {"central": "written"}
                except _CentralDown:
                    pass
            batch = self.outbox.append(frame, kind)  # type: ignore[arg-type]
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
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
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
                return local_read()
        else:
            days = None
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
        self.local.replace_range(symbol, span_lo, span_hi, frame)  # type: ignore[attr-defined]
        self._mark_covered((symbol, d) for d in days)
        return len(frame)

    def read_range(
        self,
        symbols: Sequence[str] | None = None,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
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
        self,
        start: datetime | pd.Timestamp | None = None,
        end: datetime | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Per symbol-day row counts of the centre (the cache's when the centre is down, with a warning)."""
        with self._lock:
            if self._sync():
                try:
                    return self._central(
                        "central symbol_days",
                        lambda: self.central.symbol_days(start, end),  # type: ignore[attr-defined]
                    )
                except _CentralDown:
                    pass
            return self._fallback("symbol_days()", lambda: self.local.symbol_days(start, end))  # type: ignore[attr-defined]

    def delete_range(self, symbol: str, start: Any = None, end: Any = None) -> int:
        """Delete in the centre, then in the cache. Needs the centre (not queued): raises when it is down."""
        with self._lock:
            if not self._sync(force=True):
                raise StorageUnavailableError(
                    f"delete_range({symbol!r}) needs the central store, which is unavailable "
                    f"({self._reason}); nothing was deleted — retry when `qt health` reports it healthy"
                )
            n = self._central(
                f"central delete_range of {symbol}",
                lambda: self.central.delete_range(symbol, start, end),  # type: ignore[attr-defined]
            )
            self.local.delete_range(symbol, start, end)  # type: ignore[attr-defined]
            return int(n)

    def replace_range(self, symbol: str, start: Any, end: Any, bars: pd.DataFrame) -> WriteResult:
        """Replace in the centre, then in the cache. Needs the centre (not queued): raises when it is down."""
        with self._lock:
            if not self._sync(force=True):
                raise StorageUnavailableError(
                    f"replace_range({symbol!r}) needs the central store, which is unavailable "
                    f"({self._reason}); nothing was changed — retry when `qt health` reports it healthy"
                )
            res = self._central(
                f"central replace_range of {symbol}",
                lambda: self.central.replace_range(symbol, start, end, bars),  # type: ignore[attr-defined]
            )
            self.local.replace_range(symbol, start, end, bars)  # type: ignore[attr-defined]
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
                lambda: self.central.symbol_days(hot_lo, hot_hi, symbols=symbols),  # type: ignore[attr-defined]
            )
            local_days = self.local.symbol_days()  # type: ignore[attr-defined]
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
                        lambda s=item.symbol, a=after, h=d_hi: self.central.read_bars(s, a, h),
                    )
                    self.local.write_bars(new)
                    report.rows_pulled += len(new)
                    got = self.local.symbol_days(d_lo, d_hi)  # type: ignore[attr-defined]
                    got_rows = int(got.loc[got["symbol"] == item.symbol, "rows"].sum())
                    if got_rows == item.central_rows:
                        report.days_fetched += 1
                        continue
                    # counts still differ (rows changed before the newest cached bar): fetch the whole day
                frame = self._central(
                    f"warming {item.symbol} {item.day}",
                    lambda s=item.symbol, lo=d_lo, hi=d_hi: self.central.read_bars(s, lo, hi),
                )
                self._unmark(symbol=item.symbol, days=[item.day])
                self.local.replace_range(item.symbol, d_lo, d_hi, frame)  # type: ignore[attr-defined]
                self._mark_covered([(item.symbol, item.day)])
                report.rows_pulled += len(frame)
                report.days_fetched += 1
            warm_start = self.policy.warm_start(today)
            report.evict_blocked_reason = plan.evict_blocked_reason
            if plan.evict_blocked_reason is None:
                self._unmark(before=warm_start)  # unmark first: a crash leaves data without coverage
                cut, _ = day_bounds(warm_start)
                for sym in sorted({s for s, _, _ in plan.evict}):
                    report.rows_evicted += self.local.delete_range(sym, None, cut)  # type: ignore[attr-defined]
                report.days_evicted = len(plan.evict)
            report.coverage = self._coverage_summary(symbols, today, now_ts)
        report.seconds = time.perf_counter() - t0
        return report

    def _coverage_summary(self, symbols: list[str], today: date, now: pd.Timestamp) -> list[SymbolCoverage]:
        local_days = self.local.symbol_days()  # type: ignore[attr-defined]
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

    # --- health / lifecycle -------------------------------------------------------------------------
    def health(self) -> HealthStatus:
        try:
            with self._lock:
                self._sync(force=True)
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


def central_settings(settings: Any) -> Any:
    """``settings`` with the hybrid path's short central retry budget and connect timeout."""
    return settings.model_copy(
        update={
            "pg_retry_attempts": settings.hybrid_pg_retry_attempts,
            "pg_connect_timeout_s": settings.hybrid_connect_timeout_s,
        }
    )


def make_central(settings: Any) -> DataStorageInterface:
    """The central store with the hybrid path's short retry budget (see :func:`central_settings`)."""
    from qt_pipeline.storage.central import open_central

    return open_central(central_settings(settings))


def from_settings(settings: Any) -> HybridStore:
    """The factory's entry (``STORAGE_BACKEND=hybrid``)."""
    from qt_pipeline.storage.duckdb_store import DuckDBStore

    local = DuckDBStore(settings.resolved_hybrid_cache_path)
    try:
        central = make_central(settings)
    except Exception:
        local.close()
        raise
    return HybridStore(local, central, settings)


def replay_outbox(
    settings: Any, *, max_batches: int | None = None, lock_wait_s: float = 30.0
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
    "StorageError",
    "SymbolCoverage",
    "WarmReport",
    "central_settings",
    "from_settings",
    "make_central",
    "replay_outbox",
]
