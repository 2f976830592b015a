"""The ``qt`` operator CLI (Typer). Each command group lives in its own module under ``qt_pipeline.cli``
and is registered here; commands are thin and call the domain layers. Output never contains secrets
(everything printed about a database goes through :func:`qt_pipeline.redaction.redact`).
"""

from __future__ import annotations

import importlib
import os
import traceback
from typing import Any

import typer
from typer import _click  # typer vendors click: its Context is what TyperGroup.invoke takes
from typer.core import TyperGroup

from qt_pipeline.redaction import redact

VERBOSE_ENV = "QT_VERBOSE"


def one_line_cause(exc: BaseException) -> str:
    """``Type: first line of the message`` (redacted); a chained cause is named when the message of the
    outer error is empty."""
    text = str(exc).strip()
    if not text and exc.__cause__ is not None:
        return one_line_cause(exc.__cause__)
    first = text.splitlines()[0] if text else ""
    return redact(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


_STATE = {"verbose": False}  # set by the root callback on every invocation


def is_verbose() -> bool:
    """``qt --verbose`` (or QT_VERBOSE=1) was given: show tracebacks and full logs."""
    return _STATE["verbose"] or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class OneLineErrors(TyperGroup):
    """Every failure of a command ends with ONE line saying what failed (redacted) and exit code 1; the
    traceback only with ``qt --verbose …`` (or QT_VERBOSE=1)."""

    def invoke(self, ctx: _click.Context) -> Any:
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]
        command = " ".join(["qt", *[w for w in words[:2] if not w.startswith("-")]])
        try:
            return super().invoke(ctx)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("click", "typer"):
                raise  # usage errors (exit 2), exits and aborts: the CLI framework reports them
            verbose = is_verbose()
            if verbose:
                typer.echo(redact("".join(traceback.format_exception(exc))), err=True)
            typer.echo(
                f"error: {command} failed: {one_line_cause(exc)}"
                + ("" if verbose else "  (run `qt --verbose …` for the traceback)"),
                err=True,
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    name="qt",
    cls=OneLineErrors,
    help="qt_pipeline operator commands: run the main job, validate files, migrate, reconcile, outbox, status.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold connection strings
)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="On failure print the traceback too (also: QT_VERBOSE=1)."
    ),
) -> None:
    """qt_pipeline operator commands: run the main job, validate files, migrate, reconcile, outbox, status."""
    _STATE["verbose"] = verbose
    # a Ray session whose owner was killed together with its driver process (kill -9 of both): stop it
    from qt_pipeline.evolution.ray_runtime import reap_orphans_quietly

    reap_orphans_quietly()


# Modules that define `register(app: typer.Typer) -> None`. A module that is not there yet is skipped,
# so each domain can add its commands independently.
COMMAND_MODULES = (
    "qt_pipeline.cli.run",
    "qt_pipeline.cli.ingest",
    "qt_pipeline.cli.download",
    "qt_pipeline.cli.central",
    "qt_pipeline.cli.outbox",
    "qt_pipeline.cli.cold",
    "qt_pipeline.cli.evolution",
    "qt_pipeline.cli.cost",
    "qt_pipeline.cli.metrics",
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
