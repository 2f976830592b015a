"""Alembic revision files (0001_central_store and the branch revisions of other domains)."""
