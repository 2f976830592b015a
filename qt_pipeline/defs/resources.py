"""Resources shared by several domains: the bar stores, and the DuckDB writer concurrency pool.

Every store is a :class:`dagster.ConfigurableResource` whose fields (paths, URL, schema, pool sizes) show
on the UI's resource pages; :func:`env_or` makes a field an ``EnvVar`` reference when the variable is set
(so the value, a secret for URLs, is read by Dagster at run launch and never stored in the definitions).
A resource opens its store on first use and closes it in ``teardown_after_execution`` (Dagster's resource
lifecycle: once per step process, or once per run in-process). Nothing is cached at module level, so
two resources never share a connection and tests pass resources instead of patching the environment.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from qt_pipeline.config import Settings, get_settings
from qt_pipeline.storage import DataStorageInterface

# Every asset that writes the local DuckDB file declares this pool: one DuckDB file has one writer.
# The limit is set in the instance (dagster.yaml `concurrency.pools.default_limit`, or
# `dagster instance concurrency set qt_duckdb_writer 1`); see README.
DUCKDB_WRITER_POOL = "qt_duckdb_writer"


def env_or(name: str, default: Any) -> Any:
    """``dg.EnvVar(name)`` when the variable is set (the UI shows the variable, not its value), else
    ``default`` (the built-in default, shown as such)."""
    return dg.EnvVar(name) if os.environ.get(name) else default


class StoreResource(dg.ConfigurableResource):
    """Base of the store resources: lazily opened store, closed at the end of the execution."""

    _store: DataStorageInterface | None = PrivateAttr(default=None)

    def _open(self) -> DataStorageInterface:
        raise NotImplementedError

    def get_store(self) -> DataStorageInterface:
        """The store of this execution (opened on first use; one connection / pool per resource)."""
        if self._store is None:
            self._store = self._open()
        return self._store

    def release(self) -> None:
        """Close the store; the next :meth:`get_store` opens it again. A long computation that has read
        what it needs calls this so it does not hold the DuckDB file (one writer per file) while
        ingestion runs want it."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.release()


class LocalStoreResource(StoreResource):
    """The machine-local DuckDB store that ingestion writes and migration reads (``QT_DUCKDB_PATH``)."""

    duckdb_path: str = ""  # empty: QT_DUCKDB_PATH, else $QT_DATA_DIR/local.duckdb

    def resolved_path(self) -> str:
        return self.duckdb_path or str(get_settings().resolved_duckdb_path)

    def _open(self) -> DataStorageInterface:
        from qt_pipeline.storage.duckdb_store import DuckDBStore

        return DuckDBStore(self.resolved_path())


class StorageResource(StoreResource):
    """A store built by the storage factory: ``backend`` empty means ``STORAGE_BACKEND``
    (``local`` | ``sharedfs`` | ``neon`` | ``hybrid``)."""

    backend: str | None = None

    def resolved_backend(self) -> str:
        return self.backend or get_settings().storage_backend

    def _open(self) -> DataStorageInterface:
        from qt_pipeline.storage import get_storage

        return get_storage(self.resolved_backend(), get_settings())


def settings_with(**overrides: Any) -> Settings:
    """The process settings with the non-empty overrides applied (resource fields win)."""
    update = {k: v for k, v in overrides.items() if v not in (None, "")}
    settings = get_settings()
    return settings.model_copy(update=update) if update else settings


shared_resources = {
    "local_store": LocalStoreResource(duckdb_path=env_or("QT_DUCKDB_PATH", "")),
    # What consumers (evolution, analytics) read through: STORAGE_BACKEND decides.
    "bar_store": StorageResource(backend=env_or("STORAGE_BACKEND", None)),
}
