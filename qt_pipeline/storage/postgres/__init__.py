"""The central store's implementation: PostgreSQL / Neon / TimescaleDB (no Dagster imports).

Reach it through :func:`qt_pipeline.storage.central.open_central` (``STORAGE_BACKEND=central``).

* :mod:`.connection` — URLs (pooled/direct, TLS, timeouts), engines (``SET LOCAL`` per transaction) and
  the ``EngineRegistry`` (one engine per URL, disposed by its owner)
* :mod:`.retry` / :mod:`.errors` — transient-error retries, clear redacted errors, ``run_db`` (both)
* :mod:`.capabilities` — what the server can do (TimescaleDB version/license, Neon)
* :mod:`.schema` + ``migrations/`` — Alembic, the only place Postgres table DDL lives
* :mod:`.layout` — daily partitions / chunks
* :mod:`.writer` / :mod:`.reader` / :mod:`.cold_merge` / :mod:`.rejects` — the SQL of each responsibility
* :mod:`.ledger` — the migration ledger
* :mod:`.health` — server facts and pool figures
* :mod:`.store` — :class:`~.store.PostgresStore`, which ties them together
* :mod:`.embedded` — the throwaway local server used when no ``NEON_DATABASE_URL`` is set

Submodules are imported on use (``from qt_pipeline.storage.postgres.store import PostgresStore``).
"""
