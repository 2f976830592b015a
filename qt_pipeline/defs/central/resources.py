"""The ``central_store`` resource: a cached PostgresStore (Neon / PostgreSQL) built from settings."""

from __future__ import annotations

import hashlib
from typing import Any

import dagster as dg

from qt_pipeline.config import get_settings
from qt_pipeline.defs import resources as shared

CENTRAL_STORE_KEY = "central_store"


class CentralStoreResource(dg.ConfigurableResource):
    """The central store. ``pg_schema`` selects the PostgreSQL schema holding the tables (default ``QT_PG_SCHEMA``).

    The URL comes from ``NEON_DATABASE_URL``; when none is set, ``PostgresStore.from_settings`` starts
    (or reuses) the embedded PostgreSQL under the data dir. Stores are cached per process (in the shared
    store cache, so ``close_cached_stores()`` closes them too): a run reuses one SQLAlchemy pool.
    """

    pg_schema: str | None = None  # None = QT_PG_SCHEMA

    def get_store(self) -> Any:
        from qt_pipeline.storage.postgres.store import PostgresStore

        settings = get_settings()
        schema = self.pg_schema or settings.pg_schema
        url = settings.database_url or ""
        # the cache key holds a digest of the URL, never the URL itself
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        key = (f"central:{schema}:{digest}", str(settings.data_dir.resolve()))
        store = shared._STORES.get(key)
        if store is None:
            if not url:
                from qt_pipeline.storage.postgres.embedded import ensure_embedded_postgres

                url = ensure_embedded_postgres(settings)
            store = PostgresStore(url, settings, schema=schema)
            shared._STORES[key] = store
        return store


central_resources = {CENTRAL_STORE_KEY: CentralStoreResource()}
