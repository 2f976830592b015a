"""Fixtures of the hybrid tests: a fixed clock, hot-window bars, and a builder of hybrid stores whose
central store is a fresh schema on the machine's PostgreSQL, reached directly or through a TcpProxy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from qt_pipeline.storage.checksum import symbol_day_checksums
from qt_pipeline.storage.hybrid import HybridStore, central_settings
from qt_pipeline_tests.faults import TcpProxy
from qt_pipeline_tests.storage.backends import make_bars

NOW = pd.Timestamp("2026-03-10 12:00", tz="UTC")  # "today" of the hybrid tests: hot = 03-04 … 03-10


class Clock:
    def __init__(self, now: pd.Timestamp = NOW):
        self.now = now

    def __call__(self) -> datetime:
        return self.now.to_pydatetime()


def day(offset: int) -> pd.Timestamp:
    """Midnight UTC of NOW's day plus ``offset`` days (negative = past)."""
    return NOW.floor("D") + pd.Timedelta(days=offset)


def bars_on(symbols, offset: int, n: int = 60, seed: int = 0, freq: str = "1min") -> pd.DataFrame:
    return make_bars(list(symbols), day(offset), n, seed=seed, freq=freq)


def same_symbol_days(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    ca, cb = symbol_day_checksums(a), symbol_day_checksums(b)
    return ca.reset_index(drop=True).equals(cb.reset_index(drop=True))


class HybridFactory:
    def __init__(self, settings, pg_schema, tmp_path: Path):
        self.settings = settings.model_copy(
            update={"hybrid_probe_interval_s": 0.2, "hybrid_connect_timeout_s": 2}
        )
        self.url, self.schema = pg_schema
        self.tmp_path = tmp_path
        self.proxy: TcpProxy | None = None
        self.stores: list = []

    def central(self, url: str | None = None):
        from qt_pipeline.storage.postgres.store import PostgresStore

        s = PostgresStore(url or self.url, central_settings(self.settings), schema=self.schema)
        self.stores.append(s)
        return s

    def direct_central(self):
        """A central store that bypasses any proxy (the test's view of what Postgres holds)."""
        return self.central(self.url)

    def __call__(
        self, *, via_proxy: bool = True, name: str = "cache", clock: Clock | None = None
    ) -> HybridStore:
        from qt_pipeline.storage.duckdb_store import DuckDBStore
        from qt_pipeline.storage.outbox import Outbox

        url = self.url
        if via_proxy:
            if self.proxy is None:
                self.proxy = TcpProxy("127.0.0.1", 5432)
            url = self.proxy.url_for(self.url)
        central = self.central(url)
        central.ensure_schema()
        local = DuckDBStore(self.tmp_path / f"{name}.duckdb")
        store = HybridStore(
            local,
            central,
            self.settings,
            outbox=Outbox(self.tmp_path / f"{name}-outbox"),
            clock=clock or Clock(),
        )
        self.stores.append(store)
        return store

    def close(self) -> None:
        for s in reversed(self.stores):
            s.close()
        if self.proxy is not None:
            self.proxy.close()


@pytest.fixture
def hybrid(settings, pg_schema, tmp_path) -> Iterator[HybridFactory]:
    f = HybridFactory(settings, pg_schema, tmp_path)
    try:
        yield f
    finally:
        f.close()
