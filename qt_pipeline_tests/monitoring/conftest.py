"""Fixtures of the monitoring tests: a central store in a fresh schema of the machine's PostgreSQL with
migrated bars (so the migration ledger is real), a hybrid store in front of it, fresh telemetry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from qt_pipeline.monitoring.telemetry import TELEMETRY, fresh_telemetry
from qt_pipeline_tests.storage.backends import make_bars

SYMBOLS = ("AAA", "BBB")


def today() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("D")


def bars_days(symbols, first_offset: int, days: int, per_day: int = 120) -> pd.DataFrame:
    """``per_day`` bars a day (every 5 min from midnight) of ``symbols`` for ``days`` days from today+offset."""
    frames = [
        make_bars(list(symbols), today() + pd.Timedelta(days=first_offset + i), per_day, seed=i, freq="5min")
        for i in range(days)
    ]
    return pd.concat(frames, ignore_index=True)


class Platform:
    """Local DuckDB → central PostgreSQL (migrated with the real migration, ledger included)."""

    def __init__(self, settings, pg_schema, tmp_path: Path):
        from qt_pipeline.storage.duckdb_store import DuckDBStore
        from qt_pipeline.storage.postgres.store import PostgresStore

        self.url, self.schema = pg_schema
        self.settings = settings.model_copy(update={"pg_schema": self.schema})
        TELEMETRY.attach(self.settings.data_dir)
        self.central = PostgresStore(self.url, self.settings, schema=self.schema)
        self.central.ensure_schema()
        self.local = DuckDBStore(self.settings.resolved_duckdb_path)
        self.closers: list = [self.central, self.local]

    def ingest_and_migrate(self, bars: pd.DataFrame) -> None:
        from qt_pipeline.storage.migration import migrate_all

        self.local.write_bars(bars)
        migrate_all(self.local, self.central)

    def hybrid(self):
        from qt_pipeline.storage.duckdb_store import DuckDBStore
        from qt_pipeline.storage.hybrid import HybridStore
        from qt_pipeline.storage.postgres.store import PostgresStore

        central = PostgresStore(self.url, self.settings, schema=self.schema)
        store = HybridStore(DuckDBStore(self.settings.resolved_hybrid_cache_path), central, self.settings)
        self.closers.append(store)
        return store

    def close(self) -> None:
        for c in reversed(self.closers):
            c.close()


@pytest.fixture
def platform(settings, pg_schema, tmp_path) -> Iterator[Platform]:
    with fresh_telemetry():
        p = Platform(settings, pg_schema, tmp_path)
        try:
            yield p
        finally:
            p.close()
