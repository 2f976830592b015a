"""Tests of the qt CLI (typer.testing.CliRunner against real stores)."""
