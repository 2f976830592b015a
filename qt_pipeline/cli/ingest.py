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
    files: Annotated[list[Path], typer.Argument(help="Landing files (CSV, CSV.gz, Parquet) to validate.")],
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
    config: Annotated[
        Path | None,
        typer.Option(help="Landing config YAML (default QT_LANDING_CONFIG); files are read by its sources."),
    ] = None,
    source_name: Annotated[
        str | None,
        typer.Option("--source", help="Read every file with this source of the landing config."),
    ] = None,
    any_symbol: Annotated[
        bool, typer.Option("--any-symbol", help="Accept symbols outside QT_SYMBOLS.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Messages printed per file.")] = 50,
) -> None:
    """Validate landing files without storing anything: prints FILE:LINE: reason: detail (each kind of
    problem a few times, then its count), warnings once per file, and a summary of every file given;
    exits 1 if any row (or a file) was rejected. Files are streamed in bounded memory."""
    from qt_pipeline.config import get_settings
    from qt_pipeline.market.filecheck import check_file
    from qt_pipeline.market.layout import (
        LandingConfig,
        LayoutError,
        config_from_settings,
        load_landing_config,
    )
    from qt_pipeline.market.sources.landing import PATTERNS, LandingDirectorySource

    settings = get_settings()
    console = Console(highlight=False, soft_wrap=True)
    try:
        if config is not None:
            cfg = load_landing_config(config)
        elif settings.landing_config and column_map is None and timezone is None:
            cfg = config_from_settings(settings)
        else:
            cfg = None
        if cfg is not None and source_name is not None:
            chosen = [s for s in cfg.sources if s.name == source_name]
            if not chosen:
                raise LayoutError(
                    f"--source {source_name!r} is not in {cfg.origin}; it has {[s.name for s in cfg.sources]}"
                )
            cfg = LandingConfig(sources=[chosen[0].model_copy(update={"match": ["**"]})], origin=cfg.origin)
        mapping = _parse_mapping(column_map) if column_map is not None else dict(settings.landing_column_map)
        tz = timezone if timezone is not None else settings.landing_timezone
        source = LandingDirectorySource(
            settings.resolved_landing_dir,
            column_mapping=mapping,
            timezone=tz,
            config=cfg,
            calendar=settings.market_calendar,
            max_file_mb=settings.landing_max_file_mb,
            chunk_mb=settings.landing_chunk_mb,
        )
    except (ValueError, LayoutError) as exc:
        raise typer.BadParameter(redact(exc)) from None
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
        if not path.name.lower().endswith((".csv", ".csv.gz", ".parquet")):
            console.print(
                f"[red]{path}: not a landing file[/red] (expected {', '.join(PATTERNS)}); skipped",
                markup=True,
            )
            table.add_row(str(path), "-", "-", "not a landing file")
            any_rejects = True
            continue
        try:
            report = check_file(
                source,
                path,
                interval=settings.interval,
                known_symbols=None if any_symbol else settings.symbols,
                max_messages=limit,
            )
        except ValueError as exc:
            console.print(f"[red]{path}: {redact(exc)}[/red]")
            table.add_row(str(path), "-", "-", "error")
            any_rejects = True
            continue
        for w in report.warnings:
            console.print(f"warning: {redact(w)}", markup=False)
        for msg in report.messages:
            console.print(redact(msg), markup=False)
        if report.reject_records:
            any_rejects = True
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(report.by_reason.items())) or "-"
        span = (
            f"; bars {report.first.isoformat()} .. {report.last.isoformat()}"
            if report.first is not None and report.last is not None
            else ""
        )
        console.print(
            f"{path}: {report.accepted} row(s) accepted, {report.rejected_rows} row(s) rejected"
            + (f" ({reasons})" if report.reject_records else "")
            + span,
            markup=False,
        )
        table.add_row(str(path), str(report.accepted), str(report.rejected_rows), reasons)
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
