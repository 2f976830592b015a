"""``qt validate FILE…`` (check landing files without storing anything) and ``qt status`` (what a store
holds and whether it is healthy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qt_pipeline.redaction import redact


def _parse_mapping(column_map: str | None) -> dict[str, str]:
    if not column_map:
        return {}
    try:
        mapping = json.loads(column_map)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(
            f"--column-map is not valid JSON ({exc.msg} at char {exc.pos}); write e.g. "
            '\'{"ts": "timestamp"}\''
        ) from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise typer.BadParameter(
            '--column-map must be a JSON object of strings, e.g. \'{"ts": "timestamp"}\''
        )
    return {str(k): v for k, v in mapping.items()}


def validate_command(
    files: Annotated[list[Path], typer.Argument(help="Landing files (CSV) to validate.")],
    timezone: Annotated[
        str | None,
        typer.Option(help="IANA zone of naive timestamps (default QT_LANDING_TIMEZONE)."),
    ] = None,
    column_map: Annotated[
        str | None,
        typer.Option(
            help='JSON object file→canonical column names, e.g. \'{"ts": "timestamp"}\' (default QT_LANDING_COLUMN_MAP).'
        ),
    ] = None,
    any_symbol: Annotated[
        bool, typer.Option("--any-symbol", help="Accept symbols outside QT_SYMBOLS.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Messages printed per file.")] = 50,
) -> None:
    """Validate landing files without storing anything: prints FILE:LINE: reason: detail and a summary
    per file; exits 1 if any row (or the file) was rejected."""
    from qt_pipeline.config import get_settings
    from qt_pipeline.market.sources import validate_batch
    from qt_pipeline.market.sources.landing import LandingDirectorySource

    settings = get_settings()
    console = Console(highlight=False, soft_wrap=True)
    mapping = _parse_mapping(column_map) if column_map is not None else dict(settings.landing_column_map)
    tz = timezone if timezone is not None else settings.landing_timezone
    table = Table(title="validation summary")
    for col in ("file", "accepted", "rejected rows", "reasons"):
        table.add_column(col, overflow="fold")
    any_rejects = False
    for path in files:
        if not path.is_file():
            console.print(f"[red]{path}: no such file[/red] (check the path)")
            table.add_row(str(path), "-", "-", "missing")
            any_rejects = True
            continue
        try:
            source = LandingDirectorySource(path.parent, column_mapping=mapping, timezone=tz)
            result = validate_batch(
                source.read_file(path),
                interval=settings.interval,
                known_symbols=None if any_symbol else settings.symbols,
            )
        except ValueError as exc:
            raise typer.BadParameter(redact(exc)) from None
        summary = result.summary()
        for msg in result.messages(limit):
            console.print(redact(msg), markup=False)
        if summary["reject_records"] > limit:
            console.print(f"… {summary['reject_records'] - limit} more reject record(s) in {path}")
        if summary["reject_records"]:
            any_rejects = True
        reasons = ", ".join(f"{k}={v}" for k, v in summary["by_reason"].items()) or "-"
        console.print(
            f"{path}: {summary['accepted']} row(s) accepted, {summary['rejected_rows']} row(s) rejected"
            + (f" ({reasons})" if summary["reject_records"] else ""),
            markup=False,
        )
        table.add_row(str(path), str(summary["accepted"]), str(summary["rejected_rows"]), reasons)
    console.print(table)
    if any_rejects:
        raise typer.Exit(code=1)


def status_command(
    backend: Annotated[
        str | None,
        typer.Option(help="local|sharedfs|central|hybrid (default STORAGE_BACKEND)."),
    ] = None,
) -> None:
    """What the store holds (rows and range per symbol) and its health."""
    from qt_pipeline.config import get_settings
    from qt_pipeline.storage import get_storage

    settings = get_settings()
    console = Console(highlight=False, soft_wrap=True)
    try:
        store = get_storage(backend, settings)
    except Exception as exc:  # noqa: BLE001 - any construction failure is reported, redacted
        console.print(
            f"[red]cannot open the {backend or settings.storage_backend} store:[/red] {redact(exc)}"
        )
        raise typer.Exit(code=1) from None
    try:
        health = store.health()
        ok = "[green]healthy[/green]" if health.healthy else "[red]unhealthy[/red]"
        latency = f"{health.latency_ms:.1f} ms" if health.latency_ms is not None else "n/a"
        console.print(
            f"store [bold]{health.backend}[/bold] at {redact(health.location)}: {ok} "
            f"(latency {latency}) {redact(health.message)}"
        )
        for key, value in health.details.items():
            console.print(f"  {key}: {redact(value)}")
        table = Table(title=f"symbols in {redact(store.location)}")
        for col in ("symbol", "rows", "first", "last"):
            table.add_column(col)
        if health.healthy:
            summary = store.list_symbols()
            for rec in summary.itertuples(index=False):
                table.add_row(
                    str(rec.symbol),
                    str(rec.rows),
                    rec.first_timestamp.isoformat(),
                    rec.last_timestamp.isoformat(),
                )
        console.print(table)
    except Exception as exc:  # noqa: BLE001
        console.print(f"[red]status failed:[/red] {redact(exc)}")
        raise typer.Exit(code=1) from None
    finally:
        store.close()
    if not health.healthy:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
    app.command("status")(status_command)
