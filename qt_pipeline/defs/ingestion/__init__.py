"""Dagster wiring for the ingestion domain."""

import dagster as dg

defs = dg.Definitions()
