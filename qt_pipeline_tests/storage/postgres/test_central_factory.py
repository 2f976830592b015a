"""The one way to reach the central store: ``open_central`` and the engine registry (one engine per URL,
disposed by whoever owns it)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import sqlalchemy as sa

from qt_pipeline.config import Settings
from qt_pipeline.evolution.state import PostgresStateStore, state_store_from_settings
from qt_pipeline.storage import get_storage
from qt_pipeline.storage.central import open_central
from qt_pipeline.storage.health import check_central_health
from qt_pipeline.storage.postgres.connection import EngineRegistry
from qt_pipeline.storage.postgres.store import PostgresStore


def _central_settings(make_settings: Callable[..., Settings], url: str, schema: str) -> Settings:
    return make_settings(NEON_DATABASE_URL=url, QT_PG_SCHEMA=schema)


def _connected(pool: sa.pool.Pool) -> int:
    return pool.checkedin() + pool.checkedout()  # type: ignore[attr-defined]


def test_stores_on_one_registry_share_one_engine_and_the_owner_disposes_it(pg_schema, make_settings):
    url, schema = pg_schema
    settings = _central_settings(make_settings, url, schema)
    with EngineRegistry() as engines:
        a = open_central(settings, engines=engines)
        b = open_central(settings, schema=schema, engines=engines)
        assert a.engine is b.engine
        assert a.direct_engine is a.engine  # same URL: one engine, not two pools
        assert len(engines) == 1
        assert a.list_symbols().empty
        pool = a.engine.pool
        assert _connected(pool) >= 1
        a.close()  # a borrowed registry survives the store
        assert _connected(pool) >= 1 and b.list_symbols().empty
        b.close()
    assert len(engines) == 0 and _connected(pool) == 0


def test_a_store_without_a_registry_disposes_its_own_engine(pg_schema, make_settings):
    url, schema = pg_schema
    store = get_storage("neon", _central_settings(make_settings, url, schema))
    assert isinstance(store, PostgresStore) and store.schema == schema
    assert store.list_symbols().empty
    pool = store.engine.pool
    assert _connected(pool) >= 1
    store.close()
    assert _connected(pool) == 0


def test_state_store_from_settings_closes_the_central_engine_it_opened(pg_schema, make_settings):
    url, schema = pg_schema
    state = state_store_from_settings(_central_settings(make_settings, url, schema))
    assert isinstance(state, PostgresStateStore) and state.schema == schema
    assert state.table_counts() == {
        "evolution_runs": 0,
        "evolution_generations": 0,
        "evolution_strategies": 0,
    }
    pool = state.engine.pool
    assert _connected(pool) >= 1
    state.close()
    assert _connected(pool) == 0


def test_health_probe_without_a_store_leaves_no_connection_behind(pg_schema, make_settings):
    url, schema = pg_schema
    settings = _central_settings(make_settings, url, schema)
    report = check_central_health(settings)
    assert report is not None and report.healthy, report
    assert check_central_health(make_settings()) is None  # no central database configured
    with open_central(settings) as store:
        store.write_bars(
            pd.DataFrame(
                {
                    "symbol": ["BTCUSD"],
                    "timestamp": [pd.Timestamp("2024-01-03", tz="UTC")],
                    "open": [1.0],
                    "high": [1.0],
                    "low": [1.0],
                    "close": [1.0],
                    "volume": [1.0],
                    "vwap": [1.0],
                    "trade_count": [1],
                }
            )
        )
        shared = check_central_health(settings, store=store)
        assert shared is not None and shared.healthy
        assert shared.pool_size == store.settings.pg_pool_size
        assert _connected(store.engine.pool) >= 1  # the caller's store stays open
