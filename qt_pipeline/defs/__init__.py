"""Dagster wiring only: one folder per domain (assets, checks, schedules, sensors, resources).

Each domain package exposes ``defs`` (a ``dagster.Definitions``); ``qt_pipeline.definitions`` merges
them. Functions here are thin: they call the domain layers and turn results into metadata.
"""
