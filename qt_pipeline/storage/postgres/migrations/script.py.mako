"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Target schema: ``schema_name()`` (passed by qt_pipeline.storage.postgres.schema.upgrade); quote it with
``qi()``. Revision ids must be at most 32 characters (alembic_version.version_num).
"""

from __future__ import annotations

from alembic import op

from qt_pipeline.storage.postgres.schema import qi, schema_name

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    s = qi(schema_name())
    ${upgrades if upgrades else "raise NotImplementedError"}


def downgrade() -> None:
    s = qi(schema_name())
    ${downgrades if downgrades else "raise NotImplementedError"}
