"""``qt migrate``, ``qt reconcile``, ``qt consistency`` and ``qt db status``: the central store.

All output goes through :func:`qt_pipeline.redaction.redact`. Exit codes: 0 ok; 1 failure (or, for
``qt consistency``, differences found); 2 bad input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qt_pipeline.config import get_settings
from qt_pipeline.redaction import redact

if TYPE_CHECKING:
    from qt_pipeline.storage.duckdb_store import DuckDBStore
    from qt_pipeline.storage.migration import MigrationSummary
    from qt_pipeline.storage.postgres.store import PostgresStore

console = Console()

SymbolsOpt = Annotated[
    str | None, typer.Option("--symbols", help="Comma-separated symbols (default: every local symbol).")
]
StartOpt = Annotated[str | None, typer.Option("--start", help="First UTC day, YYYY-MM-DD (inclusive).")]
EndOpt = Annotated[str | None, typer.Option("--end", help="Last UTC day, YYYY-MM-DD (exclusive).")]


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        console.print(
            f"[red]{option} {value!r} is not a date; use YYYY-MM-DD, e.g. {option} 2024-01-03[/red]"
        )
        raise typer.Exit(2) from None


def _parse_symbols(value: str | None) -> list[str] | None:
    if value is None:
        return None
    out = [s.strip().upper() for s in value.split(",") if s.strip()]
    if not out:
        console.print("[red]--symbols is empty; pass e.g. --symbols BTCUSD,ETHUSD[/red]")
        raise typer.Exit(2)
    return out


def _record_repairs(actions: list, location: str) -> None:
    """Record each re-copied symbol-day as a materialisation of its central_ohlcv partition in the Dagster
    instance (``DAGSTER_HOME``), so the UI's history of the asset shows the repair."""
    import os

    if not os.environ.get("DAGSTER_HOME"):
        return
    import dagster as dg

    from qt_pipeline.defs.central.jobs import repair_materializations

    events = repair_materializations(actions, location)
    with dg.DagsterInstance.get() as instance:
        for event in events:
            instance.report_runless_asset_event(event)
    if events:
        console.print(f"recorded {len(events)} central_ohlcv materialisation(s) in the Dagster instance")


@contextmanager
def _open_stores() -> Iterator[tuple[DuckDBStore, PostgresStore]]:
    """The local DuckDB store and the central store (from settings), closed on exit; a failure to open
    them exits with a clear line."""
    from qt_pipeline.storage.central import open_central
    from qt_pipeline.storage.duckdb_store import DuckDBStore

    settings = get_settings()
    try:
        local = DuckDBStore(settings.resolved_duckdb_path)
    except Exception as exc:
        raise _fail("opening the stores", exc) from None
    try:
        central = open_central(settings)
    except Exception as exc:
        local.close()
        raise _fail("opening the stores", exc) from None
    try:
        yield local, central
    finally:
        central.close()
        local.close()


def _history_range(
    symbols: str | None, start: str | None, end: str | None
) -> tuple[list[str] | None, date | None, date | None]:
    return _parse_symbols(symbols), _parse_day(start, "--start"), _parse_day(end, "--end")


EX_TEMPFAIL = 75  # sysexits.h: a temporary condition, try again later (the budget allows it again)


def _exit_if_backing_off(action: str) -> None:
    """One line saying why ``action`` backs off (budget status, QT_COST_BACKOFF) and how to override it,
    then exit 75 before anything is opened or copied."""
    from rich.markup import escape

    from qt_pipeline.monitoring.cost import backoff_reason

    reason = backoff_reason(get_settings(), action)
    if reason is not None:
        console.print(f"[yellow]{escape(reason)}[/yellow]", soft_wrap=True)
        raise typer.Exit(EX_TEMPFAIL)


def _fail(what: str, exc: BaseException) -> typer.Exit:
    console.print(f"[red]{what} failed:[/red] {redact(exc)}")
    return typer.Exit(1)


def _summary_table(summary: Any) -> Table:
    t = Table(title="migration summary")
    for col in ("partitions migrated", "partitions skipped", "rows", "MB", "s", "rows/s"):
        t.add_column(col, justify="right")
    t.add_row(
        str(summary.migrated),
        str(summary.skipped),
        f"{summary.rows:,}",
        f"{summary.bytes / 1e6:.1f}",
        f"{summary.seconds:.2f}",
        f"{summary.rows_per_s:,.0f}",
    )
    return t


def _migrate(
    local: DuckDBStore,
    central: PostgresStore,
    syms: list[str] | None,
    lo: date | None,
    hi: date | None,
    *,
    resume: bool,
) -> MigrationSummary:
    from qt_pipeline.storage.migration import migrate_all

    try:
        console.print(f"migrating {redact(local.location)} → {redact(central.location)}")
        with Progress(
            TextColumn("[bold]migrate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("migrate", total=None, last="")

            def on_progress(done: int, total: int, st: Any) -> None:
                state = "skipped" if st.skipped else f"{st.rows} rows"
                progress.update(task, completed=done, total=total, last=f"{st.partition_key} {state}")

            return migrate_all(
                local, central, symbols=syms, start=lo, end=hi, progress=on_progress, resume=resume
            )
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted — run `qt migrate` again to resume (the ledger keeps progress)[/yellow]"
        )
        raise typer.Exit(130) from None
    except Exception as exc:
        raise _fail("migration (run `qt migrate` again to resume)", exc) from None


def register(app: typer.Typer) -> None:
    @app.command("migrate")
    def migrate(
        symbols: SymbolsOpt = None,
        start: StartOpt = None,
        end: EndOpt = None,
        no_resume: Annotated[
            bool, typer.Option("--no-resume", help="Copy every symbol-day even if the ledger has it.")
        ] = False,
    ) -> None:
        """Migrate local DuckDB bars to the central store; resumes after interruption (ledger). Backs off
        (exit 75, nothing copied) while the cost governor says so (QT_COST_BACKOFF)."""
        syms, lo, hi = _history_range(symbols, start, end)
        _exit_if_backing_off("migration")
        with _open_stores() as (local, central):
            summary = _migrate(local, central, syms, lo, hi, resume=not no_resume)
        console.print(_summary_table(summary))

    @app.command("reconcile")
    def reconcile_cmd(
        symbols: SymbolsOpt = None,
        start: StartOpt = None,
        end: EndOpt = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Only list what would be re-copied.")
        ] = False,
    ) -> None:
        """Compare per-symbol-day checksums and re-copy only the differing symbol-days into the central store."""
        from qt_pipeline.storage.consistency import reconcile_history

        syms, lo, hi = _history_range(symbols, start, end)
        with _open_stores() as (local, central):
            try:
                out = reconcile_history(local, central, symbols=syms, start=lo, end=hi, dry_run=dry_run)
            except Exception as exc:
                raise _fail("reconcile", exc) from None
        if out.before.ok:
            console.print(f"{out.before.compared} symbol-day(s) compared: all consistent, nothing to do")
            return
        t = Table(title=f"{len(out.before.differing)} differing symbol-day(s)")
        for col in ("day", "symbol", "reason", "local rows", "central rows"):
            t.add_column(col)
        for d in out.before.differing:
            t.add_row(d.day.isoformat(), d.symbol, d.reason, str(d.local_rows), str(d.central_rows))
        console.print(t)
        if dry_run:
            console.print(f"dry run: {len(out.summary.actions)} symbol-day(s) would be re-copied")
            return
        console.print(
            f"re-copied {out.summary.repaired} symbol-day(s), {out.summary.rows_copied} row(s); "
            f"{len(out.still_differing)} still differ"
        )
        _record_repairs(out.summary.actions, central.location)
        if not out.ok:
            raise typer.Exit(1)

    @app.command("consistency")
    def consistency_cmd(
        symbols: SymbolsOpt = None,
        start: StartOpt = None,
        end: EndOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Compare the local DuckDB and the central store per symbol-day (rows + checksum); exit 1 if any differ."""
        from qt_pipeline.storage.consistency import compare_history

        syms, lo, hi = _history_range(symbols, start, end)
        with _open_stores() as (local, central):
            try:
                res = compare_history(local, central, symbols=syms, start=lo, end=hi)
            except Exception as exc:
                raise _fail("consistency check", exc) from None
        if as_json:
            typer.echo(json.dumps(res.metadata(max_keys=1000)))
        else:
            console.print(f"{res.compared} symbol-day(s) compared, {len(res.differing)} differ")
            for d in res.differing[:50]:
                console.print(f"  {d.describe()}")
        if not res.ok:
            raise typer.Exit(1)

    db_app = typer.Typer(help="The central PostgreSQL store.", no_args_is_help=True)

    @db_app.command("status")
    def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
        """Location (redacted), capabilities, table layout, table sizes and ledger counts."""
        try:
            info = db_status(get_settings())
        except Exception as exc:
            raise _fail("db status", exc) from None
        if as_json:
            typer.echo(redact(json.dumps(info, default=str)))
            return
        t = Table(title="central store", show_header=False)
        for k, v in info.items():
            if k == "tables":
                continue
            t.add_row(k, redact(json.dumps(v, default=str) if isinstance(v, dict) else v))
        console.print(t)
        tt = Table(title="tables")
        for col in ("table", "rows", "bytes"):
            tt.add_column(col)
        for name, (rows, size) in info["tables"].items():
            tt.add_row(name, str(rows), f"{size:,}")
        console.print(tt)

    @db_app.command("stop")
    def stop(
        remove_data: Annotated[
            bool, typer.Option("--remove-data", help="Also delete the embedded server's data directory.")
        ] = False,
    ) -> None:
        """Stop the embedded PostgreSQL that `qt run` starts when NEON_DATABASE_URL is not set, and any
        embedded server whose data directory was deleted (an orphan)."""
        from qt_pipeline.config import get_settings
        from qt_pipeline.storage.postgres.embedded import stop_embedded_postgres, stop_orphans

        settings = get_settings()
        stopped = stop_embedded_postgres(settings, remove_data=remove_data)
        typer.echo("embedded PostgreSQL stopped" if stopped else "no embedded PostgreSQL was running")
        for real in stop_orphans():
            typer.echo(
                f"stopped and removed an orphaned embedded PostgreSQL (its data directory is gone, or the "
                f"process that owned it was killed): {real}"
            )

    from qt_pipeline.cli.bootstrap import register_db

    register_db(db_app)
    app.add_typer(db_app, name="db")


def db_status(settings: Any) -> dict[str, Any]:
    """What ``qt db status`` prints, as a dict (redacted)."""
    from sqlalchemy import text

    from qt_pipeline.storage.central import open_central
    from qt_pipeline.storage.migration import ledger_counts
    from qt_pipeline.storage.postgres.layout import list_time_partitions, table_layout

    central = open_central(settings)
    try:
        central.ensure_schema()
        caps = central.capabilities
        with central.engine.connect() as conn:
            layout = table_layout(conn, central.schema)
            parts = list_time_partitions(conn, central.schema)
            tables: dict[str, tuple[int, int]] = {}
            for name in ("ohlcv_bars", "ohlcv_rejects", "migration_ledger", "cold_tier_ranges"):
                q = central.qualified(name)
                rows: int = conn.execute(text(f"SELECT count(*) FROM {q}")).scalar_one()
                size: int = conn.execute(
                    text(
                        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                        "WHERE c.oid = CAST(:q AS regclass) OR c.oid IN "
                        "(SELECT inhrelid FROM pg_inherits WHERE inhparent = CAST(:q AS regclass))"
                    ),
                    {"q": q},
                ).scalar_one()
                tables[name] = (int(rows), int(size))
            conn.rollback()
        if layout == "hypertable":  # chunk sizes are not children in pg_inherits for compressed data
            tables["ohlcv_bars"] = (tables["ohlcv_bars"][0], sum(p.bytes or 0 for p in parts))
        return {
            "location": redact(central.location),
            "schema": central.schema,
            "capabilities": caps.as_dict() if hasattr(caps, "as_dict") else str(caps),
            "layout": layout,
            "time_partitions": len(parts),
            "compressed_chunks": sum(1 for p in parts if p.is_compressed),
            "archived_ranges": _archived_ranges(central),
            "ledger": ledger_counts(central),
            "tables": tables,
        }
    finally:
        central.close()


def _archived_ranges(central: Any) -> int:
    from sqlalchemy import text

    with central.engine.connect() as conn:
        n = conn.execute(
            text(f"SELECT count(*) FROM {central.qualified('cold_tier_ranges')} WHERE dropped_at IS NOT NULL")
        ).scalar_one()
        conn.rollback()
    return int(n)
