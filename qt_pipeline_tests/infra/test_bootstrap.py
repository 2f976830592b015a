"""``qt db bootstrap`` applied to the machine's real PostgreSQL: each role can do exactly what it should.

Roles are cluster-wide: every test uses its own role prefix and database and drops both afterwards."""

from __future__ import annotations

import uuid

import pandas as pd
import psycopg2
import pytest
from psycopg2 import errors
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from qt_pipeline.cli import app
from qt_pipeline.storage.postgres.bootstrap import BootstrapNames, drop_roles, render
from qt_pipeline_tests.conftest import PG_ADMIN_URL
from qt_pipeline_tests.storage.backends import make_bars

SCHEMA = "qt_central"


@pytest.fixture
def boot(tmp_path):
    """A fresh database and a unique role prefix; everything dropped after the test."""
    prefix = f"qtb_{uuid.uuid4().hex[:8]}"
    db = f"qt_boot_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db}"')
    names = BootstrapNames(database=db, schema=SCHEMA, prefix=prefix, reader_statement_timeout="1s")
    try:
        yield names
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            cur.execute(f'DROP ROLE IF EXISTS "{prefix}_nobody"')
        drop_roles(PG_ADMIN_URL, names, [])
        with admin.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE %s", (prefix + "%",))
            assert cur.fetchone()[0] == 0
        admin.close()


def role_url(names: BootstrapNames, kind: str) -> str:
    return (
        make_url(PG_ADMIN_URL)
        .set(username=names.role(kind), password=None, database=names.database)
        .render_as_string(hide_password=False)
    )


def connect(names: BootstrapNames, kind: str):
    conn = psycopg2.connect(role_url(names, kind), connect_timeout=5)
    conn.autocommit = True
    return conn


def run_cli(names: BootstrapNames, *extra: str):
    admin = make_url(PG_ADMIN_URL).set(database=names.database).render_as_string(hide_password=False)
    args = [
        "db",
        "bootstrap",
        "--apply",
        "--admin-url",
        admin,
        "--schema",
        names.schema,
        "--prefix",
        names.prefix,
    ]
    args += ["--reader-statement-timeout", names.reader_statement_timeout, *extra]
    return CliRunner().invoke(app, args)


def denied(conn, sql: str, params=None) -> str:
    with pytest.raises(psycopg2.Error) as info, conn.cursor() as cur:
        cur.execute(sql, params)
    return type(info.value).__name__


def store_for(names: BootstrapNames, pooled: str, direct: str, settings, monkeypatch):
    from qt_pipeline.config import get_settings
    from qt_pipeline.storage.postgres.store import PostgresStore

    monkeypatch.setenv("NEON_DIRECT_URL", role_url(names, direct))
    monkeypatch.setenv("QT_PG_SCHEMA", names.schema)
    monkeypatch.setenv("QT_PG_TIMESCALEDB", "off")  # the same layout on every server version
    get_settings.cache_clear()
    return PostgresStore(role_url(names, pooled), get_settings(), schema=names.schema)


def test_rendered_sql_names_every_role_and_holds_no_password() -> None:
    names = BootstrapNames(database="neondb", schema="qt", prefix="acme")
    sql = render(names)
    assert "{{" not in sql.replace("{{...}}", "")
    for role in ("acme_owner", "acme_writer", "acme_reader"):
        assert f'"{role}"' in sql
    assert "PASSWORD" not in sql.upper().replace("--PASSWORD-FILE", "").replace("PASSWORDS ARE NEVER", "")
    with pytest.raises(ValueError, match="role prefix"):
        BootstrapNames(database="neondb", prefix="bad-prefix").validate()
    with pytest.raises(ValueError, match="duration"):
        BootstrapNames(database="neondb", reader_statement_timeout="5 minutes; DROP").validate()


def test_cli_prints_sql_without_apply_and_refuses_passwords_then() -> None:
    r = CliRunner().invoke(app, ["db", "bootstrap", "--database", "neondb", "--prefix", "acme"])
    assert r.exit_code == 0 and "CREATE SCHEMA IF NOT EXISTS" in r.output
    r = CliRunner().invoke(app, ["db", "bootstrap", "--database", "neondb", "--password-file", "owner=/x"])
    assert r.exit_code == 2
    assert r.output.splitlines()[0] == "error: --password-file needs --apply (passwords are never printed)"


def test_roles_can_do_exactly_what_they_should(boot, tmp_path, settings, monkeypatch) -> None:
    names = boot
    secret = tmp_path / "writer_pw"
    secret.write_text("Wr1ter-secret-" + uuid.uuid4().hex)
    r = run_cli(names, "--password-file", f"writer={secret}")
    assert r.exit_code == 0, r.output
    assert secret.read_text() not in r.output
    assert f"roles {names.prefix}_owner, {names.prefix}_writer, {names.prefix}_reader" in r.output
    r = run_cli(names)  # idempotent
    assert r.exit_code == 0, r.output

    # the owner runs the real migrations and creates partitions (DDL) ...
    owner_store = store_for(names, "owner", "owner", settings, monkeypatch)
    bars = make_bars(("AAA", "BBB"), start="2024-01-01", n=2 * 1440)
    owner_store.write_bars(bars)
    owner_store.close()

    # ... the writer upserts rows of existing tables (pooled and direct URL both the writer) ...
    writer_store = store_for(names, "writer", "writer", settings, monkeypatch)
    changed = bars.copy()
    changed["volume"] = changed["volume"] + 1.0
    writer_store.write_bars(changed)
    back = writer_store.read_bars(
        "AAA", pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-03", tz="UTC")
    )
    assert len(back) == 2 * 1440
    assert back["volume"].to_numpy() == pytest.approx(changed[changed.symbol == "AAA"]["volume"].to_numpy())
    writer_store.close()

    writer = connect(names, "writer")
    with writer.cursor() as cur:
        cur.execute("CREATE TEMP TABLE stage (x int)")  # COPY staging is allowed
        cur.execute(f'DELETE FROM "{SCHEMA}".ohlcv_bars WHERE symbol = %s', ("BBB",))
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "5min"
    # ... but runs no DDL
    for sql in (
        f'CREATE TABLE "{SCHEMA}".evil (x int)',
        f'ALTER TABLE "{SCHEMA}".ohlcv_bars ADD COLUMN evil int',
        f'DROP TABLE "{SCHEMA}".ohlcv_bars',
        f'TRUNCATE "{SCHEMA}".ohlcv_bars',
        f'CREATE INDEX evil ON "{SCHEMA}".ohlcv_bars (volume)',
        "CREATE TABLE public.evil (x int)",
        f'CREATE SCHEMA evil AUTHORIZATION "{names.role("writer")}"',
    ):
        assert denied(writer, sql) == "InsufficientPrivilege", sql
    writer.close()

    # the reader reads, with its own short timeout, and can write nothing, even in a read-write transaction
    reader = connect(names, "reader")
    with reader.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{SCHEMA}".ohlcv_bars')
        assert cur.fetchone()[0] == 2 * 1440  # BBB was deleted by the writer
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "1s"
        cur.execute("SHOW default_transaction_read_only")
        assert cur.fetchone()[0] == "on"
    insert = f'INSERT INTO "{SCHEMA}".ohlcv_bars (symbol, "timestamp", open, high, low, close, volume) VALUES (%s, %s, 1, 1, 1, 1, 1)'
    assert denied(reader, insert, ("CCC", "2024-01-01")) == "ReadOnlySqlTransaction"
    reader.autocommit = False
    with reader.cursor() as cur:
        cur.execute("SET TRANSACTION READ WRITE")
    assert denied(reader, insert, ("CCC", "2024-01-01")) == "InsufficientPrivilege"
    reader.rollback()
    reader.autocommit = True
    for sql in ("CREATE TEMP TABLE t (x int)", f'UPDATE "{SCHEMA}".ohlcv_bars SET volume = 0'):
        assert denied(reader, sql) in ("InsufficientPrivilege", "ReadOnlySqlTransaction"), sql
    with pytest.raises(errors.QueryCanceled), reader.cursor() as cur:
        cur.execute("SELECT pg_sleep(5)")  # the reader's 1 s statement_timeout
    reader.close()

    # the owner keeps DDL; a role without grants cannot even connect (CONNECT revoked from PUBLIC)
    owner = connect(names, "owner")
    with owner.cursor() as cur:
        cur.execute(f'CREATE TABLE "{SCHEMA}".owner_made (x int)')  # later tables: default privileges
        cur.execute(f'INSERT INTO "{SCHEMA}".owner_made VALUES (1)')
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "30min"
    owner.close()
    reader = connect(names, "reader")
    with reader.cursor() as cur:
        cur.execute(f'SELECT x FROM "{SCHEMA}".owner_made')
        assert cur.fetchall() == [(1,)]
    reader.close()
    admin = psycopg2.connect(PG_ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE ROLE "{names.prefix}_nobody" LOGIN')
        cur.execute(
            "SELECT rolname, rolpassword IS NOT NULL FROM pg_authid WHERE rolname LIKE %s ORDER BY 1",
            (names.prefix + "%",),
        )
        assert dict(cur.fetchall()) == {
            f"{names.prefix}_nobody": False,
            f"{names.prefix}_owner": False,
            f"{names.prefix}_reader": False,
            f"{names.prefix}_writer": True,  # --password-file
        }
    admin.close()
    nobody = make_url(PG_ADMIN_URL).set(username=f"{names.prefix}_nobody", database=names.database)
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(nobody.render_as_string(hide_password=False), connect_timeout=5)


def test_apply_failure_is_one_clear_redacted_line() -> None:
    url = make_url(PG_ADMIN_URL).set(database="qt_no_such_db_x", password="hunter2-secret")
    r = CliRunner().invoke(
        app, ["db", "bootstrap", "--apply", "--admin-url", url.render_as_string(hide_password=False)]
    )
    assert r.exit_code == 2
    first = r.output.splitlines()[0]
    assert first.startswith("error: bootstrap: cannot connect to database 'qt_no_such_db_x'")
    assert "hunter2-secret" not in r.output
