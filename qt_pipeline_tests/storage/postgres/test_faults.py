"""Real faults against the neon backend: a COPY broken mid-stream, outages, a crashed server, wrong
password, unknown host — and no password in any message or log line."""

from __future__ import annotations

import logging
import threading
import traceback

import pandas as pd
import pytest

from qt_pipeline.redaction import redact
from qt_pipeline.storage.interface import StorageError, StorageUnavailableError
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.faults import TcpProxy, ThrowawayPostgres
from qt_pipeline_tests.storage.backends import make_bars
from qt_pipeline_tests.storage.postgres.helpers import count_rows

LOGGER = "qt_pipeline.storage.postgres"


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


@pytest.fixture(scope="module")
def throwaway_pg():
    with ThrowawayPostgres() as pg:
        yield pg


@pytest.fixture
def proxy(pg_url):
    p = TcpProxy("127.0.0.1", 5432)
    yield p
    p.close()


def test_copy_broken_mid_stream_leaves_nothing_and_a_retry_completes(pg_schema, make_settings, proxy):
    url, schema = pg_schema
    store = PostgresStore(proxy.url_for(url), make_settings(QT_PG_RETRY_ATTEMPTS=1), schema=schema)
    try:
        store.ensure_schema()
        bars = make_bars(["AAA", "BBB"], "2024-01-01", 10_000, seed=4)  # ~1.6 MB of CSV
        proxy.drop_after_bytes(400_000)  # the connection dies a quarter into the COPY
        with pytest.raises(StorageUnavailableError) as info:
            store.write_bars(bars)
        assert proxy.kills == 1
        assert "retrying is safe" in str(info.value) and "no partial rows" in str(info.value)
        assert count_rows(url, schema) == 0  # checked directly, not through the proxy
        # the retry (same batch) completes and is exact
        r = store.write_bars(bars)
        assert r.rows == 20_000 and count_rows(url, schema) == 20_000
        pd.testing.assert_frame_equal(store.read_range(), bars, check_exact=True)
    finally:
        store.close()


def test_broken_upsert_is_retried_inside_write_bars(pg_schema, make_settings, proxy, caplog):
    url, schema = pg_schema
    store = PostgresStore(proxy.url_for(url), make_settings(QT_PG_RETRY_ATTEMPTS=3), schema=schema)
    try:
        bars = make_bars(["AAA"], "2024-01-01", 10_000, seed=5)
        store.write_bars(bars)
        changed = bars.copy()
        changed["close"] = changed["close"] + 1.0
        caplog.set_level(logging.WARNING, logger=LOGGER)
        proxy.drop_after_bytes(200_000)  # breaks the staging COPY of the upsert once
        r = store.write_bars(changed)
        assert proxy.kills == 1 and r.details["path"] == "upsert"
        assert any("transient database error (attempt 1/3" in rec.getMessage() for rec in caplog.records)
        assert count_rows(url, schema) == 10_000
        pd.testing.assert_frame_equal(store.read_bars("AAA"), changed, check_exact=True)
    finally:
        store.close()


def test_outage_with_password_is_retried_and_logged_redacted(throwaway_pg, make_settings, caplog):
    proxy = TcpProxy("127.0.0.1", throwaway_pg.port)
    store = PostgresStore(
        proxy.url_for(throwaway_pg.url), make_settings(QT_PG_RETRY_ATTEMPTS=8), schema="outage"
    )
    try:
        bars = make_bars(["AAA"], "2024-01-01", 50)
        store.write_bars(bars)
        caplog.set_level(logging.DEBUG)
        proxy.cut()  # live pooled connections die, new ones are refused ...
        timer = threading.Timer(0.6, proxy.restore)  # ... until the outage ends
        timer.start()
        got = store.read_bars("AAA")
        timer.join()
        pd.testing.assert_frame_equal(got, bars, check_exact=True)
        retries = [r.getMessage() for r in caplog.records if "transient database error" in r.getMessage()]
        assert retries, "the outage should have been retried"
        assert throwaway_pg.password not in caplog.text
        for text in (store.location, repr(store), str(store.config), str(store.health())):
            assert throwaway_pg.password not in text
    finally:
        store.close()
        proxy.close()


def test_server_crash_fails_clearly_then_recovers(make_settings):
    with ThrowawayPostgres() as pg:
        store = PostgresStore(pg.url, make_settings(QT_PG_RETRY_ATTEMPTS=2), schema="crash")
        try:
            bars = make_bars(["AAA"], "2024-01-01", 20)
            store.write_bars(bars)
            pg.kill9()
            with pytest.raises(StorageUnavailableError) as info:
                store.read_bars("AAA")
            msg = _all_text(info.value)
            assert "read bars failed on 127.0.0.1" in msg and "retrying is safe" in msg
            assert pg.password not in msg
            assert info.value.__cause__ is None and info.value.__context__ is None
            h = store.health()
            assert not h.healthy and pg.password not in h.message
            pg.start()
            pd.testing.assert_frame_equal(store.read_bars("AAA"), bars, check_exact=True)  # pool recovers
            assert store.health().healthy
        finally:
            store.close()


def test_wrong_password_fails_fast_with_a_clear_message(throwaway_pg, make_settings, caplog):
    wrong = "WrongPass-h4a-0123"
    url = throwaway_pg.url_for(password=wrong)
    caplog.set_level(logging.DEBUG)
    store = PostgresStore(url, make_settings(QT_PG_RETRY_ATTEMPTS=5), schema="pw")
    try:
        with pytest.raises(StorageError) as info:
            store.write_bars(make_bars(["AAA"], "2024-01-01", 5))
        assert not isinstance(info.value, StorageUnavailableError)
        text = _all_text(info.value)
        assert "authentication failed" in text and "check the user and password" in text
        # the location is named (redacted like every message: a registered password such as the
        # TimescaleDB harness's "postgres" is masked wherever it appears, database names included)
        assert redact(f"127.0.0.1:{throwaway_pg.port}/postgres") in text
        assert wrong not in text and throwaway_pg.password not in text
        assert wrong not in caplog.text
        assert not any("transient database error" in r.getMessage() for r in caplog.records)  # not retried
        h = store.health()
        assert not h.healthy and "authentication failed" in h.message and wrong not in str(h)
    finally:
        store.close()


def test_unknown_host_fails_quickly_and_clearly(make_settings, caplog):
    secret = "UnknownHost-pw-987"
    url = f"postgresql://alice:{secret}@nonexistent.invalid:5432/neondb"
    caplog.set_level(logging.DEBUG)
    store = PostgresStore(url, make_settings(QT_PG_RETRY_ATTEMPTS=2, QT_PG_CONNECT_TIMEOUT_S=2), schema="x")
    assert store.config.sslmode == "require"
    try:
        with pytest.raises(StorageUnavailableError) as info:
            store.read_bars("AAA")
        text = _all_text(info.value)
        assert "nonexistent.invalid" in text and "cannot be resolved" in text
        assert secret not in text and secret not in caplog.text
        assert not any("transient database error" in r.getMessage() for r in caplog.records)
    finally:
        store.close()


def test_unanswered_connect_times_out_and_is_retried(pg_schema, make_settings, proxy, caplog):
    """A host that accepts TCP but never answers (a compute waking up, a black hole) hits connect_timeout,
    counts as transient, is retried with backoff, then fails as StorageUnavailableError."""
    url, schema = pg_schema
    store = PostgresStore(
        proxy.url_for(url), make_settings(QT_PG_RETRY_ATTEMPTS=2, QT_PG_CONNECT_TIMEOUT_S=1), schema=schema
    )
    try:
        store.ensure_schema()
        store.close()  # no pooled connection left: the next call must connect
        proxy.cut("blackhole")
        caplog.set_level(logging.WARNING, logger=LOGGER)
        with pytest.raises(StorageUnavailableError) as info:
            store.read_bars("AAA")
        assert "timeout expired" in str(info.value)
        retries = [r.getMessage() for r in caplog.records if "transient database error" in r.getMessage()]
        assert len(retries) == 1 and "attempt 1/2" in retries[0]
        proxy.restore()
        assert store.read_bars("AAA").empty  # reachable again: works
    finally:
        store.close()
