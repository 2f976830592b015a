"""``qt cold status|forget|restore``: inspect and repair the cold tier's Parquet archives and their
catalogue (``cold_tier_ranges``).

* ``forget`` — the range is central again (re-migrated): drop the catalogue entry (and the file), so
  reads and the next cold-tier run no longer depend on the archive;
* ``restore`` — put an archived range back into PostgreSQL (keys it lacks only), verify, then drop the
  catalogue entry and the file.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from qt_pipeline.config import get_settings
from qt_pipeline.redaction import redact

_DATE = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]
Start = Annotated[
    datetime | None,
    typer.Option("--start", formats=_DATE, help="Only archives ending after this time (UTC)."),
]
End = Annotated[
    datetime | None,
    typer.Option("--end", formats=_DATE, help="Only archives starting before this time (UTC)."),
]


def _open():
    from qt_pipeline.storage.central import open_central

    store = open_central(get_settings())
    store.ensure_schema()
    return store


def _repair(action, start, end, **options) -> list:
    """Run one catalogue repair (forget/restore) on the central store, print each archive's outcome."""
    store = _open()
    try:
        results = action(store, start, end, **options)
    finally:
        store.close()
    if not results:
        typer.echo("no archived ranges in that window")
    _print(results)
    return results


def _print(results) -> None:
    for r in results:
        extra = f", {r.rows_restored} row(s) written back" if r.action == "restored" else ""
        why = f" — {r.reason}" if r.reason else ""
        typer.echo(
            f"{r.action}: [{r.range_start.isoformat()}, {r.range_end.isoformat()}) {r.archived_rows} archived "
            f"row(s), {r.rows_in_postgres} in PostgreSQL{extra}: {r.location}{why}"
        )


def register(app: typer.Typer) -> None:
    cold_app = typer.Typer(help="The cold tier's Parquet archives: status and repairs.", no_args_is_help=True)

    @cold_app.command("status")
    def status() -> None:
        """List the archived ranges: rows, file, whether the file is readable, rows PostgreSQL holds."""
        from qt_pipeline.storage.cold_tier import list_archives
        from qt_pipeline.storage.postgres.cold_merge import archive_readable

        store = _open()
        try:
            cat = list_archives(store)
            if not len(cat):
                typer.echo("no archived ranges")
                return
            for r in cat.itertuples(index=False):
                state = "dropped" if r.dropped_at is not None else "not dropped yet"
                readable = "readable" if archive_readable(r.location) else "UNREADABLE"
                typer.echo(
                    f"[{r.range_start.isoformat()}, {r.range_end.isoformat()}) {r.rows} row(s), {state}, "
                    f"{readable}: {r.location}"
                )
        finally:
            store.close()

    @cold_app.command("forget")
    def forget(
        start: Start = None,
        end: End = None,
        force: Annotated[
            bool, typer.Option("--force", help="Forget even when PostgreSQL lacks archived rows.")
        ] = False,
        keep_files: Annotated[
            bool, typer.Option("--keep-files", help="Do not delete the Parquet files.")
        ] = False,
    ) -> None:
        """Forget archives whose range PostgreSQL holds again (after `qt migrate --no-resume`)."""
        from qt_pipeline.storage.cold_tier import forget_archives

        results = _repair(forget_archives, start, end, force=force, keep_files=keep_files)
        if any(r.action == "kept" for r in results):
            typer.echo(
                redact(
                    "some archives were kept: PostgreSQL does not hold their rows — re-migrate the range "
                    "(`qt migrate --no-resume`), restore the file and run `qt cold restore`, or pass --force"
                ),
                err=True,
            )
            raise typer.Exit(1)

    @cold_app.command("restore")
    def restore(start: Start = None, end: End = None) -> None:
        """Write archived ranges back to PostgreSQL (keys it lacks), verify, then forget the archives."""
        from qt_pipeline.storage.cold_tier import restore_archives

        results = _repair(restore_archives, start, end)
        if any(r.action == "kept" for r in results):
            raise typer.Exit(1)

    app.add_typer(cold_app, name="cold")
