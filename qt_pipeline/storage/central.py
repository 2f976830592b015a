"""The one way to reach the central store (PostgreSQL: Neon, TimescaleDB or the embedded server).

Every caller that needs the central store (the storage factory, the Dagster resource, the hybrid store,
the health probe, the evolution state store, the CLI) builds it here:

* :func:`central_url` — ``NEON_DATABASE_URL`` when set, else the embedded PostgreSQL under
  ``QT_DATA_DIR/postgres`` (started on first use);
* :func:`open_central` — a :class:`~qt_pipeline.storage.postgres.store.PostgresStore` on that URL. Its
  SQLAlchemy engines come from an :class:`~qt_pipeline.storage.postgres.connection.EngineRegistry`: the
  caller's (shared, the caller disposes it) or the store's own (disposed by ``store.close()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qt_pipeline.config import Settings

if TYPE_CHECKING:
    from qt_pipeline.storage.postgres.connection import EngineRegistry
    from qt_pipeline.storage.postgres.store import PostgresStore


def central_url(settings: Settings) -> str:
    """The central database URL (secret!): ``NEON_DATABASE_URL``, else the embedded server's."""
    url = settings.database_url
    if url is None:
        from qt_pipeline.storage.postgres.embedded import ensure_embedded_postgres

        url = ensure_embedded_postgres(settings)
    return url


def open_central(
    settings: Settings, *, schema: str | None = None, engines: EngineRegistry | None = None
) -> PostgresStore:
    """The central store for ``settings`` in ``schema`` (default ``QT_PG_SCHEMA``). Connections are opened
    lazily; close the store when done (it disposes its engines unless ``engines`` was passed)."""
    from qt_pipeline.monitoring.telemetry import TELEMETRY
    from qt_pipeline.storage.postgres.store import PostgresStore

    TELEMETRY.attach(settings.data_dir)  # usage (bytes read, busy time) is flushed to this data dir
    return PostgresStore(
        central_url(settings), settings, schema=schema or settings.pg_schema, engines=engines
    )


__all__ = ["central_url", "open_central"]
