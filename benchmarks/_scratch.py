"""A throwaway database on the machine's PostgreSQL for one benchmark run, dropped at the end.

The admin URL is ``QT_BENCH_PG_ADMIN_URL`` (else ``QT_TEST_PG_ADMIN_URL``, the tests' variable), default
``postgresql://postgres@127.0.0.1:5432/postgres``. Every benchmark that needs PostgreSQL creates its database
here, so the naming, the connect timeout and the forced drop are the same everywhere.
"""

from __future__ import annotations

import os
import uuid

import psycopg2

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_URL = os.environ.get("QT_BENCH_PG_ADMIN_URL") or os.environ.get("QT_TEST_PG_ADMIN_URL") or DEFAULT_ADMIN_URL


def admin_sql(sql: str, admin_url: str = ADMIN_URL) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE) as the admin user."""
    conn = psycopg2.connect(admin_url, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


class ScratchDatabase:
    """``db = ScratchDatabase(); ... db.url ...; db.drop()`` (or use it as a context manager)."""

    def __init__(self, prefix: str = "qt_bench", admin_url: str = ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        admin_sql(f'CREATE DATABASE "{self.name}"', admin_url)
        self.url = admin_url.rsplit("/", 1)[0] + f"/{self.name}"

    def drop(self) -> None:
        admin_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', self.admin_url)

    def __enter__(self) -> ScratchDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()
