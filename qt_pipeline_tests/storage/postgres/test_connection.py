"""ConnectionConfig (pooled/direct URL, TLS defaults, no startup options) and per-transaction SET LOCAL."""

from __future__ import annotations

import psycopg2
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from qt_pipeline.storage.postgres.connection import ConnectionConfig, ConnectionConfigError, make_engine
from qt_pipeline.storage.postgres.retry import is_transient

NEON_POOLED = "postgresql://alice:s3cr3t-Pw0rd@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"


def test_neon_pooled_url_gets_require_and_direct_host(make_settings):
    cfg = ConnectionConfig.from_url(NEON_POOLED, make_settings())
    assert cfg.url.host == "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
    assert cfg.direct_url.host == "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
    assert cfg.url.query["sslmode"] == "require" and cfg.direct_url.query["sslmode"] == "require"
    assert cfg.sslmode == "require"
    assert cfg.is_neon
    assert cfg.url.drivername == "postgresql+psycopg2"
    assert cfg.url.query["connect_timeout"] == "3"
    assert cfg.url.query["application_name"] == "qt_pipeline"
    # the direct URL keeps user, password and database
    assert (cfg.direct_url.username, cfg.direct_url.password, cfg.direct_url.database) == (
        "alice",
        "s3cr3t-Pw0rd",
        "neondb",
    )


def test_verify_full_is_kept_and_direct_url_override(make_settings):
    direct = "postgres://alice:s3cr3t-Pw0rd@my-direct-host.example.com:6543/neondb"
    settings = make_settings(NEON_DIRECT_URL=SecretStr(direct))
    cfg = ConnectionConfig.from_url(NEON_POOLED + "?sslmode=verify-full", settings)
    assert cfg.sslmode == "verify-full"
    assert cfg.url.query["sslmode"] == "verify-full"
    assert cfg.direct_url.host == "my-direct-host.example.com" and cfg.direct_url.port == 6543
    assert cfg.direct_url.query["sslmode"] == "require"  # the override is a non-local host too


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@localhost:5432/db",
        "postgresql://postgres@127.0.0.1:5432/db",
        "postgresql://postgres@/db?host=/var/run/postgresql",
        "postgresql:///db",
    ],
)
def test_local_hosts_get_no_sslmode(make_settings, url):
    cfg = ConnectionConfig.from_url(url, make_settings())
    assert cfg.sslmode is None
    assert "sslmode" not in cfg.url.query
    assert cfg.direct_url == cfg.url  # no -pooler: same URL


def test_qt_pg_sslmode_overrides_and_is_validated(make_settings):
    cfg = ConnectionConfig.from_url(
        "postgresql://u:p@db.example.com/x", make_settings(QT_PG_SSLMODE="verify-ca")
    )
    assert cfg.sslmode == "verify-ca"
    with pytest.raises(ConnectionConfigError, match="not a libpq sslmode"):
        ConnectionConfig.from_url("postgresql://u:p@db.example.com/x?sslmode=required", make_settings())


def test_startup_options_are_rejected_with_a_clear_message(make_settings):
    with pytest.raises(ConnectionConfigError) as info:
        ConnectionConfig.from_url(NEON_POOLED + "?options=-c%20statement_timeout%3D5000", make_settings())
    msg = str(info.value)
    assert "PgBouncer" in msg and "SET LOCAL" in msg
    assert "s3cr3t-Pw0rd" not in msg
    # Neon's endpoint option (no -c) is fine
    ok = ConnectionConfig.from_url(
        NEON_POOLED + "?options=endpoint%3Dep-cool-darkness-123456", make_settings()
    )
    assert ok.url.query["options"] == "endpoint=ep-cool-darkness-123456"


def test_other_drivers_and_garbage_are_rejected(make_settings):
    with pytest.raises(ConnectionConfigError, match="psycopg2"):
        ConnectionConfig.from_url("mysql://u:topsecretpw@h/db", make_settings())
    with pytest.raises(ConnectionConfigError, match="not a valid database URL") as info:
        ConnectionConfig.from_url("not a url at all", make_settings())
    assert "topsecretpw" not in str(info.value)


def test_redacted_forms_never_hold_the_password(make_settings):
    cfg = ConnectionConfig.from_url(NEON_POOLED, make_settings())
    for text in (cfg.redacted(), cfg.redacted(direct=True), cfg.location, repr(cfg), str(cfg)):
        assert "s3cr3t-Pw0rd" not in text
    assert "ep-cool-darkness-123456-pooler" in cfg.redacted()
    assert cfg.location == "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"
    assert "s3cr3t-Pw0rd" in cfg.dsn()  # the real DSN (for connecting) still has it


def test_set_local_in_every_transaction_and_no_startup_options(pg_url, make_settings):
    settings = make_settings(QT_PG_STATEMENT_TIMEOUT_MS=12345, QT_PG_LOCK_TIMEOUT_MS=2345)
    cfg = ConnectionConfig.from_url(pg_url, settings)
    assert "options" not in make_url(cfg.dsn()).query
    engine = make_engine(cfg)
    try:
        with engine.begin() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "12345ms"
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "2345ms"
            assert conn.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
            assert conn.exec_driver_sql("SHOW extra_float_digits").scalar() == "3"
        # the same pooled connection outside a transaction: nothing leaked into the session
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
        # a plain server session started with this DSN has the server defaults (no startup options)
        raw = psycopg2.connect(cfg.dsn())
        with raw.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone()[0] == "0"
            cur.execute("SELECT current_setting('application_name')")
            assert cur.fetchone()[0] == "qt_pipeline"
        raw.close()
    finally:
        engine.dispose()


def test_is_transient_on_real_errors(pg_url):
    # permanent: unknown database (no SQLSTATE on connection errors: decided by the message)
    bad_db = pg_url.rsplit("/", 1)[0] + "/no_such_db_h4a"
    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect(bad_db, connect_timeout=3)
    assert not is_transient(info.value)
    # transient: nothing listens there
    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=3)
    assert "refused" in str(info.value).lower() and is_transient(info.value)
    # permanent with a SQLSTATE: undefined table; transient 57P01: our backend terminated by an admin
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    with pytest.raises(psycopg2.Error) as info, conn.cursor() as cur:
        cur.execute("SELECT * FROM no_such_table_h4a")
    assert info.value.pgcode == "42P01" and not is_transient(info.value)
    with pytest.raises(psycopg2.Error) as info, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert is_transient(info.value)
    conn.close()
