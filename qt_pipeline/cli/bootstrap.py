"""``qt db bootstrap``: print or apply the versioned bootstrap SQL of the central database (least-privilege
roles, extension, per-role timeouts, grants). See :mod:`qt_pipeline.storage.postgres.bootstrap`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from qt_pipeline.redaction import redact, register_secret


def register_db(db_app: typer.Typer) -> None:
    @db_app.command("bootstrap")
    def bootstrap(
        apply_: Annotated[
            bool, typer.Option("--apply", help="Apply it (one transaction); default: print the SQL only.")
        ] = False,
        admin_url: Annotated[
            str | None,
            typer.Option(
                "--admin-url",
                help="URL of a database owner/superuser (Neon: neondb_owner, direct host). "
                "Default: QT_BOOTSTRAP_ADMIN_URL.",
                show_default=False,
            ),
        ] = None,
        database: Annotated[
            str | None, typer.Option("--database", help="Database to bootstrap (default: the admin URL's).")
        ] = None,
        schema: Annotated[
            str | None, typer.Option("--schema", help="Schema of the qt tables (default: QT_PG_SCHEMA).")
        ] = None,
        prefix: Annotated[
            str, typer.Option("--prefix", help="Role names: PREFIX_owner, PREFIX_writer, PREFIX_reader.")
        ] = "qt",
        password_file: Annotated[
            list[str] | None,
            typer.Option(
                "--password-file",
                help="ROLE=PATH (owner|writer|reader): set that role's password from a secret file. Repeatable.",
            ),
        ] = None,
        reader_statement_timeout: Annotated[
            str, typer.Option(help="Default statement_timeout of the reader role.")
        ] = "2min",
        writer_statement_timeout: Annotated[
            str, typer.Option(help="Default statement_timeout of the writer role.")
        ] = "5min",
        owner_statement_timeout: Annotated[
            str, typer.Option(help="Default statement_timeout of the owner role.")
        ] = "30min",
    ) -> None:
        """Least-privilege roles (owner for migrations, pipeline writer, read-only research), the extension
        where available, per-role default timeouts and grants. Prints the SQL, or applies it with --apply."""
        from sqlalchemy.engine import make_url

        from qt_pipeline.config import get_settings
        from qt_pipeline.storage.postgres.bootstrap import (
            BootstrapError,
            BootstrapNames,
            apply,
            read_password_files,
            render,
        )

        url = admin_url or os.environ.get("QT_BOOTSTRAP_ADMIN_URL")
        if url:
            register_secret(url)
        db = database
        if db is None and url:
            try:
                db = make_url(url).database
            except Exception:
                typer.echo(
                    "error: the admin URL is not a valid postgresql:// URL (--admin-url / QT_BOOTSTRAP_ADMIN_URL)",
                    err=True,
                )
                raise typer.Exit(2) from None
        if not db:
            typer.echo(
                "error: no database to bootstrap: pass --database NAME (or an --admin-url that names one)",
                err=True,
            )
            raise typer.Exit(2)
        try:
            names = BootstrapNames(
                database=db,
                schema=schema or (get_settings().pg_schema if get_settings().pg_schema != "public" else "qt"),
                prefix=prefix,
                reader_statement_timeout=reader_statement_timeout,
                writer_statement_timeout=writer_statement_timeout,
                owner_statement_timeout=owner_statement_timeout,
            ).validate()
            if not apply_:
                if password_file:
                    raise BootstrapError("--password-file needs --apply (passwords are never printed)")
                typer.echo(render(names))
                return
            if not url:
                raise BootstrapError(
                    "--apply needs an admin connection: pass --admin-url or set QT_BOOTSTRAP_ADMIN_URL"
                )
            passwords = read_password_files(password_file or [])
            notices = apply(url, names, passwords)
        except (BootstrapError, ValueError) as exc:
            typer.echo(f"error: {redact(exc)}", err=True)
            raise typer.Exit(2) from None
        for n in notices:
            typer.echo(f"notice: {redact(n)}")
        roles = ", ".join(names.role(k) for k in ("owner", "writer", "reader"))
        pw = f"; passwords set for {', '.join(sorted(passwords))}" if passwords else ""
        typer.echo(f"bootstrapped database {names.database!r}, schema {names.schema!r}: roles {roles}{pw}")
