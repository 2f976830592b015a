"""Fixtures of the central-store tests: a local DuckDB store and a central PostgresStore in a fresh
schema of the session database (real PostgreSQL over a real connection)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qt_pipeline.config import Settings


@pytest.fixture
def local(settings: Settings) -> Iterator[object]:
    from qt_pipeline.storage.duckdb_store import DuckDBStore

    store = DuckDBStore(settings.resolved_duckdb_path)
    yield store
    store.close()


@pytest.fixture
def central(settings: Settings, pg_schema: tuple[str, str]) -> Iterator[object]:
    from qt_pipeline.storage.postgres.store import PostgresStore

    url, schema = pg_schema
    store = PostgresStore(url, settings, schema=schema)
    store.ensure_schema()
    yield store
    store.close()
