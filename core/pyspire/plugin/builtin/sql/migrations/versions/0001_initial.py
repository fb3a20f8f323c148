"""The first schema of the sql DataStore.

It creates the tables as ``schema.py`` defines them at version 1. A later change to
``schema.py`` goes into a new migration; this one must keep creating exactly version 1, so
before such a change the version-1 tables are frozen into this file.

Revision ID: 0001
"""

from __future__ import annotations

from alembic import op

from pyspire.plugin.builtin.sql.schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table and seed the change-event counter."""
    bind = op.get_bind()
    metadata.create_all(bind)
    counters = metadata.tables["counters"]
    op.bulk_insert(counters, [{"name": "change_sequence", "value": 0}])


def downgrade() -> None:
    """Drop every table (used by tests only)."""
    metadata.drop_all(op.get_bind())
