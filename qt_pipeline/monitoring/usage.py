"""The usage ledger: what every process of this data directory did with the central store, by UTC day.

A SQLite file (``$QT_DATA_DIR/monitoring/usage.sqlite``; SQLite because several processes add to it at
once — a run, the daemon's sensors, ``qt`` commands) holding:

* ``counters(day, name, value)`` — bytes read from the central store, cache hits/misses, queries, pool
  waits… (deltas are added, so the value of a day is the sum over processes);
* ``busy_minutes(minute)`` — epoch minutes in which a central connection was in use (measured active time);
* ``symbol_reads(day, symbol, reads)`` — reads per symbol (the "never read" recommendation);
* ``state(key, value, updated_at)`` — small JSON states: the hybrid store's failover state, the last
  budget status (the cost back-off switch reads it).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

LEDGER_FILE = "usage.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (day TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
                                     PRIMARY KEY (day, name));
CREATE TABLE IF NOT EXISTS busy_minutes (minute INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS symbol_reads (day TEXT NOT NULL, symbol TEXT NOT NULL, reads INTEGER NOT NULL,
                                         PRIMARY KEY (day, symbol));
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
"""


def ledger_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / "monitoring" / LEDGER_FILE


class UsageLedger:
    """Open per call (cheap); safe for concurrent processes (SQLite locking, 10 s busy timeout)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def for_data_dir(cls, data_dir: Path | str) -> UsageLedger:
        return cls(ledger_path(data_dir))

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=10.0)
        con.executescript(_SCHEMA)
        return con

    # --- writes -------------------------------------------------------------------------------------
    def record(
        self,
        counters: Mapping[str, float],
        busy_minutes: Iterable[int] = (),
        symbol_reads: Mapping[str, int] | None = None,
        *,
        day: date | None = None,
    ) -> None:
        d = (day or datetime.now(UTC).date()).isoformat()
        con = self._connect()
        try:
            with con:
                con.executemany(
                    "INSERT INTO counters VALUES (?, ?, ?) "
                    "ON CONFLICT (day, name) DO UPDATE SET value = value + excluded.value",
                    [(d, k, float(v)) for k, v in counters.items() if v],
                )
                con.executemany(
                    "INSERT OR IGNORE INTO busy_minutes VALUES (?)", [(int(m),) for m in busy_minutes]
                )
                con.executemany(
                    "INSERT INTO symbol_reads VALUES (?, ?, ?) "
                    "ON CONFLICT (day, symbol) DO UPDATE SET reads = reads + excluded.reads",
                    [(d, s, int(n)) for s, n in (symbol_reads or {}).items() if n],
                )
        finally:
            con.close()

    def set_state(self, key: str, value: Any) -> None:
        con = self._connect()
        try:
            with con:
                con.execute(
                    "INSERT INTO state VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                    "value = excluded.value, updated_at = excluded.updated_at",
                    (key, json.dumps(value, default=str), datetime.now(UTC).isoformat()),
                )
        finally:
            con.close()

    # --- reads --------------------------------------------------------------------------------------
    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        con = self._connect()
        try:
            return list(con.execute(sql, params).fetchall())
        finally:
            con.close()

    def totals(self, since: date | None = None) -> dict[str, float]:
        """``{counter: sum}`` over the days from ``since`` (all days when ``None``)."""
        rows = self._query(
            "SELECT name, sum(value) FROM counters WHERE day >= ? GROUP BY name",
            ((since or date.min).isoformat(),),
        )
        return {str(n): float(v) for n, v in rows}

    def busy_minutes(self, since: datetime) -> list[int]:
        rows = self._query(
            "SELECT minute FROM busy_minutes WHERE minute >= ? ORDER BY minute",
            (int(since.timestamp() // 60),),
        )
        return [int(r[0]) for r in rows]

    def symbol_reads(self, since: date) -> dict[str, int]:
        rows = self._query(
            "SELECT symbol, sum(reads) FROM symbol_reads WHERE day >= ? GROUP BY symbol", (since.isoformat(),)
        )
        return {str(s): int(n) for s, n in rows}

    def first_day(self) -> date | None:
        rows = self._query("SELECT min(day) FROM counters")
        return date.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    def states(self, prefix: str, *, max_age: timedelta) -> dict[str, Any]:
        """``{key without prefix: value}`` of the states under ``prefix`` updated within ``max_age``."""
        since = (datetime.now(UTC) - max_age).isoformat()
        rows = self._query(
            "SELECT key, value FROM state WHERE key >= ? AND key < ? AND updated_at >= ?",
            (prefix, prefix + "\uffff", since),
        )
        return {str(k)[len(prefix) :]: json.loads(v) for k, v in rows}

    def state(self, key: str, *, max_age: timedelta | None = None) -> Any:
        """The JSON value stored under ``key`` (``None`` when absent or older than ``max_age``)."""
        rows = self._query("SELECT value, updated_at FROM state WHERE key = ?", (key,))
        if not rows:
            return None
        value, updated = rows[0]
        if max_age is not None and datetime.now(UTC) - datetime.fromisoformat(updated) > max_age:
            return None
        return json.loads(value)


__all__ = ["LEDGER_FILE", "UsageLedger", "ledger_path"]
