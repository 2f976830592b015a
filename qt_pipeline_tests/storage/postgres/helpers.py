"""Helpers of the neon-backend tests."""

from __future__ import annotations

import psycopg2


def count_rows(url: str, schema: str, table: str = "ohlcv_bars") -> int:
    """Row count through a fresh direct connection (not the store's pool)."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{schema}"."{table}"')
            return int(cur.fetchone()[0])
    finally:
        conn.close()
