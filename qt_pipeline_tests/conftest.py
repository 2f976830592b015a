"""Fixtures shared by every test package: isolated settings, a real PostgreSQL database per session,
and the TimescaleDB harness from ../shared/timescale-harness.

Real parts only: tests talk to the machine's PostgreSQL (127.0.0.1:5432, trust auth; override with
QT_TEST_PG_ADMIN_URL), a real DuckDB file under tmp_path and, where marked, a real local Ray.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from qt_pipeline.config import Settings, get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("QT_SHARED_DIR", REPO_ROOT.parent / "shared"))
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
def timescale_dsn() -> Iterator[str]:
    """DSN of a throwaway TimescaleDB (full TSL feature set) from ../shared/timescale-harness.

    All connections share one backend session (see the harness README): isolate tests by schema/table
    name and keep transactions short.
    """
    start = SHARED_DIR / "timescale-harness" / "start"
    if not start.exists():
        pytest.fail(f"TimescaleDB harness not found at {start}; set QT_SHARED_DIR to the shared/ folder")
    out = subprocess.run([str(start)], capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        pytest.fail(f"TimescaleDB harness failed to start: {out.stderr[-2000:]}")
    env = dict(line.split("=", 1) for line in out.stdout.strip().splitlines() if "=" in line)
    pid = int(env["PID"])
    try:
        yield env["DSN"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
