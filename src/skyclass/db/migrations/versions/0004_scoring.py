"""Batch scoring: deployments, scoring runs and chunks, predictions with history, schedules.

Creates schema ``predictions`` (partitions of ``skyclass.prediction``) and in
schema ``skyclass``: ``deployment`` (a name pointing at one version of one
model; switching is one UPDATE) with its append-only ``deployment_history``;
``scoring_run`` and ``scoring_chunk`` (chunked, resumable, single-flight jobs;
a chunk's completion mark commits with its predictions); ``scoring_schedule``
(pg_cron jobs created by ``skyclass schedule``); the partitioned table
``prediction`` (LIST by model version, then by catalog, then RANGE by object
id: one chunk table per chunk of the run that built it); the job functions
(``start_scoring_run``, ``plan_scoring_run``, ``claim_scoring_chunk``, ``score_chunk``,
``complete_scoring_chunk``, ``finish_scoring_run``, ``fail_scoring_run``) and
procedures (``score_chunks``, ``rescore``); ``pdf_summary`` (photo-z point
estimates of a PDF); the published views ``prediction_long`` and
``current_classification`` and the function ``class_changes``; and the role
``skyclass_reader`` (read-only access to the published views, catalogs and
predictions; nothing on model artifacts).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE SCHEMA IF NOT EXISTS predictions;
COMMENT ON SCHEMA predictions IS
    'Partitions of skyclass.prediction, written only by scoring jobs: mv_<version> per model '
    'version, mv_<version>_c<catalog>_r<run> per catalog (built by run <run>), and below it one '
    'table per chunk of that run. Query skyclass.prediction or the published views instead.';

-- Append-only tables refuse UPDATE and DELETE.
CREATE FUNCTION skyclass.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'object_not_in_prerequisite_state';
END
$$;
COMMENT ON FUNCTION skyclass.refuse_change() IS
    'Trigger function: refuses UPDATE and DELETE on append-only tables.';

-- ---------------------------------------------------------------------------------------------
-- Deployments
-- ---------------------------------------------------------------------------------------------
CREATE TABLE skyclass.deployment (
    name             text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- the model every version of this deployment must belong to (set from the first version)
    model_id         integer NOT NULL REFERENCES skyclass.model,
    model_version_id bigint NOT NULL REFERENCES skyclass.model_version,
    description      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       text NOT NULL DEFAULT current_user,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by       text NOT NULL DEFAULT current_user
);
CREATE INDEX ix_deployment_model_version_id ON skyclass.deployment (model_version_id);
COMMENT ON TABLE skyclass.deployment IS
    'Named aliases of model versions (e.g. sgq_current). A deployment belongs to one model: '
    'switching it to a version of another model is refused. Switch with skyclass.deploy() or '
    'one UPDATE; every change is logged in skyclass.deployment_history.';

CREATE TABLE skyclass.deployment_history (
    history_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text NOT NULL,
    -- NULL: the deployment was removed
    model_version_id    bigint REFERENCES skyclass.model_version,
    previous_version_id bigint REFERENCES skyclass.model_version,
    switched_at         timestamptz NOT NULL DEFAULT now(),
    switched_by         text NOT NULL DEFAULT current_user
);
CREATE INDEX ix_deployment_history_name ON skyclass.deployment_history (name, switched_at);
COMMENT ON TABLE skyclass.deployment_history IS
    'Append-only log of deployment switches: which version a name pointed to, since when, '
    'set by whom (model_version_id NULL = removed).';

CREATE FUNCTION skyclass.deployment_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_model integer;
    new_task  text;
    old_model text;
    old_task  text;
BEGIN
    SELECT v.model_id, v.task INTO new_model, new_task
      FROM skyclass.model_version AS v WHERE v.model_version_id = NEW.model_version_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % does not exist', NEW.model_version_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.model_id := new_model;
    ELSE
        IF NEW.name <> OLD.name THEN
            RAISE EXCEPTION 'deployment names cannot change (% -> %); create a new deployment',
                OLD.name, NEW.name USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        IF new_model <> OLD.model_id THEN
            SELECT m.name, m.task INTO old_model, old_task
              FROM skyclass.model AS m WHERE m.model_id = OLD.model_id;
            RAISE EXCEPTION 'deployment % is of model % (%), model version % is not (it is a % model)',
                OLD.name, old_model, old_task, NEW.model_version_id, new_task
                USING ERRCODE = 'check_violation',
                      HINT = 'a deployment keeps one model; create another deployment for this one';
        END IF;
        NEW.model_id := OLD.model_id;
        NEW.created_at := OLD.created_at;
        NEW.created_by := OLD.created_by;
        NEW.updated_at := now();
        NEW.updated_by := current_user;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION skyclass.deployment_guard() IS
    'Trigger function: a deployment keeps its model (and task) and its name; stamps updates.';

CREATE FUNCTION skyclass.deployment_log() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO skyclass.deployment_history (name, model_version_id, previous_version_id)
        VALUES (NEW.name, NEW.model_version_id, NULL);
    ELSIF TG_OP = 'UPDATE' THEN
        IF NEW.model_version_id IS DISTINCT FROM OLD.model_version_id THEN
            INSERT INTO skyclass.deployment_history (name, model_version_id, previous_version_id)
            VALUES (NEW.name, NEW.model_version_id, OLD.model_version_id);
        END IF;
    ELSE
        INSERT INTO skyclass.deployment_history (name, model_version_id, previous_version_id)
        VALUES (OLD.name, NULL, OLD.model_version_id);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION skyclass.deployment_log() IS
    'Trigger function: appends every deployment change to skyclass.deployment_history.';

CREATE TRIGGER deployment_guard BEFORE INSERT OR UPDATE ON skyclass.deployment
    FOR EACH ROW EXECUTE FUNCTION skyclass.deployment_guard();
CREATE TRIGGER deployment_log AFTER INSERT OR UPDATE OR DELETE ON skyclass.deployment
    FOR EACH ROW EXECUTE FUNCTION skyclass.deployment_log();
CREATE TRIGGER deployment_history_append_only BEFORE UPDATE OR DELETE
    ON skyclass.deployment_history FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_change();

CREATE FUNCTION skyclass.deploy(deployment text, model_version bigint, description text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    previous bigint;
BEGIN
    IF deployment IS NULL OR deployment !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid deployment name %: use a-z, 0-9 and _, starting with a letter, '
            'at most 63 characters', quote_literal(coalesce(deployment, 'NULL'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT d.model_version_id INTO previous
      FROM skyclass.deployment AS d WHERE d.name = deployment FOR UPDATE;
    IF FOUND THEN
        UPDATE skyclass.deployment AS d
           SET model_version_id = model_version,
               description = coalesce(deploy.description, d.description)
         WHERE d.name = deployment;
    ELSE
        INSERT INTO skyclass.deployment (name, model_id, model_version_id, description)
        VALUES (deployment, 0, model_version, deploy.description);
    END IF;
    RETURN previous;
END
$$;
COMMENT ON FUNCTION skyclass.deploy(text, bigint, text) IS
    'Point deployment at a model version (creating it if new) in one statement; returns the '
    'previous version (NULL when new). Refused when the version belongs to another model.';

CREATE FUNCTION skyclass.deployed_version(deployment text, at_time timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN at_time IS NULL THEN
               (SELECT d.model_version_id FROM skyclass.deployment AS d WHERE d.name = deployment)
           ELSE
               (SELECT h.model_version_id FROM skyclass.deployment_history AS h
                 WHERE h.name = deployment AND h.switched_at <= at_time
                 ORDER BY h.switched_at DESC, h.history_id DESC LIMIT 1)
           END
$$;
COMMENT ON FUNCTION skyclass.deployed_version(text, timestamptz) IS
    'The model version a deployment points at now, or pointed at at_time (from the history); '
    'NULL when it does not exist (or did not then).';

-- ---------------------------------------------------------------------------------------------
-- Scoring runs
-- ---------------------------------------------------------------------------------------------
CREATE TABLE skyclass.scoring_run (
    run_id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version_id         bigint NOT NULL REFERENCES skyclass.model_version,
    catalog_id               integer NOT NULL REFERENCES skyclass.catalog,
    feature_set_id           integer NOT NULL REFERENCES skyclass.feature_set,
    -- the deployment named when the run was started (NULL: a version was named)
    deployment               text,
    mode                     text NOT NULL CHECK (mode IN ('full', 'only_new')),
    -- partition: chunk tables under a new catalog partition, swapped in when the run succeeds;
    -- insert: rows added to the catalog partition in place (only_new on a scored catalog)
    write_kind               text NOT NULL CHECK (write_kind IN ('partition', 'insert')),
    scorer                   text NOT NULL CHECK (scorer IN ('database', 'client')),
    status                   text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    chunk_size               integer NOT NULL CHECK (chunk_size > 0),
    chunks_total             integer NOT NULL DEFAULT 0,
    chunks_done              integer NOT NULL DEFAULT 0,
    rows_scored              bigint NOT NULL DEFAULT 0,
    -- catalog objects that have no row in the feature table (not scored, reported)
    objects_without_features bigint,
    catalog_table            text NOT NULL,
    feature_table            text NOT NULL,
    target_table             text NOT NULL,
    attempts                 integer NOT NULL DEFAULT 1,
    workers                  integer NOT NULL DEFAULT 1 CHECK (workers > 0),
    started_at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    resumed_at               timestamptz,
    finished_at              timestamptz,
    error                    text,
    db_user                  text NOT NULL DEFAULT current_user,
    backend_pid              integer NOT NULL DEFAULT pg_backend_pid(),
    triggered_by             text NOT NULL CHECK (triggered_by IN ('manual', 'schedule', 'cli')),
    schedule_name            text,
    CHECK (chunks_done <= chunks_total)
);
CREATE INDEX ix_scoring_run_job ON skyclass.scoring_run (model_version_id, catalog_id, run_id);
CREATE INDEX ix_scoring_run_schedule ON skyclass.scoring_run (schedule_name, run_id)
    WHERE schedule_name IS NOT NULL;
COMMENT ON TABLE skyclass.scoring_run IS
    'One rescoring job of a model version over a catalog: mode, progress, outcome, who, which '
    'backend. An interrupted or failed run is resumed (attempts + 1) by the next start of the '
    'same job; one job runs at a time (session advisory lock on version and catalog).';

CREATE TABLE skyclass.scoring_chunk (
    run_id          bigint NOT NULL REFERENCES skyclass.scoring_run ON DELETE CASCADE,
    chunk_no        integer NOT NULL CHECK (chunk_no >= 0),
    -- chunks of a run cover contiguous object_id ranges (the first from the smallest bigint,
    -- the last to the largest)
    first_object_id bigint NOT NULL,
    last_object_id  bigint NOT NULL,
    planned_rows    bigint NOT NULL,
    rows            bigint,
    -- catalog objects in this range without a feature row (counted when the chunk is done)
    objects_without_features bigint,
    done_at         timestamptz,
    PRIMARY KEY (run_id, chunk_no),
    CHECK (first_object_id <= last_object_id),
    CHECK ((rows IS NULL) = (done_at IS NULL))
);
COMMENT ON TABLE skyclass.scoring_chunk IS
    'The work queue of a scoring run: object_id ranges; done_at is set in the same transaction '
    'that writes the chunk''s predictions, so a killed job never leaves gaps or duplicates.';

CREATE TABLE skyclass.scoring_schedule (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    target        text NOT NULL,
    catalog_id    integer NOT NULL REFERENCES skyclass.catalog,
    cron          text NOT NULL,
    only_new      boolean NOT NULL DEFAULT false,
    chunk_size    integer NOT NULL DEFAULT 50000 CHECK (chunk_size > 0),
    cron_database text NOT NULL,
    cron_jobname  text NOT NULL,
    cron_jobid    bigint NOT NULL,
    command       text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL DEFAULT current_user
);
COMMENT ON TABLE skyclass.scoring_schedule IS
    'Rescoring schedules registered with pg_cron by skyclass schedule add (cron job name and id).';

-- ---------------------------------------------------------------------------------------------
-- Predictions
-- ---------------------------------------------------------------------------------------------
-- Column order packs the fixed-width columns first (no alignment padding).
CREATE TABLE skyclass.prediction (
    model_version_id bigint NOT NULL,
    object_id        bigint NOT NULL,
    run_id           bigint NOT NULL,
    catalog_id       integer NOT NULL,
    top_probability  real NOT NULL,
    z_mean           real,
    z_median         real,
    z_mode           real,
    z_lo68           real,
    z_hi68           real,
    z_lo95           real,
    z_hi95           real,
    scored_at        timestamptz NOT NULL DEFAULT now(),
    -- labels are identifiers: byte order sorts and compares them fastest
    top_label        text COLLATE "C" NOT NULL,
    probabilities    real[] NOT NULL,
    PRIMARY KEY (model_version_id, catalog_id, object_id)
) PARTITION BY LIST (model_version_id);
-- Partitions already pin the version and the catalog, so the index only needs the label.
CREATE INDEX ix_prediction_top ON skyclass.prediction (top_label, top_probability DESC);
COMMENT ON TABLE skyclass.prediction IS
    'One prediction per object, catalog and model version: calibrated probabilities (or PDF bin '
    'masses) in the order of model_version.classes, the top label and its probability, photo-z '
    'point estimates (NULL for classifiers), and the run that wrote it. Versions never overwrite '
    'each other; a full re-score of a version replaces its catalog partition atomically.';
COMMENT ON COLUMN skyclass.prediction.probabilities IS
    'Calibrated class probabilities, or PDF bin masses, in model_version.classes order';
COMMENT ON COLUMN skyclass.prediction.z_mean IS 'Photo-z: mean of the PDF (bin centres)';
COMMENT ON COLUMN skyclass.prediction.z_median IS 'Photo-z: median (CDF linear inside bins)';
COMMENT ON COLUMN skyclass.prediction.z_mode IS 'Photo-z: centre of the densest bin';
COMMENT ON COLUMN skyclass.prediction.z_lo68 IS 'Photo-z: lower bound of the central 68% interval';
COMMENT ON COLUMN skyclass.prediction.z_hi68 IS 'Photo-z: upper bound of the central 68% interval';
COMMENT ON COLUMN skyclass.prediction.z_lo95 IS 'Photo-z: lower bound of the central 95% interval';
COMMENT ON COLUMN skyclass.prediction.z_hi95 IS 'Photo-z: upper bound of the central 95% interval';

-- Point estimates of a binned PDF; the same formulas as skyclass.train.photoz.point_estimates
-- (masses renormalised to sum 1, CDF linear inside a bin).
CREATE FUNCTION skyclass.pdf_summary(
    pdf real[], edges double precision[],
    OUT z_mean real, OUT z_median real, OUT z_mode real,
    OUT z_lo68 real, OUT z_hi68 real, OUT z_lo95 real, OUT z_hi95 real)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    n      integer := cardinality(pdf);
    lo     integer := array_lower(pdf, 1) - 1;
    total  double precision := 0;
    p      double precision[];
    cum    double precision[];
    acc    double precision := 0;
    mean   double precision := 0;
    best   double precision := -1;
    dens   double precision;
    imode  integer := 1;
    q      double precision[];
    z      double precision[];
    j      integer;
    mass   double precision;
    frac   double precision;
BEGIN
    IF n < 2 OR cardinality(edges) <> n + 1 THEN
        RAISE EXCEPTION 'a PDF of % bins needs % edges, not %', n, n + 1, cardinality(edges)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN 1..n LOOP
        IF pdf[lo + k] IS NULL OR pdf[lo + k] < 0 OR pdf[lo + k] = 'NaN'::real
           OR pdf[lo + k] = 'Infinity'::real THEN
            RAISE EXCEPTION 'PDF masses must be finite and non-negative'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        total := total + pdf[lo + k];
    END LOOP;
    IF total <= 0 THEN
        RAISE EXCEPTION 'a PDF needs a positive total mass' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    p := array_fill(0::double precision, ARRAY[n]);
    cum := p;
    FOR k IN 1..n LOOP
        p[k] := pdf[lo + k]::double precision / total;
        acc := acc + p[k];
        cum[k] := acc;
        mean := mean + p[k] * (0.5 * (edges[k] + edges[k + 1]));
        dens := p[k] / (edges[k + 1] - edges[k]);
        IF dens > best THEN
            best := dens;
            imode := k;
        END IF;
    END LOOP;
    q := ARRAY[0.5, (1.0::double precision - 0.68) / 2.0, (1.0::double precision + 0.68) / 2.0,
               (1.0::double precision - 0.95) / 2.0, (1.0::double precision + 0.95) / 2.0];
    z := q;
    FOR t IN 1..5 LOOP
        j := 1;
        WHILE j < n AND cum[j] < q[t] LOOP
            j := j + 1;
        END LOOP;
        mass := p[j];
        frac := (q[t] - (cum[j] - mass)) / CASE WHEN mass > 0 THEN mass ELSE 1.0 END;
        frac := least(greatest(frac, 0.0), 1.0);
        z[t] := edges[j] + frac * (edges[j + 1] - edges[j]);
    END LOOP;
    z_mean := mean;
    z_mode := 0.5 * (edges[imode] + edges[imode + 1]);
    z_median := z[1];
    z_lo68 := z[2];
    z_hi68 := z[3];
    z_lo95 := z[4];
    z_hi95 := z[5];
END
$$;
COMMENT ON FUNCTION skyclass.pdf_summary(real[], double precision[]) IS
    'Photo-z point estimates of PDF bin masses on bin edges: mean, median, mode and the central '
    '68% and 95% intervals (masses renormalised; the CDF is linear inside a bin).';

-- ---------------------------------------------------------------------------------------------
-- Job helpers
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION skyclass.scoring_lock_key(model_version bigint, catalog integer) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT hashtextextended('skyclass.rescore:' || model_version || ':' || catalog, 0)
$$;
COMMENT ON FUNCTION skyclass.scoring_lock_key(bigint, integer) IS
    'Key of the session advisory lock that keeps one scoring job per model version and catalog.';

CREATE FUNCTION skyclass.scoring_lock_holder(key bigint) RETURNS integer
LANGUAGE sql STABLE STRICT AS $$
    SELECT l.pid FROM pg_catalog.pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
       AND l.classid::bigint = ((key >> 32) & 4294967295)
       AND l.objid::bigint = (key & 4294967295)
     LIMIT 1
$$;
COMMENT ON FUNCTION skyclass.scoring_lock_holder(bigint) IS
    'Backend pid holding a scoring job''s advisory lock, or NULL when no job runs.';

CREATE FUNCTION skyclass.resolve_scoring_target(target text,
    OUT model_version_id bigint, OUT deployment text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    parts text[];
BEGIN
    IF target ~ '^[0-9]{1,18}$' THEN
        SELECT v.model_version_id INTO model_version_id
          FROM skyclass.model_version AS v WHERE v.model_version_id = target::bigint;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'model version % does not exist', target USING ERRCODE = 'undefined_object';
        END IF;
        RETURN;
    END IF;
    parts := regexp_match(target, '^([a-z][a-z0-9_]{0,62}):([0-9]{1,9})$');
    IF parts IS NOT NULL THEN
        SELECT v.model_version_id INTO model_version_id
          FROM skyclass.model_version AS v JOIN skyclass.model AS m USING (model_id)
         WHERE m.name = parts[1] AND v.version = parts[2]::integer;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'model % has no version %', parts[1], parts[2]
                USING ERRCODE = 'undefined_object';
        END IF;
        RETURN;
    END IF;
    SELECT d.model_version_id, d.name INTO model_version_id, deployment
      FROM skyclass.deployment AS d WHERE d.name = target;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no deployment named %', quote_literal(coalesce(target, 'NULL'))
            USING ERRCODE = 'undefined_object',
                  HINT = 'name a deployment (skyclass deploy set), MODEL:VERSION or a model_version_id';
    END IF;
END
$$;
COMMENT ON FUNCTION skyclass.resolve_scoring_target(text) IS
    'The model version a scoring target names: a deployment, MODEL:VERSION, or a model_version_id.';

CREATE FUNCTION skyclass.scoring_feature_set(model_version bigint, catalog integer) RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    own   record;
    other integer;
BEGIN
    SELECT fs.* INTO own
      FROM skyclass.model_version AS v JOIN skyclass.feature_set AS fs USING (feature_set_id)
     WHERE v.model_version_id = model_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % does not exist', model_version
            USING ERRCODE = 'undefined_object';
    END IF;
    IF own.catalog_id = catalog THEN
        RETURN own.feature_set_id;
    END IF;
    -- Another catalog: a feature set of that catalog with the same name and the same feature
    -- definitions (the spec names its catalog, so the versions differ).
    SELECT fs.feature_set_id INTO other
      FROM skyclass.feature_set AS fs
     WHERE fs.catalog_id = catalog AND fs.name = own.name
       AND fs.feature_names = own.feature_names
       AND fs.spec -> 'features' IS NOT DISTINCT FROM own.spec -> 'features'
     ORDER BY fs.created_at DESC, fs.feature_set_id DESC LIMIT 1;
    IF other IS NULL THEN
        RAISE EXCEPTION 'catalog % has no feature set % with the features of model version %',
            (SELECT c.name FROM skyclass.catalog AS c WHERE c.catalog_id = catalog),
            own.name, model_version
            USING ERRCODE = 'undefined_object',
                  HINT = 'build the feature set for that catalog first (skyclass features build)';
    END IF;
    RETURN other;
END
$$;
COMMENT ON FUNCTION skyclass.scoring_feature_set(bigint, integer) IS
    'The feature set whose table feeds a model version on a catalog: the version''s own, or one '
    'of the same name and features built for that catalog.';

-- The catalog partition of a version (NULL when never scored): the one attached under
-- predictions.mv_<version> whose name carries the catalog. Names are returned schema-qualified
-- so that they mean the same table whatever the search_path of the session using them.
CREATE FUNCTION skyclass.prediction_partition(model_version bigint, catalog integer)
RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT format('predictions.%I', c.relname)
      FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
     WHERE i.inhparent = to_regclass(format('predictions.%I', 'mv_' || model_version))
       AND c.relname LIKE format('mv\_%s\_c%s\_r%%', model_version, catalog)
$$;
COMMENT ON FUNCTION skyclass.prediction_partition(bigint, integer) IS
    'The attached partition holding a model version''s predictions of a catalog, or NULL.';

-- The SELECT that scores one chunk in the database (columns in skyclass.prediction's order).
CREATE FUNCTION skyclass.scoring_chunk_query(run bigint, chunk integer) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r        skyclass.scoring_run;
    c        skyclass.scoring_chunk;
    v        record;
    n        integer;
    elems    text;
    top      text;
    zcols    text;
    lat      text := '';
    anti     text := '';
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    SELECT * INTO c FROM skyclass.scoring_chunk WHERE run_id = run AND chunk_no = chunk;
    IF r.run_id IS NULL OR c.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no chunk %', run, chunk USING ERRCODE = 'undefined_object';
    END IF;
    SELECT mv.classes, mv.bin_edges, mv.task INTO v
      FROM skyclass.model_version AS mv WHERE mv.model_version_id = r.model_version_id;
    n := cardinality(v.classes);
    SELECT string_agg(format('s.p[%s]', k), ', ' ORDER BY k) INTO elems FROM generate_series(1, n) AS k;
    top := format('greatest(%s)', elems);
    IF v.task = 'photoz' THEN
        zcols := 'z.z_mean, z.z_median, z.z_mode, z.z_lo68, z.z_hi68, z.z_lo95, z.z_hi95';
        lat := format(' CROSS JOIN LATERAL skyclass.pdf_summary(s.p, %L::double precision[]) AS z',
                          v.bin_edges);
    ELSE
        zcols := 'NULL::real AS z_mean, NULL::real AS z_median, NULL::real AS z_mode, '
                 'NULL::real AS z_lo68, NULL::real AS z_hi68, NULL::real AS z_lo95, NULL::real AS z_hi95';
    END IF;
    IF r.write_kind = 'insert' THEN
        anti := format(' AND NOT EXISTS (SELECT 1 FROM %s AS q WHERE q.object_id = f.object_id'
                       ' AND q.model_version_id = %s AND q.catalog_id = %s)',
                       r.target_table, r.model_version_id, r.catalog_id);
    END IF;
    -- OFFSET 0 keeps the subquery: otherwise each reference to s.p would call predict again.
    RETURN format(
        'SELECT %s::bigint AS model_version_id, s.object_id, %s::bigint AS run_id, '
        '%s::integer AS catalog_id, %s AS top_probability, %s, now() AS scored_at, '
        '(%L::text[])[array_position(s.p, %s)] COLLATE "C" AS top_label, s.p AS probabilities '
        'FROM (SELECT f.object_id, skyclass.predict(%s::bigint, f.x) AS p FROM %s AS f '
        'WHERE f.object_id BETWEEN %L::bigint AND %L::bigint%s OFFSET 0) AS s%s',
        r.model_version_id, r.run_id, r.catalog_id, top, zcols, v.classes, top,
        r.model_version_id, r.feature_table, c.first_object_id, c.last_object_id, anti, lat);
END
$$;
COMMENT ON FUNCTION skyclass.scoring_chunk_query(bigint, integer) IS
    'The SQL that scores one chunk of a run with skyclass.predict (for EXPLAIN and debugging).';

CREATE FUNCTION skyclass.plan_scoring_chunks(run bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r      skyclass.scoring_run;
    anti   text := '';
    step   text;
    first  bigint;
    next   bigint;
    k      integer := 0;
    tail   bigint;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    IF r.write_kind = 'insert' THEN
        anti := format(' AND NOT EXISTS (SELECT 1 FROM %s AS q WHERE q.object_id = f.object_id)',
                       r.target_table);
    END IF;
    -- Chunks are contiguous object_id ranges covering all bigints (the first from the smallest,
    -- the last to the largest), so chunk tables can be range partitions with no gap and every
    -- catalog object falls in exactly one chunk. Each boundary is the object chunk_size rows
    -- after the previous one in the primary key: one walk along the index in total, exact, and
    -- without numbering or sorting every row.
    step := format('SELECT f.object_id FROM %s AS f WHERE f.object_id >= $1%s '
                   'ORDER BY f.object_id OFFSET %s LIMIT 1', r.feature_table, anti, r.chunk_size);
    EXECUTE format('SELECT min(f.object_id) FROM %s AS f WHERE true%s', r.feature_table, anti)
       INTO first;
    LOOP
        next := NULL;
        IF first IS NOT NULL THEN
            EXECUTE step INTO next USING first;
        END IF;
        IF next IS NULL THEN
            IF first IS NOT NULL THEN
                EXECUTE format('SELECT count(*) FROM %s AS f WHERE f.object_id >= $1%s',
                               r.feature_table, anti) INTO tail USING first;
            ELSE
                tail := 0;
            END IF;
            INSERT INTO skyclass.scoring_chunk (run_id, chunk_no, first_object_id, last_object_id, planned_rows)
            VALUES (run, k, CASE WHEN k = 0 THEN (-9223372036854775807)::bigint - 1 ELSE first END,
                    9223372036854775807::bigint, tail);
            EXIT;
        END IF;
        INSERT INTO skyclass.scoring_chunk (run_id, chunk_no, first_object_id, last_object_id, planned_rows)
        VALUES (run, k, CASE WHEN k = 0 THEN (-9223372036854775807)::bigint - 1 ELSE first END,
                next - 1, r.chunk_size);
        first := next;
        k := k + 1;
    END LOOP;
    UPDATE skyclass.scoring_run SET chunks_total = k + 1 WHERE run_id = run;
    RETURN k + 1;
END
$$;
COMMENT ON FUNCTION skyclass.plan_scoring_chunks(bigint) IS
    'Split a new run''s objects into contiguous object_id ranges of chunk_size objects.';

CREATE FUNCTION skyclass.start_scoring_run(
    target text,
    catalog text,
    only_new boolean DEFAULT false,
    chunk_size integer DEFAULT 50000,
    scorer text DEFAULT 'database',
    triggered_by text DEFAULT 'manual',
    schedule_name text DEFAULT NULL,
    resume boolean DEFAULT true,
    workers integer DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t         record;
    cat       skyclass.catalog;
    fs        skyclass.feature_set;
    v         record;
    key       bigint;
    holder    integer;
    running   skyclass.scoring_run;
    last_run  skyclass.scoring_run;
    old       record;
    run       bigint;
    mode      text := CASE WHEN only_new THEN 'only_new' ELSE 'full' END;
    ftable    regclass;
    waited    integer := 0;
BEGIN
    IF chunk_size IS NULL OR chunk_size < 1 OR chunk_size > 100000000 THEN
        RAISE EXCEPTION 'chunk_size must be between 1 and 100000000, not %', chunk_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF workers IS NULL OR workers < 1 THEN
        RAISE EXCEPTION 'workers must be at least 1, not %', workers
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF scorer IS NULL OR scorer NOT IN ('database', 'client') THEN
        RAISE EXCEPTION 'scorer must be database or client, not %', scorer
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := skyclass.resolve_scoring_target(target);
    SELECT * INTO cat FROM skyclass.catalog AS c WHERE c.name = start_scoring_run.catalog;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'catalog % is not registered', quote_literal(coalesce(catalog, 'NULL'))
            USING ERRCODE = 'undefined_object', HINT = 'see skyclass.catalog (skyclass catalog list)';
    END IF;
    SELECT mv.n_features, mv.task, mv.classes, mv.bin_edges INTO v
      FROM skyclass.model_version AS mv WHERE mv.model_version_id = t.model_version_id;
    IF v.task = 'photoz' AND (cardinality(v.bin_edges) <> cardinality(v.classes) + 1
        OR EXISTS (SELECT 1 FROM unnest(v.bin_edges) AS e(z)
                    WHERE z IN ('NaN', 'Infinity', '-Infinity'))) THEN
        RAISE EXCEPTION 'model version % has % PDF bins but % bin edges (they must be finite)',
            t.model_version_id, cardinality(v.classes), cardinality(v.bin_edges)
            USING ERRCODE = 'invalid_object_definition';
    END IF;
    SELECT * INTO fs FROM skyclass.feature_set AS f
     WHERE f.feature_set_id = skyclass.scoring_feature_set(t.model_version_id, cat.catalog_id);
    IF cardinality(fs.feature_names) <> v.n_features THEN
        RAISE EXCEPTION 'feature set % has % features, model version % expects %', fs.name,
            cardinality(fs.feature_names), t.model_version_id, v.n_features
            USING ERRCODE = 'invalid_object_definition';
    END IF;
    ftable := to_regclass(format('features.%I', fs.table_name));
    IF ftable IS NULL THEN
        RAISE EXCEPTION 'feature table features.% of feature set % does not exist', fs.table_name, fs.name
            USING ERRCODE = 'undefined_table', HINT = 'rebuild the feature set';
    END IF;

    -- Single flight: the lock lives as long as this session (or until finish/fail release it).
    key := skyclass.scoring_lock_key(t.model_version_id, cat.catalog_id);
    IF NOT pg_try_advisory_lock(key) THEN
        holder := skyclass.scoring_lock_holder(key);
        -- The holder commits its run row right after taking the lock: give it a moment so
        -- that the message can name the run.
        LOOP
            SELECT * INTO running FROM skyclass.scoring_run AS s
             WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
               AND s.status = 'running' ORDER BY s.run_id DESC LIMIT 1;
            EXIT WHEN running.run_id IS NOT NULL OR waited >= 50;
            PERFORM pg_sleep(0.02);
            waited := waited + 1;
        END LOOP;
        RAISE EXCEPTION 'scoring model version % on catalog % is already running (run %, started %, pid %)',
            t.model_version_id, cat.name, coalesce(running.run_id::text, '?'),
            coalesce(date_trunc('second', running.started_at)::text, '?'),
            coalesce(holder::text, '?')
            USING ERRCODE = 'lock_not_available',
                  HINT = CASE WHEN (SELECT a.state FROM pg_catalog.pg_stat_activity AS a WHERE a.pid = holder) = 'idle'
                         THEN format('backend %s holds the lock but is idle (a cancelled CALL?): end that session', holder)
                         ELSE 'wait for it to finish, or follow it in skyclass.scoring_run' END;
    END IF;
    BEGIN
        -- We hold the lock, so runs still marked running have lost their backend.
        UPDATE skyclass.scoring_run AS s
           SET status = 'interrupted', finished_at = clock_timestamp(),
               error = coalesce(s.error, format(
                   'backend %s ended before the run finished (terminated, cancelled or server restart)',
                   s.backend_pid))
         WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
           AND s.status = 'running';

        SELECT * INTO last_run FROM skyclass.scoring_run AS s
         WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
         ORDER BY s.run_id DESC LIMIT 1;
        IF resume AND last_run.run_id IS NOT NULL AND last_run.status IN ('interrupted', 'failed')
           AND last_run.mode = mode AND last_run.feature_set_id = fs.feature_set_id
           AND (last_run.chunks_total = 0 OR to_regclass(nullif(last_run.target_table, '')) IS NOT NULL) THEN
            run := last_run.run_id;
            UPDATE skyclass.scoring_run AS s
               SET status = 'running', attempts = s.attempts + 1, resumed_at = clock_timestamp(),
                   finished_at = NULL, error = NULL, backend_pid = pg_backend_pid(),
                   db_user = current_user, scorer = start_scoring_run.scorer,
                   triggered_by = start_scoring_run.triggered_by,
                   schedule_name = start_scoring_run.schedule_name,
                   workers = start_scoring_run.workers,
                   deployment = coalesce(t.deployment, s.deployment)
             WHERE s.run_id = run;
            RAISE NOTICE 'resuming run % (% of % chunks done)', run, last_run.chunks_done, last_run.chunks_total;
            RETURN run;
        END IF;

        -- Unfinished runs that will never be resumed: drop their unpublished partitions.
        FOR old IN
            SELECT s.run_id, s.target_table FROM skyclass.scoring_run AS s
             WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
               AND s.status IN ('interrupted', 'failed') AND s.write_kind = 'partition'
               AND to_regclass(nullif(s.target_table, '')) IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits AS i
                                WHERE i.inhrelid = to_regclass(s.target_table))
        LOOP
            EXECUTE format('DROP TABLE %s', old.target_table);
        END LOOP;

        INSERT INTO skyclass.scoring_run AS s
            (model_version_id, catalog_id, feature_set_id, deployment, mode, write_kind, scorer,
             chunk_size, catalog_table, feature_table, target_table, workers, triggered_by,
             schedule_name)
        VALUES (t.model_version_id, cat.catalog_id, fs.feature_set_id, t.deployment, mode,
                'partition', scorer, chunk_size, format('%I.%I', cat.schema_name, cat.table_name),
                format('features.%I', fs.table_name), '', workers,
                start_scoring_run.triggered_by, start_scoring_run.schedule_name)
        RETURNING s.run_id INTO run;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_advisory_unlock(key);
        RAISE;
    END;
    RETURN run;
END
$$;
COMMENT ON FUNCTION skyclass.start_scoring_run(text, text, boolean, integer, text, text, text, boolean, integer) IS
    'Start (or resume) the scoring job of a deployment or model version over a catalog and '
    'return its run_id. Takes the job''s session advisory lock (fails at once with "already '
    'running" when another session holds it), marks runs whose backend died as interrupted, '
    'resumes the last interrupted or failed run of the same mode, or registers a new one; commit, '
    'then call skyclass.plan_scoring_run so that other starters see the run at once.';


CREATE FUNCTION skyclass.plan_scoring_run(run bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r        skyclass.scoring_run;
    leaf     text;
    target_t text;
    key      bigint;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run FOR UPDATE;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.chunks_total > 0 THEN
        RETURN r.chunks_total;  -- planned already (a resumed run)
    END IF;
    key := skyclass.scoring_lock_key(r.model_version_id, r.catalog_id);
    IF skyclass.scoring_lock_holder(key) IS DISTINCT FROM pg_backend_pid() THEN
        RAISE EXCEPTION 'this session does not hold the lock of scoring run %', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- The version's partition of skyclass.prediction, created on first scoring (jobs of other
    -- catalogs may race to create it).
    PERFORM pg_advisory_xact_lock(hashtextextended('skyclass.prediction_partition', 0));
    IF to_regclass(format('predictions.%I', 'mv_' || r.model_version_id)) IS NULL THEN
        EXECUTE format('CREATE TABLE predictions.%I PARTITION OF skyclass.prediction '
                       'FOR VALUES IN (%s) PARTITION BY LIST (catalog_id)',
                       'mv_' || r.model_version_id, r.model_version_id);
    END IF;
    -- Without a catalog partition yet, only_new is a full run.
    leaf := skyclass.prediction_partition(r.model_version_id, r.catalog_id);
    IF r.mode = 'only_new' AND leaf IS NOT NULL THEN
        UPDATE skyclass.scoring_run SET write_kind = 'insert', target_table = leaf WHERE run_id = run;
    ELSE
        target_t := format('predictions.%I',
                           format('mv_%s_c%s_r%s', r.model_version_id, r.catalog_id, run));
        IF to_regclass(target_t) IS NOT NULL THEN
            EXECUTE format('DROP TABLE %s', target_t);
        END IF;
        EXECUTE format('CREATE TABLE %s (LIKE skyclass.prediction INCLUDING DEFAULTS) '
                       'PARTITION BY RANGE (object_id)', target_t);
        EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (model_version_id, catalog_id, object_id)', target_t);
        EXECUTE format('CREATE INDEX ON %s (top_label, top_probability DESC)', target_t);
        UPDATE skyclass.scoring_run SET write_kind = 'partition', target_table = target_t
         WHERE run_id = run;
    END IF;
    PERFORM skyclass.plan_scoring_chunks(run);
    RETURN (SELECT chunks_total FROM skyclass.scoring_run WHERE run_id = run);
END
$$;
COMMENT ON FUNCTION skyclass.plan_scoring_run(bigint) IS
    'Plan a new run (a no-op for a resumed one): create the version''s partition if needed and '
    'the run''s catalog partition (or, for only_new on a scored catalog, insert into the existing '
    'one), split the objects into chunks.';

CREATE FUNCTION skyclass.claim_scoring_chunk(run bigint,
    OUT chunk_no integer, OUT first_object_id bigint, OUT last_object_id bigint)
RETURNS SETOF record
LANGUAGE sql AS $$
    SELECT c.chunk_no, c.first_object_id, c.last_object_id
      FROM skyclass.scoring_chunk AS c
     WHERE c.run_id = run AND c.done_at IS NULL
       AND EXISTS (SELECT 1 FROM skyclass.scoring_run AS r WHERE r.run_id = run AND r.status = 'running')
     ORDER BY c.chunk_no
     LIMIT 1
       FOR UPDATE OF c SKIP LOCKED
$$;
COMMENT ON FUNCTION skyclass.claim_scoring_chunk(bigint) IS
    'Lock the next unfinished chunk of a running run (FOR UPDATE SKIP LOCKED, so parallel '
    'sessions take different chunks); no row when none is left. Complete it in the same transaction.';

-- The CHECK of a chunk table proves every constraint it needs as a partition (NOT NULL,
-- version, catalog, object_id range), so attaching it scans nothing.
CREATE FUNCTION skyclass.chunk_check(run bigint, chunk integer) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT format(
        'CHECK (model_version_id = %s AND catalog_id = %s AND object_id >= %L::bigint '
        'AND object_id <= %L::bigint AND run_id IS NOT NULL AND top_probability IS NOT NULL '
        'AND scored_at IS NOT NULL AND top_label IS NOT NULL AND probabilities IS NOT NULL)',
        r.model_version_id, r.catalog_id, c.first_object_id, c.last_object_id)
      FROM skyclass.scoring_run AS r
      JOIN skyclass.scoring_chunk AS c USING (run_id)
     WHERE r.run_id = run AND c.chunk_no = chunk
$$;
COMMENT ON FUNCTION skyclass.chunk_check(bigint, integer) IS
    'The CHECK constraint of a chunk table (everything its partition bound and NOT NULLs need).';

CREATE FUNCTION skyclass.create_chunk_table(run bigint, chunk integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r   skyclass.scoring_run;
    tbl text;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    IF r.write_kind IS DISTINCT FROM 'partition' THEN
        RAISE EXCEPTION 'scoring run % does not write chunk tables', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    tbl := r.target_table || '_' || chunk;
    EXECUTE format('CREATE TABLE %s (LIKE skyclass.prediction INCLUDING DEFAULTS)', tbl);
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, 'chunk_' || chunk,
                   skyclass.chunk_check(run, chunk));
    RETURN tbl;
END
$$;
COMMENT ON FUNCTION skyclass.create_chunk_table(bigint, integer) IS
    'Create the (empty, constrained) table of one chunk of a partition run and return its name; '
    'fill it, then call skyclass.complete_scoring_chunk in the same transaction.';

CREATE FUNCTION skyclass.complete_scoring_chunk(run bigint, chunk integer, n_rows bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r       skyclass.scoring_run;
    c       skyclass.scoring_chunk;
    tbl     text;
    missing bigint;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    SELECT * INTO c FROM skyclass.scoring_chunk AS k WHERE k.run_id = run AND k.chunk_no = chunk FOR UPDATE;
    IF c.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no chunk %', run, chunk USING ERRCODE = 'undefined_object';
    END IF;
    IF c.done_at IS NOT NULL THEN
        RAISE EXCEPTION 'chunk % of scoring run % is already done', chunk, run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF r.write_kind = 'partition' THEN
        tbl := r.target_table || '_' || chunk;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                        WHERE conrelid = to_regclass(tbl) AND conname = 'chunk_' || chunk) THEN
            -- Made by CREATE TABLE AS: constrain it now (one scan of the chunk each).
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, 'chunk_' || chunk,
                           skyclass.chunk_check(run, chunk));
            EXECUTE format(
                'ALTER TABLE %s ALTER model_version_id SET NOT NULL, ALTER object_id SET NOT NULL, '
                'ALTER run_id SET NOT NULL, ALTER catalog_id SET NOT NULL, '
                'ALTER top_probability SET NOT NULL, ALTER scored_at SET NOT NULL, '
                'ALTER top_label SET NOT NULL, ALTER probabilities SET NOT NULL, '
                'ALTER scored_at SET DEFAULT now()', tbl);
        END IF;
        -- Attaching builds the chunk's primary key and top-label index.
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)',
            r.target_table, tbl,
            CASE WHEN c.first_object_id = (-9223372036854775807)::bigint - 1 THEN 'MINVALUE'
                 ELSE c.first_object_id::text END,
            CASE WHEN c.last_object_id = 9223372036854775807 THEN 'MAXVALUE' ELSE (c.last_object_id + 1)::text END);
    END IF;
    -- Objects of the catalog that the feature table lacks are not scored: count them, range by
    -- range (the chunks cover every object id), so the count costs no serial pass.
    -- (The range on both sides lets the planner merge two index-only scans: 3x faster than
    -- probing the feature table once per catalog object.)
    EXECUTE format('SELECT count(*) FROM %1$s AS c WHERE c.object_id BETWEEN %3$L::bigint AND %4$L::bigint '
                   'AND NOT EXISTS (SELECT 1 FROM %2$s AS f WHERE f.object_id = c.object_id '
                   'AND f.object_id BETWEEN %3$L::bigint AND %4$L::bigint)',
                   r.catalog_table, r.feature_table, c.first_object_id, c.last_object_id)
       INTO missing;
    UPDATE skyclass.scoring_chunk AS k
       SET rows = n_rows, objects_without_features = missing, done_at = clock_timestamp()
     WHERE k.run_id = run AND k.chunk_no = chunk;
    UPDATE skyclass.scoring_run AS s
       SET chunks_done = s.chunks_done + 1, rows_scored = s.rows_scored + n_rows,
           objects_without_features = coalesce(s.objects_without_features, 0) + missing
     WHERE s.run_id = run;
END
$$;
COMMENT ON FUNCTION skyclass.complete_scoring_chunk(bigint, integer, bigint) IS
    'Mark a chunk done in the transaction that wrote its predictions (attaching its chunk table '
    'for partition runs). Shared by the in-database scorer and the client-side fallback.';

CREATE FUNCTION skyclass.score_chunk(run bigint, chunk integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    r skyclass.scoring_run;
    q text;
    n bigint;
BEGIN
    IF to_regprocedure('skyclass.predict(bigint, real[])') IS NULL THEN
        RAISE EXCEPTION 'the skyclass extension is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'run the job with `skyclass score` (it falls back to client-side scoring), '
                         'or install the extension (docs/extension.md)';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    q := skyclass.scoring_chunk_query(run, chunk);
    -- JIT compiles every chunk's expressions again and costs more than it saves here.
    SET LOCAL jit = off;
    -- A chunk's commit need not wait for its WAL flush: WAL is replayed in order, so a crash
    -- loses the last chunks together with their completion marks (the resume redoes them),
    -- never one without the other; finish_scoring_run commits synchronously, so a run reported
    -- succeeded is durable with every chunk before it.
    SET LOCAL synchronous_commit = off;
    IF r.write_kind = 'partition' AND current_setting('max_parallel_workers_per_gather')::integer > 0 THEN
        -- One session alone (CALL skyclass.rescore, pg_cron): CREATE TABLE AS may use parallel
        -- workers, INSERT ... SELECT never does in PostgreSQL 15.
        EXECUTE format('CREATE TABLE %s AS %s', r.target_table || '_' || chunk, q);
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSIF r.write_kind = 'partition' THEN
        -- Several sessions fill the cores: insert into a table made with its constraints, which
        -- spares the scans that constraining a CREATE TABLE AS result costs.
        EXECUTE format('INSERT INTO %s %s', skyclass.create_chunk_table(run, chunk), q);
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSE
        EXECUTE format('INSERT INTO %s %s ON CONFLICT DO NOTHING', r.target_table, q);
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    PERFORM skyclass.complete_scoring_chunk(run, chunk, n);
    RETURN n;
END
$$;
COMMENT ON FUNCTION skyclass.score_chunk(bigint, integer) IS
    'Score one claimed chunk with skyclass.predict and complete it (same transaction).';

CREATE FUNCTION skyclass.release_scoring_lock(run bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    key      bigint;
    released boolean := false;
BEGIN
    SELECT skyclass.scoring_lock_key(s.model_version_id, s.catalog_id) INTO key
      FROM skyclass.scoring_run AS s WHERE s.run_id = run;
    -- A session that started the job again after a cancel holds the lock more than once.
    WHILE key IS NOT NULL AND skyclass.scoring_lock_holder(key) = pg_backend_pid() LOOP
        PERFORM pg_advisory_unlock(key);
        released := true;
    END LOOP;
    RETURN released;
END
$$;
COMMENT ON FUNCTION skyclass.release_scoring_lock(bigint) IS
    'Release a run''s single-flight lock if this session holds it.';

CREATE FUNCTION skyclass.fail_scoring_run(run bigint, message text, new_status text DEFAULT 'failed')
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF new_status NOT IN ('failed', 'interrupted') THEN
        RAISE EXCEPTION 'a run can only be marked failed or interrupted, not %', new_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE skyclass.scoring_run AS s
       SET status = new_status, error = message, finished_at = clock_timestamp()
     WHERE s.run_id = run AND s.status = 'running';
    PERFORM skyclass.release_scoring_lock(run);
END
$$;
COMMENT ON FUNCTION skyclass.fail_scoring_run(bigint, text, text) IS
    'Mark a running run failed (or interrupted) with a message and release its lock; the next '
    'start of the same job resumes it.';

CREATE FUNCTION skyclass.finish_scoring_run(run bigint) RETURNS skyclass.scoring_run
LANGUAGE plpgsql AS $$
DECLARE
    r        skyclass.scoring_run;
    key      bigint;
    left_    integer;
    old      text;
    parent   text;
    timeout  text := current_setting('lock_timeout');
    attempt  integer := 0;
    done     boolean := false;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run FOR UPDATE;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.status <> 'running' THEN
        RAISE EXCEPTION 'scoring run % is %, not running', run, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    key := skyclass.scoring_lock_key(r.model_version_id, r.catalog_id);
    IF skyclass.scoring_lock_holder(key) IS DISTINCT FROM pg_backend_pid() THEN
        RAISE EXCEPTION 'this session does not hold the lock of scoring run %', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT count(*) INTO left_ FROM skyclass.scoring_chunk AS c WHERE c.run_id = run AND c.done_at IS NULL;
    IF left_ > 0 THEN
        RAISE EXCEPTION 'scoring run % still has % unfinished chunks', run, left_
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF r.write_kind = 'partition' THEN
        -- Statistics for the planner before readers see the rows; a small sample is enough for
        -- these columns (3 labels, probabilities, ids) and costs a tenth of the default one.
        SET LOCAL default_statistics_target = 10;
        EXECUTE format('ANALYZE %s', r.target_table);
        parent := format('predictions.%I', 'mv_' || r.model_version_id);
        -- Swap the new catalog partition in: readers see the old rows or the new ones, never a
        -- mix. DETACH needs an exclusive lock on the version's partition; wait for it in short
        -- tries so that new readers do not queue behind us for long.
        WHILE NOT done LOOP
            BEGIN
                SET LOCAL lock_timeout = '2s';
                old := skyclass.prediction_partition(r.model_version_id, r.catalog_id);
                IF old IS NOT NULL THEN
                    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, old);
                    EXECUTE format('DROP TABLE %s', old);
                END IF;
                EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES IN (%s)',
                               parent, r.target_table, r.catalog_id);
                done := true;
            EXCEPTION WHEN lock_not_available THEN
                attempt := attempt + 1;
                IF attempt >= 30 THEN
                    RAISE;
                END IF;
                PERFORM pg_sleep(0.1 * attempt);
            END;
        END LOOP;
        PERFORM set_config('lock_timeout', timeout, true);
    END IF;
    UPDATE skyclass.scoring_run AS s
       SET status = 'succeeded', finished_at = clock_timestamp(), error = NULL,
           chunks_done = (SELECT count(*) FROM skyclass.scoring_chunk AS c WHERE c.run_id = run),
           rows_scored = (SELECT coalesce(sum(c.rows), 0) FROM skyclass.scoring_chunk AS c WHERE c.run_id = run),
           objects_without_features = (SELECT coalesce(sum(c.objects_without_features), 0)
                                         FROM skyclass.scoring_chunk AS c WHERE c.run_id = run)
     WHERE s.run_id = run
    RETURNING * INTO r;
    PERFORM skyclass.release_scoring_lock(run);
    RETURN r;
END
$$;
COMMENT ON FUNCTION skyclass.finish_scoring_run(bigint) IS
    'Complete a run whose chunks are all done: swap its catalog partition in (replacing the '
    'previous one of that version and catalog in one transaction), mark it succeeded, release '
    'the lock.';

CREATE PROCEDURE skyclass.score_chunks(run bigint)
LANGUAGE plpgsql AS $$
DECLARE
    c       record;
    n       bigint;
    failed  text;
    state   text;
    status  text;
BEGIN
    LOOP
        failed := NULL;
        BEGIN
            SELECT * INTO c FROM skyclass.claim_scoring_chunk(run);
            IF NOT FOUND THEN
                EXIT;
            END IF;
            n := skyclass.score_chunk(run, c.chunk_no);
        EXCEPTION WHEN OTHERS OR QUERY_CANCELED THEN
            GET STACKED DIAGNOSTICS failed = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
        END;
        IF failed IS NOT NULL THEN
            status := CASE WHEN state = '57014' THEN 'interrupted' ELSE 'failed' END;
            PERFORM skyclass.fail_scoring_run(run, format('chunk %s: %s (SQLSTATE %s)',
                                                          c.chunk_no, failed, state), status);
            COMMIT;
            RAISE EXCEPTION 'scoring run % %: chunk %: %', run, status, c.chunk_no, failed
                USING ERRCODE = state;
        END IF;
        COMMIT;
    END LOOP;
    COMMIT;
END
$$;
COMMENT ON PROCEDURE skyclass.score_chunks(bigint) IS
    'Worker loop: claim, score and commit chunks of a run until none is left. Several sessions '
    'may run it on one run at once; a failing chunk marks the run failed.';

CREATE PROCEDURE skyclass.rescore(
    deployment_or_version text,
    catalog text,
    only_new boolean DEFAULT false,
    chunk_size integer DEFAULT 50000,
    schedule_name text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    run    bigint;
    r      skyclass.scoring_run;
    failed text;
    state  text;
BEGIN
    run := skyclass.start_scoring_run(
        deployment_or_version, catalog, only_new, chunk_size, 'database',
        CASE WHEN schedule_name IS NOT NULL OR current_setting('application_name') = 'pg_cron'
             THEN 'schedule' ELSE 'manual' END,
        schedule_name);
    COMMIT;
    BEGIN
        PERFORM skyclass.plan_scoring_run(run);
    EXCEPTION WHEN OTHERS OR QUERY_CANCELED THEN
        GET STACKED DIAGNOSTICS failed = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
    END;
    IF failed IS NOT NULL THEN
        PERFORM skyclass.fail_scoring_run(run, format('planning: %s (SQLSTATE %s)', failed, state));
        COMMIT;
        RAISE EXCEPTION 'scoring run % failed while planning: %', run, failed USING ERRCODE = state;
    END IF;
    COMMIT;
    CALL skyclass.score_chunks(run);
    BEGIN
        r := skyclass.finish_scoring_run(run);
    EXCEPTION WHEN OTHERS OR QUERY_CANCELED THEN
        GET STACKED DIAGNOSTICS failed = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
    END;
    IF failed IS NOT NULL THEN
        PERFORM skyclass.fail_scoring_run(run, format('finishing: %s (SQLSTATE %s)', failed, state));
        COMMIT;
        RAISE EXCEPTION 'scoring run % failed while finishing: %', run, failed USING ERRCODE = state;
    END IF;
    COMMIT;
    RAISE NOTICE 'scoring run % succeeded: % rows in % chunks (% objects without features)',
        run, r.rows_scored, r.chunks_done, r.objects_without_features;
END
$$;
COMMENT ON PROCEDURE skyclass.rescore(text, text, boolean, integer, text) IS
    'Score a catalog with a deployment (or MODEL:VERSION, or a model_version_id) in this '
    'session, committing per chunk: CALL skyclass.rescore(''sgq_current'', ''sdss17''). '
    'Resumes an interrupted run, refuses to start when the same job runs elsewhere, only_new '
    'scores objects without a prediction of that version. Usable from psql and pg_cron; '
    '`skyclass score` runs the same job with several sessions.';

-- ---------------------------------------------------------------------------------------------
-- Published views
-- ---------------------------------------------------------------------------------------------
CREATE VIEW skyclass.prediction_long AS
SELECT c.name AS catalog, p.object_id, p.model_version_id, v.classes[u.k] AS class,
       u.probability, u.rank
  FROM skyclass.prediction AS p
  JOIN skyclass.model_version AS v ON v.model_version_id = p.model_version_id
  JOIN skyclass.catalog AS c ON c.catalog_id = p.catalog_id
 CROSS JOIN LATERAL (
       SELECT e.k::integer AS k, e.probability,
              row_number() OVER (ORDER BY e.probability DESC, e.k) AS rank
         FROM unnest(p.probabilities) WITH ORDINALITY AS e(probability, k)) AS u;
COMMENT ON VIEW skyclass.prediction_long IS
    'Predictions in long form: one row per object, model version and class with its probability '
    'and rank (1 = most probable; ties ranked in class order).';

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

CREATE FUNCTION skyclass.class_changes(version_a bigint, version_b bigint, catalog text DEFAULT NULL)
RETURNS TABLE (catalog text, object_id bigint, label_a text, probability_a real,
               label_b text, probability_b real)
LANGUAGE sql STABLE AS $$
    SELECT c.name, a.object_id, a.top_label, a.top_probability, b.top_label, b.top_probability
      FROM skyclass.prediction AS a
      JOIN skyclass.prediction AS b
        ON b.catalog_id = a.catalog_id AND b.object_id = a.object_id
      JOIN skyclass.catalog AS c ON c.catalog_id = a.catalog_id
     WHERE a.model_version_id = version_a AND b.model_version_id = version_b
       AND a.top_label <> b.top_label
       AND (class_changes.catalog IS NULL OR c.name = class_changes.catalog)
$$;
COMMENT ON FUNCTION skyclass.class_changes(bigint, bigint, text) IS
    'Objects whose top label differs between two model versions (optionally in one catalog), '
    'with both labels and probabilities.';

-- ---------------------------------------------------------------------------------------------
-- Read-only role for portals
-- ---------------------------------------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'skyclass_reader') THEN
        CREATE ROLE skyclass_reader NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA skyclass, catalogs TO skyclass_reader;
GRANT SELECT ON skyclass.prediction_long, skyclass.current_classification, skyclass.prediction,
    skyclass.catalog, skyclass.deployment, skyclass.deployment_history, skyclass.model
    TO skyclass_reader;
GRANT SELECT (model_version_id, model_id, version, feature_set_id, task, estimator, n_features,
              classes, bin_edges, created_at) ON skyclass.model_version TO skyclass_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA catalogs TO skyclass_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA catalogs GRANT SELECT ON TABLES TO skyclass_reader;
REVOKE ALL ON skyclass.model_artifact FROM skyclass_reader;
"""

DOWNGRADE = r"""
ALTER DEFAULT PRIVILEGES IN SCHEMA catalogs REVOKE SELECT ON TABLES FROM skyclass_reader;
REVOKE ALL ON ALL TABLES IN SCHEMA catalogs FROM skyclass_reader;
REVOKE ALL ON ALL TABLES IN SCHEMA skyclass FROM skyclass_reader;
REVOKE USAGE ON SCHEMA skyclass, catalogs FROM skyclass_reader;
DROP FUNCTION skyclass.class_changes(bigint, bigint, text);
DROP VIEW skyclass.current_classification;
DROP VIEW skyclass.prediction_long;
DROP PROCEDURE skyclass.rescore(text, text, boolean, integer, text);
DROP PROCEDURE skyclass.score_chunks(bigint);
DROP FUNCTION skyclass.finish_scoring_run(bigint);
DROP FUNCTION skyclass.fail_scoring_run(bigint, text, text);
DROP FUNCTION skyclass.release_scoring_lock(bigint);
DROP FUNCTION skyclass.score_chunk(bigint, integer);
DROP FUNCTION skyclass.complete_scoring_chunk(bigint, integer, bigint);
DROP FUNCTION skyclass.create_chunk_table(bigint, integer);
DROP FUNCTION skyclass.chunk_check(bigint, integer);
DROP FUNCTION skyclass.claim_scoring_chunk(bigint);
DROP FUNCTION skyclass.start_scoring_run(text, text, boolean, integer, text, text, text, boolean, integer);
DROP FUNCTION skyclass.plan_scoring_run(bigint);
DROP FUNCTION skyclass.plan_scoring_chunks(bigint);
DROP FUNCTION skyclass.scoring_chunk_query(bigint, integer);
DROP FUNCTION skyclass.prediction_partition(bigint, integer);
DROP FUNCTION skyclass.scoring_feature_set(bigint, integer);
DROP FUNCTION skyclass.resolve_scoring_target(text);
DROP FUNCTION skyclass.scoring_lock_holder(bigint);
DROP FUNCTION skyclass.scoring_lock_key(bigint, integer);
DROP FUNCTION skyclass.pdf_summary(real[], double precision[]);
DROP TABLE skyclass.prediction CASCADE;
DROP SCHEMA predictions CASCADE;
DROP TABLE skyclass.scoring_schedule;
DROP TABLE skyclass.scoring_chunk;
DROP TABLE skyclass.scoring_run;
DROP FUNCTION skyclass.deployed_version(text, timestamptz);
DROP FUNCTION skyclass.deploy(text, bigint, text);
DROP TABLE skyclass.deployment_history;
DROP TABLE skyclass.deployment;
DROP FUNCTION skyclass.deployment_log();
DROP FUNCTION skyclass.deployment_guard();
DROP FUNCTION skyclass.refuse_change();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
