"""Feature sets, training snapshots and the model registry (with compiled artifacts).

Creates schemas ``features`` (one table per feature set version) and
``snapshots`` (one frozen table per training snapshot), and in schema
``skyclass``: ``feature_set``, ``training_snapshot``, ``model``,
``training_run``, ``evaluation``, ``metric``, ``evaluation_curve``, ``feature_importance``,
``ablation``, ``model_version`` and ``model_artifact``; a trigger that refuses
UPDATE on the immutable ones; the role ``skyclass_model_admin``, the only
non-superuser allowed to register native code; and the ``skyclass`` C
extension when the server has it installed (otherwise the client-side
scorer is used).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE SCHEMA IF NOT EXISTS features;
COMMENT ON SCHEMA features IS 'Feature tables built by skyclass (one per feature set version)';
CREATE SCHEMA IF NOT EXISTS snapshots;
COMMENT ON SCHEMA snapshots IS 'Frozen training sets referenced by model versions';

CREATE FUNCTION skyclass.refuse_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable; register a new one instead', TG_TABLE_NAME
        USING ERRCODE = 'object_not_in_prerequisite_state';
END
$$;
COMMENT ON FUNCTION skyclass.refuse_update() IS
    'Trigger function: refuses UPDATE of immutable registry rows.';

CREATE TABLE skyclass.feature_set (
    feature_set_id  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    spec_hash       text NOT NULL CHECK (spec_hash ~ '^[0-9a-f]{64}$'),
    catalog_id      integer NOT NULL REFERENCES skyclass.catalog ON DELETE CASCADE,
    spec            jsonb NOT NULL,
    spec_text       text NOT NULL,
    feature_names   text[] NOT NULL CHECK (cardinality(feature_names) > 0),
    table_name      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL DEFAULT current_user,
    UNIQUE (name, spec_hash)
);
COMMENT ON TABLE skyclass.feature_set IS
    'Feature set versions: the canonical spec, its sha256 (the version) and the table features.<table_name>.';

CREATE TABLE skyclass.training_snapshot (
    snapshot_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feature_set_id       integer NOT NULL REFERENCES skyclass.feature_set,
    table_name           text NOT NULL,
    task                 text NOT NULL CHECK (task IN ('classification', 'photoz')),
    label_source         jsonb NOT NULL,
    classes              text[] NOT NULL CHECK (cardinality(classes) >= 2),
    bin_edges            float8[],
    n_rows               bigint NOT NULL CHECK (n_rows > 0),
    n_folds              integer NOT NULL CHECK (n_folds >= 2),
    calibration_fraction float8 NOT NULL CHECK (calibration_fraction >= 0 AND calibration_fraction < 1),
    seed                 bigint NOT NULL,
    class_counts         jsonb NOT NULL,
    leakage_forced       jsonb NOT NULL DEFAULT '[]',
    created_at           timestamptz NOT NULL DEFAULT now(),
    created_by           text NOT NULL DEFAULT current_user,
    CHECK ((task = 'photoz') = (bin_edges IS NOT NULL))
);
COMMENT ON TABLE skyclass.training_snapshot IS
    'Frozen training sets: snapshots.<table_name> holds object_id, label, fold (-1 = calibration split) and features.';

CREATE TABLE skyclass.model (
    model_id    integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    task        text NOT NULL CHECK (task IN ('classification', 'photoz')),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL DEFAULT current_user
);
COMMENT ON TABLE skyclass.model IS 'Named models; each has integer versions in skyclass.model_version.';

CREATE TABLE skyclass.training_run (
    training_run_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id         integer NOT NULL REFERENCES skyclass.model,
    snapshot_id      bigint NOT NULL REFERENCES skyclass.training_snapshot,
    settings         jsonb NOT NULL,
    library_versions jsonb NOT NULL,
    git_commit       text,
    os_user          text NOT NULL,
    db_user          text NOT NULL DEFAULT current_user,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE skyclass.training_run IS
    'One `skyclass train`: the snapshot, settings, library versions, git commit, who and when.';

CREATE TABLE skyclass.evaluation (
    evaluation_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    training_run_id bigint NOT NULL REFERENCES skyclass.training_run ON DELETE CASCADE,
    estimator       text NOT NULL,
    role            text NOT NULL CHECK (role IN ('baseline', 'candidate')),
    params          jsonb NOT NULL,
    seed            bigint,
    fit_seconds     float8,
    confusion       jsonb,
    UNIQUE (training_run_id, estimator)
);
COMMENT ON TABLE skyclass.evaluation IS
    'K-fold cross-validation of one estimator (a baseline or a candidate) in a training run.';

CREATE TABLE skyclass.metric (
    evaluation_id bigint NOT NULL REFERENCES skyclass.evaluation ON DELETE CASCADE,
    name          text NOT NULL,
    class_name    text NOT NULL DEFAULT '',
    stage         text NOT NULL DEFAULT 'raw' CHECK (stage IN ('raw', 'calibrated')),
    mean          float8,
    std           float8,
    fold_values   float8[] NOT NULL,
    extra         jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (evaluation_id, name, class_name, stage)
);
COMMENT ON TABLE skyclass.metric IS
    'Metrics as mean ± std over folds; class_name '''' means overall; NULL mean = undefined (e.g. purity of a never-predicted class).';

CREATE TABLE skyclass.evaluation_curve (
    evaluation_id bigint NOT NULL REFERENCES skyclass.evaluation ON DELETE CASCADE,
    name          text NOT NULL,
    class_name    text NOT NULL DEFAULT '',
    stage         text NOT NULL DEFAULT 'raw' CHECK (stage IN ('raw', 'calibrated')),
    data          jsonb NOT NULL,
    PRIMARY KEY (evaluation_id, name, class_name, stage)
);
COMMENT ON TABLE skyclass.evaluation_curve IS
    'Plot data from out-of-fold predictions: ROC points, reliability bins, PIT histogram, z_phot vs z_spec sample.';

CREATE TABLE skyclass.feature_importance (
    evaluation_id bigint NOT NULL REFERENCES skyclass.evaluation ON DELETE CASCADE,
    feature       text NOT NULL,
    method        text NOT NULL DEFAULT 'permutation',
    mean          float8 NOT NULL,
    std           float8 NOT NULL,
    PRIMARY KEY (evaluation_id, feature, method)
);
COMMENT ON TABLE skyclass.feature_importance IS 'Per-feature importance (permutation: drop in the score).';

CREATE TABLE skyclass.ablation (
    training_run_id bigint NOT NULL REFERENCES skyclass.training_run ON DELETE CASCADE,
    estimator       text NOT NULL,
    dropped_group   text NOT NULL,
    dropped_features text[] NOT NULL,
    metric          text NOT NULL,
    delta_mean      float8 NOT NULL,
    delta_std       float8 NOT NULL,
    fold_deltas     float8[] NOT NULL,
    PRIMARY KEY (training_run_id, estimator, dropped_group, metric)
);
COMMENT ON TABLE skyclass.ablation IS
    'Metric change (ablated minus full, paired over folds) when a feature group is dropped.';

CREATE TABLE skyclass.model_version (
    model_version_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id            integer NOT NULL REFERENCES skyclass.model,
    version             integer NOT NULL CHECK (version >= 1),
    training_run_id     bigint NOT NULL REFERENCES skyclass.training_run,
    evaluation_id       bigint NOT NULL REFERENCES skyclass.evaluation,
    snapshot_id         bigint NOT NULL REFERENCES skyclass.training_snapshot,
    feature_set_id      integer NOT NULL REFERENCES skyclass.feature_set,
    task                text NOT NULL CHECK (task IN ('classification', 'photoz')),
    estimator           text NOT NULL,
    params              jsonb NOT NULL,
    n_features          integer NOT NULL CHECK (n_features > 0),
    -- class names in output order, or bin labels of a PDF model
    classes             text[] NOT NULL
        CHECK (array_ndims(classes) = 1 AND cardinality(classes) >= 2
               AND array_position(classes, NULL) IS NULL),
    bin_edges           float8[],
    -- the fitted ensemble as a Treelite checkpoint: rebuilt by the compile step, never unpickled
    checkpoint          bytea NOT NULL,
    calibration_kind    text NOT NULL DEFAULT 'none'
        CHECK (calibration_kind IN ('none', 'temperature', 'isotonic')),
    -- none: '{}'; temperature: '{T}'; isotonic: per class k its m_k x knots then its m_k
    -- y values, classes concatenated in class order
    calibration_params  float8[] NOT NULL DEFAULT '{}'
        CHECK (array_ndims(calibration_params) IS NULL OR array_ndims(calibration_params) = 1),
    -- isotonic: cardinality(classes) + 1 entries, the 0-based start of each class's block in
    -- calibration_params, then cardinality(calibration_params); other kinds: '{}'
    calibration_offsets int[] NOT NULL DEFAULT '{}'
        CHECK (array_ndims(calibration_offsets) IS NULL OR array_ndims(calibration_offsets) = 1),
    -- probabilities are clipped to [eps, 1] before renormalising (and before log)
    calibration_eps     float8 NOT NULL DEFAULT 1e-12,
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          text NOT NULL DEFAULT current_user,
    UNIQUE (model_id, version),
    CHECK ((task = 'photoz') = (bin_edges IS NOT NULL)),
    CHECK (calibration_eps > 0 AND calibration_eps * cardinality(classes) < 1),
    CHECK ((calibration_kind = 'none' AND cardinality(calibration_params) = 0
            AND cardinality(calibration_offsets) = 0)
        OR (calibration_kind = 'temperature' AND cardinality(calibration_params) = 1
            AND calibration_params[1] > 0 AND cardinality(calibration_offsets) = 0)
        OR (calibration_kind = 'isotonic'
            AND cardinality(calibration_offsets) = cardinality(classes) + 1))
);
CREATE INDEX ix_model_version_evaluation_id ON skyclass.model_version (evaluation_id);
COMMENT ON TABLE skyclass.model_version IS
    'Immutable model versions: estimator, snapshot, feature set, classes or bins, Treelite checkpoint, calibration map.';

-- A compiled model version: the shared library TL2cgen generated for it.
CREATE TABLE skyclass.model_artifact (
    artifact_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version_id bigint NOT NULL UNIQUE REFERENCES skyclass.model_version,
    sha256           bytea NOT NULL CHECK (length(sha256) = 32),
    library          bytea NOT NULL,
    n_features       integer NOT NULL CHECK (n_features > 0),
    -- raw outputs of the library's predict(): N_TARGET * MAX_N_CLASS
    n_outputs        integer NOT NULL CHECK (n_outputs > 0),
    -- identity: the outputs are the probabilities; binary_expand: one output p -> [1 - p, p]
    output_transform text NOT NULL CHECK (output_transform IN ('identity', 'binary_expand')),
    CHECK (output_transform <> 'binary_expand' OR n_outputs = 1),
    treelite_version text NOT NULL,
    tl2cgen_version  text NOT NULL,
    compiler         text NOT NULL,
    compiler_flags   text NOT NULL,
    compile_seconds  double precision CHECK (compile_seconds >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       text NOT NULL DEFAULT current_user
);
CREATE INDEX ix_model_artifact_sha256 ON skyclass.model_artifact (sha256);
COMMENT ON TABLE skyclass.model_artifact IS
    'Compiled libraries of model versions with their sha256; the scorer re-hashes the bytes before loading them.';

CREATE TRIGGER feature_set_immutable BEFORE UPDATE ON skyclass.feature_set
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();
CREATE TRIGGER training_snapshot_immutable BEFORE UPDATE ON skyclass.training_snapshot
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();
CREATE TRIGGER model_version_immutable BEFORE UPDATE ON skyclass.model_version
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();
CREATE TRIGGER model_artifact_immutable BEFORE UPDATE ON skyclass.model_artifact
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();
CREATE TRIGGER metric_immutable BEFORE UPDATE ON skyclass.metric
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();

-- Registering an artifact puts native code into every backend that scores with it,
-- so only this role (and superusers) may insert artifacts.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'skyclass_model_admin') THEN
        CREATE ROLE skyclass_model_admin NOLOGIN;
    END IF;
END
$$;
REVOKE ALL ON skyclass.model_artifact FROM PUBLIC;
GRANT USAGE ON SCHEMA skyclass TO skyclass_model_admin;
GRANT SELECT, INSERT ON skyclass.model_artifact TO skyclass_model_admin;
GRANT SELECT ON skyclass.model, skyclass.model_version TO skyclass_model_admin;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_available_extensions WHERE name = 'skyclass') THEN
        CREATE EXTENSION IF NOT EXISTS skyclass;
    ELSE
        RAISE NOTICE 'the skyclass extension is not installed on this server: scoring runs client-side (see docs/operations.md)';
    END IF;
END
$$;
"""

DOWNGRADE = """
DROP EXTENSION IF EXISTS skyclass;
DROP TABLE skyclass.model_artifact;
DROP TABLE skyclass.model_version;
DROP TABLE skyclass.ablation;
DROP TABLE skyclass.feature_importance;
DROP TABLE skyclass.evaluation_curve;
DROP TABLE skyclass.metric;
DROP TABLE skyclass.evaluation;
DROP TABLE skyclass.training_run;
DROP TABLE skyclass.model;
DROP TABLE skyclass.training_snapshot;
DROP TABLE skyclass.feature_set;
DROP FUNCTION skyclass.refuse_update();
DROP SCHEMA IF EXISTS snapshots CASCADE;
DROP SCHEMA IF EXISTS features CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
