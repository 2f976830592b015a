"""Alembic migrations of the central store (a package so wheels ship them)."""
