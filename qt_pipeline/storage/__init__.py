"""Storage: DataStorageInterface / RangeStore and the backends (local DuckDB, shared-FS Parquet, the central
store on PostgreSQL/Neon, hybrid).

No Dagster imports. Get a store with :func:`get_storage`; the central store with
:func:`qt_pipeline.storage.central.open_central`.
"""

from qt_pipeline.storage.factory import BACKENDS, get_storage
from qt_pipeline.storage.interface import (
    DataStorageInterface,
    HealthStatus,
    RangeStore,
    StorageError,
    StorageUnavailableError,
    WriteResult,
)

__all__ = [
    "BACKENDS",
    "DataStorageInterface",
    "HealthStatus",
    "RangeStore",
    "StorageError",
    "StorageUnavailableError",
    "WriteResult",
    "get_storage",
]
