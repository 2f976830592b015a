"""Migration under real network faults (a TCP proxy in front of the machine's PostgreSQL)."""

from __future__ import annotations

import pandas as pd
import pytest

from qt_pipeline.config import get_settings
from qt_pipeline.storage.interface import StorageError
from qt_pipeline.storage.migration import migrate_all, read_ledger
from qt_pipeline_tests.faults import TcpProxy
from qt_pipeline_tests.storage.central.helpers import make_bars


@pytest.fixture
def proxy() -> TcpProxy:
    with TcpProxy("127.0.0.1", 5432) as p:
        yield p


def _central_via(proxy: TcpProxy, url: str, schema: str, settings):
    from qt_pipeline.storage.postgres.store import PostgresStore

    store = PostgresStore(proxy.url_for(url), settings, schema=schema)
    store.ensure_schema()
    return store


def test_connection_dropped_mid_copy_is_retried_and_completes(settings, local, pg_schema, proxy) -> None:
    url, schema = pg_schema
    central = _central_via(proxy, url, schema, settings)
    try:
        local.write_bars(make_bars(("BTCUSD", "ETHUSD"), days=2, per_day=300))
        proxy.drop_after_bytes(40_000)  # the COPY of the first batch (~70 kB of CSV) dies half way
        summary = migrate_all(local, central)
        assert proxy.kills == 1
        assert (summary.migrated, summary.rows) == (4, 1200)
        pd.testing.assert_frame_equal(central.read_range(), local.read_range())
        assert len(read_ledger(central)) == 4
    finally:
        central.close()


def test_interrupted_migration_resumes_where_it_stopped(
    settings, local, pg_schema, proxy, monkeypatch
) -> None:
    monkeypatch.setenv("QT_PG_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("QT_PG_RETRY_INITIAL_S", "0.01")
    monkeypatch.setenv("QT_PG_RETRY_MAX_S", "0.05")
    get_settings.cache_clear()
    url, schema = pg_schema
    central = _central_via(proxy, url, schema, get_settings())
    try:
        local.write_bars(make_bars(("BTCUSD", "ETHUSD"), days=4, per_day=50))

        def cut_after_first_day(done: int, total: int, st) -> None:
            if done == 2:  # the first batch (one day, both symbols) is committed and in the ledger
                proxy.cut("refuse")

        with pytest.raises(StorageError) as err:
            migrate_all(local, central, progress=cut_after_first_day, batch_rows=100)
        assert "127.0.0.1" in str(err.value) or "connect" in str(err.value).lower()
        proxy.restore()
        done_before = read_ledger(central)
        assert sorted(done_before) == ["2024-01-02|BTCUSD", "2024-01-02|ETHUSD"]

        resumed = migrate_all(local, central, batch_rows=100)
        assert (resumed.skipped, resumed.migrated) == (2, 6)
        pd.testing.assert_frame_equal(central.read_range(), local.read_range())
        assert migrate_all(local, central).migrated == 0
    finally:
        central.close()
