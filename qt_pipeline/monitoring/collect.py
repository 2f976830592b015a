"""Metric collection: one :class:`MetricsSnapshot` of the platform, read live (plain Python, no Dagster).

What it reads (names in :data:`METRICS`; the README lists them):

* the SQLAlchemy pools of the engines this process created (size, checked out, overflow, checked in) and
  the pool waits (:mod:`.telemetry`);
* latency percentiles of the store's own calls in this process (the bounded reservoirs of :mod:`.telemetry`);
* the hybrid outbox (batches, rows, bytes, age of the oldest batch) from its directory;
* the hybrid failover state (``healthy``/``degraded``, since when), as its store last recorded it;
* cache hits/misses and bytes read from the central store, summed over every process of the data
  directory (:class:`~qt_pipeline.monitoring.usage.UsageLedger`);
* from the central store (when reachable): consistency of what the migration ledger says was migrated with
  what the store holds (symbol-days whose row count differs; archived days excluded), the last successful
  migration per symbol and the newest bar per symbol.

Nothing here raises: a source that fails is named in ``snapshot.errors`` and its metrics are absent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from qt_pipeline.config import Settings
from qt_pipeline.monitoring.telemetry import (
    FAILOVER_STATE_KEY,
    PROCESS_STATE_PREFIX,
    TELEMETRY,
    process_label,
)
from qt_pipeline.monitoring.usage import UsageLedger
from qt_pipeline.redaction import redact

if TYPE_CHECKING:
    from qt_pipeline.storage.postgres.store import PostgresStore

# name -> (type, help). The exporter, the Dagster observation and the README use these names.
METRICS: dict[str, tuple[str, str]] = {
    "qt_central_up": ("gauge", "1 when the central store answered this collection, else 0"),
    "qt_pool_size": ("gauge", "SQLAlchemy pool size of an engine (engine, process)"),
    "qt_pool_checked_out": ("gauge", "connections checked out of the pool now"),
    "qt_pool_overflow": (
        "gauge",
        "overflow connections in use beyond the pool size (negative: unused slots)",
    ),
    "qt_pool_checked_in": ("gauge", "idle connections in the pool"),
    "qt_pool_waits_total": ("counter", "checkouts that found the pool exhausted and had to wait"),
    "qt_pool_wait_seconds_total": ("counter", "seconds spent waiting for a pooled connection"),
    "qt_query_latency_seconds": (
        "gauge",
        "latency percentile of the store's own calls (op, quantile, process)",
    ),
    "qt_queries_total": ("counter", "statements executed against the central store (op, process)"),
    "qt_outbox_batches": ("gauge", "batches waiting in the hybrid outbox"),
    "qt_outbox_rows": ("gauge", "rows waiting in the hybrid outbox"),
    "qt_outbox_bytes": ("gauge", "bytes of the batches waiting in the hybrid outbox"),
    "qt_outbox_oldest_age_seconds": ("gauge", "age of the oldest outbox batch (0 when empty)"),
    "qt_hybrid_degraded": (
        "gauge",
        "1 when the hybrid store's recorded state is degraded (failed over) and not stale, else 0",
    ),
    "qt_hybrid_state_since_timestamp_seconds": ("gauge", "when the hybrid store entered its current state"),
    "qt_hybrid_state_age_seconds": (
        "gauge",
        "age of the recorded hybrid failover state's last heartbeat (0: this process's own state)",
    ),
    "qt_hybrid_state_stale": (
        "gauge",
        "1 when the recorded failover state is older than QT_HYBRID_STATE_STALE_S (its process died or idles)",
    ),
    "qt_cache_hits_total": ("counter", "hybrid reads answered by the local cache alone"),
    "qt_cache_misses_total": ("counter", "hybrid reads that needed the central store"),
    "qt_cache_hit_ratio": ("gauge", "cache hits / (hits + misses), all processes"),
    "qt_central_bytes_read_total": ("counter", "bytes the central store sent for bar reads (COPY payload)"),
    "qt_central_busy_seconds_total": (
        "counter",
        "seconds a central connection was checked out (this process)",
    ),
    "qt_consistency_ok": ("gauge", "1 when every migrated symbol-day still holds the ledger's row count"),
    "qt_consistency_mismatched_symbol_days": ("gauge", "migrated symbol-days whose row count differs"),
    "qt_last_migration_timestamp_seconds": ("gauge", "when the last successful migration of a symbol ran"),
    "qt_last_migrated_day_timestamp_seconds": ("gauge", "newest day of a symbol migrated successfully"),
    "qt_central_last_bar_timestamp_seconds": ("gauge", "newest bar of a symbol in the central store"),
    "qt_budget_status": (
        "gauge",
        "last budget status: 0 ok, 1 warn, 2 over budget (qt cost / platform_cost)",
    ),
    "qt_projected_monthly_cost": ("gauge", "last projected monthly cost (currency of configs/cost.yaml)"),
}

BUDGET_LEVELS = {"ok": 0, "warn": 1, "over": 2}


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """``name`` or ``name{a=x,b=y}`` (the Dagster metadata key)."""
        if not self.labels:
            return self.name
        return self.name + "{" + ",".join(f"{k}={v}" for k, v in self.labels) + "}"


@dataclass
class MetricsSnapshot:
    collected_at: datetime
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, name: str, value: float | int | None, **labels: str) -> None:
        if name not in METRICS:
            raise KeyError(f"undocumented metric {name!r}: add it to METRICS")
        if value is not None:
            self.samples.append(Sample(name, float(value), tuple(sorted(labels.items()))))

    def value(self, name: str, **labels: str) -> float | None:
        """The first sample of ``name`` whose labels include ``labels``."""
        for s in self.samples:
            if s.name == name and all(dict(s.labels).get(k) == v for k, v in labels.items()):
                return s.value
        return None

    def by_name(self) -> Iterator[tuple[str, list[Sample]]]:
        for name in METRICS:
            got = [s for s in self.samples if s.name == name]
            if got:
                yield name, got

    def as_metadata(self) -> dict[str, float]:
        return {s.key: round(s.value, 6) for s in self.samples}


PROCESS_MAX_AGE = timedelta(minutes=5)  # a process that published nothing for this long is gone or idle


def _add_process(snap: MetricsSnapshot, process: str, view: dict[str, Any]) -> None:
    seen: set[str] = set()
    for i, stats in enumerate(view["pools"]):
        label = redact(stats["engine"])
        if label in seen:
            label = f"{label}#{i}"
        seen.add(label)
        for metric, key in (
            ("qt_pool_size", "pool_size"),
            ("qt_pool_checked_out", "pool_checked_out"),
            ("qt_pool_overflow", "pool_overflow"),
            ("qt_pool_checked_in", "pool_checked_in"),
        ):
            snap.add(metric, stats.get(key), engine=label, process=process)
    for op, lat in sorted(view["latency"].items()):
        for q, label in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
            snap.add("qt_query_latency_seconds", lat[q], op=op, quantile=label, process=process)
        snap.add("qt_queries_total", lat["count"], op=op, process=process)


def _process_metrics(snap: MetricsSnapshot, settings: Settings) -> None:
    """Pools and latencies of this process (live) and of every other process of the data directory that
    published them in the last ``PROCESS_MAX_AGE`` (Dagster runs, the daemon's sensors, commands)."""
    me = process_label()
    if TELEMETRY.engines():
        _add_process(snap, me, TELEMETRY.process_view())
    others = UsageLedger.for_data_dir(settings.data_dir).states(PROCESS_STATE_PREFIX, max_age=PROCESS_MAX_AGE)
    for process, view in sorted(others.items()):
        if process != me:
            _add_process(snap, process, view)


def _telemetry_metrics(snap: MetricsSnapshot, settings: Settings) -> None:
    tel = TELEMETRY.snapshot()
    snap.add("qt_central_busy_seconds_total", tel["counters"].get("central_busy_seconds", 0.0))
    try:
        TELEMETRY.flush()
    except Exception as exc:  # noqa: BLE001 - collection never raises
        snap.errors.append(redact(f"usage ledger flush: {type(exc).__name__}: {exc}"))
    ledger = UsageLedger.for_data_dir(settings.data_dir)
    totals = ledger.totals()
    hits, misses = totals.get("cache_hits", 0.0), totals.get("cache_misses", 0.0)
    snap.add("qt_cache_hits_total", hits)
    snap.add("qt_cache_misses_total", misses)
    snap.add("qt_cache_hit_ratio", hits / (hits + misses) if hits + misses else None)
    snap.add("qt_central_bytes_read_total", totals.get("central_bytes_read", 0.0))
    snap.add("qt_pool_waits_total", totals.get("pool_waits", 0.0))
    snap.add("qt_pool_wait_seconds_total", totals.get("pool_wait_seconds", 0.0))
    _failover_metrics(snap, settings, tel["failover"], ledger.state(FAILOVER_STATE_KEY))
    budget = ledger.state("budget")
    if budget:
        snap.add("qt_budget_status", BUDGET_LEVELS.get(budget.get("status", "ok"), 0))
        snap.add("qt_projected_monthly_cost", budget.get("projected_monthly"))


def _failover_metrics(
    snap: MetricsSnapshot, settings: Settings, own: dict[str, Any] | None, recorded: dict[str, Any] | None
) -> None:
    """The hybrid failover state: this process's own (current by definition), else the one a store
    recorded in the ledger, aged by its heartbeat. A record older than ``QT_HYBRID_STATE_STALE_S`` (its
    process died or went idle) is *stale*: ``qt_hybrid_degraded`` is then 0 and ``qt_hybrid_state_stale``
    1, so a dead degraded process does not leave "degraded" on the dashboard forever."""
    failover = own or recorded
    if not failover:
        snap.add("qt_hybrid_degraded", 0)
        return
    if own:
        age = 0.0
    else:
        beat = datetime.fromisoformat(failover.get("heartbeat") or failover["since"])
        age = max(0.0, (datetime.now(UTC) - beat).total_seconds())
    stale = age > settings.hybrid_state_stale_s
    snap.add("qt_hybrid_degraded", 1 if failover["mode"] == "degraded" and not stale else 0)
    snap.add("qt_hybrid_state_stale", 1 if stale else 0)
    snap.add("qt_hybrid_state_age_seconds", round(age, 3))
    snap.add("qt_hybrid_state_since_timestamp_seconds", datetime.fromisoformat(failover["since"]).timestamp())


def _outbox_metrics(snap: MetricsSnapshot, settings: Settings) -> None:
    from qt_pipeline.storage.outbox import Outbox

    directory = settings.resolved_outbox_dir
    if not directory.exists():
        st_batches = st_rows = st_bytes = 0
        age = 0.0
    else:
        st = Outbox(directory).status()
        st_batches, st_rows, st_bytes, age = st.batches, st.rows, st.bytes, st.oldest_age_s or 0.0
    snap.add("qt_outbox_batches", st_batches)
    snap.add("qt_outbox_rows", st_rows)
    snap.add("qt_outbox_bytes", st_bytes)
    snap.add("qt_outbox_oldest_age_seconds", age)


def consistency_mismatches(central: PostgresStore) -> list[tuple[str, Any, int, int]]:
    """``(symbol, day, ledger rows, stored rows)`` of migrated symbol-days whose stored row count differs
    from what the migration ledger recorded (days the cold tier archived and dropped are excluded)."""
    from sqlalchemy import text

    bars, ledger, ranges = (
        central.qualified(t) for t in ("ohlcv_bars", "migration_ledger", "cold_tier_ranges")
    )
    sql = f"""
        WITH stored AS (
            SELECT symbol, ("timestamp" AT TIME ZONE 'UTC')::date AS day, count(*) AS n
            FROM {bars} GROUP BY 1, 2)
        SELECT l.symbol, l.day, l.rows, coalesce(s.n, 0)
        FROM {ledger} l LEFT JOIN stored s ON s.symbol = l.symbol AND s.day = l.day
        WHERE l.status = 'done' AND l.rows <> coalesce(s.n, 0)
          AND NOT EXISTS (SELECT 1 FROM {ranges} r WHERE r.dropped_at IS NOT NULL
                          AND (l.day::timestamp AT TIME ZONE 'UTC') >= r.range_start
                          AND (l.day::timestamp AT TIME ZONE 'UTC') < r.range_end)
        ORDER BY 1, 2"""
    with central.engine.connect() as conn:
        return [(str(r[0]), r[1], int(r[2]), int(r[3])) for r in conn.execute(text(sql)).fetchall()]


def last_migrations(central: PostgresStore) -> list[tuple[str, datetime, Any]]:
    """``(symbol, last successful migration time, newest migrated day)`` per symbol of the ledger."""
    from sqlalchemy import text

    sql = (
        f"SELECT symbol, max(migrated_at), max(day) FROM {central.qualified('migration_ledger')} "
        "WHERE status = 'done' GROUP BY symbol ORDER BY symbol"
    )
    with central.engine.connect() as conn:
        return [(str(r[0]), r[1], r[2]) for r in conn.execute(text(sql)).fetchall()]


def _day_ts(day: Any) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _central_metrics(snap: MetricsSnapshot, central: PostgresStore | None) -> None:
    if central is None:
        snap.add("qt_central_up", 0)
        return
    try:
        central.ensure_schema()
        mismatches = consistency_mismatches(central)
        migrations = last_migrations(central)
        summary = central.list_symbols()
    except Exception as exc:  # noqa: BLE001 - collection never raises
        snap.add("qt_central_up", 0)
        snap.errors.append(redact(f"central store: {type(exc).__name__}: {str(exc).strip()[:300]}"))
        return
    snap.add("qt_central_up", 1)
    snap.add("qt_consistency_ok", 0 if mismatches else 1)
    snap.add("qt_consistency_mismatched_symbol_days", len(mismatches))
    for symbol, at, day in migrations:
        snap.add("qt_last_migration_timestamp_seconds", at.timestamp(), symbol=symbol)
        snap.add("qt_last_migrated_day_timestamp_seconds", _day_ts(day), symbol=symbol)
    for row in summary.itertuples(index=False):
        snap.add(
            "qt_central_last_bar_timestamp_seconds", row.last_timestamp.timestamp(), symbol=str(row.symbol)
        )


class CentralMetricsCache:
    """The central store's metrics (consistency, last migration, newest bar: whole-table aggregates) at most
    once per ``max_age_s``; a scrape in between reuses them, so a 15 s Prometheus scrape interval does not
    turn into a full aggregate of the bars table every 15 s."""

    def __init__(self, max_age_s: float):
        self.max_age_s = max_age_s
        self._at = float("-inf")
        self._snap: MetricsSnapshot | None = None

    def __call__(self, snap: MetricsSnapshot, central: PostgresStore | None) -> None:
        now = time.monotonic()
        if central is None or self._snap is None or now - self._at >= self.max_age_s:
            fresh = MetricsSnapshot(collected_at=snap.collected_at)
            _central_metrics(fresh, central)
            self._snap, self._at = fresh, now
        snap.samples += self._snap.samples
        snap.errors += self._snap.errors
        if central is None or self._snap.value("qt_central_up") == 0:
            self._snap = None  # not cached: retried on the next scrape


def collect_metrics(
    settings: Settings, central: PostgresStore | None, *, cache: CentralMetricsCache | None = None
) -> MetricsSnapshot:
    """Every metric of :data:`METRICS` that can be read now. ``central``: the store to query (``None``:
    the central store is not reachable or not started — ``qt_central_up`` 0). ``cache``: reuse the
    central store's metrics for a while (the exporter)."""
    snap = MetricsSnapshot(collected_at=datetime.now(UTC))
    # first: this collection's own calls count in the latencies below
    (cache or _central_metrics)(snap, central)
    for part in (_outbox_metrics, _telemetry_metrics, _process_metrics):
        try:
            part(snap, settings)
        except Exception as exc:  # noqa: BLE001
            snap.errors.append(redact(f"{part.__name__.strip('_')}: {type(exc).__name__}: {exc}"))
    return snap


def open_central_if_running(settings: Settings) -> tuple[PostgresStore | None, str]:
    """The central store to observe, or ``(None, why not)``. A configured ``NEON_DATABASE_URL`` is used as
    is; the embedded server is observed only when it runs (never started by monitoring)."""
    from pydantic import SecretStr

    from qt_pipeline.storage.central import open_central

    if settings.database_url is None:
        from qt_pipeline.storage.postgres.embedded import embedded_postgres_status

        url, why = embedded_postgres_status(settings)
        if url is None:
            return None, why
        settings = settings.model_copy(update={"neon_database_url": SecretStr(url)})
    try:
        return open_central(settings), ""
    except Exception as exc:  # noqa: BLE001
        return None, redact(f"{type(exc).__name__}: {exc}")


__all__ = [
    "BUDGET_LEVELS",
    "CentralMetricsCache",
    "METRICS",
    "MetricsSnapshot",
    "Sample",
    "collect_metrics",
    "consistency_mismatches",
    "last_migrations",
    "open_central_if_running",
]
