"""Storage: DataStorageInterface and its backends (local DuckDB, shared-FS Parquet, Postgres/Neon, hybrid).

No Dagster imports. Get a store with :func:`get_storage`.
"""

from qt_pipeline.storage.factory import BACKENDS, get_storage
from qt_pipeline.storage.interface import (
    DataStorageInterface,
    HealthStatus,
    StorageError,
    StorageUnavailableError,
    WriteResult,
)

__all__ = [
    "BACKENDS",
    "DataStorageInterface",
    "HealthStatus",
    "StorageError",
    "StorageUnavailableError",
    "WriteResult",
    "get_storage",
]
