"""Dagster wiring for the evolution domain."""

import dagster as dg

defs = dg.Definitions()
