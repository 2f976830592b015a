"""``qt outbox status|replay`` and ``qt health``: the hybrid store's outbox and the central store's health.

Neither command opens the hybrid cache's DuckDB file, so both work while a Dagster run holds it.
Exit codes: 0 ok; 1 replay stopped / store unhealthy; 2 nothing configured.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qt_pipeline.config import get_settings
from qt_pipeline.redaction import redact

console = Console()


def _status_table(status) -> Table:
    t = Table(title="hybrid outbox", show_header=False)
    t.add_row("directory", status.directory)
    t.add_row("batches", str(status.batches))
    t.add_row("rows", str(status.rows))
    t.add_row("bytes", str(status.bytes))
    t.add_row("oldest / newest seq", f"{status.oldest_seq} / {status.newest_seq}")
    age = f"{status.oldest_age_s:.0f} s" if status.oldest_age_s is not None else "-"
    t.add_row("oldest batch age", age)
    return t


def register(app: typer.Typer) -> None:
    outbox_app = typer.Typer(help="The hybrid store's durable outbox (batches not yet in the central store).")

    @outbox_app.command("status")
    def status(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    ) -> None:
        """Show how many batches/rows wait in the outbox."""
        from qt_pipeline.storage.outbox import Outbox

        st = Outbox(get_settings().resolved_outbox_dir).status()
        if as_json:
            typer.echo(json.dumps(st.as_dict()))
        else:
            console.print(_status_table(st))

    @outbox_app.command("replay")
    def replay(
        max_batches: Annotated[
            int | None, typer.Option("--max-batches", help="Stop after this many batches.")
        ] = None,
        wait: Annotated[
            float, typer.Option("--wait", help="Seconds to wait if another process is replaying.")
        ] = 30.0,
    ) -> None:
        """Replay the outbox into the central store, in order; safe to interrupt and to run again."""
        from qt_pipeline.storage.hybrid import replay_outbox
        from qt_pipeline.storage.outbox import Outbox

        settings = get_settings()
        before = Outbox(settings.resolved_outbox_dir).status()
        if before.batches == 0:
            console.print("outbox is empty: nothing to replay")
            return
        console.print(f"replaying {before.batches} batch(es) / {before.rows} row(s) …")
        try:
            result = replay_outbox(settings, max_batches=max_batches, lock_wait_s=wait)
        except Exception as exc:
            console.print(f"[red]replay failed before the first batch:[/red] {redact(exc)}")
            raise typer.Exit(1) from None
        console.print(
            f"replayed {result.replayed_batches} batch(es), {result.replayed_rows} row(s) in "
            f"{result.seconds:.2f} s; {result.remaining_batches} batch(es) left"
        )
        if result.skipped_reason:
            console.print(f"[yellow]skipped:[/yellow] {result.skipped_reason}")
            raise typer.Exit(1)
        if result.error:
            console.print(f"[red]stopped:[/red] {redact(result.error)} (the batch is kept; run again)")
            raise typer.Exit(1)

    app.add_typer(outbox_app, name="outbox")

    @app.command("health")
    def health(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    ) -> None:
        """Probe the central store (latency, pool, versions, size, Neon endpoint state) and the outbox."""
        from qt_pipeline.storage.health import check_central_health
        from qt_pipeline.storage.outbox import Outbox

        settings = get_settings()
        report = check_central_health(settings)
        outbox = Outbox(settings.resolved_outbox_dir).status()
        if as_json:
            payload = {"central": report.as_dict() if report else None, "outbox": outbox.as_dict()}
            typer.echo(redact(json.dumps(payload, default=str)))
        else:
            if report is None:
                console.print("central store: NEON_DATABASE_URL is not set (nothing to probe)")
            else:
                colour = "green" if report.healthy else "red"
                console.print(f"[{colour}]{redact(report.summary())}[/{colour}]")
                if report.endpoint_state:
                    console.print(f"Neon endpoint state: {report.endpoint_state}")
                if "neon_api_error" in report.extra:
                    console.print(f"[yellow]Neon API: {report.extra['neon_api_error']}[/yellow]")
            console.print(f"outbox: {outbox.batches} batch(es), {outbox.rows} row(s) at {outbox.directory}")
        if report is None:
            raise typer.Exit(2)
        if not report.healthy:
            raise typer.Exit(1)
