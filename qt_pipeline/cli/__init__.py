"""The ``qt`` operator CLI (Typer). Each command group lives in its own module under ``qt_pipeline.cli``
and is registered here; commands are thin and call the domain layers. Output never contains secrets
(everything printed about a database goes through :func:`qt_pipeline.redaction.redact`).
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="qt",
    help="qt_pipeline operator commands: run the main job, validate files, migrate, reconcile, outbox, status.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold connection strings
)

# Modules that define `register(app: typer.Typer) -> None`. A module that is not there yet is skipped,
# so each domain can add its commands independently.
COMMAND_MODULES = (
    "qt_pipeline.cli.run",
    "qt_pipeline.cli.ingest",
    "qt_pipeline.cli.download",
    "qt_pipeline.cli.central",
    "qt_pipeline.cli.outbox",
    "qt_pipeline.cli.evolution",
)

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:  # pragma: no cover - console entry
    app()
