"""Text renderings of a cost report (Markdown for the Dagster UI; the CLI draws rich tables from the same
rows)."""

from __future__ import annotations

from qt_pipeline.monitoring.cost import CostReport


def cost_markdown(report: CostReport) -> str:
    c = report.currency
    lines = [
        f"| component | quantity | unit price ({c}) | period ({c}) | month projection ({c}) | note |",
        "|---|---|---|---|---|---|",
    ]
    for line in report.lines:
        lines.append(
            f"| {line.component} | {line.quantity:.4f} {line.unit} | {line.unit_price:g} | "
            f"{line.period_cost:.4f} | {line.monthly:.4f} | {line.note} |"
        )
    lines.append(f"| **total** | | | **{report.period_total:.4f}** | **{report.projected_monthly:.4f}** | |")
    lines += ["", f"| alternative | quantity | month ({c}) | note |", "|---|---|---|---|"]
    for alt in report.alternatives:
        lines.append(f"| {alt.component} | {alt.quantity:.4f} {alt.unit} | {alt.monthly:.4f} | {alt.note} |")
    lines += ["", report.status_message()]
    return "\n".join(lines)


def recommendations_markdown(report: CostReport) -> str:
    if not report.recommendations:
        return "nothing to recommend"
    lines = [f"| recommendation | estimated saving ({report.currency}/month) | how |", "|---|---|---|"]
    for r in report.recommendations:
        lines.append(f"| {r.title} | {r.monthly_saving:.4f} | {r.detail} |")
    return "\n".join(lines)


__all__ = ["cost_markdown", "recommendations_markdown"]
