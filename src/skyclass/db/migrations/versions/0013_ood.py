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
- The job engine in SQL: ``ood_start_run`` (resume or plan), ``ood_score_chunk``
  (one chunk in one transaction), ``ood_finish_run``, and the procedure
  ``refresh_ood(target, catalog)`` that runs them committing per chunk (psql,
  pg_cron, after a rescoring); ``rescore_with_ood`` (rescore, then refresh_ood)
  is the command of rescoring schedules.
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

-- No foreign keys: their per-row checks more than doubled the cost of writing a chunk
-- (measured); the job writes only (version, catalog) pairs it has checked, and dropping a
-- catalog deletes its rows (skyclass.registry.drop).
CREATE TABLE skyclass.ood_score (
    model_version_id bigint NOT NULL,
    catalog_id       integer NOT NULL,
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

CREATE FUNCTION skyclass.ood_start_run(model_version bigint, catalog integer, chunk_size integer DEFAULT 100000, trigger text DEFAULT 'manual'::text)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    m        skyclass.ood_model;
    fs_id    integer;
    ftable   text;
    run_id   bigint;
BEGIN
    IF model_version IS NULL OR catalog IS NULL OR trigger IS NULL THEN
        RAISE EXCEPTION 'model_version, catalog and trigger must not be NULL'
            USING ERRCODE = '22023';
    END IF;
    IF chunk_size IS NULL OR chunk_size < 1 THEN
        RAISE EXCEPTION 'chunk_size must be a positive integer, not %', coalesce(chunk_size::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF trigger !~ '^[a-z][a-z0-9_]{0,30}$' THEN
        RAISE EXCEPTION 'trigger must be a short lower-case word, not %', quote_literal(trigger)
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO m FROM skyclass.ood_model AS o WHERE o.model_version_id = ood_start_run.model_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % has no OOD forest', model_version
            USING ERRCODE = '22023',
                  HINT = 'Fit one with `skyclass ood fit MODEL:VERSION` (or `skyclass domain`).';
    END IF;
    IF NOT EXISTS (SELECT FROM skyclass.model_artifact AS a WHERE a.model_version_id = m.ood_version_id) THEN
        RAISE EXCEPTION 'the OOD forest of model version % (model version %) is not compiled',
            model_version, m.ood_version_id
            USING ERRCODE = '55000',
                  HINT = format('A superuser runs `skyclass compile %s`.', m.ood_version_id);
    END IF;
    IF to_regprocedure('skyclass.predict_raw(bigint,real[])') IS NULL THEN
        RAISE EXCEPTION 'the skyclass extension 0.3.0 is not installed in this database'
            USING ERRCODE = '55000',
                  HINT = 'Run `make extension` on the server, then ALTER EXTENSION skyclass UPDATE as a superuser.';
    END IF;
    fs_id := skyclass.scoring_feature_set(model_version, catalog);
    SELECT format('features.%I', f.table_name) INTO ftable
      FROM skyclass.feature_set AS f WHERE f.feature_set_id = fs_id;
    SELECT r.ood_run_id INTO run_id FROM skyclass.ood_run AS r
     WHERE r.model_version_id = ood_start_run.model_version AND r.catalog_id = ood_start_run.catalog
       AND r.status IN ('running', 'failed') AND r.feature_table = ftable
     ORDER BY r.ood_run_id DESC LIMIT 1;
    IF FOUND THEN
        UPDATE skyclass.ood_run AS r SET attempts = r.attempts + 1, resumed_at = clock_timestamp(),
               status = 'running', error = NULL
         WHERE r.ood_run_id = run_id;
        RETURN run_id;
    END IF;
    INSERT INTO skyclass.ood_run (model_version_id, catalog_id, feature_table, chunk_size, trigger)
    VALUES (model_version, catalog, ftable, chunk_size, trigger)
    RETURNING ood_run_id INTO run_id;
    EXECUTE format(
        'INSERT INTO skyclass.ood_chunk (ood_run_id, chunk_no, first_object_id, last_object_id) '
        'SELECT $1, k, min(object_id), max(object_id) FROM ('
        '  SELECT object_id, ((row_number() OVER (ORDER BY object_id) - 1) / $2)::integer AS k'
        '    FROM %s) AS n GROUP BY k', ftable::regclass)
        USING run_id, chunk_size;
    UPDATE skyclass.ood_run AS r
       SET chunks_total = (SELECT count(*) FROM skyclass.ood_chunk AS c WHERE c.ood_run_id = run_id)
     WHERE r.ood_run_id = run_id;
    RETURN run_id;
END
$function$;

CREATE FUNCTION skyclass.ood_score_chunk(run_id bigint, chunk_no integer)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    r     skyclass.ood_run;
    m     skyclass.ood_model;
    c     skyclass.ood_chunk;
    n     bigint;
BEGIN
    IF run_id IS NULL OR chunk_no IS NULL THEN
        RAISE EXCEPTION 'run_id and chunk_no must not be NULL' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO r FROM skyclass.ood_run AS o WHERE o.ood_run_id = run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'OOD run % does not exist', run_id USING ERRCODE = '22023';
    END IF;
    SELECT * INTO c FROM skyclass.ood_chunk AS k
     WHERE k.ood_run_id = run_id AND k.chunk_no = ood_score_chunk.chunk_no FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'OOD run % has no chunk %', run_id, chunk_no USING ERRCODE = '22023';
    END IF;
    IF c.done_at IS NOT NULL THEN
        RETURN 0;  -- done by an earlier attempt: nothing to redo
    END IF;
    IF r.status <> 'running' THEN
        RAISE EXCEPTION 'OOD run % is %, not running', run_id, r.status USING ERRCODE = '55000';
    END IF;
    SELECT * INTO m FROM skyclass.ood_model AS o WHERE o.model_version_id = r.model_version_id;
    DELETE FROM skyclass.ood_score AS s
     WHERE s.model_version_id = r.model_version_id AND s.catalog_id = r.catalog_id
       AND s.object_id BETWEEN c.first_object_id AND c.last_object_id;
    -- OFFSET 0 keeps each expression evaluated once per row.
    EXECUTE format(
        'INSERT INTO skyclass.ood_score (model_version_id, catalog_id, object_id, raw_score,'
        '                                percentile, out_of_range, in_domain, ood_run_id)'
        ' SELECT $1, $2, s.object_id, s.raw, s.p, s.oor,'
        '        s.p < $3 AND NOT (true = ANY (s.oor)), $4'
        '   FROM (SELECT q.object_id, q.raw, q.oor, skyclass.score_percentile(q.raw, $5) AS p'
        '           FROM (SELECT f.object_id,'
        '                        (skyclass.predict_raw($6, skyclass.fill_missing(f.x, $7)))[1] AS raw,'
        '                        skyclass.out_of_range(f.x, $8, $9) AS oor'
        '                   FROM %s AS f WHERE f.object_id BETWEEN $10 AND $11 OFFSET 0) AS q'
        '         OFFSET 0) AS s', r.feature_table::regclass)
        USING r.model_version_id, r.catalog_id, m.threshold, run_id, m.reference,
              m.ood_version_id, m.fill, m.low, m.high, c.first_object_id, c.last_object_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE skyclass.ood_chunk AS k SET done_at = clock_timestamp(), rows_scored = n
     WHERE k.ood_run_id = run_id AND k.chunk_no = ood_score_chunk.chunk_no;
    UPDATE skyclass.ood_run AS o SET chunks_done = o.chunks_done + 1, rows_scored = o.rows_scored + n
     WHERE o.ood_run_id = run_id;
    RETURN n;
END
$function$;

CREATE FUNCTION skyclass.ood_finish_run(run_id bigint)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
DECLARE
    r    skyclass.ood_run;
    left_over integer;
BEGIN
    IF run_id IS NULL THEN
        RAISE EXCEPTION 'run_id must not be NULL' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO r FROM skyclass.ood_run AS o WHERE o.ood_run_id = run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'OOD run % does not exist', run_id USING ERRCODE = '22023';
    END IF;
    IF r.status = 'done' THEN
        RETURN r.status;
    END IF;
    SELECT count(*) INTO left_over FROM skyclass.ood_chunk AS c
     WHERE c.ood_run_id = run_id AND c.done_at IS NULL;
    IF left_over > 0 THEN
        RAISE EXCEPTION 'OOD run % has % chunks left to score', run_id, left_over
            USING ERRCODE = '55000';
    END IF;
    -- Objects gone from the feature table since an earlier run.
    DELETE FROM skyclass.ood_score AS s
     WHERE s.model_version_id = r.model_version_id AND s.catalog_id = r.catalog_id
       AND s.ood_run_id <> run_id;
    UPDATE skyclass.ood_run AS o SET status = 'done', finished_at = clock_timestamp()
     WHERE o.ood_run_id = run_id;
    RETURN 'done';
END
$function$;

CREATE PROCEDURE skyclass.refresh_ood(IN target text, IN catalog text, IN chunk_size integer DEFAULT 100000)
 LANGUAGE plpgsql
AS $procedure$
DECLARE
    version  bigint;
    cat_id   integer;
    run_id   bigint;
    key      bigint;
    k        integer;
BEGIN
    IF target IS NULL OR catalog IS NULL THEN
        RAISE EXCEPTION 'target and catalog must not be NULL' USING ERRCODE = '22023';
    END IF;
    version := (skyclass.resolve_scoring_target(target)).model_version_id;
    SELECT c.catalog_id INTO cat_id FROM skyclass.catalog AS c WHERE c.name = refresh_ood.catalog;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no catalog named %', quote_literal(catalog) USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM skyclass.ood_model AS o WHERE o.model_version_id = version) THEN
        RAISE NOTICE 'model version % has no OOD forest: no OOD scores to refresh', version;
        RETURN;
    END IF;
    key := hashtextextended(format('skyclass.ood:%s:%s', version, cat_id), 0);
    IF NOT pg_try_advisory_lock(key) THEN
        RAISE EXCEPTION 'the OOD job of model version % on catalog % is running in another session',
            version, quote_literal(catalog) USING ERRCODE = '55P03';
    END IF;
    BEGIN
        run_id := skyclass.ood_start_run(version, cat_id, chunk_size, 'schedule');
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_advisory_unlock(key);
        RAISE;
    END;
    COMMIT;
    FOR k IN SELECT c.chunk_no FROM skyclass.ood_chunk AS c
              WHERE c.ood_run_id = run_id AND c.done_at IS NULL ORDER BY c.chunk_no LOOP
        PERFORM skyclass.ood_score_chunk(run_id, k);
        COMMIT;
    END LOOP;
    PERFORM skyclass.ood_finish_run(run_id);
    COMMIT;
    PERFORM pg_advisory_unlock(key);
END
$procedure$;

COMMENT ON FUNCTION skyclass.ood_start_run(bigint,integer,integer,text) IS
'Start the OOD job of a model version on a catalog (by catalog_id): resumes the newest '
'unfinished run of the pair (attempts + 1) or plans a new one in object-id chunks of '
'chunk_size rows of the catalog''s feature build; returns the ood_run_id. Needs the version''s '
'compiled OOD forest and the extension 0.3.0 (55000). The caller keeps one run per pair at a '
'time (skyclass.refresh_ood and `skyclass ood score` hold an advisory lock). Bad arguments: 22023.';
COMMENT ON FUNCTION skyclass.ood_score_chunk(bigint,integer) IS
'Score one chunk of an OOD run in the database (the OOD forest through skyclass.predict_raw, '
'percentile, range flags, in_domain) replacing the scores of its object-id range, and mark it '
'done in the same transaction; returns the rows written (0 when the chunk was done already). '
'Bad arguments: 22023; a run that is not running: 55000.';
COMMENT ON FUNCTION skyclass.ood_finish_run(bigint) IS
'Finish an OOD run whose chunks are all done: delete the scores of objects no longer in the '
'feature build (left by earlier runs) and mark the run done; returns its status. Chunks left: '
'55000; bad arguments: 22023.';
COMMENT ON PROCEDURE skyclass.refresh_ood(text,text,integer) IS
'Bring the OOD scores of a catalog up to date for a deployment, MODEL:VERSION or '
'model_version_id, committing per chunk: CALL skyclass.refresh_ood(''sgq_current'', '
'''sdss17''). Resumes an interrupted run; does nothing (a notice) when the version has no OOD '
'forest, so schedules can call it after every rescoring; refuses (55P03) while the same job '
'runs elsewhere. Usable from psql and pg_cron.';

CREATE PROCEDURE skyclass.rescore_with_ood(IN deployment_or_version text, IN catalog text, IN only_new boolean DEFAULT false, IN chunk_size integer DEFAULT 50000, IN schedule_name text DEFAULT NULL::text)
 LANGUAGE plpgsql
AS $procedure$
BEGIN
    CALL skyclass.rescore(deployment_or_version, catalog, only_new, chunk_size, schedule_name);
    -- OOD scores depend on the version and the features only: refreshed after the rescoring,
    -- a no-op (notice) for a version without OOD forest.
    CALL skyclass.refresh_ood(deployment_or_version, catalog);
END
$procedure$;
COMMENT ON PROCEDURE skyclass.rescore_with_ood(text,text,boolean,integer,text) IS
'CALL skyclass.rescore(...) with the same arguments, then CALL skyclass.refresh_ood(target, '
'catalog): the command of rescoring schedules (skyclass schedule add), so OOD scores stay '
'current after every scheduled rescoring.';

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
DROP PROCEDURE skyclass.rescore_with_ood(text, text, boolean, integer, text);
DROP PROCEDURE skyclass.refresh_ood(text, text, integer);
DROP FUNCTION skyclass.ood_finish_run(bigint);
DROP FUNCTION skyclass.ood_score_chunk(bigint, integer);
DROP FUNCTION skyclass.ood_start_run(bigint, integer, integer, text);
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
