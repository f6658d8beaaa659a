"""OOD score per object: the OOD forest of a model version, compiled and scored in the database.

- The skyclass extension goes to 0.3.0 where the server has its files
  (``output_transform = 'raw_score'``: a library that gives scores, not class
  probabilities; ``skyclass.predict_raw``, ``score_percentile``, ``out_of_range``
  and ``fill_missing``). Without them, the OOD job refuses and names ``make
  extension``.
- ``task = 'anomaly'``: a model version with no classes whose compiled output is
  a raw score (``model``, ``model_version`` and ``model_artifact`` checks).
- ``skyclass.ood_model``: per model version, its OOD forest (an anomaly version
  of the companion model ``<name>_ood``), the training per-feature low/high and
  NaN fill, and the reference quantiles that turn a score into a percentile.
- ``skyclass.ood_run`` / ``skyclass.ood_chunk``: the chunked, resumable OOD job
  of (model version, catalog).
- ``skyclass.ood_score``: per (model version, catalog, object) the raw score,
  percentile, per-feature out-of-range flags and ``in_domain``.
- ``skyclass.ood_percentile(model_version, features)``: the percentile on demand.
- ``skyclass.current_classification`` gains ``ood_percentile``, ``in_domain`` and
  ``out_of_range``; ``skyclass.ood_object`` names the out-of-range features.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UPGRADE = r"""
DO $$
DECLARE
    installed text;
BEGIN
    SELECT e.extversion INTO installed FROM pg_catalog.pg_extension AS e
     WHERE e.extname = 'skyclass';
    IF installed IS NULL OR installed NOT IN ('0.1.0', '0.2.0') THEN
        RETURN;  -- not created here (scoring runs client-side), or already 0.3.0 or later
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_available_extension_versions AS v
                   WHERE v.name = 'skyclass' AND v.version = '0.3.0') THEN
        RAISE NOTICE 'the skyclass extension files on this server are older than 0.3.0: '
            'OOD scores cannot be computed in the database until `make extension` installs '
            'them and ALTER EXTENSION skyclass UPDATE runs';
        RETURN;
    END IF;
    BEGIN
        ALTER EXTENSION skyclass UPDATE TO '0.3.0';
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'could not update the skyclass extension to 0.3.0 (%): a superuser can run '
            'ALTER EXTENSION skyclass UPDATE', SQLERRM;
    END;
END
$$;

ALTER TABLE skyclass.model DROP CONSTRAINT model_task_check;
ALTER TABLE skyclass.model ADD CONSTRAINT model_task_check
    CHECK (task IN ('classification', 'photoz', 'anomaly'));
ALTER TABLE skyclass.model_version DROP CONSTRAINT model_version_task_check;
ALTER TABLE skyclass.model_version ADD CONSTRAINT model_version_task_check
    CHECK (task IN ('classification', 'photoz', 'anomaly'));
ALTER TABLE skyclass.model_version DROP CONSTRAINT model_version_classes_check;
ALTER TABLE skyclass.model_version ADD CONSTRAINT model_version_classes_check
    CHECK ((task = 'anomaly' AND classes = '{}' AND calibration_kind = 'none')
        OR (task <> 'anomaly' AND array_ndims(classes) = 1 AND cardinality(classes) >= 2
            AND array_position(classes, NULL) IS NULL));
ALTER TABLE skyclass.model_artifact DROP CONSTRAINT model_artifact_output_transform_check;
ALTER TABLE skyclass.model_artifact ADD CONSTRAINT model_artifact_output_transform_check
    CHECK (output_transform IN ('identity', 'binary_expand', 'raw_score'));

CREATE TABLE skyclass.ood_model (
    model_version_id bigint PRIMARY KEY REFERENCES skyclass.model_version,
    ood_version_id   bigint NOT NULL UNIQUE REFERENCES skyclass.model_version,
    method           text NOT NULL CHECK (method = 'isolation_forest'),
    params           jsonb NOT NULL,
    seed             bigint NOT NULL,
    feature_names    text[] NOT NULL CHECK (cardinality(feature_names) >= 1),
    low              real[] NOT NULL,
    high             real[] NOT NULL,
    fill             real[] NOT NULL,
    reference        float8[] NOT NULL CHECK (cardinality(reference) >= 2),
    threshold        real NOT NULL CHECK (threshold > 0 AND threshold <= 100),
    n_fit            bigint NOT NULL CHECK (n_fit >= 2),
    n_reference      bigint NOT NULL CHECK (n_reference >= 1),
    reference_rows   text NOT NULL,
    fit_seconds      float8 NOT NULL CHECK (fit_seconds >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       text NOT NULL DEFAULT current_user,
    CHECK (cardinality(low) = cardinality(feature_names)
           AND cardinality(high) = cardinality(feature_names)
           AND cardinality(fill) = cardinality(feature_names))
);
COMMENT ON TABLE skyclass.ood_model IS
    'The OOD forest of a model version (an anomaly version, compiled like any model), fitted on '
    'its training snapshot: per-feature training low/high (range flags) and NaN fill, reference '
    'quantiles of held-out training scores (score -> percentile), in_domain threshold.';
CREATE TRIGGER ood_model_immutable BEFORE UPDATE ON skyclass.ood_model
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();

CREATE TABLE skyclass.ood_run (
    ood_run_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version_id bigint NOT NULL REFERENCES skyclass.ood_model,
    catalog_id       integer NOT NULL REFERENCES skyclass.catalog ON DELETE CASCADE,
    feature_table    text NOT NULL,
    status           text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'done', 'failed')),
    chunk_size       integer NOT NULL CHECK (chunk_size > 0),
    chunks_total     integer NOT NULL DEFAULT 0 CHECK (chunks_total >= 0),
    chunks_done      integer NOT NULL DEFAULT 0 CHECK (chunks_done >= 0),
    rows_scored      bigint NOT NULL DEFAULT 0 CHECK (rows_scored >= 0),
    attempts         integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    trigger          text NOT NULL DEFAULT 'manual',
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    resumed_at       timestamptz,
    finished_at      timestamptz,
    error            text,
    created_by       text NOT NULL DEFAULT current_user
);
CREATE INDEX ix_ood_run_job ON skyclass.ood_run (model_version_id, catalog_id, ood_run_id);
COMMENT ON TABLE skyclass.ood_run IS
    'One OOD job of a model version over a catalog: progress and outcome. An interrupted run is '
    'resumed (attempts + 1) by the next start of the same job; one runs at a time per pair.';

CREATE TABLE skyclass.ood_chunk (
    ood_run_id      bigint NOT NULL REFERENCES skyclass.ood_run ON DELETE CASCADE,
    chunk_no        integer NOT NULL CHECK (chunk_no >= 0),
    first_object_id bigint NOT NULL,
    last_object_id  bigint NOT NULL CHECK (last_object_id >= first_object_id),
    rows_scored     bigint,
    done_at         timestamptz,
    PRIMARY KEY (ood_run_id, chunk_no)
);
COMMENT ON TABLE skyclass.ood_chunk IS
    'Planned object-id ranges of an OOD run; done_at is set in the transaction that wrote the '
    'chunk''s scores, so a killed job resumes without gaps or duplicates.';

CREATE TABLE skyclass.ood_score (
    model_version_id bigint NOT NULL REFERENCES skyclass.ood_model,
    catalog_id       integer NOT NULL REFERENCES skyclass.catalog ON DELETE CASCADE,
    object_id        bigint NOT NULL,
    raw_score        float8 NOT NULL,
    percentile       real NOT NULL CHECK (percentile BETWEEN 0 AND 100),
    out_of_range     boolean[] NOT NULL,
    in_domain        boolean NOT NULL,
    ood_run_id       bigint NOT NULL,
    PRIMARY KEY (model_version_id, catalog_id, object_id)
);
COMMENT ON TABLE skyclass.ood_score IS
    'Per model version, catalog and object: OOD forest score (higher = stranger), its percentile '
    'among held-out training scores, out_of_range[i] for feature i of skyclass.ood_model.'
    'feature_names (outside the training [low, high]; NaN never), and in_domain = percentile < '
    'threshold (99) and no feature out of range.';

CREATE FUNCTION skyclass.ood_percentile(model_version bigint, features real[])
 RETURNS real
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE
AS $function$
DECLARE
    m skyclass.ood_model;
BEGIN
    IF model_version IS NULL OR features IS NULL THEN
        RAISE EXCEPTION 'model_version and features must not be NULL' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO m FROM skyclass.ood_model AS o WHERE o.model_version_id = ood_percentile.model_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % has no OOD forest', model_version
            USING ERRCODE = '22023',
                  HINT = 'Fit one with `skyclass ood fit MODEL:VERSION` (or `skyclass domain`).';
    END IF;
    IF cardinality(features) <> cardinality(m.feature_names) THEN
        RAISE EXCEPTION 'expected % features (%), not %', cardinality(m.feature_names),
            array_to_string(m.feature_names, ', '), cardinality(features) USING ERRCODE = '22023';
    END IF;
    RETURN skyclass.score_percentile(
        (skyclass.predict_raw(m.ood_version_id, skyclass.fill_missing(features, m.fill)))[1],
        m.reference);
END
$function$;
COMMENT ON FUNCTION skyclass.ood_percentile(bigint, real[]) IS
    'OOD percentile (0 to 100) of one row of features for a model version: its OOD forest''s '
    'score read against held-out training scores (99 = stranger than 99% of them). Needs the '
    'skyclass extension 0.3.0 and an OOD forest (skyclass ood fit). Bad arguments: 22023.';

CREATE OR REPLACE VIEW skyclass.current_classification AS
SELECT d.name AS deployment, c.name AS catalog, p.object_id, p.model_version_id,
       p.top_label, p.top_probability, p.probabilities,
       p.z_mean, p.z_median, p.z_mode, p.z_lo68, p.z_hi68, p.z_lo95, p.z_hi95,
       p.run_id, p.scored_at,
       o.percentile AS ood_percentile, o.in_domain, o.out_of_range
  FROM skyclass.deployment AS d
  JOIN skyclass.prediction AS p ON p.model_version_id = d.model_version_id
  JOIN skyclass.catalog AS c ON c.catalog_id = p.catalog_id
  LEFT JOIN skyclass.ood_score AS o
    ON o.model_version_id = p.model_version_id AND o.catalog_id = p.catalog_id
   AND o.object_id = p.object_id;
COMMENT ON VIEW skyclass.current_classification IS
    'The predictions of the version each deployment points at now, per catalog and object: '
    'filter on deployment and catalog and JOIN catalogs.<catalog> USING (object_id), e.g. inside '
    'a cone search. Switching a deployment switches this view in one transaction. '
    'ood_percentile, in_domain and out_of_range (per feature, in the order of '
    'skyclass.ood_model.feature_names) come from skyclass.ood_score; NULL until the OOD job '
    'of the version has scored the catalog.';

CREATE VIEW skyclass.ood_object AS
SELECT c.name AS catalog, o.object_id, o.model_version_id, o.percentile AS ood_percentile,
       o.in_domain, o.out_of_range,
       ARRAY(SELECT f.name FROM unnest(m.feature_names, o.out_of_range) AS f(name, flag)
              WHERE f.flag) AS out_of_range_features,
       o.raw_score, m.threshold, o.ood_run_id
  FROM skyclass.ood_score AS o
  JOIN skyclass.ood_model AS m USING (model_version_id)
  JOIN skyclass.catalog AS c ON c.catalog_id = o.catalog_id;
COMMENT ON VIEW skyclass.ood_object IS
    'OOD scores per model version, catalog and object with the names of the features outside '
    'the training range.';

GRANT SELECT ON skyclass.ood_model, skyclass.ood_run, skyclass.ood_score, skyclass.ood_object
    TO skyclass_reader;
"""

DOWNGRADE = r"""
DROP VIEW skyclass.ood_object;
DROP VIEW skyclass.current_classification;
CREATE VIEW skyclass.current_classification AS
SELECT d.name AS deployment, c.name AS catalog, p.object_id, p.model_version_id,
       p.top_label, p.top_probability, p.probabilities,
       p.z_mean, p.z_median, p.z_mode, p.z_lo68, p.z_hi68, p.z_lo95, p.z_hi95,
       p.run_id, p.scored_at
  FROM skyclass.deployment AS d
  JOIN skyclass.prediction AS p ON p.model_version_id = d.model_version_id
  JOIN skyclass.catalog AS c ON c.catalog_id = p.catalog_id;
COMMENT ON VIEW skyclass.current_classification IS
    'The predictions of the version each deployment points at now, per catalog and object: '
    'filter on deployment and catalog and JOIN catalogs.<catalog> USING (object_id), e.g. inside '
    'a cone search. Switching a deployment switches this view in one transaction.';
GRANT SELECT ON skyclass.current_classification TO skyclass_reader;
DROP FUNCTION skyclass.ood_percentile(bigint, real[]);
DROP TABLE skyclass.ood_score;
DROP TABLE skyclass.ood_chunk;
DROP TABLE skyclass.ood_run;
DROP TABLE skyclass.ood_model;
ALTER TABLE skyclass.model_artifact DROP CONSTRAINT model_artifact_output_transform_check;
ALTER TABLE skyclass.model_artifact ADD CONSTRAINT model_artifact_output_transform_check
    CHECK (output_transform IN ('identity', 'binary_expand'));
ALTER TABLE skyclass.model_version DROP CONSTRAINT model_version_classes_check;
ALTER TABLE skyclass.model_version ADD CONSTRAINT model_version_classes_check
    CHECK (array_ndims(classes) = 1 AND cardinality(classes) >= 2
           AND array_position(classes, NULL) IS NULL);
ALTER TABLE skyclass.model_version DROP CONSTRAINT model_version_task_check;
ALTER TABLE skyclass.model_version ADD CONSTRAINT model_version_task_check
    CHECK (task IN ('classification', 'photoz'));
ALTER TABLE skyclass.model DROP CONSTRAINT model_task_check;
ALTER TABLE skyclass.model ADD CONSTRAINT model_task_check
    CHECK (task IN ('classification', 'photoz'));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
