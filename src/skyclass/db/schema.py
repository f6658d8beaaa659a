"""The skyclass registry schema as SQLAlchemy metadata.

The migrations in ``skyclass/db/migrations/versions`` create exactly these tables,
every table of schema ``skyclass`` (those of 0001 with SQLAlchemy, the others in raw
SQL); ``tests/db/test_migrations.py`` runs Alembic's autogenerate comparison of
tables, columns, types, nullability, comments, keys, unique constraints and indexes
to catch drift between the two. ``prediction`` is a view (revision 0017) over the
run tables listed in ``prediction_table``, which live in schema ``predictions`` (made by
scoring jobs) and are outside the comparison, as are views and CHECK constraints
(Alembic compares neither). Catalog tables themselves live in schema :data:`CATALOG_SCHEMA`, one
table per catalog, created by the ingest step, or one view per registered
catalog over a table of its own schema (:mod:`skyclass.registry.register`).
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

# ---------------------------------------------------------------------------------------
# Tables created in raw SQL by migrations 0003 and later (model registry, deployments,
# scoring jobs and predictions, leases, registered catalogs, feature definitions).
# ---------------------------------------------------------------------------------------

training_snapshot = sa.Table(
    "training_snapshot",
    metadata,
    sa.Column("snapshot_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("feature_set_id", sa.Integer, nullable=False),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("label_source", pg.JSONB, nullable=False),
    sa.Column("classes", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("bin_edges", pg.ARRAY(pg.DOUBLE_PRECISION)),
    sa.Column("n_rows", sa.BigInteger, nullable=False),
    sa.Column("n_folds", sa.Integer, nullable=False),
    sa.Column("calibration_fraction", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("class_counts", pg.JSONB, nullable=False),
    sa.Column("leakage_forced", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.PrimaryKeyConstraint("snapshot_id", name="training_snapshot_pkey"),
    sa.ForeignKeyConstraint(
        ["feature_set_id"],
        ["skyclass.feature_set.feature_set_id"],
        name="training_snapshot_feature_set_id_fkey",
    ),
    comment=(
        "Frozen training sets: snapshots.<table_name> holds object_id, label, fold "
        "(-1 = calibration split) and features."
    ),
)


training_run = sa.Table(
    "training_run",
    metadata,
    sa.Column("training_run_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("model_id", sa.Integer, nullable=False),
    sa.Column("snapshot_id", sa.BigInteger, nullable=False),
    sa.Column("settings", pg.JSONB, nullable=False),
    sa.Column("library_versions", pg.JSONB, nullable=False),
    sa.Column("git_commit", sa.Text),
    sa.Column("os_user", sa.Text, nullable=False),
    sa.Column("db_user", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column(
        "finished_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.PrimaryKeyConstraint("training_run_id", name="training_run_pkey"),
    sa.ForeignKeyConstraint(
        ["model_id"], ["skyclass.model.model_id"], name="training_run_model_id_fkey"
    ),
    sa.ForeignKeyConstraint(
        ["snapshot_id"],
        ["skyclass.training_snapshot.snapshot_id"],
        name="training_run_snapshot_id_fkey",
    ),
    comment=(
        "One `skyclass train`: the snapshot, settings, library versions, git commit, who and when."
    ),
)


evaluation = sa.Table(
    "evaluation",
    metadata,
    sa.Column("evaluation_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("training_run_id", sa.BigInteger, nullable=False),
    sa.Column("estimator", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("params", pg.JSONB, nullable=False),
    sa.Column("seed", sa.BigInteger),
    sa.Column("fit_seconds", pg.DOUBLE_PRECISION),
    sa.Column("confusion", pg.JSONB),
    sa.PrimaryKeyConstraint("evaluation_id", name="evaluation_pkey"),
    sa.ForeignKeyConstraint(
        ["training_run_id"],
        ["skyclass.training_run.training_run_id"],
        name="evaluation_training_run_id_fkey",
        ondelete="CASCADE",
    ),
    sa.UniqueConstraint(
        "training_run_id", "estimator", name="evaluation_training_run_id_estimator_key"
    ),
    comment=(
        "K-fold cross-validation of one estimator (a baseline or a candidate) in a training run."
    ),
)


metric = sa.Table(
    "metric",
    metadata,
    sa.Column("evaluation_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("class_name", sa.Text, nullable=False, server_default=sa.text("''::text")),
    sa.Column("stage", sa.Text, nullable=False, server_default=sa.text("'raw'::text")),
    sa.Column("mean", pg.DOUBLE_PRECISION),
    sa.Column("std", pg.DOUBLE_PRECISION),
    sa.Column("fold_values", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("extra", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.PrimaryKeyConstraint("evaluation_id", "name", "class_name", "stage", name="metric_pkey"),
    sa.ForeignKeyConstraint(
        ["evaluation_id"],
        ["skyclass.evaluation.evaluation_id"],
        name="metric_evaluation_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Metrics as mean ± std over folds; class_name '' means overall; NULL mean = "
        "undefined (e.g. purity of a never-predicted class)."
    ),
)


evaluation_curve = sa.Table(
    "evaluation_curve",
    metadata,
    sa.Column("evaluation_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("class_name", sa.Text, nullable=False, server_default=sa.text("''::text")),
    sa.Column("stage", sa.Text, nullable=False, server_default=sa.text("'raw'::text")),
    sa.Column("data", pg.JSONB, nullable=False),
    sa.PrimaryKeyConstraint(
        "evaluation_id", "name", "class_name", "stage", name="evaluation_curve_pkey"
    ),
    sa.ForeignKeyConstraint(
        ["evaluation_id"],
        ["skyclass.evaluation.evaluation_id"],
        name="evaluation_curve_evaluation_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Plot data from out-of-fold predictions: ROC points, reliability bins, PIT "
        "histogram, z_phot vs z_spec sample."
    ),
)


feature_importance = sa.Table(
    "feature_importance",
    metadata,
    sa.Column("evaluation_id", sa.BigInteger, nullable=False),
    sa.Column("feature", sa.Text, nullable=False),
    sa.Column("method", sa.Text, nullable=False, server_default=sa.text("'permutation'::text")),
    sa.Column("mean", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("std", pg.DOUBLE_PRECISION, nullable=False),
    sa.PrimaryKeyConstraint("evaluation_id", "feature", "method", name="feature_importance_pkey"),
    sa.ForeignKeyConstraint(
        ["evaluation_id"],
        ["skyclass.evaluation.evaluation_id"],
        name="feature_importance_evaluation_id_fkey",
        ondelete="CASCADE",
    ),
    comment="Per-feature importance (permutation: drop in the score).",
)


ablation = sa.Table(
    "ablation",
    metadata,
    sa.Column("training_run_id", sa.BigInteger, nullable=False),
    sa.Column("estimator", sa.Text, nullable=False),
    sa.Column("dropped_group", sa.Text, nullable=False),
    sa.Column("dropped_features", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("delta_mean", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("delta_std", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("fold_deltas", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.PrimaryKeyConstraint(
        "training_run_id", "estimator", "dropped_group", "metric", name="ablation_pkey"
    ),
    sa.ForeignKeyConstraint(
        ["training_run_id"],
        ["skyclass.training_run.training_run_id"],
        name="ablation_training_run_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Metric change (ablated minus full, paired over folds) when a feature group is dropped."
    ),
)


model_version = sa.Table(
    "model_version",
    metadata,
    sa.Column("model_version_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("model_id", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("training_run_id", sa.BigInteger, nullable=False),
    sa.Column("evaluation_id", sa.BigInteger, nullable=False),
    sa.Column("snapshot_id", sa.BigInteger, nullable=False),
    sa.Column("feature_set_id", sa.Integer, nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("estimator", sa.Text, nullable=False),
    sa.Column("params", pg.JSONB, nullable=False),
    sa.Column("n_features", sa.Integer, nullable=False),
    sa.Column("classes", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("bin_edges", pg.ARRAY(pg.DOUBLE_PRECISION)),
    sa.Column("checkpoint", pg.BYTEA, nullable=False),
    sa.Column("calibration_kind", sa.Text, nullable=False, server_default=sa.text("'none'::text")),
    sa.Column(
        "calibration_params",
        pg.ARRAY(pg.DOUBLE_PRECISION),
        nullable=False,
        server_default=sa.text("'{}'::double precision[]"),
    ),
    sa.Column(
        "calibration_offsets",
        pg.ARRAY(sa.Integer),
        nullable=False,
        server_default=sa.text("'{}'::integer[]"),
    ),
    sa.Column(
        "calibration_eps",
        pg.DOUBLE_PRECISION,
        nullable=False,
        server_default=sa.text("0.000000000001"),
    ),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.PrimaryKeyConstraint("model_version_id", name="model_version_pkey"),
    sa.ForeignKeyConstraint(
        ["evaluation_id"],
        ["skyclass.evaluation.evaluation_id"],
        name="model_version_evaluation_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["feature_set_id"],
        ["skyclass.feature_set.feature_set_id"],
        name="model_version_feature_set_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["model_id"], ["skyclass.model.model_id"], name="model_version_model_id_fkey"
    ),
    sa.ForeignKeyConstraint(
        ["snapshot_id"],
        ["skyclass.training_snapshot.snapshot_id"],
        name="model_version_snapshot_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["training_run_id"],
        ["skyclass.training_run.training_run_id"],
        name="model_version_training_run_id_fkey",
    ),
    sa.UniqueConstraint("model_id", "version", name="model_version_model_id_version_key"),
    sa.Index("ix_model_version_evaluation_id", "evaluation_id"),
    comment=(
        "Immutable model versions: estimator, snapshot, feature set, classes or bins,"
        " Treelite checkpoint, calibration map."
    ),
)


scoring_run = sa.Table(
    "scoring_run",
    metadata,
    sa.Column("run_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("catalog_id", sa.Integer, nullable=False),
    sa.Column("feature_set_id", sa.Integer, nullable=False),
    sa.Column("deployment", sa.Text),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("write_kind", sa.Text, nullable=False),
    sa.Column("scorer", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'running'::text")),
    sa.Column("chunk_size", sa.Integer, nullable=False),
    sa.Column("chunks_total", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("chunks_done", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("rows_scored", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("objects_without_features", sa.BigInteger),
    sa.Column("catalog_table", sa.Text, nullable=False),
    sa.Column("feature_table", sa.Text, nullable=False),
    sa.Column("target_table", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("workers", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column(
        "started_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.text("clock_timestamp()"),
    ),
    sa.Column("resumed_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
    sa.Column("db_user", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.Column(
        "backend_pid", sa.Integer, nullable=False, server_default=sa.text("pg_backend_pid()")
    ),
    sa.Column("triggered_by", sa.Text, nullable=False),
    sa.Column("schedule_name", sa.Text),
    sa.PrimaryKeyConstraint("run_id", name="scoring_run_pkey"),
    sa.ForeignKeyConstraint(
        ["catalog_id"], ["skyclass.catalog.catalog_id"], name="scoring_run_catalog_id_fkey"
    ),
    sa.ForeignKeyConstraint(
        ["feature_set_id"],
        ["skyclass.feature_set.feature_set_id"],
        name="scoring_run_feature_set_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="scoring_run_model_version_id_fkey",
    ),
    sa.Index("ix_scoring_run_job", "model_version_id", "catalog_id", "run_id"),
    sa.Index(
        "ix_scoring_run_schedule",
        "schedule_name",
        "run_id",
        postgresql_where=sa.text("schedule_name IS NOT NULL"),
    ),
    comment=(
        "One rescoring job of a model version over a catalog: mode, progress, "
        "outcome, who, which backend. An interrupted or failed run is resumed "
        "(attempts + 1) by the next start of the same job; one job runs at a time "
        "(skyclass.scoring_lease)."
    ),
)


scoring_chunk = sa.Table(
    "scoring_chunk",
    metadata,
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("chunk_no", sa.Integer, nullable=False),
    sa.Column("first_object_id", sa.BigInteger, nullable=False),
    sa.Column("last_object_id", sa.BigInteger, nullable=False),
    sa.Column("planned_rows", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger),
    sa.Column("objects_without_features", sa.BigInteger),
    sa.Column("done_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("run_id", "chunk_no", name="scoring_chunk_pkey"),
    sa.ForeignKeyConstraint(
        ["run_id"],
        ["skyclass.scoring_run.run_id"],
        name="scoring_chunk_run_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "The work queue of a scoring run: object_id ranges; done_at is set in the "
        "same transaction that writes the chunk's predictions, so a killed job never "
        "leaves gaps or duplicates."
    ),
)


scoring_lease = sa.Table(
    "scoring_lease",
    metadata,
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("catalog_id", sa.Integer, nullable=False),
    sa.Column("run_id", sa.BigInteger),
    sa.Column("holder_pid", sa.Integer),
    sa.Column("holder_started", sa.DateTime(timezone=True)),
    sa.Column("holder_user", sa.Text),
    sa.Column("taken_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("model_version_id", "catalog_id", name="scoring_lease_pkey"),
    sa.ForeignKeyConstraint(
        ["catalog_id"], ["skyclass.catalog.catalog_id"], name="scoring_lease_catalog_id_fkey"
    ),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="scoring_lease_model_version_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["run_id"],
        ["skyclass.scoring_run.run_id"],
        name="scoring_lease_run_id_fkey",
        ondelete="SET NULL",
    ),
    comment=(
        "Single flight of scoring jobs: one row per model version and catalog naming "
        "the backend (pid and start time) that runs the job. Taken by "
        "skyclass.start_scoring_run, released by finish/fail, stale once that backend"
        " is gone. Only roles that may UPDATE it start jobs."
    ),
)


operation_lock = sa.Table(
    "operation_lock",
    metadata,
    sa.Column(
        "resource",
        sa.Text,
        nullable=False,
        comment="catalog:<catalog name> or feature_set:<feature set name>:<spec sha256>",
    ),
    sa.Column(
        "created_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.func.now(),
        comment="When the row was first needed",
    ),
    sa.PrimaryKeyConstraint("resource", name="operation_lock_pkey"),
    comment=(
        "Single flight: one row per catalog (catalog:<name>) and feature-set version "
        "(feature_set:<name>:<spec_hash>); ingest, register and drop lock the catalog's row, a "
        "feature build its version's row (FOR UPDATE, held until the transaction ends). Only "
        "roles that may UPDATE it take a lock."
    ),
)


scoring_schedule = sa.Table(
    "scoring_schedule",
    metadata,
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("catalog_id", sa.Integer, nullable=False),
    sa.Column("cron", sa.Text, nullable=False),
    sa.Column("only_new", sa.Boolean, nullable=False, server_default=sa.text("false")),
    sa.Column("chunk_size", sa.Integer, nullable=False, server_default=sa.text("50000")),
    sa.Column("cron_database", sa.Text, nullable=False),
    sa.Column("cron_jobname", sa.Text, nullable=False),
    sa.Column("cron_jobid", sa.BigInteger, nullable=False),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.PrimaryKeyConstraint("name", name="scoring_schedule_pkey"),
    sa.ForeignKeyConstraint(
        ["catalog_id"], ["skyclass.catalog.catalog_id"], name="scoring_schedule_catalog_id_fkey"
    ),
    comment=(
        "Rescoring schedules registered with pg_cron by skyclass schedule add (cron "
        "job name and id)."
    ),
)


prediction_table = sa.Table(
    "prediction_table",
    metadata,
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("catalog_id", sa.Integer, nullable=False),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("run_id", name="prediction_table_pkey"),
    sa.ForeignKeyConstraint(
        ["run_id"], ["skyclass.scoring_run.run_id"], name="prediction_table_run_id_fkey"
    ),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="prediction_table_model_version_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["catalog_id"], ["skyclass.catalog.catalog_id"], name="prediction_table_catalog_id_fkey"
    ),
    sa.UniqueConstraint("table_name", name="prediction_table_table_name_key"),
    sa.Index("ix_prediction_table_model_version_id_catalog_id", "model_version_id", "catalog_id"),
    comment=(
        "The published prediction tables: one row per run whose table the view "
        "skyclass.prediction shows (the last full run of a version and catalog, and the "
        "only_new runs after it)."
    ),
)


deployment = sa.Table(
    "deployment",
    metadata,
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("model_id", sa.Integer, nullable=False),
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.Column("updated_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.PrimaryKeyConstraint("name", name="deployment_pkey"),
    sa.ForeignKeyConstraint(
        ["model_id"], ["skyclass.model.model_id"], name="deployment_model_id_fkey"
    ),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="deployment_model_version_id_fkey",
    ),
    sa.Index("ix_deployment_model_version_id", "model_version_id"),
    comment=(
        "Named aliases of model versions (e.g. sgq_current). A deployment belongs to "
        "one model: switching it to a version of another model is refused. Switch "
        "with skyclass.deploy() or one UPDATE; every change is logged in "
        "skyclass.deployment_history."
    ),
)


deployment_history = sa.Table(
    "deployment_history",
    metadata,
    sa.Column("history_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("model_version_id", sa.BigInteger),
    sa.Column("previous_version_id", sa.BigInteger),
    sa.Column(
        "switched_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.Column("switched_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.PrimaryKeyConstraint("history_id", name="deployment_history_pkey"),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="deployment_history_model_version_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["previous_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="deployment_history_previous_version_id_fkey",
    ),
    sa.Index("ix_deployment_history_name", "name", "switched_at"),
    comment=(
        "Append-only log of deployment switches: which version a name pointed to, "
        "since when, set by whom (model_version_id NULL = removed)."
    ),
)


model = sa.Table(
    "model",
    metadata,
    sa.Column("model_id", sa.Integer, sa.Identity(always=True), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.PrimaryKeyConstraint("model_id", name="model_pkey"),
    sa.UniqueConstraint("name", name="model_name_key"),
    comment="Named models; each has integer versions in skyclass.model_version.",
)


catalog_registration = sa.Table(
    "catalog_registration",
    metadata,
    sa.Column("registration_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("catalog_id", sa.Integer, nullable=False),
    sa.Column("source_schema", sa.Text, nullable=False),
    sa.Column("source_table", sa.Text, nullable=False),
    sa.Column("source_kind", sa.Text, nullable=False),
    sa.Column("column_map", pg.JSONB, nullable=False),
    sa.Column("row_estimate", sa.BigInteger, nullable=False),
    sa.Column("checks", pg.JSONB, nullable=False),
    sa.Column("q3c_index", sa.Text),
    sa.Column("index_created", sa.Boolean, nullable=False, server_default=sa.text("false")),
    sa.Column("skyclass_version", sa.Text, nullable=False),
    sa.Column("os_user", sa.Text, nullable=False),
    sa.Column("db_user", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.Column(
        "registered_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.PrimaryKeyConstraint("registration_id", name="catalog_registration_pkey"),
    sa.ForeignKeyConstraint(
        ["catalog_id"],
        ["skyclass.catalog.catalog_id"],
        name="catalog_registration_catalog_id_fkey",
        ondelete="CASCADE",
    ),
    sa.Index("ix_catalog_registration_catalog_id", "catalog_id"),
    comment=(
        "Provenance of a registered catalog: the table used in place, its column map,"
        " row estimate, the checks run with their counts, the Q3C index, who and "
        "when."
    ),
)


model_artifact = sa.Table(
    "model_artifact",
    metadata,
    sa.Column("artifact_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("sha256", pg.BYTEA, nullable=False),
    sa.Column("library", pg.BYTEA, nullable=False),
    sa.Column("n_features", sa.Integer, nullable=False),
    sa.Column("n_outputs", sa.Integer, nullable=False),
    sa.Column("output_transform", sa.Text, nullable=False),
    sa.Column("treelite_version", sa.Text, nullable=False),
    sa.Column("tl2cgen_version", sa.Text, nullable=False),
    sa.Column("compiler", sa.Text, nullable=False),
    sa.Column("compiler_flags", sa.Text, nullable=False),
    sa.Column("compile_seconds", pg.DOUBLE_PRECISION),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.Column(
        "registered_by",
        sa.String,
        comment=(
            "The role that inserted the row, stamped by a trigger (NULL: registered "
            "before revision 0008). The extension loads the library only while this "
            "role is a superuser."
        ),
    ),
    sa.PrimaryKeyConstraint("artifact_id", name="model_artifact_pkey"),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="model_artifact_model_version_id_fkey",
    ),
    sa.UniqueConstraint("model_version_id", name="model_artifact_model_version_id_key"),
    sa.Index("ix_model_artifact_sha256", "sha256"),
    comment=(
        "Compiled libraries of model versions with their sha256, registered by "
        "superusers only; the extension re-hashes the bytes and checks the registrar "
        "before loading them."
    ),
)


feature_definition = sa.Table(
    "feature_definition",
    metadata,
    sa.Column("definition_hash", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("definition", pg.JSONB, nullable=False),
    sa.Column("feature_names", pg.ARRAY(sa.Text), nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.PrimaryKeyConstraint("definition_hash", name="feature_definition_pkey"),
    sa.Index("ix_feature_definition_name", "name"),
    comment=(
        "Feature definitions: a name and ordered feature expressions, versioned by "
        "the sha256 of their canonical JSON (no catalog); skyclass.feature_set holds "
        "their builds per catalog."
    ),
)


feature_set = sa.Table(
    "feature_set",
    metadata,
    sa.Column("feature_set_id", sa.Integer, sa.Identity(always=True), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("spec_hash", sa.Text, nullable=False),
    sa.Column(
        "catalog_id",
        sa.Integer,
        comment=(
            "The catalog built on; NULL once that catalog was dropped (its table is "
            "gone, the row stays for the model versions trained on it)"
        ),
    ),
    sa.Column("spec", pg.JSONB, nullable=False),
    sa.Column("spec_text", sa.Text, nullable=False),
    sa.Column("feature_names", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.Column("definition_hash", sa.Text, nullable=False),
    sa.Column(
        "column_map",
        pg.JSONB,
        nullable=False,
        server_default=sa.text("'{}'::jsonb"),
        comment=(
            "Spec column -> catalog column used by this build ({} when the names are the same)"
        ),
    ),
    sa.Column("catalog_name", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("feature_set_id", name="feature_set_pkey"),
    sa.ForeignKeyConstraint(
        ["catalog_id"],
        ["skyclass.catalog.catalog_id"],
        name="feature_set_catalog_id_fkey",
        ondelete="SET NULL",
    ),
    sa.ForeignKeyConstraint(
        ["definition_hash"],
        ["skyclass.feature_definition.definition_hash"],
        name="feature_set_definition_hash_fkey",
    ),
    sa.UniqueConstraint("name", "spec_hash", name="feature_set_name_spec_hash_key"),
    sa.Index("ix_feature_set_definition", "definition_hash", "catalog_id"),
    comment=(
        "Feature builds: a definition computed for one catalog through a column map; "
        "spec is the canonical build spec, spec_hash its sha256, "
        "features.<table_name> the rows."
    ),
)


domain_shift = sa.Table(
    "domain_shift",
    metadata,
    sa.Column("domain_shift_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("catalog_id", sa.Integer),
    sa.Column("catalog_name", sa.Text, nullable=False),
    sa.Column("feature_set_id", sa.Integer, nullable=False),
    sa.Column("n_train", sa.BigInteger, nullable=False),
    sa.Column("n_sample", sa.BigInteger, nullable=False),
    sa.Column("n_catalog", sa.BigInteger, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("classifier", pg.JSONB, nullable=False),
    sa.Column("auc", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("auc_std", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("fold_auc", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("w_min", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("w_max", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("train_clipped", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("catalog_clipped", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("uncovered_threshold", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("uncovered_fraction", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("n_effective", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("reliable", sa.Boolean, nullable=False),
    sa.Column(
        "problems", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")
    ),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.Column(
        "domain_version_id",
        sa.BigInteger,
        comment=(
            "The domain classifier as a model version (classes training, catalog); NULL before 0015"
        ),
    ),
    sa.Column(
        "scorer",
        sa.Text,
        nullable=False,
        server_default=sa.text("'python'::text"),
        comment=(
            "Where the catalog propensities were computed: database (skyclass.predict) or python"
        ),
    ),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="domain_shift_model_version_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["domain_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="domain_shift_domain_version_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["catalog_id"],
        ["skyclass.catalog.catalog_id"],
        name="domain_shift_catalog_id_fkey",
        ondelete="CASCADE",
    ),
    sa.ForeignKeyConstraint(
        ["feature_set_id"],
        ["skyclass.feature_set.feature_set_id"],
        name="domain_shift_feature_set_id_fkey",
        ondelete="CASCADE",
    ),
    sa.Index("ix_domain_shift_pair", "model_version_id", "catalog_id"),
    comment=(
        "Domain classifier of a model version's training snapshot against a catalog sample: "
        "CV AUC (0.5 = no detectable shift), weight clipping, uncovered fraction, reliability."
    ),
)


domain_object = sa.Table(
    "domain_object",
    metadata,
    sa.Column("domain_shift_id", sa.BigInteger, nullable=False),
    sa.Column("object_id", sa.BigInteger, nullable=False),
    sa.Column("propensity", sa.REAL, nullable=False),
    sa.Column("weight", sa.REAL, nullable=False),
    sa.Column("clipped", sa.Boolean, nullable=False),
    sa.PrimaryKeyConstraint("domain_shift_id", "object_id", name="domain_object_pkey"),
    sa.ForeignKeyConstraint(
        ["domain_shift_id"],
        ["skyclass.domain_shift.domain_shift_id"],
        name="domain_object_domain_shift_id_fkey",
        ondelete="CASCADE",
    ),
    comment="Per catalog object: propensity p(application | x) and clipped importance weight.",
)


domain_metric = sa.Table(
    "domain_metric",
    metadata,
    sa.Column("domain_shift_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("class_name", sa.Text, nullable=False, server_default=sa.text("''::text")),
    sa.Column("value", pg.DOUBLE_PRECISION),
    sa.Column("std", pg.DOUBLE_PRECISION),
    sa.Column("unweighted", pg.DOUBLE_PRECISION),
    sa.Column("n_effective", pg.DOUBLE_PRECISION, nullable=False),
    sa.PrimaryKeyConstraint("domain_shift_id", "name", "class_name", name="domain_metric_pkey"),
    sa.ForeignKeyConstraint(
        ["domain_shift_id"],
        ["skyclass.domain_shift.domain_shift_id"],
        name="domain_metric_domain_shift_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Importance-weighted expected metric on the catalog (bootstrap std, Kish n_eff) beside "
        "the unweighted value from the same out-of-fold predictions; NULL = undefined."
    ),
)


ood_model = sa.Table(
    "ood_model",
    metadata,
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("ood_version_id", sa.BigInteger, nullable=False),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("params", pg.JSONB, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("feature_names", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("low", pg.ARRAY(sa.REAL), nullable=False),
    sa.Column("high", pg.ARRAY(sa.REAL), nullable=False),
    sa.Column("fill", pg.ARRAY(sa.REAL), nullable=False),
    sa.Column("reference", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("threshold", sa.REAL, nullable=False),
    sa.Column("n_fit", sa.BigInteger, nullable=False),
    sa.Column("n_reference", sa.BigInteger, nullable=False),
    sa.Column("reference_rows", sa.Text, nullable=False),
    sa.Column("fit_seconds", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.PrimaryKeyConstraint("model_version_id", name="ood_model_pkey"),
    sa.UniqueConstraint("ood_version_id", name="ood_model_ood_version_id_key"),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="ood_model_model_version_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["ood_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="ood_model_ood_version_id_fkey",
    ),
    comment=(
        "The OOD forest of a model version (an anomaly version, compiled like any model), fitted "
        "on its training snapshot: per-feature training low/high (range flags) and NaN fill, "
        "reference quantiles of held-out training scores (score -> percentile), in_domain "
        "threshold."
    ),
)


ood_run = sa.Table(
    "ood_run",
    metadata,
    sa.Column("ood_run_id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("catalog_id", sa.Integer, nullable=False),
    sa.Column("feature_table", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'running'::text")),
    sa.Column("chunk_size", sa.Integer, nullable=False),
    sa.Column("chunks_total", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("chunks_done", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("rows_scored", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("trigger", sa.Text, nullable=False, server_default=sa.text("'manual'::text")),
    sa.Column(
        "started_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.text("clock_timestamp()"),
    ),
    sa.Column("resumed_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
    sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.PrimaryKeyConstraint("ood_run_id", name="ood_run_pkey"),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.ood_model.model_version_id"],
        name="ood_run_model_version_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["catalog_id"],
        ["skyclass.catalog.catalog_id"],
        name="ood_run_catalog_id_fkey",
        ondelete="CASCADE",
    ),
    sa.Index("ix_ood_run_job", "model_version_id", "catalog_id", "ood_run_id"),
    comment=(
        "One OOD job of a model version over a catalog: progress and outcome. An interrupted "
        "run is resumed (attempts + 1) by the next start of the same job; one runs at a time "
        "per pair."
    ),
)


ood_chunk = sa.Table(
    "ood_chunk",
    metadata,
    sa.Column("ood_run_id", sa.BigInteger, nullable=False),
    sa.Column("chunk_no", sa.Integer, nullable=False),
    sa.Column("first_object_id", sa.BigInteger, nullable=False),
    sa.Column("last_object_id", sa.BigInteger, nullable=False),
    sa.Column("rows_scored", sa.BigInteger),
    sa.Column("done_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("ood_run_id", "chunk_no", name="ood_chunk_pkey"),
    sa.ForeignKeyConstraint(
        ["ood_run_id"],
        ["skyclass.ood_run.ood_run_id"],
        name="ood_chunk_ood_run_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Planned object-id ranges of an OOD run; done_at is set in the transaction that wrote "
        "the chunk's scores, so a killed job resumes without gaps or duplicates."
    ),
)


ood_score = sa.Table(
    "ood_score",
    metadata,
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("catalog_id", sa.Integer, nullable=False),
    sa.Column("object_id", sa.BigInteger, nullable=False),
    sa.Column("raw_score", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("percentile", sa.REAL, nullable=False),
    sa.Column("out_of_range", pg.ARRAY(sa.Boolean), nullable=False),
    sa.Column("in_domain", sa.Boolean, nullable=False),
    sa.Column("ood_run_id", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("model_version_id", "catalog_id", "object_id", name="ood_score_pkey"),
    comment=(
        "Per model version, catalog and object: OOD forest score (higher = stranger), its "
        "percentile among held-out training scores, out_of_range[i] for feature i of "
        "skyclass.ood_model.feature_names (outside the training [low, high]; NaN never), and "
        "in_domain = percentile < threshold (99) and no feature out of range."
    ),
)


interval_calibration = sa.Table(
    "interval_calibration",
    metadata,
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("level", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("bin", sa.Integer, nullable=False),
    sa.Column("ood_lo", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("ood_hi", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("conformal_quantile", pg.DOUBLE_PRECISION),
    sa.Column("n", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("model_version_id", "level", "bin", name="interval_calibration_pkey"),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="interval_calibration_model_version_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Mondrian conformal quantile per photo-z model version, OOD-percentile bin "
        "[ood_lo, ood_hi) and nominal level, from the calibration split (NULL: too few "
        "objects in the bin)."
    ),
)


probability_recalibration = sa.Table(
    "probability_recalibration",
    metadata,
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("bin", sa.Integer, nullable=False),
    sa.Column("ood_lo", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("ood_hi", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("temperature", pg.DOUBLE_PRECISION),
    sa.Column("n", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("model_version_id", "bin", name="probability_recalibration_pkey"),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="probability_recalibration_model_version_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Temperature per classification model version and OOD-percentile bin [ood_lo, ood_hi), "
        "fitted on the calibration split (NULL: too few objects in the bin)."
    ),
)


drift_reference = sa.Table(
    "drift_reference",
    metadata,
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("snapshot_id", sa.BigInteger, nullable=False),
    sa.Column(
        "source",
        sa.Text,
        nullable=False,
        comment="training_snapshot, or first_run when the snapshot holds no rows (no training "
        "comparison)",
    ),
    sa.Column("n_train", sa.BigInteger, nullable=False),
    sa.Column("nside", sa.Integer, nullable=False),
    sa.Column("feature_names", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("feature_edges", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("feature_lo", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("feature_hi", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("feature_std", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("magnitude_feature", sa.Text),
    sa.Column("magnitude_edges", pg.ARRAY(pg.DOUBLE_PRECISION)),
    sa.Column("classes", pg.ARRAY(sa.Text), nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.PrimaryKeyConstraint("model_version_id", name="drift_reference_pkey"),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="drift_reference_model_version_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["snapshot_id"],
        ["skyclass.training_snapshot.snapshot_id"],
        name="drift_reference_snapshot_id_fkey",
    ),
    comment=(
        "Per model version, the fixed bins of its drift summaries: per-feature decile edges of "
        "the training snapshot (2-D: feature x 9 edges), outer bin ends and robust sigmas, the "
        "magnitude feature and its 0.5-mag bin edges, the HEALPix nside of the sky regions."
    ),
)


drift_reference_bin = sa.Table(
    "drift_reference_bin",
    metadata,
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("bin", sa.Integer, nullable=False),
    sa.Column("n_objects", sa.BigInteger, nullable=False),
    sa.Column("feature_counts", pg.ARRAY(sa.BigInteger), nullable=False),
    sa.Column("class_counts", pg.ARRAY(sa.BigInteger), nullable=False),
    sa.PrimaryKeyConstraint("model_version_id", "scope", "bin", name="drift_reference_bin_pkey"),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.drift_reference.model_version_id"],
        name="drift_reference_bin_model_version_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Histograms of the training snapshot in the bins of skyclass.drift_reference: all "
        "objects (scope all, bin 0) and per magnitude bin; feature_counts is feature x (10 bins "
        "+ missing), class_counts the labels per class."
    ),
)


drift_run = sa.Table(
    "drift_run",
    metadata,
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("catalog_id", sa.Integer, nullable=False),
    sa.Column("deployment", sa.Text),
    sa.Column("previous_run_id", sa.BigInteger),
    sa.Column("nside", sa.Integer),
    sa.Column("n_objects", sa.BigInteger, nullable=False),
    sa.Column("sample_fraction", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("seconds", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.PrimaryKeyConstraint("run_id", name="drift_run_pkey"),
    sa.ForeignKeyConstraint(
        ["run_id"],
        ["skyclass.scoring_run.run_id"],
        name="drift_run_run_id_fkey",
        ondelete="CASCADE",
    ),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.drift_reference.model_version_id"],
        name="drift_run_model_version_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["previous_run_id"],
        ["skyclass.drift_run.run_id"],
        name="drift_run_previous_run_id_fkey",
        ondelete="SET NULL",
    ),
    sa.Index("ix_drift_run_job", "catalog_id", "deployment", "model_version_id", "run_id"),
    comment=(
        "One row per scoring run whose drift was summarised (in its finish step): the previous "
        "run it is compared with, the HEALPix nside (NULL: catalog without positions), the "
        "share of objects in the feature-histogram sample and the seconds the step took."
    ),
)


drift_summary = sa.Table(
    "drift_summary",
    metadata,
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column(
        "bin",
        sa.Integer,
        nullable=False,
        comment="all: 0; region: HEALPix RING pixel at drift_run.nside; magnitude: 0 brighter "
        "than the first edge, k between edges k and k+1, -1 magnitude missing",
    ),
    sa.Column("n_objects", sa.BigInteger, nullable=False),
    sa.Column("n_sampled", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column(
        "feature_counts",
        pg.ARRAY(sa.BigInteger),
        nullable=False,
        server_default=sa.text("'{}'::bigint[]"),
    ),
    sa.Column("class_counts", pg.ARRAY(sa.BigInteger), nullable=False),
    sa.Column("top_probability_mean", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("ood_fraction", pg.DOUBLE_PRECISION),
    sa.Column("ra_mean", pg.DOUBLE_PRECISION),
    sa.Column("dec_mean", pg.DOUBLE_PRECISION),
    sa.PrimaryKeyConstraint("run_id", "scope", "bin", name="drift_summary_pkey"),
    sa.ForeignKeyConstraint(
        ["run_id"],
        ["skyclass.drift_run.run_id"],
        name="drift_summary_run_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Per scoring run, per sky region (HEALPix RING pixel), per magnitude bin and overall "
        "(bin 0), over a fixed hash sample of the run's objects (all up to 100,000): objects "
        "(n_sampled; n_objects the estimate for the whole run), predicted class counts, mean "
        "top probability, OOD fraction (NULL until OOD scores exist), mean position, feature "
        "histograms (feature x (10 bins + missing))."
    ),
)


drift = sa.Table(
    "drift",
    metadata,
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("reference", sa.Text, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("bin", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Text, nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("value", pg.DOUBLE_PRECISION),
    sa.Column("n_objects", sa.BigInteger, nullable=False),
    sa.Column("n_reference", sa.BigInteger, nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint(
        "run_id", "reference", "scope", "bin", "quantity", "metric", name="drift_pkey"
    ),
    sa.ForeignKeyConstraint(
        ["run_id"], ["skyclass.drift_run.run_id"], name="drift_run_id_fkey", ondelete="CASCADE"
    ),
    sa.Index("ix_drift_level", "run_id", "level"),
    comment=(
        "Drift of a scoring run against the training snapshot and the previous run of the same "
        "deployment and catalog, per region, magnitude bin and overall: PSI and "
        "Wasserstein/sigma of each feature, PSI of the predicted classes, change of mean top "
        "probability, OOD fraction and object count, with its alert level (docs/drift.md)."
    ),
)


shard = sa.Table(
    "shard",
    metadata,
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("server_name", sa.Text, nullable=False),
    sa.Column("conninfo", sa.Text, nullable=False),
    sa.Column("added_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    sa.Column(
        "added_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.PrimaryKeyConstraint("name", name="shard_pkey"),
    sa.UniqueConstraint("server_name", name="shard_server_name_key"),
    sa.CheckConstraint("name ~ '^[a-z][a-z0-9_]{0,39}$'", name="shard_name_check"),
    comment=(
        "A PostgreSQL database holding part of sharded catalogs: its postgres_fdw foreign "
        "server (extensions q3c and skyclass, async_capable) and its connection string without "
        "password (the CLI connects there to run scoring jobs in place)."
    ),
)


shard_range = sa.Table(
    "shard_range",
    metadata,
    sa.Column("catalog_name", sa.Text, nullable=False),
    sa.Column("shard_name", sa.Text, nullable=False),
    sa.Column("ipix_lo", sa.BigInteger),
    sa.Column("ipix_hi", sa.BigInteger),
    sa.Column("object_count", sa.BigInteger, nullable=False),
    sa.Column(
        "attached_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.PrimaryKeyConstraint("catalog_name", "shard_name", name="shard_range_pkey"),
    sa.ForeignKeyConstraint(
        ["shard_name"],
        ["skyclass.shard.name"],
        name="shard_range_shard_name_fkey",
        ondelete="RESTRICT",
    ),
    sa.CheckConstraint(
        "ipix_lo IS NULL OR ipix_hi IS NULL OR ipix_lo < ipix_hi", name="shard_range_check"
    ),
    comment=(
        "The Q3C pixel range [ipix_lo, ipix_hi) of sharded catalog catalog_name held by shard "
        "shard_name (NULL: unbounded), as the coordinator's foreign partition bounds say; "
        "object_count as counted when attached."
    ),
)


tap_job = sa.Table(
    "tap_job",
    metadata,
    sa.Column("job_id", sa.Text, nullable=False),
    sa.Column("phase", sa.Text, nullable=False, server_default=sa.text("'PENDING'::text")),
    sa.Column("run_id", sa.Text),
    sa.Column("parameters", pg.JSONB, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("destruction", sa.DateTime(timezone=True), nullable=False),
    sa.Column("execution_duration", sa.Integer, nullable=False),
    sa.Column("error_message", sa.Text),
    sa.Column("result", pg.BYTEA),
    sa.Column("result_type", sa.Text),
    sa.Column("result_rows", sa.BigInteger),
    sa.Column("overflow", sa.Boolean),
    sa.Column("backend_pid", sa.Integer),
    sa.PrimaryKeyConstraint("job_id", name="tap_job_pkey"),
    sa.Index("ix_tap_job_destruction", "destruction"),
    comment=(
        "UWS 1.1 jobs of the TAP service (/tap/async): parameters, phase, times, destruction, "
        "error and the serialized result; rows are deleted at their destruction time."
    ),
)


def _run_columns() -> list[sa.Column[object]]:
    """The columns an explanation or dependence run shares: version, catalog, feature build."""
    return [
        sa.Column("model_version_id", sa.BigInteger, nullable=False),
        sa.Column("catalog_id", sa.Integer),
        sa.Column("catalog_name", sa.Text, nullable=False),
        sa.Column("feature_set_id", sa.Integer, nullable=False),
    ]


def _run_constraints(table: str) -> list[sa.schema.SchemaItem]:
    """Foreign keys and the pair index of :func:`_run_columns`."""
    return [
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["skyclass.model_version.model_version_id"],
            name=f"{table}_model_version_id_fkey",
        ),
        sa.ForeignKeyConstraint(
            ["catalog_id"],
            ["skyclass.catalog.catalog_id"],
            name=f"{table}_catalog_id_fkey",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["feature_set_id"],
            ["skyclass.feature_set.feature_set_id"],
            name=f"{table}_feature_set_id_fkey",
            ondelete="CASCADE",
        ),
        sa.Index(f"ix_{table}_pair", "model_version_id", "catalog_id"),
    ]


def _created_columns() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("created_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
    ]


explanation_run = sa.Table(
    "explanation_run",
    metadata,
    sa.Column("explanation_run_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    *_run_columns(),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("model_output", sa.Text, nullable=False),
    sa.Column("feature_names", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("output_names", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("base", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("selection", sa.Text, nullable=False),
    sa.Column("n_objects", sa.BigInteger, nullable=False),
    sa.Column("seconds", pg.DOUBLE_PRECISION, nullable=False),
    *_created_columns(),
    *_run_constraints("explanation_run"),
    comment=(
        "One `skyclass explain` call: exact TreeSHAP of a model version's raw outputs on catalog "
        "objects; the base value per output, the feature and output order of its rows."
    ),
)


explanation = sa.Table(
    "explanation",
    metadata,
    sa.Column("explanation_run_id", sa.BigInteger, nullable=False),
    sa.Column("object_id", sa.BigInteger, nullable=False),
    sa.Column("margin", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("contributions", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.PrimaryKeyConstraint("explanation_run_id", "object_id", name="explanation_pkey"),
    sa.ForeignKeyConstraint(
        ["explanation_run_id"],
        ["skyclass.explanation_run.explanation_run_id"],
        name="explanation_explanation_run_id_fkey",
        ondelete="CASCADE",
    ),
    sa.Index("ix_explanation_object", "object_id"),
    comment=(
        "Per object: the raw margin per output and the contribution of every feature to every "
        "output, feature-major (contributions[f * n_outputs + k + 1]); base + sum = margin."
    ),
)


dependence_run = sa.Table(
    "dependence_run",
    metadata,
    sa.Column("dependence_run_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    *_run_columns(),
    sa.Column("feature", sa.Text, nullable=False),
    sa.Column("grid", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("second_feature", sa.Text),
    sa.Column("second_quantile", pg.DOUBLE_PRECISION),
    sa.Column("second_value", pg.DOUBLE_PRECISION),
    sa.Column("median_object", pg.ARRAY(pg.DOUBLE_PRECISION), nullable=False),
    sa.Column("n_reference", sa.Integer, nullable=False),
    sa.Column("n_ice", sa.Integer, nullable=False),
    *_created_columns(),
    *_run_constraints("dependence_run"),
    comment=(
        "A partial-dependence / ICE computation in the database: one feature varied over a grid "
        "(2nd to 98th percentile), optionally a second feature held at a quantile."
    ),
)


dependence_curve = sa.Table(
    "dependence_curve",
    metadata,
    sa.Column("dependence_run_id", sa.BigInteger, nullable=False),
    sa.Column("curve", sa.Text, nullable=False),
    sa.Column("object_id", sa.BigInteger, nullable=False, server_default=sa.text("'-1'::integer")),
    sa.Column("class_name", sa.Text, nullable=False),
    sa.Column("grid_index", sa.Integer, nullable=False),
    sa.Column("value", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("probability", pg.DOUBLE_PRECISION, nullable=False),
    sa.PrimaryKeyConstraint(
        "dependence_run_id",
        "curve",
        "object_id",
        "class_name",
        "grid_index",
        name="dependence_curve_pkey",
    ),
    sa.ForeignKeyConstraint(
        ["dependence_run_id"],
        ["skyclass.dependence_run.dependence_run_id"],
        name="dependence_curve_dependence_run_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Calibrated class probability along the grid: the mean over the ICE objects (pd), the "
        "median object (median) and each sampled object (ice; object_id = -1 otherwise)."
    ),
)


label_queue = sa.Table(
    "label_queue",
    metadata,
    sa.Column("queue_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("model_version_id", sa.BigInteger, nullable=False),
    sa.Column("catalog_id", sa.Integer, nullable=False),
    sa.Column("object_id", sa.BigInteger, nullable=False),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("ood_weighted", sa.Boolean, nullable=False, server_default=sa.text("false")),
    sa.Column("score", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("iteration", sa.Integer, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False, server_default=sa.text("'proposed'::text")),
    sa.Column("label", sa.Text),
    sa.Column("label_source", sa.Text),
    sa.Column("labelled_by", sa.Text),
    sa.Column("labelled_at", sa.DateTime(timezone=True)),
    *_created_columns(),
    sa.ForeignKeyConstraint(
        ["model_version_id"],
        ["skyclass.model_version.model_version_id"],
        name="label_queue_model_version_id_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["catalog_id"],
        ["skyclass.catalog.catalog_id"],
        name="label_queue_catalog_id_fkey",
        ondelete="CASCADE",
    ),
    sa.UniqueConstraint(
        "model_version_id",
        "catalog_id",
        "object_id",
        "iteration",
        name="label_queue_model_version_id_catalog_id_object_id_iteration_key",
    ),
    sa.UniqueConstraint(
        "model_version_id",
        "catalog_id",
        "iteration",
        "rank",
        name="label_queue_model_version_id_catalog_id_iteration_rank_key",
    ),
    sa.Index(
        "ix_label_queue_labelled",
        "catalog_id",
        "object_id",
        postgresql_where=sa.text("state = 'labelled'::text"),
    ),
    comment=(
        "Active-learning queue: objects proposed for follow-up (e.g. spectroscopy) by a model "
        "version's uncertainty, ranked per iteration; state proposed -> observed -> labelled "
        "(or expired), with the label and its provenance."
    ),
)


learning_simulation = sa.Table(
    "learning_simulation",
    metadata,
    sa.Column("simulation_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("catalog_name", sa.Text, nullable=False),
    sa.Column("feature_set_id", sa.Integer),
    sa.Column("label_column", sa.Text, nullable=False),
    sa.Column("target_class", sa.Text, nullable=False),
    sa.Column("purity", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("params", pg.JSONB, nullable=False),
    sa.Column("seconds", pg.DOUBLE_PRECISION, nullable=False),
    *_created_columns(),
    sa.ForeignKeyConstraint(
        ["feature_set_id"],
        ["skyclass.feature_set.feature_set_id"],
        name="learning_simulation_feature_set_id_fkey",
        ondelete="SET NULL",
    ),
    comment=(
        "A simulated active-learning loop on labelled objects (skyclass queue simulate): "
        "start size, step, rounds, seeds, model and the held-out test set."
    ),
)


learning_curve = sa.Table(
    "learning_curve",
    metadata,
    sa.Column("simulation_id", sa.BigInteger, nullable=False),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("n_labels", sa.Integer, nullable=False),
    sa.Column("accuracy", pg.DOUBLE_PRECISION, nullable=False),
    sa.Column("completeness_at_purity", pg.DOUBLE_PRECISION),
    sa.PrimaryKeyConstraint(
        "simulation_id", "strategy", "seed", "round", name="learning_curve_pkey"
    ),
    sa.ForeignKeyConstraint(
        ["simulation_id"],
        ["skyclass.learning_simulation.simulation_id"],
        name="learning_curve_simulation_id_fkey",
        ondelete="CASCADE",
    ),
    comment=(
        "Learning curves of a simulation: held-out accuracy and the target class's completeness "
        "at the purity target after each round, per strategy and seed."
    ),
)
