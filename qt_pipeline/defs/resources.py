"""Resources shared by several domains: the bar stores, and the DuckDB writer concurrency pool."""

from __future__ import annotations

import dagster as dg

from qt_pipeline.config import get_settings
from qt_pipeline.storage import DataStorageInterface, get_storage

# Every asset that writes the local DuckDB file declares this pool: one DuckDB file has one writer.
# The limit is set in the instance (dagster.yaml `concurrency.pools.default_limit`, or
# `dagster instance concurrency set qt_duckdb_writer 1`); see README.
DUCKDB_WRITER_POOL = "qt_duckdb_writer"

_STORES: dict[tuple[str, str], DataStorageInterface] = {}


class StorageResource(dg.ConfigurableResource):
    """A store built by the storage factory. ``backend`` empty means ``STORAGE_BACKEND``.

    Stores are cached per process and backend so a run reuses one long-lived DuckDB connection /
    SQLAlchemy pool instead of reconnecting per call.
    """

    backend: str | None = None

    def _key(self) -> tuple[str, str]:
        settings = get_settings()
        return (self.backend or settings.storage_backend, str(settings.data_dir.resolve()))

    def get_store(self) -> DataStorageInterface:
        key = self._key()
        store = _STORES.get(key)
        if store is None:
            store = get_storage(key[0], get_settings())
            _STORES[key] = store
        return store

    def release(self) -> None:
        """Close this backend's cached store; the next :meth:`get_store` opens it again. A long
        computation that has read what it needs calls this so it does not hold the DuckDB file (one
        writer per file) while ingestion runs want it."""
        store = _STORES.pop(self._key(), None)
        if store is not None:
            store.close()


def close_cached_stores() -> None:
    """Close every cached store (tests call this between sessions)."""
    while _STORES:
        _, store = _STORES.popitem()
        store.close()


shared_resources = {
    # The machine-local DuckDB cache: ingestion writes here, migration reads from here.
    "local_store": StorageResource(backend="local"),
    # What consumers (evolution, analytics) read through: STORAGE_BACKEND decides.
    "bar_store": StorageResource(),
}
