"""Alembic environment: migrates the skyclass registry schema."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from skyclass.db.connect import engine
from skyclass.db.schema import SCHEMA, metadata

config = context.config


def run_migrations_online() -> None:
    """Run migrations on a live connection (the only mode skyclass uses)."""
    connectable = engine(config.attributes["libpq_url"])
    with connectable.connect() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=SCHEMA,
            include_schemas=True,
            include_name=lambda name, type_, parent: name == SCHEMA if type_ == "schema" else True,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("skyclass migrations run online only: use `skyclass db migrate`")
run_migrations_online()
