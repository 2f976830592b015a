"""The ``central_store`` resource: a cached PostgresStore (Neon / PostgreSQL) built from settings."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Optional

import dagster as dg

from qt_pipeline.config import get_settings
from qt_pipeline.defs import resources as shared

if TYPE_CHECKING:
    from qt_pipeline.storage.postgres.store import PostgresStore

CENTRAL_STORE_KEY = "central_store"


class CentralStoreResource(dg.ConfigurableResource):
    """The central store. ``pg_schema`` selects the PostgreSQL schema holding the tables (default ``QT_PG_SCHEMA``).

    The store comes from :func:`qt_pipeline.storage.central.open_central` (``NEON_DATABASE_URL``, else the
    embedded PostgreSQL under the data dir). Stores are cached per process (in the shared
    store cache, so ``close_cached_stores()`` closes them too): a run reuses one SQLAlchemy pool.
    """

    pg_schema: Optional[str] = None  # noqa: UP045 - dagster config needs typing.Optional; None = QT_PG_SCHEMA

    def get_store(self) -> PostgresStore:
        from qt_pipeline.storage.central import open_central

        settings = get_settings()
        schema = self.pg_schema or settings.pg_schema
        url = settings.database_url or ""
        # the cache key holds a digest of the URL, never the URL itself
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        key = (f"central:{schema}:{digest}", str(settings.data_dir.resolve()))
        store = shared._STORES.get(key)
        if store is None:
            store = open_central(settings, schema=schema)
            shared._STORES[key] = store
        return store


central_resources = {CENTRAL_STORE_KEY: CentralStoreResource()}
