-- skyclass head SQL: Out-of-distribution scores (the OOD forest of a model version).
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

CREATE OR REPLACE FUNCTION skyclass.ood_percentile(model_version bigint, features real[])
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

COMMENT ON FUNCTION skyclass.ood_percentile(bigint,real[]) IS
'OOD percentile (0 to 100) of one row of features for a model version: its OOD forest''s '
'score read against held-out training scores (99 = stranger than 99% of them). Needs the '
'skyclass extension 0.3.0 and an OOD forest (skyclass ood fit). Bad arguments: 22023.';

CREATE OR REPLACE FUNCTION skyclass.ood_start_run(model_version bigint, catalog integer, chunk_size integer DEFAULT 100000, trigger text DEFAULT 'manual'::text)
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

CREATE OR REPLACE FUNCTION skyclass.ood_score_chunk(run_id bigint, chunk_no integer)
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

CREATE OR REPLACE FUNCTION skyclass.ood_finish_run(run_id bigint)
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

CREATE OR REPLACE PROCEDURE skyclass.refresh_ood(IN target text, IN catalog text, IN chunk_size integer DEFAULT 100000)
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

CREATE OR REPLACE PROCEDURE skyclass.rescore_with_ood(IN deployment_or_version text, IN catalog text, IN only_new boolean DEFAULT false, IN chunk_size integer DEFAULT 50000, IN schedule_name text DEFAULT NULL::text)
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

CREATE OR REPLACE FUNCTION skyclass.anomaly_rank(target text, catalog text)
 RETURNS TABLE(rank bigint, object_id bigint, raw_score double precision, percentile real, in_domain boolean, model_version_id bigint)
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    ranked  bigint;
    cat_id  integer;
    version_label text;
BEGIN
    IF target IS NULL OR catalog IS NULL THEN
        RAISE EXCEPTION 'target and catalog must not be NULL' USING ERRCODE = '22023';
    END IF;
    BEGIN
        ranked := (skyclass.resolve_scoring_target(target)).model_version_id;
    EXCEPTION WHEN undefined_object THEN
        -- A model name alone: its newest version.
        SELECT v.model_version_id INTO ranked
          FROM skyclass.model_version AS v JOIN skyclass.model AS m USING (model_id)
         WHERE m.name = target ORDER BY v.version DESC LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no anomaly model, model version or deployment named %',
                quote_literal(target) USING ERRCODE = '22023',
                HINT = 'Name an anomaly model (skyclass anomaly fit), MODEL:VERSION, a '
                       'model_version_id or a deployment.';
        END IF;
    END;
    SELECT c.catalog_id INTO cat_id FROM skyclass.catalog AS c WHERE c.name = anomaly_rank.catalog;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no catalog named %', quote_literal(catalog) USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM skyclass.ood_model AS o WHERE o.model_version_id = ranked) THEN
        RAISE EXCEPTION 'model version % has no anomaly forest', ranked
            USING ERRCODE = '22023',
                  HINT = 'Fit one: `skyclass anomaly fit NAME --feature-set FS --catalog CAT` '
                         '(a feature set) or `skyclass ood fit MODEL:VERSION` (a classifier).';
    END IF;
    IF NOT EXISTS (SELECT FROM skyclass.ood_run AS r
                    WHERE r.model_version_id = ranked AND r.catalog_id = cat_id
                      AND r.status = 'done') THEN
        SELECT m.name || ':' || v.version INTO version_label
          FROM skyclass.model_version AS v JOIN skyclass.model AS m USING (model_id)
         WHERE v.model_version_id = ranked;
        RAISE EXCEPTION 'model version % (%) has no finished anomaly scores on catalog %', ranked,
            version_label, quote_literal(catalog) USING ERRCODE = '55000',
            HINT = format('Run `skyclass anomaly score %s --catalog %s` or CALL '
                          'skyclass.refresh_ood(%L, %L).', version_label, catalog,
                          version_label, catalog);
    END IF;
    RETURN QUERY
        SELECT row_number() OVER (ORDER BY s.raw_score DESC, s.object_id),
               s.object_id, s.raw_score, s.percentile, s.in_domain, s.model_version_id
          FROM skyclass.ood_score AS s
         WHERE s.model_version_id = ranked AND s.catalog_id = cat_id
         ORDER BY s.raw_score DESC, s.object_id;
END
$function$;

COMMENT ON FUNCTION skyclass.anomaly_rank(text,text) IS
'The objects of a catalog ranked by anomaly score, strangest first: rank 1..N without gaps '
'(ties broken by object_id), the forest''s raw score (higher = stranger), its percentile among '
'the held-out rows the forest was fitted against, in_domain, and the version ranked (its '
'ood_score rows). target names an anomaly model '
'(its newest version; skyclass anomaly fit), MODEL:VERSION, a model_version_id or a deployment '
'(then the version''s OOD forest). Needs a finished OOD run of the pair (skyclass anomaly score, '
'skyclass.refresh_ood): 55000; bad arguments: 22023. '
'SELECT * FROM skyclass.anomaly_rank(''oddities'', ''sdss17'') WHERE rank <= 100.';
