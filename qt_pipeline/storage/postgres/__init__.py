"""The ``neon`` storage backend: PostgreSQL / Neon / TimescaleDB (no Dagster imports).

* :mod:`.connection` — URLs (pooled/direct, TLS, timeouts) and engines (``SET LOCAL`` per transaction)
* :mod:`.retry` / :mod:`.errors` — transient-error retries and clear, redacted error messages
* :mod:`.capabilities` — what the server can do (TimescaleDB version/license, Neon)
* :mod:`.schema` + ``migrations/`` — Alembic, the only place Postgres table DDL lives
* :mod:`.layout` — daily partitions / chunks
* :mod:`.store` — :class:`~.store.PostgresStore`
* :mod:`.embedded` — the throwaway local server used when no ``NEON_DATABASE_URL`` is set

Submodules are imported on use (``from qt_pipeline.storage.postgres.store import PostgresStore``).
"""
