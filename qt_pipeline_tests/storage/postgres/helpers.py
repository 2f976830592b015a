"""Helpers of the neon-backend tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg2

HANG_GUARD_S = 120  # a call that hangs this long fails the test (no timing assertions: seconds are printed)


def count_rows(url: str, schema: str, table: str = "ohlcv_bars") -> int:
    """Row count through a fresh direct connection (not the store's pool)."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{schema}"."{table}"')
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def bounded(fn: Callable[[], object]) -> tuple[object, float]:
    """Run ``fn`` in a thread: (result or exception, seconds); fails the test when it hangs."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            out["error"] = exc

    t0 = time.perf_counter()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG_GUARD_S)
    assert not t.is_alive(), f"the call hung for more than {HANG_GUARD_S} s"
    return out.get("error", out.get("value")), time.perf_counter() - t0
