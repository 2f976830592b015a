"""The central store behind a real PgBouncer in transaction mode (Neon's pooled host), issue 10: it works
(write, read, consistency with the local store), and every call on an open pooled connection is bounded
client-side — a black-holed established connection (between the client and PgBouncer, and between
PgBouncer and PostgreSQL) fails within the configured deadline with the project's one-line error, and a
statement that runs too long is cancelled by the per-transaction statement timeout (``SET LOCAL``: session
settings would leak to other clients of the pool) or dropped by the client-side call deadline.

PgBouncer comes from qt_pipeline_tests/pgbouncer_harness/ (the pinned Debian package, fetched on first use).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import psycopg2
import pytest
import sqlalchemy as sa

from qt_pipeline.storage.consistency import compare_history
from qt_pipeline.storage.duckdb_store import DuckDBStore
from qt_pipeline.storage.interface import StorageError
from qt_pipeline.storage.migration import migrate_all
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.faults import TcpProxy
from qt_pipeline_tests.pgbouncer import PgBouncer
from qt_pipeline_tests.storage.central.helpers import make_bars, sql
from qt_pipeline_tests.storage.postgres.helpers import bounded, count_rows

pytestmark = pytest.mark.pgbouncer


def _pooled_store(url: str, direct_url: str, schema: str, make_settings, **overrides) -> PostgresStore:
    """A store whose queries go to ``url`` (PgBouncer) and DDL/COPY to ``direct_url`` (PostgreSQL), as on
    Neon (pooled host + NEON_DIRECT_URL)."""
    settings = make_settings(NEON_DIRECT_URL=direct_url, **overrides)
    store = PostgresStore(url, settings, schema=schema)
    store.ensure_schema()
    return store


def test_central_store_through_pgbouncer_writes_reads_and_matches_local(
    pgbouncer, pg_schema, make_settings, tmp_path
):
    url, schema = pg_schema
    central = _pooled_store(pgbouncer.url_for(url), url, schema, make_settings)
    local = DuckDBStore(tmp_path / "local.duckdb")
    try:
        assert central.config.url.port == pgbouncer.port
        bars = make_bars(("BTCUSD", "ETHUSD"), days=3, per_day=40)
        local.write_bars(bars)
        migrate_all(local, central)
        res = central.write_bars(make_bars(("BTCUSD",), days=1, per_day=40))  # idempotent: same keys
        assert res.rows == 40 and res.backend == "central"
        assert count_rows(url, schema) == 240
        back = central.read_bars(
            "ETHUSD", bars["timestamp"].min(), bars["timestamp"].max() + pd.Timedelta("1min")
        )
        assert len(back) == 120
        assert sorted(central.list_symbols()["symbol"]) == ["BTCUSD", "ETHUSD"]
        assert compare_history(local, central).ok
        # the queries really went through PgBouncer's transaction pool for this database
        pools = [p for p in pgbouncer.admin("SHOW POOLS") if p["database"] == url.rsplit("/", 1)[1]]
        assert pools and pools[0]["pool_mode"] == "transaction"
        # SET LOCAL only: nothing the store set survives its transaction on the shared server connection
        conn = psycopg2.connect(pgbouncer.url_for(url))
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW statement_timeout")
                assert cur.fetchone()[0] == sql(url, "SHOW statement_timeout")[0][0]
        finally:
            conn.close()
    finally:
        local.close()
        central.close()


def test_blackholed_connection_to_pgbouncer_fails_within_the_call_deadline(
    pgbouncer, pg_schema, make_settings
):
    url, schema = pg_schema
    with TcpProxy("127.0.0.1", pgbouncer.port) as proxy:  # client -> proxy -> PgBouncer -> PostgreSQL
        store = _pooled_store(
            proxy.url_for(pgbouncer.url_for(url)),
            url,
            schema,
            make_settings,
            QT_PG_CALL_TIMEOUT_S=1.5,
            QT_PG_RETRY_ATTEMPTS=1,
        )
        try:
            store.write_bars(make_bars(("AAA",), days=1, per_day=50))  # COPY: the direct host
            assert list(store.list_symbols()["symbol"]) == ["AAA"]  # a query: the pooled host
            assert proxy.live_connections >= 1
            proxy.cut("blackhole-all")  # the pooled connection stays open; PgBouncer never answers again
            err, seconds = bounded(store.list_symbols)
            assert isinstance(err, StorageError), err
            message = str(err)
            assert "\n" not in message  # the project's one-line error
            assert "call deadline" in message or "timeout expired" in message, message
            assert proxy.live_connections == 0  # the client dropped the silent connection
            print(f"\n[pgbouncer] black-holed client->PgBouncer connection: failed after {seconds:.2f} s")
            proxy.restore()
            store.write_bars(make_bars(("BBB",), days=1, per_day=30, seed=3))
            assert count_rows(url, schema) == 80
            assert sorted(store.list_symbols()["symbol"]) == ["AAA", "BBB"]
        finally:
            proxy.restore()
            store.close()


@pytest.mark.slow
def test_pgbouncer_whose_server_connection_goes_silent_is_bounded_by_the_call_deadline(
    pg_schema, make_settings, tmp_path: Path
):
    """PgBouncer itself keeps answering TCP (so keepalives see a healthy peer) while its server
    connection is black-holed: only the client-side deadline can end the call."""
    url, schema = pg_schema
    with TcpProxy("127.0.0.1", 5432) as proxy, PgBouncer(tmp_path / "pgb", upstream_port=proxy.port) as pgb:
        store = _pooled_store(
            pgb.url_for(url), url, schema, make_settings, QT_PG_CALL_TIMEOUT_S=1.5, QT_PG_RETRY_ATTEMPTS=2
        )
        try:
            store.write_bars(make_bars(("AAA",), days=1, per_day=50))  # COPY: the direct host
            assert list(store.list_symbols()["symbol"]) == ["AAA"]  # PgBouncer now holds a server connection
            proxy.cut("blackhole-all")  # PgBouncer -> PostgreSQL: silent; client -> PgBouncer: fine
            err, seconds = bounded(store.list_symbols)  # two attempts, each dropped by the deadline
            assert isinstance(err, StorageError), err
            message = str(err)
            assert "\n" not in message
            assert "call deadline" in message, message
            print(f"\n[pgbouncer] black-holed PgBouncer->PostgreSQL: 2 attempts failed after {seconds:.2f} s")
            assert count_rows(url, schema) == 50  # nothing half-written
            proxy.restore()
            # PgBouncer closed the server connections its clients abandoned mid-query by itself; its
            # logins failed meanwhile, so it refuses clients for server_login_retry: wait that out
            pgb.wait_until_serving(url)
            store.write_bars(make_bars(("BBB",), days=1, per_day=30, seed=3))
            assert count_rows(url, schema) == 80
            assert sorted(store.list_symbols()["symbol"]) == ["AAA", "BBB"]
        finally:
            proxy.restore()
            store.close()


def _sleep_on(store: PostgresStore, seconds: float) -> None:
    def run() -> None:
        with store.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_sleep(:s)"), {"s": seconds})

    store.run_db(f"sleep {seconds} s", run, attempts=1)


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        # the server's statement_timeout, set per transaction (SET LOCAL): query_canceled, SQLSTATE 57014
        ({"QT_PG_STATEMENT_TIMEOUT_MS": 300, "QT_PG_CALL_TIMEOUT_S": 60}, "57014"),
        # no server timeout in reach: the 1 s client-side call deadline drops the connection
        ({"QT_PG_STATEMENT_TIMEOUT_MS": 60_000, "QT_PG_CALL_TIMEOUT_S": 1}, "call deadline"),
    ],
    ids=["statement_timeout", "call_deadline"],
)
def test_a_statement_that_runs_too_long_on_the_pooled_host_is_ended(
    pgbouncer, pg_schema, make_settings, overrides, expect
):
    url, schema = pg_schema
    store = _pooled_store(pgbouncer.url_for(url), url, schema, make_settings, **overrides)
    try:
        store.write_bars(make_bars(("AAA",), days=1, per_day=20))
        err, seconds = bounded(lambda: _sleep_on(store, 10))
        assert isinstance(err, StorageError), err
        assert "\n" not in str(err)  # the project's one-line error
        if expect == "57014":
            assert err.sqlstate == "57014", str(err)
        else:
            assert expect in str(err), str(err)
        print(f"\n[pgbouncer] pg_sleep(10) ended ({expect}) after {seconds:.2f} s")
        # the pool and PgBouncer serve the next calls; nothing was lost or added
        assert count_rows(url, schema) == 20
        assert list(store.list_symbols()["symbol"]) == ["AAA"]
    finally:
        store.close()
