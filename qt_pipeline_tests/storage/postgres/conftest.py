"""Fixtures of the neon-backend tests: settings with a small retry budget, a store on a fresh schema of the
machine's PostgreSQL, and a fresh schema on the TimescaleDB harness."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest

from qt_pipeline.config import Settings
from qt_pipeline.storage.postgres.store import PostgresStore


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def _make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "QT_DATA_DIR": tmp_path / "data",
            "QT_PG_RETRY_INITIAL_S": 0.05,
            "QT_PG_RETRY_MAX_S": 0.3,
            "QT_PG_CONNECT_TIMEOUT_S": 3,
        }
        values.update(overrides)
        return Settings(**values)

    return _make


@pytest.fixture
def pg_store(pg_schema: tuple[str, str], make_settings: Callable[..., Settings]) -> Iterator[PostgresStore]:
    url, schema = pg_schema
    store = PostgresStore(url, make_settings(), schema=schema)
    yield store
    store.close()


@pytest.fixture
def ts_schema(timescale_dsn: str) -> Iterator[tuple[str, str]]:
    """A unique schema on the (single-session) TimescaleDB harness, dropped afterwards."""
    schema = f"ts_{uuid.uuid4().hex[:10]}"
    yield timescale_dsn, schema
    conn = psycopg2.connect(timescale_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    conn.close()
