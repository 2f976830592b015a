"""The one factory every caller uses to get a store: ``STORAGE_BACKEND=local|sharedfs|neon|hybrid``.

Callers never import a backend module directly, so switching backends changes no calling code (the
"drop-in" promise of DESIGN.md). Backends are imported lazily so a missing optional dependency of one
backend never breaks another.
"""

from __future__ import annotations

import importlib

from qt_pipeline.config import Settings, get_settings
from qt_pipeline.storage.interface import DataStorageInterface

# name -> "module:factory_function"; each factory takes a Settings and returns a DataStorageInterface.
BACKENDS: dict[str, str] = {
    "local": "qt_pipeline.storage.duckdb_store:from_settings",
    "sharedfs": "qt_pipeline.storage.sharedfs:from_settings",
    "neon": "qt_pipeline.storage.central:open_central",
    "hybrid": "qt_pipeline.storage.hybrid:from_settings",
}


def get_storage(backend: str | None = None, settings: Settings | None = None) -> DataStorageInterface:
    """Build the store named by ``backend`` (default: ``STORAGE_BACKEND``) from ``settings``."""
    settings = settings or get_settings()
    name = backend or settings.storage_backend
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown storage backend {name!r}; set STORAGE_BACKEND to one of {sorted(BACKENDS)}"
        ) from None
    module_name, func = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, func)(settings)
