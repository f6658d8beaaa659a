"""Single flight of ingests, drops, registrations and feature builds by row locks.

``skyclass.operation_lock`` has one row per resource an operation must hold
alone: ``catalog:<name>`` (ingest, register, drop) and
``feature_set:<name>:<spec_hash>`` (feature build). An operation inserts its
row (committed at once, so creating it never waits) and then, inside its own
transaction, locks it with ``SELECT ... FOR UPDATE``. The advisory keys used
before could be taken by any role, even one without grants, and so block an
ingest or a build indefinitely; locking a row needs UPDATE on this table, which
PUBLIC does not have.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE skyclass.operation_lock (
    resource   text PRIMARY KEY
               CHECK (resource ~ '^(catalog|feature_set):[a-z0-9_:]{1,200}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE skyclass.operation_lock IS
    'Single flight: one row per catalog (catalog:<name>) and feature-set version '
    '(feature_set:<name>:<spec_hash>); ingest, register and drop lock the catalog''s row, a '
    'feature build its version''s row (FOR UPDATE, held until the transaction ends). Only '
    'roles that may UPDATE it take a lock.';
COMMENT ON COLUMN skyclass.operation_lock.resource IS
    'catalog:<catalog name> or feature_set:<feature set name>:<spec sha256>';
COMMENT ON COLUMN skyclass.operation_lock.created_at IS 'When the row was first needed';
REVOKE ALL ON skyclass.operation_lock FROM PUBLIC;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP TABLE skyclass.operation_lock")
