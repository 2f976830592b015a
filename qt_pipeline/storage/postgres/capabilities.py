"""What the connected server can do — detected, never assumed (capability matrix in docs/architecture.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

log = logging.getLogger("qt_pipeline.storage.postgres")

NEW_HYPERTABLE_API = (2, 13)


def _version_tuple(version: str | None) -> tuple[int, ...]:
    if not version:
        return ()
    out = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit()) if not part.isdigit() else part
        if not digits:
            break
        out.append(int(digits))
        if not part.isdigit():
            break
    return tuple(out)


@dataclass(frozen=True)
class Capabilities:
    server_version_num: int
    server_version: str
    timescaledb_version: str | None  # installed in this database
    timescaledb_available: str | None  # default version offered by the server (may be uninstalled)
    license: str | None  # 'apache' | 'timescale' | None
    is_neon: bool

    @property
    def has_timescaledb(self) -> bool:
        return self.timescaledb_version is not None

    @property
    def can_compress(self) -> bool:
        return self.has_timescaledb and self.license == "timescale"

    @property
    def layout(self) -> Literal["hypertable", "partitioned"]:
        return "hypertable" if self.has_timescaledb else "partitioned"

    @property
    def old_hypertable_api(self) -> bool:
        """TimescaleDB < 2.13 only has ``create_hypertable(table, column, chunk_time_interval => …)``."""
        v = _version_tuple(self.timescaledb_version)
        return bool(v) and v < NEW_HYPERTABLE_API

    def as_dict(self) -> dict[str, object]:
        return {
            "server_version": self.server_version,
            "server_version_num": self.server_version_num,
            "timescaledb_version": self.timescaledb_version,
            "timescaledb_available": self.timescaledb_available,
            "timescaledb_license": self.license,
            "is_neon": self.is_neon,
            "layout": self.layout,
            "can_compress": self.can_compress,
        }


_DETECT_SQL = """
SELECT current_setting('server_version_num')::int,
       current_setting('server_version'),
       (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
       (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
       current_setting('timescaledb.license', true),
       (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'neon_superuser')
        OR current_setting('neon.timeline_id', true) IS NOT NULL)
"""


def detect_capabilities(conn: sa.Connection) -> Capabilities:
    """Ask the server (``pg_extension``, ``pg_available_extensions``, ``timescaledb.license``, Neon roles)."""
    row = conn.exec_driver_sql(_DETECT_SQL).one()
    license_ = (row[4] or "").strip().lower() or None
    if license_ not in (None, "apache", "timescale"):
        log.info("unknown timescaledb.license %r; treating as apache (no compression)", license_)
        license_ = "apache"
    return Capabilities(
        server_version_num=int(row[0]),
        server_version=str(row[1]),
        timescaledb_version=row[2],
        timescaledb_available=row[3],
        license=license_ if row[2] is not None else None,
        is_neon=bool(row[5]),
    )
