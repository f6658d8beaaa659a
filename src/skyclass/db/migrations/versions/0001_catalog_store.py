"""Catalog store: extensions, catalog registry, column metadata, load provenance, rejects.

Creates extensions q3c and vector (and pg_cron where the server preloads it
and this is its cron database), schema ``catalogs`` for catalog tables, and in
schema ``skyclass`` the tables ``catalog``, ``catalog_column``,
``catalog_load`` and ``ingest_reject``. A catalog without sky positions has
NULL ``ra_column`` and ``dec_column`` (both or neither).

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "skyclass"


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS q3c")
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(
        """
        DO $$
        BEGIN
            IF current_setting('cron.database_name', true) = current_database()
               AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron') THEN
                CREATE EXTENSION IF NOT EXISTS pg_cron;
            END IF;
        END $$
        """
    )
    op.execute("CREATE SCHEMA IF NOT EXISTS catalogs")
    op.execute("COMMENT ON SCHEMA catalogs IS 'Catalog tables loaded by skyclass ingest'")
    op.create_table(
        "catalog",
        sa.Column("catalog_id", sa.Integer, sa.Identity(always=True), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("schema_name", sa.Text, nullable=False, server_default="catalogs"),
        sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("id_column", sa.Text, comment="source column of object_id; NULL when generated"),
        sa.Column("ra_column", sa.Text, comment="source column of ra; NULL: no sky positions"),
        sa.Column("dec_column", sa.Text, comment="source column of dec; NULL: no sky positions"),
        sa.Column("description", sa.Text),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("current_user")),
        sa.CheckConstraint("name ~ '^[a-z][a-z0-9_]{0,62}$'", name="ck_catalog_name_is_identifier"),
        sa.CheckConstraint(
            "(ra_column IS NULL) = (dec_column IS NULL)",
            name="ck_catalog_positions_both_or_neither",
        ),
        sa.PrimaryKeyConstraint("catalog_id", name="pk_catalog"),
        sa.UniqueConstraint("name", name="uq_catalog_name"),
        schema=S,
        comment="One row per catalog table in schema catalogs.",
    )
    op.create_table(
        "catalog_column",
        sa.Column("catalog_id", sa.Integer, nullable=False),
        sa.Column("column_name", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column(
            "source_name", sa.Text, nullable=False, comment="column name in the ingested file"
        ),
        sa.Column("pg_type", sa.Text, nullable=False),
        sa.Column("unit", sa.Text),
        sa.Column("ucd", sa.Text),
        sa.Column("description", sa.Text),
        sa.ForeignKeyConstraint(
            ["catalog_id"],
            [f"{S}.catalog.catalog_id"],
            name="fk_catalog_column_catalog_id_catalog",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("catalog_id", "column_name", name="pk_catalog_column"),
        schema=S,
        comment="Columns of each catalog with their units and descriptions.",
    )
    op.create_table(
        "catalog_load",
        sa.Column("load_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("catalog_id", sa.Integer, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("file_size", sa.BigInteger, nullable=False),
        sa.Column("file_sha256", sa.Text, nullable=False),
        sa.Column("file_format", sa.Text, nullable=False),
        sa.Column("rows_accepted", sa.BigInteger, nullable=False),
        sa.Column("rows_rejected", sa.BigInteger, nullable=False),
        sa.Column(
            "nulls_per_column",
            pg.JSONB,
            nullable=False,
            comment="values turned to NULL per column, by reason",
        ),
        sa.Column(
            "null_values", pg.JSONB, nullable=False, comment="sentinel values treated as NULL"
        ),
        sa.Column("options", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("astropy_version", sa.Text, nullable=False),
        sa.Column("skyclass_version", sa.Text, nullable=False),
        sa.Column("os_user", sa.Text, nullable=False),
        sa.Column("db_user", sa.Text, nullable=False, server_default=sa.text("current_user")),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.CheckConstraint(
            "mode IN ('create', 'append', 'replace')", name="ck_catalog_load_mode_known"
        ),
        sa.CheckConstraint(
            "rows_accepted >= 0 AND rows_rejected >= 0",
            name="ck_catalog_load_counts_nonnegative",
        ),
        sa.ForeignKeyConstraint(
            ["catalog_id"],
            [f"{S}.catalog.catalog_id"],
            name="fk_catalog_load_catalog_id_catalog",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("load_id", name="pk_catalog_load"),
        schema=S,
        comment="Provenance of every file loaded into a catalog (append-only).",
    )
    op.create_index("ix_catalog_load_catalog_id", "catalog_load", ["catalog_id"], schema=S)
    op.create_table(
        "ingest_reject",
        sa.Column("load_id", sa.BigInteger, nullable=False),
        sa.Column("row_number", sa.BigInteger, nullable=False, comment="1-based data row in file"),
        sa.Column("column_name", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("value", sa.Text),
        sa.ForeignKeyConstraint(
            ["load_id"],
            [f"{S}.catalog_load.load_id"],
            name="fk_ingest_reject_load_id_catalog_load",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("load_id", "row_number", name="pk_ingest_reject"),
        schema=S,
        comment="Rows skipped by an ingest run with --on-invalid skip, and why.",
    )


def downgrade() -> None:
    op.drop_table("ingest_reject", schema=S)
    op.drop_index("ix_catalog_load_catalog_id", table_name="catalog_load", schema=S)
    op.drop_table("catalog_load", schema=S)
    op.drop_table("catalog_column", schema=S)
    op.drop_table("catalog", schema=S)
    op.execute("DROP SCHEMA IF EXISTS catalogs CASCADE")
    op.execute("DROP EXTENSION IF EXISTS pg_cron")
    op.execute("DROP EXTENSION IF EXISTS vector")
    op.execute("DROP EXTENSION IF EXISTS q3c")
