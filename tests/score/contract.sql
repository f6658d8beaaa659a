-- The table contract the skyclass extension reads (src/pg_skyclass/skyclass.c).
--
-- Until the model-registry migration exists, tests create these objects with
-- this file (tests/score/conftest.py). It is written to become that migration
-- as is: idempotent where roles are concerned (roles are cluster-wide), plain
-- DDL otherwise. See docs/extension.md for the meaning of every column.

-- A compiled model: the shared library TL2cgen generated, content-addressed.
CREATE TABLE skyclass.model_artifact (
    artifact_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sha256           bytea NOT NULL UNIQUE CHECK (length(sha256) = 32),
    library          bytea NOT NULL,
    n_features       integer NOT NULL CHECK (n_features > 0),
    -- raw outputs of the library's predict(): N_TARGET * MAX_N_CLASS
    n_outputs        integer NOT NULL CHECK (n_outputs > 0),
    -- how raw outputs become class probabilities:
    --   identity      the outputs are the probabilities (n_outputs = number of classes)
    --   binary_expand one output p becomes [1 - p, p] (binary sigmoid models)
    output_transform text NOT NULL CHECK (output_transform IN ('identity', 'binary_expand')),
    CHECK (output_transform <> 'binary_expand' OR n_outputs = 1),
    -- the Treelite checkpoint the library was built from (Model.serialize_bytes);
    -- rebuilds the library without any pickle; the scorer never reads it
    checkpoint       bytea,
    treelite_version text NOT NULL,
    tl2cgen_version  text NOT NULL,
    compiler         text NOT NULL,
    compiler_flags   text NOT NULL,
    compile_seconds  double precision CHECK (compile_seconds >= 0),
    created_at       timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE skyclass.model_artifact IS
    'Compiled tree-ensemble libraries, keyed by the sha256 of their bytes; the scorer re-hashes before loading.';

-- A model version: an artifact plus class names and a calibration map.
CREATE TABLE skyclass.model_version (
    model_version_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    artifact_id         bigint NOT NULL REFERENCES skyclass.model_artifact,
    -- class names in output order, or bin labels of a PDF model
    classes             text[] NOT NULL
        CHECK (array_ndims(classes) = 1 AND cardinality(classes) >= 2
               AND array_position(classes, NULL) IS NULL),
    calibration_kind    text NOT NULL DEFAULT 'none'
        CHECK (calibration_kind IN ('none', 'temperature', 'isotonic')),
    -- none: '{}'; temperature: '{T}';
    -- isotonic: per class k, its m_k x knots (strictly increasing) then its m_k y values,
    --           classes concatenated in class order
    calibration_params  float8[] NOT NULL DEFAULT '{}'
        CHECK (array_ndims(calibration_params) IS NULL OR array_ndims(calibration_params) = 1),
    -- isotonic: cardinality(classes) + 1 entries: the 0-based start of each class's block
    --   in calibration_params, then cardinality(calibration_params). In SQL's 1-based terms
    --   class k (k = 1..K) owns calibration_params[offsets[k] + 1 : offsets[k + 1]], an even
    --   number 2*m_k of values: m_k x knots, then m_k y values. Other kinds: '{}'
    calibration_offsets int[] NOT NULL DEFAULT '{}'
        CHECK (array_ndims(calibration_offsets) IS NULL OR array_ndims(calibration_offsets) = 1),
    -- probabilities are clipped to [eps, 1] before renormalising (and before log)
    calibration_eps     float8 NOT NULL DEFAULT 1e-12,
    CHECK (calibration_eps > 0 AND calibration_eps * cardinality(classes) < 1),
    CHECK ((calibration_kind = 'none' AND cardinality(calibration_params) = 0
            AND cardinality(calibration_offsets) = 0)
        OR (calibration_kind = 'temperature' AND cardinality(calibration_params) = 1
            AND calibration_params[1] > 0 AND cardinality(calibration_offsets) = 0)
        OR (calibration_kind = 'isotonic'
            AND cardinality(calibration_offsets) = cardinality(classes) + 1)),
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ix_model_version_artifact_id ON skyclass.model_version (artifact_id);

COMMENT ON TABLE skyclass.model_version IS
    'Immutable model versions: an artifact, its class names and its calibration map.';

-- Versions and artifacts are immutable: the per-session scorer cache relies on
-- it, and so does every prediction that names a version.
CREATE FUNCTION skyclass.refuse_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable; register a new one instead', TG_TABLE_NAME
        USING ERRCODE = 'object_not_in_prerequisite_state';
END
$$;

CREATE TRIGGER model_artifact_immutable BEFORE UPDATE ON skyclass.model_artifact
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();
CREATE TRIGGER model_version_immutable BEFORE UPDATE ON skyclass.model_version
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();

-- Registering an artifact puts native code into every backend that scores
-- with it, so only this role (and superusers) may insert artifacts.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'skyclass_model_admin') THEN
        CREATE ROLE skyclass_model_admin NOLOGIN;
    END IF;
END
$$;

REVOKE ALL ON skyclass.model_artifact, skyclass.model_version FROM PUBLIC;
GRANT USAGE ON SCHEMA skyclass TO skyclass_model_admin;
GRANT SELECT, INSERT ON skyclass.model_artifact TO skyclass_model_admin;
GRANT SELECT, INSERT ON skyclass.model_version TO skyclass_model_admin;
