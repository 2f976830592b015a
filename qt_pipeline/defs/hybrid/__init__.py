"""Dagster wiring for the hybrid domain."""

import dagster as dg

defs = dg.Definitions()
