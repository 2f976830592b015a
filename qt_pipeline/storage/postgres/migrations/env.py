"""Alembic environment of the central store. Run it only through
:func:`qt_pipeline.storage.postgres.schema.upgrade`, which passes the connection (already inside a
transaction holding the schema advisory lock) and the target schema in ``config.attributes``."""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "qt_pipeline migrations run programmatically: call "
        "qt_pipeline.storage.postgres.schema.upgrade(engine, schema) instead of the alembic CLI"
    )
schema = config.attributes.get("schema", "public")

context.configure(
    connection=connection,
    version_table_schema=schema,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
