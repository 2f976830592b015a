"""The embedded default PostgreSQL (no NEON_DATABASE_URL): starts, is reused, works with the store."""

from __future__ import annotations

import stat

import pandas as pd
import psycopg2

from qt_pipeline.storage import get_storage
from qt_pipeline.storage.postgres.embedded import ensure_embedded_postgres, stop_embedded_postgres
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.storage.backends import make_bars


def test_embedded_server_starts_is_reused_and_serves_the_store(settings):
    assert settings.database_url is None
    try:
        url = ensure_embedded_postgres(settings)
        pgdata = (settings.data_dir / "postgres").resolve()  # a symlink to a postgres-owned dir when root
        assert (pgdata / "PG_VERSION").exists()
        secret = settings.data_dir.resolve() / "postgres.secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        password = secret.read_text().strip()
        assert password in url and url.startswith("postgresql://postgres:")
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        # a second call reuses the running server (same URL, same postmaster)
        assert ensure_embedded_postgres(settings) == url
        assert int((pgdata / "postmaster.pid").read_text().splitlines()[0]) == pid
        # TCP needs the password (scram-sha-256)
        wrong = url.replace(password, "not-the-password")
        try:
            psycopg2.connect(wrong, connect_timeout=3)
            raise AssertionError("a wrong password must be refused")
        except psycopg2.OperationalError as exc:
            assert "password authentication failed" in str(exc)
        # the factory picks it when NEON_DATABASE_URL is unset
        store = get_storage("neon", settings)
        try:
            assert isinstance(store, PostgresStore)
            assert password not in store.location
            bars = make_bars(["AAA"], "2024-01-01", 30)
            store.write_bars(bars)
            pd.testing.assert_frame_equal(store.read_bars("AAA"), bars, check_exact=True)
            assert store.health().healthy
        finally:
            store.close()
    finally:
        stopped = stop_embedded_postgres(settings)
    assert stopped and not stop_embedded_postgres(settings)
    # after a stop, the next call starts it again on the same data (rows survive)
    url2 = ensure_embedded_postgres(settings)
    try:
        store = PostgresStore(url2, settings)
        try:
            assert len(store.read_bars("AAA")) == 30
        finally:
            store.close()
    finally:
        stop_embedded_postgres(settings, remove_data=True)
    assert not (settings.data_dir / "postgres").exists()


def _rows(url: str, settings) -> int:
    store = PostgresStore(url, settings)
    try:
        return len(store.read_bars("AAA"))
    finally:
        store.close()


def test_a_lost_password_file_gets_a_new_password_and_keeps_the_data(settings):
    url = ensure_embedded_postgres(settings)
    try:
        store = PostgresStore(url, settings)
        try:
            store.write_bars(make_bars(["AAA"], "2024-01-01", 12))
        finally:
            store.close()
        secret = settings.data_dir.resolve() / "postgres.secret"
        old = secret.read_text().strip()
        secret.unlink()
        # the server is still running: the new password is set over its local socket
        url2 = ensure_embedded_postgres(settings)
        new = secret.read_text().strip()
        assert new != old and new in url2
        assert _rows(url2, settings) == 12
        # and while it is stopped: it is set once the server is up again
        stop_embedded_postgres(settings)
        secret.unlink()
        url3 = ensure_embedded_postgres(settings)
        newer = secret.read_text().strip()
        assert newer != new and newer in url3 and _rows(url3, settings) == 12
        try:
            psycopg2.connect(url3.replace(newer, new), connect_timeout=3)
            raise AssertionError("the previous password must no longer work")
        except psycopg2.OperationalError as exc:
            assert "password authentication failed" in str(exc)
    finally:
        stop_embedded_postgres(settings, remove_data=True)


def test_deleting_the_data_directory_resets_the_embedded_server(settings):
    import os
    import shutil

    url = ensure_embedded_postgres(settings)
    pgdata = (settings.data_dir / "postgres").resolve()
    store = PostgresStore(url, settings)
    try:
        store.write_bars(make_bars(["AAA"], "2024-01-01", 7))
    finally:
        store.close()
    # the user wipes QT_DATA_DIR while the server runs (as root its cluster lives outside, in $TMPDIR)
    shutil.rmtree(settings.data_dir)
    try:
        url2 = ensure_embedded_postgres(settings)
        assert _rows(url2, settings) == 0  # a fresh, empty cluster that accepts the new password
        if os.geteuid() == 0:
            assert (settings.data_dir / "postgres").resolve() == pgdata  # same place, re-initialised
    finally:
        stop_embedded_postgres(settings, remove_data=True)
