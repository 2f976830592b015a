"""Which database errors are worth retrying, and the tenacity policy that retries them.

Transient: the server went away or is starting/stopping (SQLSTATE 57P01/57P02/57P03, class 08), a
serialization failure or deadlock (40001/40P01), a lock wait that timed out (55P03), and libpq's
"connection dropped"/"could not connect (timeout/refused)" messages without a SQLSTATE (Neon computes
scaling up from zero look exactly like that). Never transient: authentication (28P01/28000), unknown
host, permission denied (42501), unknown database (3D000) — those fail fast with a clear message.
"""

from __future__ import annotations

import logging

import tenacity
from sqlalchemy import exc as sa_exc

from qt_pipeline.config import Settings
from qt_pipeline.redaction import redact

log = logging.getLogger("qt_pipeline.storage.postgres")

TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01", "55P03"})
PERMANENT_SQLSTATES = frozenset({"28P01", "28000", "42501", "3D000", "3F000", "42P01"})

_PERMANENT_MESSAGES = (
    "password authentication failed",
    "no password supplied",
    "could not translate host name",
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects",
    "does not exist",
    "permission denied",
    "certificate verify failed",
    "invalid sslmode",
    "sslmode value",
    'role "',
)
_TRANSIENT_MESSAGES = (
    "ssl syscall error",
    "ssl connection has been closed unexpectedly",
    "connection terminated unexpectedly",
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "could not receive data from server",
    "could not send data to server",
    "connection reset by peer",
    "broken pipe",
    "connection already closed",
    "connection not open",
    "eof detected",
    "lost synchronization with server",
    "couldn't get a connection",  # tenacity/pool: QueuePool timeout
    "client-side call budget",  # deadline.CallDeadlineExceeded: the server did not answer in time
    "client-side call deadline",
)
_CONNECT_TRANSIENT = ("timeout expired", "timed out", "connection refused", "no route to host")


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg2/SQLAlchemy error (or None)."""
    orig = getattr(exc, "orig", None)
    for e in (exc, orig):
        code = getattr(e, "pgcode", None)
        if code:
            return str(code)
    return None


def _message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).lower()


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same (idempotent) operation may succeed."""
    code = sqlstate_of(exc)
    if code is not None:
        return code in TRANSIENT_SQLSTATES or code.startswith("08")
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    msg = _message(exc)
    if any(m in msg for m in _PERMANENT_MESSAGES):
        return False
    if any(m in msg for m in _TRANSIENT_MESSAGES):
        return True
    if "could not connect" in msg or "connection to server" in msg:
        return any(m in msg for m in _CONNECT_TRANSIENT)
    return isinstance(exc, sa_exc.TimeoutError)  # pool checkout timeout


def retrying(settings: Settings, what: str, *, attempts: int | None = None) -> tenacity.Retrying:
    """A tenacity ``Retrying`` for ``what``: transient errors only, exponential backoff with jitter,
    ``settings.pg_retry_attempts`` attempts, each retry logged (redacted). The last error is re-raised."""
    n = max(1, attempts if attempts is not None else settings.pg_retry_attempts)

    def _log(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        code = sqlstate_of(exc) if exc else None
        log.warning(
            "%s: transient database error (attempt %d/%d%s), retrying in %.2fs: %s",
            what,
            state.attempt_number,
            n,
            f", SQLSTATE {code}" if code else "",
            state.next_action.sleep if state.next_action else 0.0,
            redact(_first_line(exc)),
        )

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(n),
        wait=tenacity.wait_exponential(multiplier=settings.pg_retry_initial_s, max=settings.pg_retry_max_s)
        + tenacity.wait_random(0, settings.pg_retry_initial_s),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=_log,
        reraise=True,
    )


def _first_line(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return " ".join(text.splitlines()[:2])
