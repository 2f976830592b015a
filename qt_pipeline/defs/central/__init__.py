"""Dagster wiring for the central domain."""

import dagster as dg

defs = dg.Definitions()
