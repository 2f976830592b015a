"""Versioned bootstrap SQL of a central database (Neon or any PostgreSQL): least-privilege roles, the
extension where offered, per-role timeouts, grants. ``qt db bootstrap`` prints or applies it.

The SQL lives in ``v###_*.sql`` files next to this module, applied in order; each is idempotent. Names are
filled in from :class:`BootstrapNames` (validated identifiers only, so rendering cannot inject SQL);
passwords are never rendered into SQL text: :func:`apply` sets them with a bound parameter afterwards.
No Dagster imports (storage layer)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from qt_pipeline.redaction import redact, register_secret
from qt_pipeline.storage.postgres.schema import check_identifier, qi

log = logging.getLogger("qt_pipeline.storage.postgres")

SQL_DIR = Path(__file__).resolve().parent
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_DURATION = re.compile(r"^\d+(ms|s|min|h)?$")
ROLE_KINDS = ("owner", "writer", "reader")


class BootstrapError(ValueError):
    """Bad bootstrap input or a failed apply (message redacted)."""


@dataclass(frozen=True)
class BootstrapNames:
    """What the SQL is rendered with. Roles are ``<prefix>_owner``, ``<prefix>_writer``, ``<prefix>_reader``."""

    database: str
    schema: str = "qt"
    prefix: str = "qt"
    owner_statement_timeout: str = "30min"
    owner_lock_timeout: str = "1min"
    writer_statement_timeout: str = "5min"
    writer_lock_timeout: str = "30s"
    reader_statement_timeout: str = "2min"
    reader_lock_timeout: str = "5s"
    writer_connection_limit: int = 100
    reader_connection_limit: int = 200

    def role(self, kind: str) -> str:
        return f"{self.prefix}_{kind}"

    def values(self) -> dict[str, str]:
        v = {k: str(x) for k, x in asdict(self).items()}
        for kind in ROLE_KINDS:
            v[kind] = self.role(kind)
        return v

    def validate(self) -> BootstrapNames:
        check_identifier(self.database, "database")
        check_identifier(self.schema, "schema")
        check_identifier(self.prefix, "role prefix")
        for kind in ROLE_KINDS:
            check_identifier(self.role(kind), "role")
        for name, value in asdict(self).items():
            if name.endswith("_timeout") and not _DURATION.match(value):
                raise BootstrapError(
                    f"bootstrap: {name}={value!r} is not a duration; use e.g. 500ms, 30s, 5min or 1h"
                )
            if name.endswith("_connection_limit") and not (-1 <= int(value) <= 10000):
                raise BootstrapError(f"bootstrap: {name}={value} must be -1 (no limit) .. 10000")
        return self


def sql_files() -> list[Path]:
    """The versioned bootstrap files, in the order they are applied."""
    return sorted(SQL_DIR.glob("v[0-9][0-9][0-9]_*.sql"))


def render(names: BootstrapNames) -> str:
    """The bootstrap SQL for ``names`` (every file, in order). Contains no password."""
    values = names.validate().values()
    parts = []
    for path in sql_files():
        text = path.read_text()

        def fill(m: re.Match[str], _path: Path = path) -> str:
            if m[1] not in values:
                raise BootstrapError(f"{_path.name}: unknown placeholder {{{{{m[1]}}}}}")
            return values[m[1]]

        parts.append(f"-- ===== {path.name} =====\n" + _PLACEHOLDER.sub(fill, text))
    return "\n".join(parts)


def read_password_files(specs: list[str]) -> dict[str, str]:
    """``["owner=/run/secrets/x", ...]`` → ``{"owner": "<content>"}`` (secrets registered for redaction)."""
    out: dict[str, str] = {}
    for spec in specs:
        kind, sep, path = spec.partition("=")
        if not sep or kind not in ROLE_KINDS:
            raise BootstrapError(
                f"--password-file {spec!r}: expected ROLE=PATH with ROLE one of {', '.join(ROLE_KINDS)}"
            )
        try:
            secret = Path(path).read_text().strip()
        except OSError as exc:
            raise BootstrapError(f"--password-file {kind}: cannot read {path} ({exc.strerror})") from None
        if not secret:
            raise BootstrapError(f"--password-file {kind}: {path} is empty")
        register_secret(secret)
        out[kind] = secret
    return out


def apply(admin_dsn: str, names: BootstrapNames, passwords: Mapping[str, str] | None = None) -> list[str]:
    """Apply the bootstrap to ``names.database`` on the server of ``admin_dsn`` (one transaction), then
    set the given passwords. Returns the server's notices (e.g. why the extension was skipped)."""
    import psycopg2
    from psycopg2.extensions import make_dsn

    sql = render(names)
    try:
        conn = psycopg2.connect(
            make_dsn(admin_dsn, dbname=names.database), connect_timeout=10, application_name="qt_db_bootstrap"
        )
    except psycopg2.Error as exc:
        raise BootstrapError(
            f"bootstrap: cannot connect to database {names.database!r} with the admin URL "
            f"({redact(str(exc).strip().splitlines()[0])}); check QT_BOOTSTRAP_ADMIN_URL / --admin-url"
        ) from None
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            for kind, secret in (passwords or {}).items():
                cur.execute(f"ALTER ROLE {qi(names.role(kind))} PASSWORD %s", (secret,))
        return [n.strip() for n in conn.notices]
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BootstrapError(
            f"bootstrap of database {names.database!r} failed and was rolled back: {redact(first)} "
            "(run it as the database owner or a superuser)"
        ) from None
    finally:
        conn.close()


def drop_roles(admin_dsn: str, names: BootstrapNames, databases: list[str]) -> None:
    """Undo: reassign/drop what the roles own in ``databases``, then drop the roles (tests, teardown)."""
    import psycopg2
    from psycopg2.extensions import make_dsn

    roles = [names.role(k) for k in ROLE_KINDS]
    for db in databases:
        conn = psycopg2.connect(make_dsn(admin_dsn, dbname=db), connect_timeout=10)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (roles,))
            present = [r[0] for r in cur.fetchall()]
            if present:
                cur.execute(f"DROP OWNED BY {', '.join(qi(r) for r in present)} CASCADE")
        conn.close()
    conn = psycopg2.connect(admin_dsn, connect_timeout=10)
    conn.autocommit = True
    with conn.cursor() as cur:
        for r in roles:
            cur.execute(f"DROP ROLE IF EXISTS {qi(r)}")
    conn.close()
