"""``qt cost --period 30d``: the estimated bill per component, the projection for the month, the comparison
with an EFS / local-only design, the budget status and the recommendations (``qt_pipeline.monitoring.cost``).

Exit codes: 0 within budget (or above the warning threshold); 1 over budget or failure.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qt_pipeline.config import get_settings

console = Console()


def _tables(report) -> list[Table]:
    c = report.currency
    t = Table(
        title=f"estimated cost, last {report.period_days:g} days (observed {report.observed_days:.2f} days)"
    )
    for col in (
        "component",
        "quantity",
        f"unit price ({c})",
        f"period ({c})",
        f"month projection ({c})",
        "note",
    ):
        t.add_column(col, justify="right" if "(" in col or col == "quantity" else "left")
    for line in report.lines:
        t.add_row(
            line.component,
            f"{line.quantity:.4f} {line.unit}",
            f"{line.unit_price:g}",
            f"{line.period_cost:.4f}",
            f"{line.monthly:.4f}",
            line.note,
        )
    t.add_row(
        "total", "", "", f"{report.period_total:.4f}", f"{report.projected_monthly:.4f}", "", style="bold"
    )
    alt = Table(title=f"alternatives (per month, {report.days_in_month}-day month)")
    for col in ("design", "quantity", f"month ({c})", "note"):
        alt.add_column(col)
    alt.add_row("this platform (hybrid + central)", "", f"{report.projected_monthly:.4f}", "projection above")
    for a in report.alternatives:
        alt.add_row(a.component, f"{a.quantity:.4f} {a.unit}", f"{a.monthly:.4f}", a.note)
    rec = Table(title="recommendations")
    for col in ("recommendation", f"saving ({c}/month)", "how"):
        rec.add_column(col)
    for r in report.recommendations:
        rec.add_row(r.title, f"{r.monthly_saving:.4f}", r.detail)
    return [t, alt, rec]


def register(app: typer.Typer) -> None:
    @app.command("cost")
    def cost(
        period: Annotated[str, typer.Option("--period", help="Observed window: 30d, 12h, 2w.")] = "30d",
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
        record: Annotated[
            bool,
            typer.Option(
                "--record/--no-record", help="Record the budget status (the QT_COST_BACKOFF switch reads it)."
            ),
        ] = True,
    ) -> None:
        """Estimate the monthly bill from measured sizes, compute time and bytes read; budget and savings."""
        from qt_pipeline.monitoring.cost import estimate_cost, parse_period, record_budget
        from qt_pipeline.storage.central import open_central

        settings = get_settings()
        window = parse_period(period)  # bad input fails before the store is opened
        central = open_central(settings)
        try:
            report = estimate_cost(settings, central, window)
        finally:
            central.close()
        if record:
            record_budget(settings, report)
        if as_json:
            typer.echo(json.dumps(report.as_dict(), default=str))
        else:
            for table in _tables(report):
                console.print(table)
            style = {"ok": "green", "warn": "yellow", "over": "bold red"}[report.status]
            console.print(
                f"[{style}]budget: {report.status_message()}[/{style}]  (config: {report.inputs['config']})"
            )
        if report.status == "over":
            raise typer.Exit(1)
