"""Database errors → clear, redacted :class:`StorageError` messages: what failed, where, what to do.

Callers raise the result ``from None`` so the driver's exception (which may quote a DSN) is not chained.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg2
import sqlalchemy as sa

from qt_pipeline.config import Settings
from qt_pipeline.redaction import redact
from qt_pipeline.storage.interface import StorageError, StorageUnavailableError
from qt_pipeline.storage.postgres.connection import ConnectionConfig
from qt_pipeline.storage.postgres.retry import is_transient, retrying, sqlstate_of

T = TypeVar("T")

# what the database layer raises: SQLAlchemy errors, psycopg2 errors of raw cursors (COPY), socket errors
DB_ERRORS: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError, psycopg2.Error, OSError)


def _driver_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    # psycopg2 adds multi-line hints; keep the informative first lines
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return redact(" ".join(lines[:3]))


def translate_error(
    exc: BaseException, cfg: ConnectionConfig | None, action: str, *, schema: str | None = None
) -> StorageError:
    """A :class:`StorageError` (or :class:`StorageUnavailableError` for connection failures) describing
    ``exc``; ``action`` says what was being done (e.g. "write 1000 bars to ohlcv_bars")."""
    if isinstance(exc, StorageError):
        return exc
    code = sqlstate_of(exc)
    msg = _driver_message(exc)
    low = msg.lower()
    where = f"{cfg.location} as user {cfg.user!r}" if cfg is not None else "the central database"
    host = cfg.host if cfg is not None else "the host"
    state = f" [SQLSTATE {code}]" if code else ""
    cls: type[StorageError] = StorageError

    if code == "28P01" or "password authentication failed" in low or "no password supplied" in low:
        hint = (
            "authentication failed: check the user and password in NEON_DATABASE_URL (for Neon, copy the "
            "connection string again from the console; the role password may have been reset)"
        )
    elif code == "28000" or "pg_hba.conf" in low:
        hint = (
            "the server rejected this client (pg_hba.conf / IP allow-list / TLS requirement): check the role "
            "name, the allowed IPs and sslmode (Neon requires sslmode=require)"
        )
    elif (
        "could not translate host name" in low
        or "name or service not known" in low
        or ("temporary failure in name resolution" in low)
    ):
        cls = StorageUnavailableError
        hint = f"host {host!r} cannot be resolved: check the host name in NEON_DATABASE_URL (typo? DNS?)"
    elif code == "3D000":
        hint = "the database does not exist: check the database name in NEON_DATABASE_URL or create it"
    elif code == "3F000":
        hint = "the schema does not exist: create it or set QT_PG_SCHEMA to an existing schema"
    elif code == "42501" or "permission denied" in low:
        user = cfg.user if cfg is not None else "<role>"
        hint = (
            "permission denied: the role cannot create or write the central-store tables. Grant it, e.g. "
            f'GRANT CREATE, USAGE ON SCHEMA "{schema or "<schema>"}" TO "{user}" (and CREATE on the database if the schema '
            "must be created), or run the schema setup once as the owner"
        )
    elif code == "57014":
        hint = "the statement was cancelled (statement timeout): raise QT_PG_STATEMENT_TIMEOUT_MS or write smaller batches"
    elif code == "53300" or "too many connections" in low or "remaining connection slots" in low:
        cls = StorageUnavailableError
        hint = "the server has no free connection slots: lower QT_PG_POOL_SIZE/QT_PG_MAX_OVERFLOW or use the pooled host"
    elif is_transient(exc):
        cls = StorageUnavailableError
        hint = (
            "the server could not be reached or dropped the connection (retries exhausted). Check that it is "
            "running/reachable; retrying is safe — writes are idempotent and a failed batch left no partial rows"
        )
    elif code == "23514" and "no partition" in low:
        hint = (
            "no daily partition holds these rows (it was dropped, e.g. by the cold tier, or never created): "
            "writing again re-creates missing partitions"
        )
    elif code is not None and code.startswith("23"):
        hint = "the data violates a constraint of the table; check the batch (keys must be unique, values not null)"
    else:
        hint = "unexpected database error; see the message above"
    return cls(f"{action} failed on {where}: {msg}{state}. {hint}", sqlstate=code)


def run_db(
    action: str,
    fn: Callable[[], T],
    *,
    settings: Settings,
    config: ConnectionConfig | None,
    schema: str | None = None,
    attempts: int | None = None,
) -> T:
    """Run ``fn`` (idempotent database work, one transaction) with the retry policy of ``settings``
    (transient errors only, see :mod:`.retry`); a database error that remains leaves as a redacted
    :class:`StorageError` naming ``action`` (:class:`StorageUnavailableError` when the server cannot be
    reached), raised ``from None`` so no driver message holding a DSN is chained.

    The one retry-and-translate path of the central store: the store, the migration ledger and the
    evolution state store all run their SQL through it."""
    try:
        for attempt in retrying(settings, action, attempts=attempts):
            with attempt:
                return fn()
    except StorageError:
        raise
    except DB_ERRORS as exc:
        err = translate_error(exc, config, action, schema=schema)
    raise err from None
