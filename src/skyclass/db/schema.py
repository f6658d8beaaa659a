"""The skyclass registry schema as SQLAlchemy metadata.

The migrations in ``skyclass/db/migrations/versions`` create exactly these tables; a test
runs Alembic's autogenerate comparison to catch drift between the two. Catalog
tables themselves live in schema :data:`CATALOG_SCHEMA`, one table per
catalog, created by the ingest step, or one view per registered catalog over
a table of its own schema (:mod:`skyclass.registry.register`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

SCHEMA = "skyclass"
CATALOG_SCHEMA = "catalogs"
NAME_PATTERN = "^[a-z][a-z0-9_]{0,62}$"

metadata = sa.MetaData(
    schema=SCHEMA,
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    },
)

catalog = sa.Table(
    "catalog",
    metadata,
    sa.Column("catalog_id", sa.Integer, sa.Identity(always=True), primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("schema_name", sa.Text, nullable=False, server_default=CATALOG_SCHEMA),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.Column("id_column", sa.Text, comment="source column of object_id; NULL when generated"),
    sa.Column("ra_column", sa.Text, comment="source column of ra; NULL: no sky positions"),
    sa.Column("dec_column", sa.Text, comment="source column of dec; NULL: no sky positions"),
    sa.Column("description", sa.Text),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("current_user")),
    sa.Column(
        "kind",
        sa.Text,
        nullable=False,
        server_default="ingested",
        comment="ingested: skyclass made catalogs.<name>; registered: catalogs.<name> is a view "
        "over source_schema.source_table, which skyclass never drops",
    ),
    sa.Column("source_schema", sa.Text),
    sa.Column("source_table", sa.Text),
    sa.CheckConstraint("kind IN ('ingested', 'registered')", name="kind_known"),
    sa.CheckConstraint(
        "(kind = 'registered') = (source_table IS NOT NULL) "
        "AND (source_schema IS NULL) = (source_table IS NULL)",
        name="source_of_registered",
    ),
    sa.CheckConstraint(f"name ~ '{NAME_PATTERN}'", name="name_is_identifier"),
    # A catalog has sky positions (both columns) or none (training sets without RA/Dec).
    sa.CheckConstraint(
        "(ra_column IS NULL) = (dec_column IS NULL)", name="positions_both_or_neither"
    ),
    comment="One row per catalog table in schema catalogs.",
)

catalog_column = sa.Table(
    "catalog_column",
    metadata,
    sa.Column(
        "catalog_id",
        sa.Integer,
        sa.ForeignKey("skyclass.catalog.catalog_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("column_name", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("source_name", sa.Text, nullable=False, comment="column name in the ingested file"),
    sa.Column("pg_type", sa.Text, nullable=False),
    sa.Column("unit", sa.Text),
    sa.Column("ucd", sa.Text),
    sa.Column("description", sa.Text),
    comment="Columns of each catalog with their units and descriptions.",
)

catalog_load = sa.Table(
    "catalog_load",
    metadata,
    sa.Column("load_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column(
        "catalog_id",
        sa.Integer,
        sa.ForeignKey("skyclass.catalog.catalog_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
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
    sa.Column("null_values", pg.JSONB, nullable=False, comment="sentinel values treated as NULL"),
    sa.Column("options", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("astropy_version", sa.Text, nullable=False),
    sa.Column("skyclass_version", sa.Text, nullable=False),
    sa.Column("os_user", sa.Text, nullable=False),
    sa.Column("db_user", sa.Text, nullable=False, server_default=sa.text("current_user")),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column(
        "finished_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint("mode IN ('create', 'append', 'replace')", name="mode_known"),
    sa.CheckConstraint("rows_accepted >= 0 AND rows_rejected >= 0", name="counts_nonnegative"),
    comment="Provenance of every file loaded into a catalog (append-only).",
)

ingest_reject = sa.Table(
    "ingest_reject",
    metadata,
    sa.Column(
        "load_id",
        sa.BigInteger,
        sa.ForeignKey("skyclass.catalog_load.load_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("row_number", sa.BigInteger, primary_key=True, comment="1-based data row in file"),
    sa.Column("column_name", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("value", sa.Text),
    comment="Rows skipped by an ingest run with --on-invalid skip, and why.",
)
