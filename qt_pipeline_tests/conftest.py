"""Fixtures shared by every test package: isolated settings, a real PostgreSQL database per session,
and the repository's TimescaleDB test server (qt_pipeline_tests/timescale_harness/).

Real parts only: tests talk to the machine's PostgreSQL (127.0.0.1:5432, trust auth; override with
QT_TEST_PG_ADMIN_URL), a real DuckDB file under tmp_path and, where marked, a real local Ray.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from qt_pipeline.config import Settings, get_settings

TIMESCALE_HARNESS = Path(__file__).resolve().parent / "timescale_harness" / "start"
PG_ADMIN_URL = os.environ.get("QT_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings rooted in a fresh data directory; also what ``get_settings()`` returns in this test."""
    for var in list(os.environ):
        if var.startswith("QT_") or var in {"STORAGE_BACKEND", "NEON_DATABASE_URL", "NEON_API_KEY"}:
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    s = get_settings()
    yield s
    get_settings.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def _no_embedded_server_outlives_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every embedded PostgreSQL a test started (its QT_DATA_DIR lies under this session's temp root) is
    stopped and removed when the session ends, even when the test that started it failed midway. Servers
    started in this session record it as their owner (QTP_EMBEDDED_OWNER_PID, inherited by the processes
    tests spawn), so those of an earlier session that was killed (kill -9: no teardown ran, its temp root
    is still there) are stopped here, at the start of the next one."""
    from qt_pipeline.storage.postgres.embedded import OWNER_PID_ENV, stop_orphans

    reaped = stop_orphans()
    if reaped:
        print(
            f"\nstopped {len(reaped)} embedded PostgreSQL server(s) of a killed session: {[str(r) for r in reaped]}"
        )
    os.environ[OWNER_PID_ENV] = str(os.getpid())
    yield

    removed = stop_orphans(under=tmp_path_factory.getbasetemp())
    if removed:
        print(
            f"\nstopped {len(removed)} embedded PostgreSQL server(s) left by tests: {[str(r) for r in removed]}"
        )


def _admin_connect():
    conn = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh database on the machine's PostgreSQL, dropped at the end of the session."""
    name = f"qt_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = _admin_connect()
    except psycopg2.OperationalError as exc:  # pragma: no cover - environment problem, say so loudly
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({exc}); start it (see README)")
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    conn = _admin_connect()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[tuple[str, str]]:
    """A fresh schema in the session database for one test: ``(pg_url, schema_name)``; dropped after."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    yield pg_url, schema
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    conn.close()


@pytest.fixture(scope="session")
def timescale_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a throwaway TimescaleDB (full TSL feature set): the repository's test server
    (qt_pipeline_tests/timescale_harness/, Node.js; ``npm ci`` of its pinned package on first use).

    All connections share one backend session (see timescale_harness/README.md): isolate tests by
    schema/table name and keep transactions short. The server is stopped at the end of the session, and
    exits by itself if this process dies (it watches its stdin, a pipe from here).
    """
    log_path = tmp_path_factory.mktemp("timescale") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(TIMESCALE_HARNESS), "--exit-on-stdin-eof"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        dsn = _wait_for_timescale(proc, log_path, timeout=600)
        yield dsn
    finally:
        _stop(proc)


def _wait_for_timescale(proc: subprocess.Popen, log_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("READY "):
                return line.split()[1]
        if proc.poll() is not None:
            first = next((ln for ln in text.splitlines() if ln.startswith("timescale test server:")), None)
            pytest.fail(
                first or f"TimescaleDB test server exited with status {proc.returncode}: {text[-2000:]}",
                pytrace=False,
            )
        time.sleep(0.2)
    _stop(proc)
    pytest.fail(f"TimescaleDB test server not ready after {timeout:.0f} s; log: {log_path}", pytrace=False)


@pytest.fixture(scope="session")
def pgbouncer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real PgBouncer (transaction pooling, trust auth) on 127.0.0.1 in front of the machine's PostgreSQL
    (qt_pipeline_tests/pgbouncer_harness/; the pinned Debian package is fetched with ``apt-get download``
    on first use), stopped at the end of the session. See :class:`qt_pipeline_tests.pgbouncer.PgBouncer`."""
    from qt_pipeline_tests.pgbouncer import PgBouncer

    admin = make_url(PG_ADMIN_URL)
    with PgBouncer(
        tmp_path_factory.mktemp("pgbouncer"),
        upstream_host=admin.host or "127.0.0.1",
        upstream_port=admin.port or 5432,
        user=admin.username or "postgres",
    ) as pgb:
        yield pgb


def _stop(proc: subprocess.Popen) -> None:
    from qt_pipeline_tests.faults import stop_process

    stop_process(proc)
