"""Drift on compact predictions: the merge of revisions 0016 (drift) and 0017 (compact rows).

0016 made ``skyclass.finish_scoring_run`` record a run's drift before swapping its
partition in; 0017 rewrote the same function to publish the run's own compact table.
This revision gives the function both (drift first, then publishing) and makes
``skyclass.record_run_drift`` read the run's table through ``skyclass.prediction_codec``
(0017's rows hold a 0-based top class and 16-bit probabilities, not ``top_label``).
It also gives back ``current_classification`` the OOD columns of 0013, which 0017's
re-creation of the view (written before 0013) left out, and lets readers list the
published prediction tables (``skyclass.prediction_table``).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE OR REPLACE FUNCTION skyclass.finish_scoring_run(run bigint)
 RETURNS skyclass.scoring_run
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          skyclass.scoring_run;
    left_      integer;
    old        text;
    old_tables text[];
    timeout    text := current_setting('lock_timeout');
    attempt  integer := 0;
    done     boolean := false;
    drift_error text;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run FOR UPDATE;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.status <> 'running' THEN
        RAISE EXCEPTION 'scoring run % is %, not running', run, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- A run that plan_scoring_run has not planned has no chunks and no target table: swapping
    -- it in would drop the published partition and attach nothing.
    IF r.chunks_total = 0 OR to_regclass(nullif(r.target_table, '')) IS NULL THEN
        RAISE EXCEPTION 'scoring run % is not planned (no chunks or no target table)', run
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'plan it with skyclass.plan_scoring_run and score its chunks first';
    END IF;
    IF skyclass.scoring_job_holder(r.model_version_id, r.catalog_id) IS DISTINCT FROM pg_backend_pid() THEN
        RAISE EXCEPTION 'this session does not hold the job of scoring run %', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT count(*) INTO left_ FROM skyclass.scoring_chunk AS c WHERE c.run_id = run AND c.done_at IS NULL;
    IF left_ > 0 THEN
        RAISE EXCEPTION 'scoring run % still has % unfinished chunks', run, left_
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Statistics for the planner before readers see the rows; a small sample is enough for
    -- these columns and costs a tenth of the default one.
    SET LOCAL default_statistics_target = 10;
    EXECUTE format('ANALYZE %s', r.target_table);
    -- Drift summaries and alerts of the run (skyclass.record_run_drift), before publishing so
    -- that readers are not kept waiting. Monitoring never fails a run: an error becomes a
    -- warning and the run has no drift rows (skyclass.record_run_drift can add them later).
    BEGIN
        PERFORM skyclass.record_run_drift(run);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS drift_error = MESSAGE_TEXT;
        RAISE WARNING 'scoring run %: no drift summaries: %', run, drift_error;
    END;
    -- finished_at first: the view shows it as the run's scored_at.
    UPDATE skyclass.scoring_run AS s SET finished_at = clock_timestamp() WHERE s.run_id = run;
    -- Publish: a full run replaces the tables of its version and catalog, only_new adds its
    -- own; the view is rewritten in this transaction, so readers see the old set of runs or the
    -- new one, never a mix. Rewriting it and dropping the old tables need exclusive locks: wait
    -- for them in short tries, so that new readers do not queue behind us for long.
    WHILE NOT done LOOP
        BEGIN
            SET LOCAL lock_timeout = '2s';
            LOCK TABLE skyclass.prediction_table IN SHARE ROW EXCLUSIVE MODE;
            old_tables := '{}';
            IF r.write_kind = 'partition' THEN
                WITH gone AS (
                    DELETE FROM skyclass.prediction_table AS p
                     WHERE p.model_version_id = r.model_version_id AND p.catalog_id = r.catalog_id
                    RETURNING p.table_name)
                SELECT coalesce(array_agg(table_name), '{}') INTO old_tables FROM gone;
            END IF;
            INSERT INTO skyclass.prediction_table (run_id, model_version_id, catalog_id, table_name)
            VALUES (run, r.model_version_id, r.catalog_id, r.target_table);
            PERFORM skyclass.publish_predictions();
            FOREACH old IN ARRAY old_tables LOOP
                EXECUTE format('DROP TABLE %s', old);
            END LOOP;
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
    UPDATE skyclass.scoring_run AS s
       SET status = 'succeeded', error = NULL,
           chunks_done = (SELECT count(*) FROM skyclass.scoring_chunk AS c WHERE c.run_id = run),
           rows_scored = (SELECT coalesce(sum(c.rows), 0) FROM skyclass.scoring_chunk AS c WHERE c.run_id = run),
           objects_without_features = (SELECT coalesce(sum(c.objects_without_features), 0)
                                         FROM skyclass.scoring_chunk AS c WHERE c.run_id = run)
     WHERE s.run_id = run
    RETURNING * INTO r;
    PERFORM skyclass.release_scoring_lock(run);
    RETURN r;
END
$function$;
COMMENT ON FUNCTION skyclass.finish_scoring_run(bigint) IS
'Complete a run whose chunks are all done: record its drift (skyclass.record_run_drift), '
'publish its table (a full run replaces the tables of its version and catalog, only_new adds '
'its own; skyclass.publish_predictions rewrites the view in the same transaction), mark it '
'succeeded, release the lock. Unknown run: SQLSTATE 42704; not running, not planned, chunks left or lock held '
'elsewhere: 55000.';

CREATE OR REPLACE FUNCTION skyclass.record_run_drift(run bigint, sample_size integer DEFAULT 100000)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    preds      text;
    r        skyclass.scoring_run;
    ref      skyclass.drift_reference;
    prev     skyclass.drift_run;
    prev_ref skyclass.drift_reference;
    has_pos  boolean;
    region   text := 'NULL::bigint';
    joins    text := '';
    rows_of  text := '';
    sample   text := 'true';
    fraction float8 := 1;
    n_obj    bigint;
    nf       integer;
    started  timestamptz := clock_timestamp();
    jit_was  text := current_setting('jit');
    mem_was  text := current_setting('work_mem');
    sort_was text := current_setting('enable_sort');
    c_region bigint[];
    c_magbin integer[];
    c_j      integer[];
    c_b      integer[];
    c_n      bigint[];
    c_tp     float8[];
    c_cx     float8[];
    c_cy     float8[];
    c_cz     float8[];
    written  integer;
BEGIN
    IF run IS NULL THEN
        RAISE EXCEPTION 'run must be a scoring run id, not NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF sample_size IS NULL OR sample_size < 1000 OR sample_size > 100000000 THEN
        RAISE EXCEPTION 'sample_size must be between 1000 and 100000000, not %', sample_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.status NOT IN ('running', 'succeeded') THEN
        RAISE EXCEPTION 'scoring run % is %: only a finishing or succeeded run has drift', run, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF to_regclass(nullif(r.target_table, '')) IS NULL OR to_regclass(r.feature_table) IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no prediction or feature table to summarise', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    ref := skyclass.drift_reference_of(run);
    nf := cardinality(ref.feature_names);
    -- The expressions below are long (HEALPix, bins): JIT would compile them for longer than
    -- they run.
    PERFORM set_config('jit', 'off', true);
    -- Hash the cells: the planner expects every object in a cell of its own and would sort
    -- them (spilling to disk, several times slower) where a few thousand cells fit in memory.
    -- A hash aggregate that outgrows work_mem spills by itself.
    IF pg_size_bytes(mem_was) < pg_size_bytes('64MB') THEN
        PERFORM set_config('work_mem', '64MB', true);
    END IF;
    PERFORM set_config('enable_sort', 'off', true);
    DELETE FROM skyclass.drift_run WHERE run_id = run;
    SELECT c.ra_column IS NOT NULL INTO has_pos FROM skyclass.catalog AS c WHERE c.catalog_id = r.catalog_id;
    IF coalesce(has_pos, false) AND to_regclass(r.catalog_table) IS NOT NULL THEN
        region := format('skyclass.healpix_ring(%s, c.ra, c.dec)', ref.nside);
        joins := format(' JOIN %s AS c ON c.object_id = p.object_id', r.catalog_table);
    ELSE
        has_pos := false;
    END IF;
    -- The run's own table (compact rows, skyclass.prediction_codec), decoded: every run,
    -- only_new ones included, writes a table of its own.
    preds := format('(SELECT t.object_id, %s, %s FROM %s AS t)',
                    (skyclass.prediction_codec(r.model_version_id)).decode_labels,
                    (skyclass.prediction_codec(r.model_version_id)).decode, r.target_table);
    IF r.write_kind = 'partition' THEN
        -- The run's chunks counted their rows as they wrote them.
        SELECT coalesce(sum(k.rows), 0) INTO n_obj FROM skyclass.scoring_chunk AS k WHERE k.run_id = run;
    ELSE
        EXECUTE format('SELECT count(*) FROM %s AS p', r.target_table) INTO n_obj;
    END IF;
    IF n_obj > sample_size THEN
        -- The summaries come from a fixed pseudo-random share of the objects, chosen by a hash
        -- of object_id: every run of a catalog summarises the same objects, so an unchanged
        -- catalog gives exactly the same histograms (zero drift) run after run, and the cost
        -- stops growing with the catalog. The predicate is repeated on every joined table so
        -- that each is filtered while it is scanned, before any hash table is built.
        fraction := sample_size::float8 / n_obj;
        sample := format('(hashint8(%%1$s.object_id) & 1048575) < %s', ceil(fraction * 1048576)::bigint);
        sample := format(sample, 'p') || ' AND ' || format(sample, 'f')
                  || CASE WHEN has_pos THEN ' AND ' || format(sample, 'c') ELSE '' END;
    END IF;
    SELECT * INTO prev FROM skyclass.drift_run AS d
     WHERE d.catalog_id = r.catalog_id AND d.run_id < run AND d.n_objects > 0
       AND CASE WHEN r.deployment IS NOT NULL THEN d.deployment = r.deployment
                ELSE d.model_version_id = r.model_version_id END
     ORDER BY d.run_id DESC LIMIT 1;
    INSERT INTO skyclass.drift_run (run_id, model_version_id, catalog_id, deployment, previous_run_id,
                                    nside, n_objects, sample_fraction, seconds)
    VALUES (run, r.model_version_id, r.catalog_id, r.deployment, prev.run_id,
            CASE WHEN has_pos THEN ref.nside END, n_obj, fraction, 0);
    -- One pass over the sampled objects (all of them up to sample_size). Cells by region and
    -- magnitude bin: j = 0 counts objects by predicted class (b), with their top probability
    -- and position; j = 1..n count them by the histogram bin b of feature j (0-9 deciles, 10
    -- missing), all from one GROUPING SETS aggregate so that the per-object expressions (the
    -- HEALPix region, the bins) are computed once per object. A plain SELECT (into arrays),
    -- not part of the INSERT below: only a read-only query may use parallel workers.
    EXECUTE format(
        'SELECT array_agg(region), array_agg(magbin), array_agg(j), array_agg(b), array_agg(n), '
        '       array_agg(tp), array_agg(cx), array_agg(cy), array_agg(cz) '
        '  FROM (SELECT o.region, o.magbin, %12$s AS j, %13$s AS b, count(*) AS n, sum(o.tp) AS tp, '
        '               sum(o.cx) AS cx, sum(o.cy) AS cy, sum(o.cz) AS cz '
        '          FROM (SELECT %1$s AS region, %2$s AS magbin, '
        '                       array_position(%3$L::text[], p.top_label::text) AS label, '
        '                       p.top_probability::float8 AS tp, %4$s AS cx, %5$s AS cy, %6$s AS cz, %14$s '
        '                  FROM %8$s AS p JOIN %9$s AS f ON f.object_id = p.object_id%10$s '
        '                 WHERE %7$s%11$s) AS o '
        '         GROUP BY GROUPING SETS (%15$s)) AS cells',
        region, skyclass._drift_magnitude_sql(ref, 'f.x'), ref.classes,
        CASE WHEN has_pos THEN 'cos(radians(c.dec)) * cos(radians(c.ra))' ELSE 'NULL::float8' END,
        CASE WHEN has_pos THEN 'cos(radians(c.dec)) * sin(radians(c.ra))' ELSE 'NULL::float8' END,
        CASE WHEN has_pos THEN 'sin(radians(c.dec))' ELSE 'NULL::float8' END,
        sample, preds, r.feature_table, joins, rows_of,
        skyclass._drift_grouping_sql(nf, 'j'), skyclass._drift_grouping_sql(nf, 'b'),
        skyclass._drift_bins_sql(ref, 'f.x'), skyclass._drift_grouping_sql(nf, 'sets', 'region, magbin'))
       INTO c_region, c_magbin, c_j, c_b, c_n, c_tp, c_cx, c_cy, c_cz;
    -- Roll the cells up to the summaries of every scope.
    EXECUTE format(
        'WITH cells AS (SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9) '
        '                 AS c(region, magbin, j, b, n, tp, cx, cy, cz)), '
        'scoped AS (SELECT ''all''::text AS scope, 0::bigint AS bin, j, b, n, tp, cx, cy, cz FROM cells '
        '           UNION ALL SELECT ''region'', region, j, b, n, tp, cx, cy, cz FROM cells WHERE region IS NOT NULL '
        '           UNION ALL SELECT ''magnitude'', magbin, j, b, n, tp, cx, cy, cz FROM cells WHERE magbin IS NOT NULL), '
        'sums AS (SELECT scope, bin, j, b, sum(n) AS n, sum(tp) AS tp, sum(cx) AS cx, sum(cy) AS cy, '
        '                sum(cz) AS cz FROM scoped GROUP BY 1, 2, 3, 4), '
        'totals AS (SELECT scope, bin, sum(n) AS n, sum(tp) AS tp, sum(cx) AS cx, sum(cy) AS cy, '
        '                  sum(cz) AS cz FROM sums WHERE j = 0 GROUP BY 1, 2), '
        'classes AS (SELECT t.scope, t.bin, array_agg(coalesce(s.n, 0) ORDER BY k.b) AS counts '
        '              FROM totals AS t CROSS JOIN generate_series(1, %1$s) AS k(b) '
        '              LEFT JOIN sums AS s ON s.scope = t.scope AND s.bin = t.bin AND s.j = 0 AND s.b = k.b '
        '             GROUP BY 1, 2), '
        'hist AS (SELECT g.scope, g.bin, g.j, array_agg(coalesce(s.n, 0) ORDER BY k.b) AS h, sum(s.n) AS n '
        '           FROM (SELECT DISTINCT scope, bin, j FROM sums WHERE j > 0) AS g '
        '           CROSS JOIN generate_series(0, 10) AS k(b) '
        '           LEFT JOIN sums AS s ON s.scope = g.scope AND s.bin = g.bin AND s.j = g.j AND s.b = k.b '
        '          GROUP BY 1, 2, 3), '
        'features AS (SELECT scope, bin, array_agg(h ORDER BY j) AS counts, min(n) AS n FROM hist '
        '              GROUP BY 1, 2 HAVING count(*) = %2$s) '
        'INSERT INTO skyclass.drift_summary (run_id, scope, bin, n_objects, n_sampled, feature_counts, '
        '                                    class_counts, top_probability_mean, ra_mean, dec_mean) '
        'SELECT %3$s, t.scope, t.bin, CASE WHEN t.scope = ''all'' THEN %4$s ELSE round(t.n / %5$s)::bigint END, '
        '       t.n, coalesce(f.counts, ''{}''), c.counts, t.tp / t.n, '
        '       CASE WHEN t.cx IS NOT NULL THEN mod((degrees(atan2(t.cy, t.cx)) + 360)::numeric, 360)::float8 END, '
        '       CASE WHEN t.cx IS NOT NULL THEN degrees(atan2(t.cz, sqrt(t.cx * t.cx + t.cy * t.cy))) END '
        '  FROM totals AS t JOIN classes AS c USING (scope, bin) LEFT JOIN features AS f USING (scope, bin)',
        cardinality(ref.classes), nf, run, n_obj, fraction)
      USING c_region, c_magbin, c_j, c_b, c_n, c_tp, c_cx, c_cy, c_cz;
    written := skyclass.compare_run_drift(run);
    UPDATE skyclass.drift_run SET seconds = extract(epoch FROM clock_timestamp() - started)
     WHERE run_id = run;
    PERFORM set_config('jit', jit_was, true);
    PERFORM set_config('work_mem', mem_was, true);
    PERFORM set_config('enable_sort', sort_was, true);
    RETURN written;
END
$function$;
COMMENT ON FUNCTION skyclass.record_run_drift(bigint,integer) IS
'Summarise a finishing or succeeded scoring run per sky region, magnitude bin and overall '
'(skyclass.drift_summary, over a fixed hash sample of about sample_size objects, the same '
'objects in every run) and compare it with the training snapshot and the previous run '
'(skyclass.compare_run_drift). Replaces the run''s earlier drift rows; returns the number of '
'drift rows. Called by skyclass.finish_scoring_run. Unknown run: SQLSTATE 42704; another '
'status or no tables: 55000; bad arguments: 22023.';

-- 0017 re-created current_classification as it was before 0013 added the OOD columns.
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

-- The portal finds which (version, catalog) pairs have predictions without scanning the
-- skyclass.prediction view (that would lock every run table and wait behind a publishing job).
GRANT SELECT ON skyclass.prediction_table TO skyclass_reader;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    # The texts of 0016 and 0017 cannot both be restored; downgrading below 0017 restores
    # 0017's own finish_scoring_run, and below 0016 drops record_run_drift.
    pass
