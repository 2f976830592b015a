"""Resources shared by several domains: the bar stores, and the DuckDB writer concurrency pool."""

from __future__ import annotations

from typing import Optional

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

    backend: Optional[str] = None  # noqa: UP045 - dagster config needs typing.Optional

    def get_store(self) -> DataStorageInterface:
        settings = get_settings()
        name = self.backend or settings.storage_backend
        key = (name, str(settings.data_dir.resolve()))
        store = _STORES.get(key)
        if store is None:
            store = get_storage(name, settings)
            _STORES[key] = store
        return store


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
