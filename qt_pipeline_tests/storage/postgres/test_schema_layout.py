"""Capability detection, Alembic schema and time layout on vanilla PostgreSQL 15 and on TimescaleDB."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg2
import pytest
import sqlalchemy as sa

from qt_pipeline.storage.postgres.capabilities import Capabilities, detect_capabilities
from qt_pipeline.storage.postgres.connection import ConnectionConfig, make_engine
from qt_pipeline.storage.postgres.layout import (
    drop_time_partition,
    ensure_partitions,
    list_time_partitions,
    partition_name,
    table_layout,
)
from qt_pipeline.storage.postgres.schema import BASE_REVISION, applied_revisions, head_revisions, upgrade
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.storage.backends import make_bars

TABLES = {"ohlcv_bars", "ohlcv_rejects", "migration_ledger", "cold_tier_ranges", "alembic_version"}


def _tables(conn: sa.Connection, schema: str) -> set[str]:
    rows = conn.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    parts = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'p'",
        (schema,),
    )
    return {r[0] for r in rows} | {r[0] for r in parts}


@pytest.mark.parametrize(
    ("version", "old"), [("2.10.1", True), ("2.12.2", True), ("2.13.0", False), ("2.23.0-dev", False)]
)
def test_old_hypertable_api_by_version(version, old):
    caps = Capabilities(150000, "15.0", version, version, "apache", True)
    assert caps.old_hypertable_api is old
    assert caps.layout == "hypertable" and caps.has_timescaledb and not caps.can_compress
    vanilla = Capabilities(150000, "15.0", None, None, None, False)
    assert vanilla.layout == "partitioned" and not vanilla.old_hypertable_api and not vanilla.can_compress


def test_capabilities_on_vanilla_postgres(pg_url, make_settings):
    engine = make_engine(ConnectionConfig.from_url(pg_url, make_settings()))
    try:
        with engine.connect() as conn:
            caps = detect_capabilities(conn)
    finally:
        engine.dispose()
    assert caps.server_version_num // 10000 == 15
    assert caps.timescaledb_version is None and caps.license is None
    assert caps.layout == "partitioned" and not caps.is_neon


def test_vanilla_schema_is_partitioned_with_partitions_ahead(pg_store):
    pg_store.ensure_schema()
    today = datetime.now(UTC).date()
    with pg_store.engine.connect() as conn:
        assert _tables(conn, pg_store.schema) >= TABLES
        assert table_layout(conn, pg_store.schema) == "partitioned"
        assert applied_revisions(conn, pg_store.schema) == head_revisions()
        assert BASE_REVISION in head_revisions() or head_revisions()  # other branches may add heads
        # no DEFAULT partition; today + 2 days ahead exist
        names = {p.name for p in list_time_partitions(conn, pg_store.schema)}
    assert {partition_name(today + timedelta(days=k)) for k in range(3)} <= names
    # writing bars creates their days' partitions (plus 2 ahead), each exactly one UTC day
    pg_store.write_bars(make_bars(["AAA"], "2024-03-01 23:00", 120))
    with pg_store.engine.connect() as conn:
        parts = {p.name: p for p in list_time_partitions(conn, pg_store.schema)}
    for d in (date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3), date(2024, 3, 4)):
        p = parts[partition_name(d)]
        assert p.kind == "partition" and p.is_compressed is None and p.bytes and p.bytes > 0
        assert p.range_start == datetime(d.year, d.month, d.day, tzinfo=UTC)
        assert p.range_end - p.range_start == timedelta(days=1)
    assert partition_name(date(2024, 3, 5)) not in parts


def test_row_for_a_missing_partition_fails_loudly(pg_store):
    """No DEFAULT partition: a row outside every partition is an error, never silently parked."""
    pg_store.ensure_schema()
    with pytest.raises(sa.exc.IntegrityError, match="no partition"), pg_store.engine.begin() as conn:
        conn.exec_driver_sql(
            f'INSERT INTO {pg_store.qualified("ohlcv_bars")} (symbol, "timestamp", open, high, low, close, '
            "volume, vwap, trade_count) VALUES ('AAA', '1999-01-01', 1, 1, 1, 1, 1, 1, 1)"
        )


def test_schema_upgrade_is_idempotent_and_concurrency_safe(pg_schema, make_settings):
    url, schema = pg_schema
    engine = make_engine(ConnectionConfig.from_url(url, make_settings()))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(engine, schema)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert upgrade(engine, schema) == head_revisions()
        with engine.connect() as conn:
            assert _tables(conn, schema) >= TABLES
    finally:
        engine.dispose()


def test_concurrent_partition_creation_does_not_fail(pg_store):
    pg_store.ensure_schema()
    days = [date(2023, 6, 1) + timedelta(days=k) for k in range(5)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            barrier.wait()
            with pg_store.direct_engine.begin() as conn:
                ensure_partitions(conn, pg_store.schema, days, ahead_days=1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with pg_store.engine.connect() as conn:
        names = {p.name for p in list_time_partitions(conn, pg_store.schema)}
    assert {partition_name(d) for d in days} | {partition_name(date(2023, 6, 6))} <= names


def test_drop_partition_detaches_and_drops_exactly_one(pg_store):
    pg_store.write_bars(make_bars(["AAA"], "2024-02-01", 3 * 1440))  # three full days
    with pg_store.direct_engine.begin() as conn:
        parts = {p.name: p for p in list_time_partitions(conn, pg_store.schema)}
        drop_time_partition(conn, pg_store.schema, parts[partition_name(date(2024, 2, 2))])
    with pg_store.engine.connect() as conn:
        names = {p.name for p in list_time_partitions(conn, pg_store.schema)}
        gone = conn.exec_driver_sql(
            "SELECT to_regclass(%s)", (f"{pg_store.schema}.ohlcv_bars_p20240202",)
        ).scalar()
    assert partition_name(date(2024, 2, 2)) not in names and gone is None
    assert {partition_name(date(2024, 2, 1)), partition_name(date(2024, 2, 3))} <= names
    days = pg_store.symbol_days()
    assert [str(d) for d in days["day"]] == ["2024-02-01", "2024-02-03"] and list(days["rows"]) == [
        1440,
        1440,
    ]


def test_no_create_permission_gives_grant_create_message(pg_url, make_settings):
    role = f"qt_nocreate_{uuid.uuid4().hex[:8]}"
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN')
        cur.execute(f'CREATE SCHEMA "{schema}"')
        cur.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
    user_url = pg_url.replace("postgres@", f"{role}@", 1)
    store = PostgresStore(user_url, make_settings(), schema=schema)
    try:
        from qt_pipeline.storage.interface import StorageError

        with pytest.raises(StorageError) as info:
            store.ensure_schema()
        msg = str(info.value)
        assert "GRANT CREATE" in msg and f'ON SCHEMA "{schema}"' in msg and f'TO "{role}"' in msg
        assert "42501" in msg and "set up the central-store schema" in msg
        assert info.value.__cause__ is None and info.value.__suppress_context__
    finally:
        store.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            cur.execute(f'DROP OWNED BY "{role}"')
            cur.execute(f'DROP ROLE "{role}"')
        admin.close()


# --- TimescaleDB (harness: PG17 + TimescaleDB 2.23, TSL license) -------------------------------------------
@pytest.mark.timescale
def test_capabilities_on_timescaledb(ts_schema, make_settings):
    dsn, schema = ts_schema
    store = PostgresStore(dsn, make_settings(), schema=schema)
    try:
        store.ensure_schema()  # creates the extension when available but not installed
        caps = store.capabilities
    finally:
        store.close()
    assert caps.has_timescaledb and caps.timescaledb_version.startswith("2.")
    assert caps.license == "timescale" and caps.can_compress
    assert caps.layout == "hypertable" and not caps.old_hypertable_api
    assert caps.server_version_num >= 170000


def _dimension(dsn: str, schema: str) -> tuple[str, object]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_schema = %s AND hypertable_name = 'ohlcv_bars'",
            (schema,),
        )
        row = cur.fetchone()
    conn.close()
    return row


@pytest.mark.timescale
@pytest.mark.parametrize("api", ["auto", "old"])
def test_timescaledb_hypertable_with_daily_chunks(ts_schema, make_settings, caplog, api):
    dsn, schema = ts_schema
    store = PostgresStore(dsn, make_settings(), schema=schema)
    try:
        caplog.set_level(logging.INFO, logger="qt_pipeline.storage.postgres")
        # the harness is 2.23: "auto" takes the by_range branch; "old" forces the pre-2.13 call (Neon PG15)
        upgrade(store.direct_engine, schema, hypertable_api=api)
        expected = "old API" if api == "old" else "by_range API"
        assert any(
            "hypertable, 1-day chunks" in r.getMessage() and expected in r.getMessage()
            for r in caplog.records
        )
        assert _dimension(dsn, schema) == ("timestamp", timedelta(days=1))
        assert store.layout == "hypertable"
        bars = make_bars(["AAA", "BBB"], "2024-01-01 22:00", 3 * 60)  # spans 2 UTC days
        store.write_bars(bars)
        store.write_bars(bars)  # idempotent on the hypertable too
        assert len(store.read_range()) == len(bars)
        with store.direct_engine.begin() as conn:
            chunks = list_time_partitions(conn, schema)
            assert ensure_partitions(conn, schema, [date(2024, 5, 1)]) == []  # no-op on hypertables
        assert [c.kind for c in chunks] == ["chunk", "chunk"]
        assert all(c.range_end - c.range_start == timedelta(days=1) for c in chunks)
        assert chunks[0].range_start == datetime(2024, 1, 1, tzinfo=UTC)
        assert chunks[0].is_compressed is False and chunks[0].relation_schema == "_timescaledb_internal"
        with store.direct_engine.begin() as conn:
            drop_time_partition(conn, schema, chunks[0])
        days = store.symbol_days()
        assert sorted({str(d) for d in days["day"]}) == ["2024-01-02"]
    finally:
        store.close()


@pytest.mark.timescale
def test_timescaledb_off_falls_back_to_native_partitions(ts_schema, make_settings):
    dsn, schema = ts_schema
    store = PostgresStore(dsn, make_settings(QT_PG_TIMESCALEDB="off"), schema=schema)
    try:
        store.ensure_schema()
        assert store.layout == "partitioned"
        store.write_bars(make_bars(["AAA"], "2024-01-01", 30))
        assert len(store.read_bars("AAA")) == 30
    finally:
        store.close()
