"""Connection configuration for the central PostgreSQL/Neon store: pooled vs direct URL, TLS, timeouts,
and SQLAlchemy engines that are safe behind PgBouncer in transaction mode.

Rules (docs/architecture.md, "Central store: connection rules"):

* the pooled host (``…-pooler…``) is PgBouncer in transaction mode: no session ``SET``, no startup
  ``options=-c …``. Every transaction therefore starts with ``set_config(name, value, true)`` (the function
  form of ``SET LOCAL``) for ``statement_timeout``, ``lock_timeout``, ``idle_in_transaction_session_timeout``
  and ``TimeZone=UTC``;
* schema changes and bulk COPY go to the *direct* host (the same host without ``-pooler``, or
  ``NEON_DIRECT_URL``);
* TLS: ``sslmode=require`` by default for every non-local host (an explicit ``verify-full``/``verify-ca``
  or ``QT_PG_SSLMODE`` is kept); nothing is added for localhost/127.0.0.1/unix sockets.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from qt_pipeline.config import Settings
from qt_pipeline.monitoring.telemetry import instrument_engine
from qt_pipeline.redaction import redact, register_secret
from qt_pipeline.storage.postgres.deadline import budget_connect_timeout, watched_connection_factory

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
DRIVER = "postgresql+psycopg2"
_ACCEPTED_DRIVERS = frozenset({"postgres", "postgresql", "postgresql+psycopg2"})
_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


class ConnectionConfigError(ValueError):
    """The database URL or its settings are unusable (message is redacted and says how to fix it)."""


def _query_value(url: URL, name: str, default: str) -> str:
    """The (last) value of query parameter ``name`` of ``url``."""
    value = url.query.get(name, default)
    return str(value[-1] if isinstance(value, tuple) else value)


def _is_local(url: URL) -> bool:
    host = url.host
    query_host = url.query.get("host")
    if isinstance(query_host, tuple):
        query_host = query_host[0] if query_host else None
    if not host:
        # no host: libpq uses the unix socket (or the ?host=/path query parameter)
        return not query_host or str(query_host).startswith("/") or str(query_host) in LOCAL_HOSTS
    return host.startswith("/") or host.lower() in LOCAL_HOSTS


def _is_tcp(url: URL) -> bool:
    host = url.host or ""
    return bool(host) and not host.startswith("/")


def direct_host_for(host: str) -> str:
    """Neon pooled host → direct host: ``ep-x-123-pooler.us-east-2.aws.neon.tech`` →
    ``ep-x-123.us-east-2.aws.neon.tech``. Other hosts are returned unchanged."""
    first, dot, rest = host.partition(".")
    if first.endswith("-pooler"):
        return first[: -len("-pooler")] + dot + rest
    return host


def _normalise(raw: str, what: str) -> URL:
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConnectionConfigError(
            f"{what} is not a valid database URL ({redact(raw)!r}); expected "
            "postgresql://user:password@host:5432/dbname"
        ) from None
    if url.drivername not in _ACCEPTED_DRIVERS:
        raise ConnectionConfigError(
            f"{what} uses driver {url.drivername!r} ({url.render_as_string()}); the central store needs "
            "PostgreSQL via psycopg2: use a postgresql:// (or postgresql+psycopg2://) URL"
        )
    if url.password:
        register_secret(str(url.password))
    options = url.query.get("options")
    if options is not None:
        opts = " ".join(options) if isinstance(options, tuple) else str(options)
        if "-c" in opts.split() or opts.strip().startswith("-c") or "--" in opts:
            raise ConnectionConfigError(
                f"{what} sets startup options ({redact(opts)!r}); PgBouncer in transaction mode (Neon's "
                "pooled host) rejects them. Remove 'options' from the URL: qt_pipeline applies "
                "statement/lock timeouts with SET LOCAL in every transaction (QT_PG_STATEMENT_TIMEOUT_MS, "
                "QT_PG_LOCK_TIMEOUT_MS)"
            )
    return url.set(drivername=DRIVER)


def _with_defaults(url: URL, settings: Settings) -> tuple[URL, str | None]:
    query = dict(url.query)
    sslmode = query.get("sslmode")
    if isinstance(sslmode, tuple):
        sslmode = sslmode[-1]
    if settings.pg_sslmode:
        sslmode = settings.pg_sslmode
    elif sslmode is None and not _is_local(url):
        sslmode = "require"
    if sslmode is not None:
        if sslmode not in _SSLMODES:
            raise ConnectionConfigError(
                f"sslmode={sslmode!r} is not a libpq sslmode; use one of {sorted(_SSLMODES)} "
                "(Neon needs 'require' or 'verify-full')"
            )
        query["sslmode"] = sslmode
    query.setdefault("connect_timeout", str(settings.pg_connect_timeout_s))
    # dead peers on OPEN connections: client-side socket options (never sent to the server, so PgBouncer
    # in transaction mode is fine with them — unlike startup options)
    query.setdefault("keepalives", "1")
    query.setdefault("keepalives_idle", str(settings.pg_keepalives_idle_s))
    query.setdefault("keepalives_interval", str(settings.pg_keepalives_interval_s))
    query.setdefault("keepalives_count", str(settings.pg_keepalives_count))
    if _is_tcp(url):
        query.setdefault("tcp_user_timeout", str(settings.pg_tcp_user_timeout_ms))
    query.setdefault("application_name", settings.application_name)
    return url.set(query=query), sslmode


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything needed to connect; ``url``/``direct_url`` hold the password — never print them, use
    :meth:`redacted` / :attr:`location`."""

    url: URL  # pooled (what queries use)
    direct_url: URL  # DDL and bulk COPY
    sslmode: str | None
    is_neon: bool
    connect_timeout_s: int
    application_name: str
    statement_timeout_ms: int
    lock_timeout_ms: int
    idle_in_tx_timeout_ms: int
    pool_size: int
    max_overflow: int
    pool_recycle_s: int
    call_timeout_s: float | None = None
    session_settings: dict[str, str] = field(default_factory=dict)
    # the embedded server: where it listens now (restarting it after a crash), asked on every connect
    rediscover: Callable[[], int | None] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> ConnectionConfig:
        pooled = _normalise(url, "NEON_DATABASE_URL")
        pooled, sslmode = _with_defaults(pooled, settings)
        if settings.neon_direct_url is not None:
            direct = _normalise(settings.neon_direct_url.get_secret_value(), "NEON_DIRECT_URL")
            direct, _ = _with_defaults(direct, settings)
        elif pooled.host:
            direct = pooled.set(host=direct_host_for(pooled.host))
        else:
            direct = pooled
        host = (pooled.host or "").lower()
        cfg = cls(
            url=pooled,
            direct_url=direct,
            sslmode=sslmode,
            is_neon=host.endswith(".neon.tech") or host.endswith(".neon.build"),
            connect_timeout_s=int(
                _query_value(pooled, "connect_timeout", str(settings.pg_connect_timeout_s))
            ),
            application_name=_query_value(pooled, "application_name", settings.application_name),
            statement_timeout_ms=settings.pg_statement_timeout_ms,
            lock_timeout_ms=settings.pg_lock_timeout_ms,
            idle_in_tx_timeout_ms=settings.pg_idle_in_tx_timeout_ms,
            pool_size=settings.pg_pool_size,
            max_overflow=settings.pg_max_overflow,
            pool_recycle_s=settings.pg_pool_recycle_s,
            call_timeout_s=(
                settings.pg_call_timeout_s
                if settings.pg_call_timeout_s is not None
                else settings.pg_statement_timeout_ms / 1000 + 30
            ),
        )
        if settings.neon_database_url is None and pooled.host in LOCAL_HOSTS:
            from qt_pipeline.storage.postgres import embedded

            if pooled.port is not None and pooled.port == embedded._stored_port(settings):
                object.__setattr__(cfg, "rediscover", functools.partial(embedded.rediscover_port, settings))
        object.__setattr__(
            cfg,
            "session_settings",
            {
                "statement_timeout": str(cfg.statement_timeout_ms),
                "lock_timeout": str(cfg.lock_timeout_ms),
                "idle_in_transaction_session_timeout": str(cfg.idle_in_tx_timeout_ms),
                "TimeZone": "UTC",
                "extra_float_digits": "3",
            },
        )
        return cfg

    # --- safe descriptions ---------------------------------------------------------------------------
    def redacted(self, *, direct: bool = False) -> str:
        """The URL with the password masked (safe to log)."""
        u = self.direct_url if direct else self.url
        return redact(u.set(drivername="postgresql").render_as_string(hide_password=True))

    @property
    def host(self) -> str:
        return self.url.host or str(self.url.query.get("host", "local socket"))

    @property
    def direct_host(self) -> str:
        return self.direct_url.host or str(self.direct_url.query.get("host", "local socket"))

    @property
    def database(self) -> str:
        return self.url.database or ""

    @property
    def user(self) -> str:
        return self.url.username or ""

    @property
    def location(self) -> str:
        """``host:port/db`` (redacted, no credentials) for messages and metadata."""
        port = f":{self.url.port}" if self.url.port else ""
        return redact(f"{self.host}{port}/{self.database}")

    def dsn(self, *, direct: bool = False) -> str:
        """libpq URL (secret!) for raw psycopg2 connections."""
        u = self.direct_url if direct else self.url
        return u.set(drivername="postgresql").render_as_string(hide_password=False)

    def __repr__(self) -> str:  # never show the password, even in debuggers/tracebacks
        return f"ConnectionConfig({self.redacted()}, direct={self.redacted(direct=True)})"

    __str__ = __repr__


def set_local_sql(cfg: ConnectionConfig, extra: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """One ``SELECT set_config(..., true), …`` statement: ``SET LOCAL`` for every setting, one round trip."""
    items = dict(cfg.session_settings)
    if extra:
        items.update(extra)
    parts = []
    params: dict[str, str] = {}
    for i, (name, value) in enumerate(items.items()):
        parts.append(f"set_config(%(n{i})s, %(v{i})s, true)")
        params[f"n{i}"] = name
        params[f"v{i}"] = value
    return "SELECT " + ", ".join(parts), params


def make_engine(cfg: ConnectionConfig, *, direct: bool = False) -> sa.Engine:
    """A pooled psycopg2 engine (QueuePool, ``pool_pre_ping``, ``pool_recycle``) that issues the
    per-transaction ``SET LOCAL`` settings at the start of every transaction. No startup options.
    Every call on its connections (pre-ping included) is bounded by a client-side deadline
    (:mod:`~qt_pipeline.storage.postgres.deadline`); new connections honour an active call budget."""
    url = cfg.direct_url if direct else cfg.url
    engine = sa.create_engine(
        url,
        poolclass=sa.QueuePool,
        pool_size=cfg.pool_size,
        max_overflow=cfg.max_overflow,
        pool_pre_ping=True,
        pool_recycle=cfg.pool_recycle_s,
        pool_use_lifo=True,
        hide_parameters=True,
        connect_args={"connection_factory": watched_connection_factory(cfg.call_timeout_s)},
    )
    stmt, params = set_local_sql(cfg)

    @event.listens_for(engine, "do_connect")
    def _budgeted_connect(dialect, conn_rec, cargs, cparams) -> None:
        if cfg.rediscover is not None:
            port = cfg.rediscover()
            if port is not None:
                cparams["port"] = port
        configured = int(cparams.get("connect_timeout") or cfg.connect_timeout_s)
        cparams["connect_timeout"] = str(budget_connect_timeout(configured))

    @event.listens_for(engine, "begin")
    def _set_local(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return
        conn.exec_driver_sql(stmt, params)

    return engine


class EngineRegistry:
    """One SQLAlchemy engine per URL (and pool/timeout settings), owned by whoever creates the registry.

    Stores built on the same registry share pools; :meth:`dispose` (or leaving the ``with`` block) closes
    every engine it made. Nothing is cached beyond the registry's owner: there is no process-wide cache.
    """

    def __init__(self) -> None:
        self._engines: dict[tuple[object, ...], sa.Engine] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(cfg: ConnectionConfig, direct: bool) -> tuple[object, ...]:
        url = cfg.direct_url if direct else cfg.url
        return (
            url.render_as_string(hide_password=False),
            tuple(sorted(cfg.session_settings.items())),
            cfg.pool_size,
            cfg.max_overflow,
            cfg.pool_recycle_s,
            cfg.call_timeout_s,
            cfg.rediscover is not None,
        )

    def engine(self, cfg: ConnectionConfig, *, direct: bool = False) -> sa.Engine:
        """The engine for ``cfg``'s pooled (or ``direct``) URL; the same object for the same URL."""
        key = self._key(cfg, direct)
        with self._lock:
            eng = self._engines.get(key)
            if eng is None:
                eng = make_engine(cfg, direct=direct)
                # query latency, pool waits, bytes read, busy time (qt_pipeline.monitoring)
                instrument_engine(eng)
                self._engines[key] = eng
            return eng

    def __len__(self) -> int:
        return len(self._engines)

    def dispose(self) -> None:
        """Dispose every engine made here (pooled connections closed). Safe to call twice."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for eng in engines:
            eng.dispose()

    def __enter__(self) -> EngineRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()
