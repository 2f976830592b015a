"""Every call on an open connection is bounded client-side (issue 10): libpq keepalives and
tcp_user_timeout on every TCP URL (pooled and direct hosts alike, never as startup options), and a
per-call deadline that drops a connection whose peer stopped answering — the pool's pre-ping, a query and
a COPY on a black-holed established connection, through a real TCP proxy."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from qt_pipeline.storage.interface import StorageError
from qt_pipeline.storage.postgres.connection import ConnectionConfig, make_engine
from qt_pipeline.storage.postgres.deadline import CallDeadlineExceeded, call_budget
from qt_pipeline.storage.postgres.retry import is_transient
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.faults import TcpProxy
from qt_pipeline_tests.storage.backends import make_bars
from qt_pipeline_tests.storage.postgres.helpers import bounded

NEON_POOLED = "postgresql://alice:pw@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"


@pytest.mark.parametrize("url", [NEON_POOLED, "postgresql://u:pw@db.example.com:5432/x"])
def test_tcp_urls_carry_keepalives_and_tcp_user_timeout_not_startup_options(url, make_settings):
    cfg = ConnectionConfig.from_url(url, make_settings(QT_PG_TCP_USER_TIMEOUT_MS=7000))
    for u in (cfg.url, cfg.direct_url):  # pooled (PgBouncer) and direct host alike
        q = u.query
        assert q["keepalives"] == "1"
        assert int(q["keepalives_idle"]) > 0 and int(q["keepalives_interval"]) > 0
        assert int(q["keepalives_count"]) > 0
        assert q["tcp_user_timeout"] == "7000"
        assert "options" not in q  # PgBouncer in transaction mode rejects startup options


def test_a_real_connection_uses_them(pg_url, make_settings):
    cfg = ConnectionConfig.from_url(pg_url, make_settings(QT_PG_KEEPALIVES_IDLE_S=11))
    engine = make_engine(cfg)
    try:
        with engine.connect() as conn:
            params = conn.connection.dbapi_connection.get_dsn_parameters()
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() != "0"
        assert params["keepalives"] == "1" and params["keepalives_idle"] == "11"
        assert params["tcp_user_timeout"] == str(cfg.url.query["tcp_user_timeout"])
    finally:
        engine.dispose()


def test_blackholed_established_connection_is_dropped_by_the_call_deadline(pg_schema, make_settings):
    url, schema = pg_schema
    with TcpProxy("127.0.0.1", 5432) as proxy:
        store = PostgresStore(
            proxy.url_for(url), make_settings(QT_PG_CALL_TIMEOUT_S=1.5, QT_PG_RETRY_ATTEMPTS=1), schema=schema
        )
        try:
            store.ensure_schema()
            store.write_bars(make_bars(["AAA"], "2026-03-02", 100, seed=1))
            assert proxy.live_connections >= 1
            proxy.cut("blackhole-all")  # the pooled connection stays open; nothing comes back
            err, seconds = bounded(store.list_symbols)  # pre-ping on the silent pooled connection
            assert isinstance(err, StorageError), err
            # the silent pooled connection was dropped by the client (the proxy saw it close), and the
            # reconnect the pool then tried hit its connect timeout: the call failed instead of hanging
            assert proxy.live_connections == 0
            assert "timeout expired" in str(err) or "call deadline" in str(err), str(err)
            print(f"\n[deadline] black-holed established connection dropped after {seconds:.2f} s")
            proxy.restore()
            # the dropped connection was discarded by the pool: the next call works again
            assert list(store.list_symbols()["symbol"]) == ["AAA"]
        finally:
            store.close()


def test_a_budget_bounds_a_copy_and_retries_together(pg_schema, make_settings):
    url, schema = pg_schema
    with TcpProxy("127.0.0.1", 5432) as proxy:
        store = PostgresStore(proxy.url_for(url), make_settings(QT_PG_RETRY_ATTEMPTS=5), schema=schema)
        try:
            store.ensure_schema()
            store.write_bars(make_bars(["AAA"], "2026-03-02", 100, seed=1))
            proxy.cut("blackhole-all")

            def write():
                with call_budget(3.0):
                    return store.write_bars(make_bars(["AAA"], "2026-03-03", 5_000, seed=2))

            err, seconds = bounded(write)
            assert isinstance(err, StorageError), err
            print(f"\n[deadline] 5 attempts under a 3 s budget gave up after {seconds:.2f} s")
        finally:
            proxy.restore()
            store.close()


def test_deadline_error_is_transient_and_a_disconnect(pg_url, make_settings):
    cfg = ConnectionConfig.from_url(pg_url, make_settings(QT_PG_CALL_TIMEOUT_S=1))
    engine = make_engine(cfg)
    try:
        with engine.connect() as conn, pytest.raises(sa.exc.OperationalError) as info:
            conn.exec_driver_sql("SELECT pg_sleep(5)")  # a silent server: no answer within 1 s
        assert isinstance(info.value.orig, CallDeadlineExceeded)
        assert info.value.connection_invalidated  # the pool discards it
        assert is_transient(info.value)
        with engine.connect() as conn:  # a fresh connection works
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()
