"""Time partitions of ``ohlcv_bars``: daily native partitions (vanilla PostgreSQL) or TimescaleDB chunks.

* :func:`ensure_partitions` creates missing daily partitions (the given days plus ``ahead_days`` after the
  last one). Concurrency-safe: it takes a transaction-scoped advisory lock (never a session lock — fine
  behind PgBouncer), re-checks, then ``CREATE TABLE IF NOT EXISTS … PARTITION OF``. Run it in its own
  short transaction *before* the write transaction: creating a partition locks the parent table.
  On a hypertable it does nothing (TimescaleDB creates chunks on insert).
* :func:`list_time_partitions` lists partitions/chunks with their ranges and sizes.
* :func:`drop_time_partition` detaches and drops one partition, or drops exactly one chunk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, cast

import sqlalchemy as sa

from qt_pipeline.storage.postgres.schema import check_identifier, qi

BARS_TABLE = "ohlcv_bars"
PARTITION_PREFIX = "ohlcv_bars_p"


@dataclass(frozen=True)
class TimePartition:
    name: str  # relation name (without schema); see relation_schema / qualified_name
    range_start: datetime  # tz-aware UTC, inclusive
    range_end: datetime  # tz-aware UTC, exclusive
    kind: Literal["partition", "chunk"]
    is_compressed: bool | None  # TimescaleDB says so (also true for a PARTIALLY compressed chunk)
    bytes: int | None  # true on-disk size (compressed data included)
    relation_schema: str = ""
    needs_recompression: bool = False  # compressed, then written to (partial/unordered): compress again

    @property
    def qualified_name(self) -> str:
        return f"{qi(self.relation_schema)}.{qi(self.name)}" if self.relation_schema else qi(self.name)


def partition_name(day: date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def table_layout(conn: sa.Connection, schema: str) -> Literal["hypertable", "partitioned", "missing"]:
    """How ``<schema>.ohlcv_bars`` is actually laid out (read from the catalog, not from capabilities)."""
    check_identifier(schema)
    row = conn.exec_driver_sql(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, BARS_TABLE),
    ).first()
    if row is None:
        return "missing"
    if row[0] == "p":
        return "partitioned"
    has_ts = conn.exec_driver_sql(
        "SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL"
    ).scalar()
    if has_ts:
        is_ht = conn.exec_driver_sql(
            "SELECT 1 FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = %s AND hypertable_name = %s",
            (schema, BARS_TABLE),
        ).first()
        if is_ht:
            return "hypertable"
    raise RuntimeError(
        f"{schema}.{BARS_TABLE} exists but is neither partitioned nor a hypertable; it was not created by "
        "qt_pipeline's migrations — drop it or use another QT_PG_SCHEMA"
    )


def _existing_partition_names(conn: sa.Connection, schema: str) -> set[str]:
    rows = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s)",
        (f"{qi(schema)}.{BARS_TABLE}",),
    )
    return {r[0] for r in rows}


def ensure_partitions(
    conn: sa.Connection,
    schema: str,
    days: Iterable[date],
    ahead_days: int = 2,
    *,
    layout: str | None = None,
) -> list[str]:
    """Create missing daily partitions for ``days`` plus ``ahead_days`` after the latest; returns the
    names created. No-op (``[]``) on a hypertable. Call inside a transaction (the lock is released at
    its end)."""
    check_identifier(schema)
    layout = layout or table_layout(conn, schema)
    if layout != "partitioned":
        return []
    wanted = set(days)
    if not wanted:
        return []
    last = max(wanted)
    wanted.update(last + timedelta(days=k) for k in range(1, max(0, ahead_days) + 1))
    existing = _existing_partition_names(conn, schema)
    missing = sorted(d for d in wanted if partition_name(d) not in existing)
    if not missing:
        return []
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"qt_pipeline.partitions:{schema}",))
    existing = _existing_partition_names(conn, schema)  # another writer may have created them meanwhile
    created = []
    for d in missing:
        name = partition_name(d)
        if name in existing:
            continue
        lo = _day_start(d).isoformat()
        hi = _day_start(d + timedelta(days=1)).isoformat()
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {qi(schema)}.{qi(name)} PARTITION OF {qi(schema)}.{BARS_TABLE} "
            f"FOR VALUES FROM ('{lo}') TO ('{hi}')"
        )
        created.append(name)
    return created


def list_time_partitions(conn: sa.Connection, schema: str) -> list[TimePartition]:
    """Partitions (vanilla) or chunks (hypertable) of ``<schema>.ohlcv_bars``, ordered by range start."""
    layout = table_layout(conn, schema)
    if layout == "missing":
        return []
    if layout == "partitioned":
        # bounds are read as UTC text so the session TimeZone does not matter
        rows = conn.exec_driver_sql(
            """
            SELECT c.relname,
                   (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1],
                   (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1],
                   pg_total_relation_size(c.oid)
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass(%s)
            """,
            (f"{qi(schema)}.{BARS_TABLE}",),
        ).all()
        parts = []
        for name, lo, hi, size in cast("list[tuple[str, str | None, str | None, int]]", rows):
            if lo is None or hi is None:
                continue  # a DEFAULT partition (never created by qt_pipeline)
            parts.append(
                TimePartition(
                    name=name,
                    range_start=_parse_bound(conn, lo),
                    range_end=_parse_bound(conn, hi),
                    kind="partition",
                    is_compressed=None,
                    bytes=int(size),
                    relation_schema=schema,
                )
            )
        return sorted(parts, key=lambda p: p.range_start)
    rows = conn.exec_driver_sql(
        """
        SELECT chunk_schema, chunk_name, range_start, range_end, is_compressed,
               pg_total_relation_size(format('%%I.%%I', chunk_schema, chunk_name)::regclass)
        FROM timescaledb_information.chunks
        WHERE hypertable_schema = %s AND hypertable_name = %s
        ORDER BY range_start
        """,
        (schema, BARS_TABLE),
    ).all()
    sizes = _chunk_sizes(conn, schema)
    partial = _chunks_needing_recompression(conn, schema)
    return [
        TimePartition(
            name=r[1],
            range_start=r[2].astimezone(UTC),
            range_end=r[3].astimezone(UTC),
            kind="chunk",
            is_compressed=bool(r[4]) if r[4] is not None else None,
            bytes=sizes.get(r[1], int(r[5]) if r[5] is not None else None),
            relation_schema=r[0],
            needs_recompression=(
                bool(r[4]) and (partial is None or r[1] in partial)  # unknown status: compress again
            ),
        )
        for r in rows
    ]


def _has_function(conn: sa.Connection, name: str) -> bool:
    return bool(
        conn.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = %s)", (name,)).scalar()
    )


def _chunk_sizes(conn: sa.Connection, schema: str) -> dict[str, int]:
    """True chunk sizes from ``chunks_detailed_size`` (it counts a chunk's compressed data, which lives
    in a separate internal table that ``pg_total_relation_size(chunk)`` misses); {} when the function
    is not there (detected, never assumed)."""
    if not _has_function(conn, "chunks_detailed_size"):
        return {}
    rows = conn.exec_driver_sql(
        "SELECT chunk_name, total_bytes FROM chunks_detailed_size(%s::regclass)",
        (f"{qi(schema)}.{BARS_TABLE}",),
    ).all()
    return {r[0]: int(r[1]) for r in rows if r[1] is not None}


# _timescaledb_catalog.chunk.status bits: 1 compressed, 2 unordered (written to after compression, older
# releases), 4 frozen, 8 partially compressed (written to after compression, 2.10+)
_NEEDS_RECOMPRESSION_BITS = 2 | 8


def _chunks_needing_recompression(conn: sa.Connection, schema: str) -> set[str] | None:
    """Names of compressed chunks that were written to since (partial/unordered); None when this
    TimescaleDB does not expose a chunk status (then every compressed chunk is compressed again, which
    ``compress_chunk(…, if_not_compressed => true)`` makes a no-op for complete ones)."""
    has_status = conn.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '_timescaledb_catalog' "
        "AND table_name = 'chunk' AND column_name = 'status')"
    ).scalar()
    if not has_status:
        return None
    rows = conn.exec_driver_sql(
        "SELECT ch.table_name FROM _timescaledb_catalog.chunk ch "
        "JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id "
        "WHERE h.schema_name = %s AND h.table_name = %s AND (ch.status & %s) <> 0",
        (schema, BARS_TABLE, _NEEDS_RECOMPRESSION_BITS),
    ).all()
    return {r[0] for r in rows}


def _parse_bound(conn: sa.Connection, text: str) -> datetime:
    # the bound is rendered in the session TimeZone; let the server parse it back
    value: datetime = conn.exec_driver_sql("SELECT %s::timestamptz", (text,)).scalar_one()
    return value.astimezone(UTC)


def drop_time_partition(conn: sa.Connection, schema: str, part: TimePartition) -> None:
    """Detach + drop one daily partition, or drop exactly one chunk (its rows are gone: archive first)."""
    check_identifier(schema)
    if part.kind == "partition":
        target = f"{qi(part.relation_schema or schema)}.{qi(part.name)}"
        conn.exec_driver_sql(f"ALTER TABLE {qi(schema)}.{BARS_TABLE} DETACH PARTITION {target}")
        conn.exec_driver_sql(f"DROP TABLE {target}")
        return
    dropped = conn.exec_driver_sql(
        "SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz, newer_than => %s::timestamptz)",
        (f"{qi(schema)}.{BARS_TABLE}", part.range_end, part.range_start),
    ).all()
    names = {str(r[0]).split(".")[-1].strip('"') for r in dropped}
    if names != {part.name}:
        raise RuntimeError(
            f"dropping chunk {part.relation_schema}.{part.name} of {schema}.{BARS_TABLE} "
            f"[{part.range_start}, {part.range_end}) dropped {sorted(names) or 'nothing'} instead; "
            "the transaction is rolled back — check the chunk ranges with list_time_partitions()"
        )
