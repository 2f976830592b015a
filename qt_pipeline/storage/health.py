"""SQL health probe of the central PostgreSQL/Neon store → :class:`HealthReport` (pure Python, no Dagster).

The probe opens one *fresh* connection (a new pool built from the engine's own connect function, so TLS,
timeouts and application name are the engine's) to measure what a scaled-to-zero Neon compute costs to
wake, runs ``SELECT 1`` for query latency, and reads server version, TimescaleDB version/licence and
database size in the same short transaction (``SET LOCAL statement_timeout``, safe behind PgBouncer).
Pool use comes from the application's engine. It never raises: a failure is a report with
``healthy=False`` and a redacted ``reason``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qt_pipeline.config import Settings
from qt_pipeline.redaction import redact
from qt_pipeline.storage.postgres.health import pool_stats

if TYPE_CHECKING:
    from qt_pipeline.storage.postgres.store import PostgresStore


@dataclass
class HealthReport:
    healthy: bool
    checked_at: str
    location: str = ""
    reason: str = ""
    connect_ms: float | None = None
    query_ms: float | None = None
    pool_checked_out: int | None = None
    pool_size: int | None = None
    pool_overflow: int | None = None
    server_version: str | None = None
    server_version_num: int | None = None
    timescaledb_version: str | None = None
    timescaledb_license: str | None = None
    database_bytes: int | None = None
    is_neon: bool | None = None
    endpoint_state: str | None = None  # from the Neon management API when configured
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return {k: (redact(v) if isinstance(v, str) else v) for k, v in d.items()}

    def summary(self) -> str:
        if not self.healthy:
            return f"UNHEALTHY {self.location}: {self.reason}"
        ts = self.timescaledb_version or "none"
        return (
            f"healthy {self.location}: connect {self.connect_ms:.1f} ms, query {self.query_ms:.1f} ms, "
            f"PostgreSQL {self.server_version}, TimescaleDB {ts} ({self.timescaledb_license or '-'}), "
            f"db {self.database_bytes} bytes"
        )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def probe_engine(engine: Any, *, location: str | None = None, timeout_ms: int = 5000) -> HealthReport:
    """Probe the database behind a SQLAlchemy ``engine``; never raises."""
    loc = redact(location if location is not None else engine.url.render_as_string(hide_password=True))
    report = HealthReport(healthy=False, checked_at=_now_iso(), location=loc)
    pool = engine.pool
    stats = pool_stats(engine)
    report.pool_checked_out = stats.get("pool_checked_out")
    report.pool_size = stats.get("pool_size")
    report.pool_overflow = stats.get("pool_overflow")
    fresh = None
    try:
        fresh = pool.recreate()  # same creator (URL, connect_args, TLS), empty: a truly new connection
        t0 = time.perf_counter()
        dbapi_conn = fresh.connect()
        report.connect_ms = (time.perf_counter() - t0) * 1000
        try:
            cur = dbapi_conn.cursor()
            cur.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            t0 = time.perf_counter()
            cur.execute("SELECT 1")
            cur.fetchone()
            report.query_ms = (time.perf_counter() - t0) * 1000
            cur.execute(
                "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
                "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), "
                "current_setting('timescaledb.license', true), pg_database_size(current_database()), "
                "EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE 'neon.%')"
            )
            sv, svn, tsv, lic, size, neon_setting = cur.fetchone()
            report.server_version = str(sv)
            report.server_version_num = int(svn)
            report.timescaledb_version = tsv
            report.timescaledb_license = lic or None
            report.database_bytes = int(size)
            host = str(engine.url.host or "")
            report.is_neon = bool(neon_setting) or host.endswith(".neon.tech")
            cur.close()
            dbapi_conn.rollback()
        finally:
            dbapi_conn.close()
        report.healthy = True
    except Exception as exc:  # health never raises
        report.healthy = False
        report.reason = redact(f"{type(exc).__name__}: {str(exc).strip()}")
    finally:
        if fresh is not None:
            with contextlib.suppress(Exception):
                fresh.dispose()
    return report


def check_central_health(
    settings: Settings, *, api_client: Any | None = None, store: PostgresStore | None = None
) -> HealthReport | None:
    """SQL probe of the configured central store plus, when ``NEON_API_KEY``, ``NEON_PROJECT_ID`` and
    ``NEON_ENDPOINT_ID`` are set, the compute endpoint's state from the Neon management API.

    ``store``: probe that store (its pool figures are the application's). Without it a store is opened
    from ``settings`` for the probe and closed again. ``None`` when no central database is configured
    (``NEON_DATABASE_URL`` unset: the embedded server is not started just to be probed). Never raises."""
    if store is None and not settings.database_url:
        return None
    from qt_pipeline.storage.central import open_central

    try:
        central = store if store is not None else open_central(settings)
    except Exception as exc:  # a malformed URL: unhealthy with the (redacted) reason
        return HealthReport(
            healthy=False, checked_at=_now_iso(), reason=redact(f"{type(exc).__name__}: {exc}")
        )
    try:
        report = probe_engine(central.engine, location=central.config.location)
    finally:
        if store is None:
            central.close()
    if settings.neon_project_id and settings.neon_endpoint_id and (api_client or settings.neon_api_key):
        from qt_pipeline.storage.neon_api import NeonApiClient

        client = api_client or NeonApiClient.from_settings(settings)
        try:
            ep = client.endpoint(settings.neon_project_id, settings.neon_endpoint_id)
            report.endpoint_state = ep.current_state
            if ep.pending_state:
                report.extra["endpoint_pending_state"] = ep.pending_state
            if ep.suspend_timeout_seconds is not None:
                report.extra["endpoint_suspend_timeout_s"] = ep.suspend_timeout_seconds
        except Exception as exc:  # the API is an optional extra: record, do not fail the probe
            report.extra["neon_api_error"] = redact(f"{type(exc).__name__}: {exc}")
        finally:
            if api_client is None:
                client.close()
    return report


__all__ = ["HealthReport", "check_central_health", "probe_engine"]
