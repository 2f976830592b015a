"""Tests of the Dagster wiring (qt_pipeline/defs), run as real materialisations."""
