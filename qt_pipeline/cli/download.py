"""``qt download``: OHLCV history from a crypto exchange (ccxt) into the local store, with a progress bar.

Each symbol resumes one interval after its last stored bar, so running the same command again (or after
an interruption) only fetches what is missing. Bars are validated like every other source; rejects are
kept in the store with their reasons.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from qt_pipeline.redaction import redact


def download_command(
    exchange: Annotated[
        str, typer.Option(help="ccxt exchange id, e.g. binance, kraken (default QT_EXCHANGE).")
    ] = "",
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT.")] = "",
    start: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"], help="First bar (UTC)."),
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M"], help="End (exclusive, UTC); default now."),
    ] = None,
    timeframe: Annotated[
        str | None,
        typer.Option(help="ccxt timeframe, e.g. 1m, 1h, 1d (default QT_EXCHANGE_TIMEFRAME)."),
    ] = None,
    markets: Annotated[
        str | None,
        typer.Option(help="symbol=market pairs, e.g. BTCUSDT=BTC/USDT (default QT_EXCHANGE_MARKETS)."),
    ] = None,
) -> None:
    """Download OHLCV bars from a crypto exchange into the local DuckDB store (resumable)."""
    import pandas as pd

    from qt_pipeline.config import get_settings
    from qt_pipeline.market.sources.exchange import ExchangeSource, download
    from qt_pipeline.storage import get_storage

    settings = get_settings()
    console = Console(highlight=False, soft_wrap=True)
    chosen = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    if not chosen:
        raise typer.BadParameter("--symbols is required, e.g. --symbols BTCUSDT,ETHUSDT")
    if start is None:
        raise typer.BadParameter("--start is required, e.g. --start 2024-01-01")
    t0 = pd.Timestamp(start, tz="UTC")
    t1 = pd.Timestamp(end, tz="UTC") if end is not None else pd.Timestamp.now(tz="UTC").floor("min")
    if t1 <= t0:
        raise typer.BadParameter(f"--end {t1} must be after --start {t0}")
    mapping = dict(settings.exchange_markets)
    if markets:
        pairs = [p.split("=", 1) for p in markets.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise typer.BadParameter("--markets must look like BTCUSDT=BTC/USDT,ETHUSDT=ETH/USDT")
        mapping.update({k.strip().upper(): v.strip() for k, v in pairs})
    try:
        source = ExchangeSource(
            exchange or settings.exchange_id,
            markets=mapping,
            timeframe=timeframe or settings.exchange_timeframe,
            api_url=settings.exchange_api_url,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    store = get_storage("local", settings)
    try:
        with Progress(
            TextColumn("[bold]download[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            tasks: dict[str, TaskID] = {}

            def on_progress(symbol: str, done: int, total: int) -> None:
                if symbol not in tasks:
                    tasks[symbol] = progress.add_task(symbol, total=total)
                progress.update(tasks[symbol], completed=done, total=total)

            results = download(source, store, chosen, t0, t1, progress=on_progress)
    except Exception as exc:  # noqa: BLE001 - exchange/network/store errors: one clear line
        console.print(f"[red]download failed:[/red] {redact(exc)}")
        raise typer.Exit(code=1) from None
    finally:
        store.close()
    table = Table(title=f"{source.describe()} → {redact(store.location)}")
    for col in ("symbol", "from", "bars stored", "rejected", "resumed"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.symbol, r.start.isoformat(), str(r.bars), str(r.rejected), "yes" if r.resumed else "no"
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("download")(download_command)
