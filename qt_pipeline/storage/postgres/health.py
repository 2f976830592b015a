"""Health of the central store's connection: connect and query latency, server facts, pool use."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import sqlalchemy as sa

from qt_pipeline.storage.postgres.capabilities import Capabilities, detect_capabilities
from qt_pipeline.storage.postgres.connection import ConnectionConfig

_POOL_FIGURES = (
    ("pool_checked_out", "checkedout"),
    ("pool_size", "size"),
    ("pool_overflow", "overflow"),
    ("pool_checked_in", "checkedin"),
)


def pool_stats(engine: sa.Engine | None) -> dict[str, int]:
    """``pool_checked_out``, ``pool_size``, ``pool_overflow``, ``pool_checked_in`` of ``engine``'s pool
    (the figures that pool class has; nothing for ``None``)."""
    if engine is None:
        return {}
    out: dict[str, int] = {}
    for name, attr in _POOL_FIGURES:
        fn = getattr(engine.pool, attr, None)
        if callable(fn):
            with contextlib.suppress(Exception):  # a pool without that figure
                out[name] = int(fn())
    return out


def server_health(cfg: ConnectionConfig, engine: sa.Engine) -> tuple[Capabilities, dict[str, Any]]:
    """Connect latency of a fresh libpq connection, ``SELECT 1`` latency on the pool, capabilities and
    database size. Raises on failure (the caller reports it)."""
    import psycopg2

    details: dict[str, Any] = {}
    t0 = time.perf_counter()
    raw = psycopg2.connect(cfg.dsn(), connect_timeout=cfg.connect_timeout_s)
    details["connect_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    raw.close()
    with engine.connect() as conn:
        t0 = time.perf_counter()
        conn.exec_driver_sql("SELECT 1").scalar()
        details["query_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        caps = detect_capabilities(conn)
        details["database_bytes"] = int(
            conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
        )
        conn.rollback()
    if cfg.is_neon and not caps.is_neon:
        caps = Capabilities(**{**caps.__dict__, "is_neon": True})
    return caps, details


__all__ = ["pool_stats", "server_health"]
