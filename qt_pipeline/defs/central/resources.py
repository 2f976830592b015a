"""The ``central_store`` resource: the central PostgreSQL (Neon, or the embedded server by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import dagster as dg

from qt_pipeline.defs.resources import StoreResource, env_or, settings_with

if TYPE_CHECKING:
    from qt_pipeline.storage.postgres.store import PostgresStore

CENTRAL_STORE_KEY = "central_store"


class CentralStoreResource(StoreResource):
    """The central store. ``database_url`` empty = ``NEON_DATABASE_URL``, and when that is unset too the
    embedded PostgreSQL under ``QT_DATA_DIR/postgres`` (started or reused). ``pg_schema`` holds the
    tables; the pool sizes bound this resource's SQLAlchemy pool. The store (and its engines) is created
    on first use and disposed when the step ends."""

    database_url: str | None = None  # secret: set it through EnvVar("NEON_DATABASE_URL")
    pg_schema: str | None = None  # None = QT_PG_SCHEMA
    pool_size: int | None = None  # None = QT_PG_POOL_SIZE
    max_overflow: int | None = None  # None = QT_PG_MAX_OVERFLOW

    def settings(self) -> Any:
        """The settings this resource's fields override (the URL is a SecretStr: registered for redaction)."""
        from pydantic import SecretStr

        from qt_pipeline.redaction import register_secret

        if self.database_url:
            register_secret(self.database_url)  # model_copy does not run the settings' own registration
        return settings_with(
            neon_database_url=SecretStr(self.database_url) if self.database_url else None,
            pg_schema=self.pg_schema,
            pg_pool_size=self.pool_size,
            pg_max_overflow=self.max_overflow,
        )

    def resolved_url(self) -> str:
        """The URL in use (a secret: never log it unredacted); starts the embedded server if needed."""
        from qt_pipeline.storage.central import central_url

        return central_url(self.settings())

    def is_embedded(self) -> bool:
        return not self.settings().database_url

    def get_store(self) -> PostgresStore:
        """The central store of this execution (opened on first use, closed at step end)."""
        return cast("PostgresStore", super().get_store())

    def _open(self) -> Any:
        from qt_pipeline.storage.central import open_central

        return open_central(self.settings())


def central_store_resource() -> CentralStoreResource:
    """The resource as the code location configures it: every field an EnvVar when set."""
    return CentralStoreResource(
        database_url=env_or("NEON_DATABASE_URL", None),
        pg_schema=env_or("QT_PG_SCHEMA", None),
        pool_size=None if not env_or("QT_PG_POOL_SIZE", None) else dg.EnvVar.int("QT_PG_POOL_SIZE"),
        max_overflow=None if not env_or("QT_PG_MAX_OVERFLOW", None) else dg.EnvVar.int("QT_PG_MAX_OVERFLOW"),
    )


central_resources = {CENTRAL_STORE_KEY: central_store_resource()}
