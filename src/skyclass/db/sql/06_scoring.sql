-- skyclass head SQL: The scoring job engine: runs, chunks, leases, prediction partitions, procedures.
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

CREATE OR REPLACE FUNCTION skyclass.scoring_lock_key(model_version bigint, catalog integer)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE STRICT
AS $function$
    SELECT hashtextextended('skyclass.rescore:' || model_version || ':' || catalog, 0)
$function$;
COMMENT ON FUNCTION skyclass.scoring_lock_key(bigint,integer) IS
'Key of the advisory lock scoring jobs took before revision 0008 (they no longer do: see '
'skyclass.scoring_lease).';

CREATE OR REPLACE FUNCTION skyclass.scoring_lock_holder(key bigint)
 RETURNS integer
 LANGUAGE sql
 STABLE STRICT
AS $function$
    SELECT l.pid FROM pg_catalog.pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
       AND l.classid::bigint = ((key >> 32) & 4294967295)
       AND l.objid::bigint = (key & 4294967295)
     LIMIT 1
$function$;
COMMENT ON FUNCTION skyclass.scoring_lock_holder(bigint) IS
'Backend pid holding an advisory lock key, or NULL (scoring jobs no longer take one since '
'revision 0008: use skyclass.scoring_job_holder).';

CREATE OR REPLACE FUNCTION skyclass.scoring_backend_alive(pid integer, started timestamp with time zone)
 RETURNS boolean
 LANGUAGE sql
 STABLE
AS $function$
    -- backend_start of another role's session is hidden from a non-superuser (NULL): a pid
    -- match then counts as alive, which can keep a job waiting, never run it twice.
    SELECT pid IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_stat_activity AS a
         WHERE a.pid = scoring_backend_alive.pid
           AND (a.backend_start IS NULL OR a.backend_start = started))
$function$;
COMMENT ON FUNCTION skyclass.scoring_backend_alive(integer,timestamp with time zone) IS
'True when the backend with this pid and start time still exists (false for a NULL pid).';

CREATE OR REPLACE FUNCTION skyclass.scoring_job_holder(model_version bigint, catalog integer)
 RETURNS integer
 LANGUAGE sql
 STABLE
AS $function$
    SELECT l.holder_pid FROM skyclass.scoring_lease AS l
     WHERE l.model_version_id = model_version AND l.catalog_id = catalog
       AND skyclass.scoring_backend_alive(l.holder_pid, l.holder_started)
$function$;
COMMENT ON FUNCTION skyclass.scoring_job_holder(bigint,integer) IS
'Backend pid running the scoring job of a model version and catalog, or NULL when none does.';

CREATE OR REPLACE FUNCTION skyclass.resolve_scoring_target(target text, OUT model_version_id bigint, OUT deployment text)
 RETURNS record
 LANGUAGE plpgsql
 STABLE
AS $function$
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
$function$;
COMMENT ON FUNCTION skyclass.resolve_scoring_target(text) IS
'The model version a scoring target names: a deployment, MODEL:VERSION, or a '
'model_version_id.';

CREATE OR REPLACE FUNCTION skyclass.scoring_feature_set(model_version bigint, catalog integer)
 RETURNS integer
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    own      record;
    found_id integer;
    cat_name text;
    others   text;
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
    SELECT fs.feature_set_id INTO found_id
      FROM skyclass.feature_set AS fs
     WHERE fs.catalog_id = catalog AND fs.definition_hash = own.definition_hash
     ORDER BY fs.created_at DESC, fs.feature_set_id DESC LIMIT 1;
    IF found_id IS NOT NULL THEN
        RETURN found_id;
    END IF;
    SELECT c.name INTO cat_name FROM skyclass.catalog AS c WHERE c.catalog_id = catalog;
    SELECT string_agg(format('%s (definition %s: %s)', fs.name, left(fs.definition_hash, 12),
                             skyclass.feature_differences(own.spec, fs.spec)), '; '
                      ORDER BY fs.feature_set_id)
      INTO others
      FROM skyclass.feature_set AS fs
     WHERE fs.catalog_id = catalog AND fs.name = own.name;
    RAISE EXCEPTION 'catalog % has no build of feature definition % version % (the features of '
                    'model version %)%', cat_name, own.name, left(own.definition_hash, 12),
        model_version,
        CASE WHEN others IS NULL THEN ''
             ELSE '; its builds of that name have another definition: ' || others END
        USING ERRCODE = 'undefined_object',
              HINT = format('build it: skyclass features build SPEC --catalog %s '
                            '[--map SPEC_COLUMN=CATALOG_COLUMN ...]', cat_name);
END
$function$;
COMMENT ON FUNCTION skyclass.scoring_feature_set(bigint,integer) IS
'The feature build that feeds a model version on a catalog: the version''s own, or the newest'
' build of the same feature definition (hash) on that catalog; otherwise an error naming what'
' differs.';

CREATE OR REPLACE FUNCTION skyclass.prediction_partition(model_version bigint, catalog integer)
 RETURNS text
 LANGUAGE sql
 STABLE STRICT
AS $function$
    SELECT p.table_name
      FROM skyclass.prediction_table AS p JOIN skyclass.scoring_run AS r USING (run_id)
     WHERE p.model_version_id = model_version AND p.catalog_id = catalog
     ORDER BY r.write_kind = 'partition' DESC, p.run_id DESC
     LIMIT 1
$function$;
COMMENT ON FUNCTION skyclass.prediction_partition(bigint,integer) IS
'The published table of the last full run of a model version on a catalog (runs of only_new '
'add tables beside it: skyclass.prediction_table lists them all), or NULL.';

CREATE OR REPLACE FUNCTION skyclass.prediction_codec(model_version bigint, OUT columns text, OUT encode text, OUT decode text, OUT decode_labels text)
 RETURNS record
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    v     record;
    n     integer;
    e0    double precision;
    w     double precision;
    zname text[] := ARRAY['z_mean', 'z_median', 'z_mode', 'z_lo68', 'z_hi68', 'z_lo95', 'z_hi95'];
    bytes text[] := '{}';
    cums  text[] := '{}';
    mass  text[] := '{}';
    m     integer;
    k     integer;
    j     integer;
    part  text;
BEGIN
    IF model_version IS NULL THEN
        RAISE EXCEPTION 'model_version must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT mv.classes, mv.bin_edges, mv.task INTO v
      FROM skyclass.model_version AS mv WHERE mv.model_version_id = model_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % does not exist', model_version USING ERRCODE = 'undefined_object';
    END IF;
    n := cardinality(v.classes);
    IF n IS NULL OR n < 1 THEN
        RAISE EXCEPTION 'model version % has no classes', model_version
            USING ERRCODE = 'invalid_object_definition';
    END IF;
    -- The top class, 0-based (array_position: the first of equal maxima, as before).
    columns := 'object_id bigint NOT NULL, top smallint NOT NULL';
    encode := format('s.object_id, (array_position(s.p, greatest(%s)) - 1)::smallint AS top',
                     (SELECT string_agg(format('s.p[%s]', g.i), ', ' ORDER BY g.i) FROM generate_series(1, n) AS g(i)));
    IF v.task = 'photoz' THEN
        -- Point estimates: 16 bits over [first edge, last edge]; the PDF: its CDF at the n - 1
        -- inner edges in 8 bits each, 7 to a bigint (masses are differences of the CDF).
        e0 := v.bin_edges[1];
        w := v.bin_edges[n + 1] - v.bin_edges[1];
        FOR j IN 1 .. 7 LOOP
            columns := columns || format(', %I smallint NOT NULL', 'z' || j);
            encode := encode || format(
                ', ((least(greatest(s.%I::float8, %s), %s) - %s) * %s - 32768)::smallint AS %I',
                zname[j], e0, e0 + w, e0, 65535 / w, 'z' || j);
        END LOOP;
        m := (n - 1 + 6) / 7;
        FOR k IN 1 .. n - 1 LOOP
            cums := cums || format('(%s)', (SELECT string_agg(format('s.p[%s]::float8', g.i), ' + ' ORDER BY g.i)
                                             FROM generate_series(1, k) AS g(i)));
        END LOOP;
        FOR j IN 1 .. m LOOP
            part := NULL;
            FOR k IN (j - 1) * 7 + 1 .. least(j * 7, n - 1) LOOP
                part := concat_ws(' | ', part, format('((least(greatest(%s / nullif(%s, 0), 0), 1) * 255)::bigint << %s)',
                                                      cums[k], (SELECT string_agg(format('s.p[%s]::float8', g.i), ' + ' ORDER BY g.i)
                                                                  FROM generate_series(1, n) AS g(i)),
                                                      8 * ((k - 1) % 7)));
            END LOOP;
            columns := columns || format(', %I bigint NOT NULL', 'c' || j);
            encode := encode || format(', coalesce(%s, 0) AS %I', part, 'c' || j);
        END LOOP;
        FOR k IN 1 .. n LOOP
            mass := mass || format('((%s - %s)::real / 255)',
                CASE WHEN k = n THEN '255' ELSE format('((t.%I >> %s) & 255)', 'c' || ((k - 1) / 7 + 1), 8 * ((k - 1) % 7)) END,
                CASE WHEN k = 1 THEN '0' ELSE format('((t.%I >> %s) & 255)', 'c' || ((k - 2) / 7 + 1), 8 * ((k - 2) % 7)) END);
        END LOOP;
        decode := format('(CASE t.top %s END)::real AS top_probability',
                         (SELECT string_agg(format('WHEN %s THEN %s', g.i - 1, mass[g.i]), ' ' ORDER BY g.i)
                            FROM generate_series(1, n) AS g(i)));
        FOR j IN 1 .. 7 LOOP
            decode := decode || format(', ((t.%I + 32768) * %s + %s)::real AS %I', 'z' || j, w / 65535, e0, zname[j]);
        END LOOP;
    ELSE
        -- Probabilities: 16 bits each, p = (q + 32768) / 65535, at most 7.7e-6 from the model's.
        FOR k IN 1 .. n LOOP
            columns := columns || format(', %I smallint NOT NULL', 'p' || k);
            encode := encode || format(', (least(greatest(s.p[%s]::float8, 0), 1) * 65535 - 32768)::smallint AS %I',
                                       k, 'p' || k);
            mass := mass || format('((t.%I + 32768)::real / 65535)', 'p' || k);
        END LOOP;
        decode := format('(CASE t.top %s END)::real AS top_probability',
                         (SELECT string_agg(format('WHEN %s THEN %s', g.i - 1, mass[g.i]), ' ' ORDER BY g.i)
                            FROM generate_series(1, n) AS g(i)));
        FOR j IN 1 .. 7 LOOP
            decode := decode || format(', NULL::real AS %I', zname[j]);
        END LOOP;
    END IF;
    decode_labels := format('(%L::text[])[t.top + 1] COLLATE "C" AS top_label, ARRAY[%s]::real[] AS probabilities',
                               v.classes, array_to_string(mass, ', '));
END
$function$;
COMMENT ON FUNCTION skyclass.prediction_codec(bigint) IS
'How a model version''s predictions are stored compactly (revision 0017): the column list of '
'its run tables (object_id, the 0-based top class, then 16-bit probabilities p1..pn, or for '
'photo-z 16-bit point estimates z1..z7 over the bin-edge range and the CDF at the inner edges '
'in 8 bits, 7 to a bigint c1..cm), the SELECT list that encodes rows of alias s (object_id, '
'p real[] and, for photo-z, z_mean..z_hi95), and the two that decode alias t into the '
'published columns (top_probability to z_hi95; top_label and probabilities). Unknown version: SQLSTATE 42704; NULL: 22023.';

CREATE OR REPLACE FUNCTION skyclass.scoring_chunk_query(run bigint, chunk integer)
 RETURNS text
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    r        skyclass.scoring_run;
    c        skyclass.scoring_chunk;
    v        record;
    codec    record;
    inner_q  text;
    anti     text := '';
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    SELECT * INTO c FROM skyclass.scoring_chunk WHERE run_id = run AND chunk_no = chunk;
    IF r.run_id IS NULL OR c.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no chunk %', run, chunk USING ERRCODE = 'undefined_object';
    END IF;
    SELECT mv.bin_edges, mv.task INTO v
      FROM skyclass.model_version AS mv WHERE mv.model_version_id = r.model_version_id;
    codec := skyclass.prediction_codec(r.model_version_id);
    IF r.write_kind = 'insert' THEN
        anti := format(' AND NOT EXISTS (SELECT 1 FROM skyclass.prediction AS q WHERE q.object_id = f.object_id'
                       ' AND q.model_version_id = %s AND q.catalog_id = %s)',
                       r.model_version_id, r.catalog_id);
    END IF;
    -- OFFSET 0 keeps the subquery: otherwise each reference to s.p would call predict again.
    -- Rows are written in object_id order, which the tables' BRIN index relies on.
    inner_q := format(
        'SELECT f.object_id, skyclass.predict(%s::bigint, f.x) AS p FROM %s AS f '
        'WHERE f.object_id BETWEEN %L::bigint AND %L::bigint%s ORDER BY f.object_id OFFSET 0',
        r.model_version_id, r.feature_table, c.first_object_id, c.last_object_id, anti);
    IF v.task = 'photoz' THEN
        inner_q := format('SELECT s0.object_id, s0.p, z.* FROM (%s) AS s0 CROSS JOIN LATERAL '
                          'skyclass.pdf_summary(s0.p, %L::double precision[]) AS z', inner_q, v.bin_edges);
    END IF;
    RETURN format('SELECT %s FROM (%s) AS s', codec.encode, inner_q);
END
$function$;
COMMENT ON FUNCTION skyclass.scoring_chunk_query(bigint,integer) IS
'The SQL that scores one chunk of a run with skyclass.predict and encodes its rows as '
'skyclass.prediction_codec says, in object_id order (for EXPLAIN and debugging).';

CREATE OR REPLACE FUNCTION skyclass.plan_scoring_chunks(run bigint)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    r      skyclass.scoring_run;
    anti   text := '';
    step   text;
    first  bigint;
    next   bigint;
    k      integer := 0;
    tail   bigint;
BEGIN
    IF run IS NULL THEN
        RAISE EXCEPTION 'run must be a scoring run id, not NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run FOR UPDATE;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.status <> 'running' THEN
        RAISE EXCEPTION 'scoring run % is %, not running', run, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF r.chunks_total > 0 OR EXISTS (SELECT 1 FROM skyclass.scoring_chunk AS c WHERE c.run_id = run) THEN
        RAISE EXCEPTION 'scoring run % is planned already', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- The table names come from the run row; check them before building SQL with them.
    IF to_regclass(nullif(r.target_table, '')) IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no target table yet', run
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'plan a run with skyclass.plan_scoring_run, which calls this function';
    END IF;
    IF to_regclass(r.feature_table) IS NULL THEN
        RAISE EXCEPTION 'feature table % of scoring run % does not exist', quote_literal(r.feature_table), run
            USING ERRCODE = 'undefined_table', HINT = 'rebuild the feature set and start a new run';
    END IF;
    IF r.write_kind = 'insert' THEN
        anti := format(' AND NOT EXISTS (SELECT 1 FROM skyclass.prediction AS q WHERE q.object_id = f.object_id'
                       ' AND q.model_version_id = %s AND q.catalog_id = %s)',
                       r.model_version_id, r.catalog_id);
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
$function$;
COMMENT ON FUNCTION skyclass.plan_scoring_chunks(bigint) IS
'Split a new run''s objects into contiguous object_id ranges of chunk_size objects. The run '
'must be running and not yet planned (SQLSTATE 55000; unknown run: 42704; NULL: 22023).';

CREATE OR REPLACE FUNCTION skyclass.start_scoring_run(target text, catalog text, only_new boolean DEFAULT false, chunk_size integer DEFAULT 50000, scorer text DEFAULT 'database'::text, triggered_by text DEFAULT 'manual'::text, schedule_name text DEFAULT NULL::text, resume boolean DEFAULT true, workers integer DEFAULT 1)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    t         record;
    cat       skyclass.catalog;
    fs        skyclass.feature_set;
    v         record;
    lease     skyclass.scoring_lease;
    running   skyclass.scoring_run;
    last_run  skyclass.scoring_run;
    old       record;
    run       bigint;
    mode      text := CASE WHEN only_new THEN 'only_new' ELSE 'full' END;
    ftable    regclass;
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

    -- Single flight: a lease row per job, taken by an UPDATE only roles that may write
    -- skyclass.scoring_lease can run. It survives the per-chunk commits of the job and
    -- goes stale when its holder's backend is gone (pid and backend start no longer in
    -- pg_stat_activity). Concurrent starters queue on the row lock for the few
    -- milliseconds this transaction lasts, then see its holder and run.
    INSERT INTO skyclass.scoring_lease AS l (model_version_id, catalog_id)
    VALUES (t.model_version_id, cat.catalog_id) ON CONFLICT DO NOTHING;
    SELECT * INTO lease FROM skyclass.scoring_lease AS l
     WHERE l.model_version_id = t.model_version_id AND l.catalog_id = cat.catalog_id
       FOR UPDATE;
    IF lease.holder_pid IS DISTINCT FROM pg_backend_pid()
       AND skyclass.scoring_backend_alive(lease.holder_pid, lease.holder_started) THEN
        SELECT * INTO running FROM skyclass.scoring_run AS s WHERE s.run_id = lease.run_id;
        RAISE EXCEPTION 'scoring model version % on catalog % is already running (run %, started %, pid %)',
            t.model_version_id, cat.name, coalesce(running.run_id::text, '?'),
            coalesce(date_trunc('second', coalesce(running.resumed_at, running.started_at))::text, '?'),
            lease.holder_pid
            USING ERRCODE = 'lock_not_available',
                  HINT = CASE WHEN (SELECT a.state FROM pg_catalog.pg_stat_activity AS a
                                     WHERE a.pid = lease.holder_pid) = 'idle'
                         THEN format('backend %s holds the job but is idle (a cancelled CALL?): end that session',
                                     lease.holder_pid)
                         ELSE 'wait for it to finish, or follow it in skyclass.scoring_run' END;
    END IF;
    UPDATE skyclass.scoring_lease AS l
       SET holder_pid = pg_backend_pid(),
           holder_started = (SELECT a.backend_start FROM pg_catalog.pg_stat_activity AS a
                              WHERE a.pid = pg_backend_pid()),
           holder_user = current_user, taken_at = clock_timestamp(), run_id = NULL
     WHERE l.model_version_id = t.model_version_id AND l.catalog_id = cat.catalog_id;
    BEGIN
        -- We hold the lease, so runs still marked running have lost their backend.
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
            UPDATE skyclass.scoring_lease AS l SET run_id = run
             WHERE l.model_version_id = t.model_version_id AND l.catalog_id = cat.catalog_id;
            RAISE NOTICE 'resuming run % (% of % chunks done)', run, last_run.chunks_done, last_run.chunks_total;
            RETURN run;
        END IF;

        -- Unfinished runs that will never be resumed: drop their unpublished partitions.
        FOR old IN
            SELECT s.run_id, s.target_table FROM skyclass.scoring_run AS s
             WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
               AND s.status IN ('interrupted', 'failed')
               AND to_regclass(nullif(s.target_table, '')) IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM skyclass.prediction_table AS p
                                WHERE p.table_name = s.target_table)
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
        UPDATE skyclass.scoring_lease AS l SET run_id = run
         WHERE l.model_version_id = t.model_version_id AND l.catalog_id = cat.catalog_id;
    END;
    RETURN run;
END
$function$;
COMMENT ON FUNCTION skyclass.start_scoring_run(text,text,boolean,integer,text,text,text,boolean,integer) IS
'Start (or resume) the scoring job of a deployment or model version over a catalog and return'
' its run_id. Takes the job''s row of skyclass.scoring_lease (fails at once with "already '
'running (run, started, pid)" while another live backend holds it), marks runs whose backend '
'died as interrupted, resumes the last interrupted or failed run of the same mode, or '
'registers a new one; commit, then call skyclass.plan_scoring_run.';

CREATE OR REPLACE FUNCTION skyclass.plan_scoring_run(run bigint)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    r          skyclass.scoring_run;
    target_t   text;
    index_kind text;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run FOR UPDATE;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.chunks_total > 0 THEN
        RETURN r.chunks_total;  -- planned already (a resumed run)
    END IF;
    IF skyclass.scoring_job_holder(r.model_version_id, r.catalog_id) IS DISTINCT FROM pg_backend_pid() THEN
        RAISE EXCEPTION 'this session does not hold the job of scoring run %', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Every run writes a table of its own, partitioned by object_id range into one table per
    -- chunk, in the compact layout of skyclass.prediction_codec: the run's constants (version,
    -- catalog, run, time) are not stored per row but put back by the view skyclass.prediction.
    -- A full run replaces the published tables of its version and catalog when it finishes;
    -- only_new on a catalog with predictions ('insert') adds its table beside them.
    target_t := format('predictions.%I', format('mv_%s_c%s_r%s', r.model_version_id, r.catalog_id, run));
    IF to_regclass(target_t) IS NOT NULL THEN
        EXECUTE format('DROP TABLE %s', target_t);
    END IF;
    EXECUTE format('CREATE TABLE %s (%s) PARTITION BY RANGE (object_id)', target_t,
                   (skyclass.prediction_codec(r.model_version_id)).columns);
    -- Rows are written in object_id order. The index on object_id: a b-tree (the default,
    -- 24 bytes per row: lookups of a few objects, as joins with a cone search make, in
    -- microseconds), or with skyclass.prediction_index = 'brin' a block range index (a
    -- fraction of a byte per row; a lookup then reads a chunk's whole BRIN index and the
    -- planner prefers scanning everything: for catalogs read in bulk).
    index_kind := coalesce(nullif(current_setting('skyclass.prediction_index', true), ''), 'btree');
    IF index_kind NOT IN ('btree', 'brin') THEN
        RAISE EXCEPTION 'skyclass.prediction_index must be btree or brin, not %', quote_literal(index_kind)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('CREATE INDEX ON %s USING %s (object_id)%s', target_t, index_kind,
                   CASE WHEN index_kind = 'brin' THEN ' WITH (pages_per_range = 1)' ELSE '' END);
    UPDATE skyclass.scoring_run
       SET write_kind = CASE WHEN r.mode = 'only_new' AND EXISTS (
                                 SELECT 1 FROM skyclass.prediction_table AS p
                                  WHERE p.model_version_id = r.model_version_id
                                    AND p.catalog_id = r.catalog_id)
                             THEN 'insert' ELSE 'partition' END,
           target_table = target_t
     WHERE run_id = run;
    PERFORM skyclass.plan_scoring_chunks(run);
    RETURN (SELECT chunks_total FROM skyclass.scoring_run WHERE run_id = run);
END
$function$;
COMMENT ON FUNCTION skyclass.plan_scoring_run(bigint) IS
'Plan a new run (a no-op for a resumed one): create the run''s table (compact layout of '
'skyclass.prediction_codec, range-partitioned by object_id, a b-tree on object_id or a BRIN '
'index with skyclass.prediction_index = brin; bad setting: 22023; write_kind insert for '
'only_new on a catalog with published predictions, partition otherwise), split the objects '
'into chunks.';

CREATE OR REPLACE FUNCTION skyclass.claim_scoring_chunk(run bigint, OUT chunk_no integer, OUT first_object_id bigint, OUT last_object_id bigint)
 RETURNS SETOF record
 LANGUAGE sql
AS $function$
    SELECT c.chunk_no, c.first_object_id, c.last_object_id
      FROM skyclass.scoring_chunk AS c
     WHERE c.run_id = run AND c.done_at IS NULL
       AND EXISTS (SELECT 1 FROM skyclass.scoring_run AS r WHERE r.run_id = run AND r.status = 'running')
     ORDER BY c.chunk_no
     LIMIT 1
       FOR UPDATE OF c SKIP LOCKED
$function$;
COMMENT ON FUNCTION skyclass.claim_scoring_chunk(bigint) IS
'Lock the next unfinished chunk of a running run (FOR UPDATE SKIP LOCKED, so parallel '
'sessions take different chunks); no row when none is left. Complete it in the same '
'transaction.';

CREATE OR REPLACE FUNCTION skyclass.chunk_check(run bigint, chunk integer)
 RETURNS text
 LANGUAGE sql
 STABLE STRICT
AS $function$
    SELECT format('CHECK (object_id >= %L::bigint AND object_id <= %L::bigint)',
                  c.first_object_id, c.last_object_id)
      FROM skyclass.scoring_run AS r
      JOIN skyclass.scoring_chunk AS c USING (run_id)
     WHERE r.run_id = run AND c.chunk_no = chunk
$function$;
COMMENT ON FUNCTION skyclass.chunk_check(bigint,integer) IS
'The CHECK constraint of a chunk table (its partition bound, so attaching it needs no scan).';

CREATE OR REPLACE FUNCTION skyclass.create_chunk_table(run bigint, chunk integer)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
DECLARE
    r   skyclass.scoring_run;
    tbl text;
BEGIN
    IF run IS NULL OR chunk IS NULL THEN
        RAISE EXCEPTION 'run and chunk must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.write_kind NOT IN ('partition', 'insert') OR to_regclass(nullif(r.target_table, '')) IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not write chunk tables', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM skyclass.scoring_chunk AS c WHERE c.run_id = run AND c.chunk_no = chunk) THEN
        RAISE EXCEPTION 'scoring run % has no chunk %', run, chunk USING ERRCODE = 'undefined_object';
    END IF;
    tbl := r.target_table || '_' || chunk;
    EXECUTE format('CREATE TABLE %s (LIKE %s)', tbl, r.target_table);
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, 'chunk_' || chunk,
                   skyclass.chunk_check(run, chunk));
    RETURN tbl;
END
$function$;
COMMENT ON FUNCTION skyclass.create_chunk_table(bigint,integer) IS
'Create the (empty, constrained) table of one chunk of a partition run and return its name; '
'fill it, then call skyclass.complete_scoring_chunk in the same transaction. Unknown run or '
'chunk: SQLSTATE 42704; NULL: 22023.';

CREATE OR REPLACE FUNCTION skyclass.complete_scoring_chunk(run bigint, chunk integer, n_rows bigint)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    r       skyclass.scoring_run;
    c       skyclass.scoring_chunk;
    tbl     text;
    missing bigint;
    bitmap  text;
    idx     text;
BEGIN
    IF n_rows IS NULL OR n_rows < 0 THEN
        RAISE EXCEPTION 'n_rows must be a count of rows (0 or more), not %', coalesce(n_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    SELECT * INTO c FROM skyclass.scoring_chunk AS k WHERE k.run_id = run AND k.chunk_no = chunk FOR UPDATE;
    IF c.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no chunk %', run, chunk USING ERRCODE = 'undefined_object';
    END IF;
    IF c.done_at IS NOT NULL THEN
        RAISE EXCEPTION 'chunk % of scoring run % is already done', chunk, run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF to_regclass(nullif(r.target_table, '')) IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no target table', run
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'plan the run with skyclass.plan_scoring_run first';
    END IF;
    BEGIN
        tbl := r.target_table || '_' || chunk;
        IF to_regclass(tbl) IS NULL THEN
            RAISE EXCEPTION 'chunk % of scoring run % has no table %', chunk, run, tbl
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'write it first (skyclass.create_chunk_table) in the same transaction';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                        WHERE conrelid = to_regclass(tbl) AND conname = 'chunk_' || chunk) THEN
            -- Made by CREATE TABLE AS: constrain it now (one scan of the chunk each).
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, 'chunk_' || chunk,
                           skyclass.chunk_check(run, chunk));
            EXECUTE format('ALTER TABLE %s %s', tbl,
                (SELECT string_agg(format('ALTER %I SET NOT NULL', a.attname), ', ' ORDER BY a.attnum)
                   FROM pg_catalog.pg_attribute AS a
                  WHERE a.attrelid = to_regclass(tbl) AND a.attnum > 0 AND NOT a.attisdropped));
        END IF;
        -- Attaching builds the chunk's index (rows are in object_id order).
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)',
            r.target_table, tbl,
            CASE WHEN c.first_object_id = (-9223372036854775807)::bigint - 1 THEN 'MINVALUE'
                 ELSE c.first_object_id::text END,
            CASE WHEN c.last_object_id = 9223372036854775807 THEN 'MAXVALUE' ELSE (c.last_object_id + 1)::text END);
    END;
    -- Objects of the catalog that the feature table lacks are not scored: count them, range by
    -- range (the chunks cover every object id), so the count costs no serial pass.
    -- (The range on both sides lets the planner merge two index scans: 3x faster than
    -- probing the feature table once per catalog object.) A partition run's chunk table holds
    -- a row for every feature row of the range, so it stands for the feature table: its pages
    -- are few, in object_id order and (written by score_chunk_into) all-visible, where an
    -- index-only scan of the feature table visits the heap of every row (its visibility map is
    -- not set) in sky order. Feature rows whose objects left the catalog have rows in both and
    -- are not counted either way. An insert run writes only the objects without a published
    -- prediction: it counts against the feature table. The chunk table has no statistics yet,
    -- so the planner would read it with a bitmap scan and sort it: the index-only scan is
    -- cheaper (and has nothing to fetch from an all-visible heap). Index scans are allowed for
    -- this statement (score_chunk's SQL path turns them off for its own query; with both off
    -- the planner would read the whole catalog for every chunk).
    bitmap := current_setting('enable_bitmapscan');
    idx := current_setting('enable_indexscan');
    IF r.write_kind = 'partition' THEN
        PERFORM set_config('enable_bitmapscan', 'off', true);
        PERFORM set_config('enable_indexscan', 'on', true);
    END IF;
    EXECUTE format('SELECT count(*) FROM %1$s AS c WHERE c.object_id BETWEEN %3$L::bigint AND %4$L::bigint '
                   'AND NOT EXISTS (SELECT 1 FROM %2$s AS f WHERE f.object_id = c.object_id '
                   'AND f.object_id BETWEEN %3$L::bigint AND %4$L::bigint)',
                   r.catalog_table,
                   CASE WHEN r.write_kind = 'partition' THEN tbl ELSE r.feature_table END,
                   c.first_object_id, c.last_object_id)
       INTO missing;
    PERFORM set_config('enable_bitmapscan', bitmap, true);
    PERFORM set_config('enable_indexscan', idx, true);
    UPDATE skyclass.scoring_chunk AS k
       SET rows = n_rows, objects_without_features = missing, done_at = clock_timestamp()
     WHERE k.run_id = run AND k.chunk_no = chunk;
    UPDATE skyclass.scoring_run AS s
       SET chunks_done = s.chunks_done + 1, rows_scored = s.rows_scored + n_rows,
           objects_without_features = coalesce(s.objects_without_features, 0) + missing
     WHERE s.run_id = run;
END
$function$;
COMMENT ON FUNCTION skyclass.complete_scoring_chunk(bigint,integer,bigint) IS
'Mark a chunk done in the transaction that wrote its predictions (attaching its chunk table '
'to the run''s table). Shared by the in-database scorer and the client-side fallback. Unknown '
'chunk: SQLSTATE 42704; done already, run not planned or no chunk table: 55000; bad n_rows: '
'22023.';

CREATE OR REPLACE FUNCTION skyclass.score_chunk(run bigint, chunk integer)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    r      skyclass.scoring_run;
    c      skyclass.scoring_chunk;
    q      text;
    n      bigint;
    writer text := coalesce(nullif(current_setting('skyclass.chunk_writer', true), ''), 'native');
BEGIN
    IF to_regprocedure('skyclass.predict(bigint, real[])') IS NULL THEN
        RAISE EXCEPTION 'the skyclass extension is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'run the job with `skyclass score` (it falls back to client-side scoring), '
                         'or install the extension (docs/extension.md)';
    END IF;
    IF writer NOT IN ('native', 'sql') THEN
        RAISE EXCEPTION 'skyclass.chunk_writer must be native or sql, not %', quote_literal(writer)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    q := skyclass.scoring_chunk_query(run, chunk);
    -- A run that plan_scoring_run has not planned has no target table: writing its chunk
    -- would create a table named after nothing.
    IF to_regclass(nullif(r.target_table, '')) IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no target table', run
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'plan the run with skyclass.plan_scoring_run first';
    END IF;
    -- A chunk's commit need not wait for its WAL flush: WAL is replayed in order, so a crash
    -- loses the last chunks together with their completion marks (the resume redoes them),
    -- never one without the other; finish_scoring_run commits synchronously, so a run reported
    -- succeeded is durable with every chunk before it.
    SET LOCAL synchronous_commit = off;
    -- The extension's bulk writer (0.4.0): one scan of the chunk's features, the rows scored,
    -- encoded as skyclass.prediction_codec does, put in object_id order and written with
    -- multi-inserts (one WAL record per page, as COPY). Full runs of classification versions;
    -- only_new runs on a published catalog (an anti-join) and photo-z versions (their PDF
    -- summaries) keep the SQL below, and so does a server whose extension is older.
    IF writer = 'native' AND r.write_kind = 'partition'
       AND to_regprocedure('skyclass.score_chunk_into(bigint, regclass, bigint, bigint, regclass)') IS NOT NULL
       AND (SELECT mv.task FROM skyclass.model_version AS mv
             WHERE mv.model_version_id = r.model_version_id) = 'classification' THEN
        SELECT * INTO c FROM skyclass.scoring_chunk AS k WHERE k.run_id = run AND k.chunk_no = chunk;
        BEGIN
            n := skyclass.score_chunk_into(r.model_version_id, r.feature_table::regclass,
                                           c.first_object_id, c.last_object_id,
                                           skyclass.create_chunk_table(run, chunk)::regclass);
        EXCEPTION WHEN program_limit_exceeded OR undefined_function THEN
            -- A chunk larger than maintenance_work_mem holds (the SQL below sorts on disk),
            -- or a skyclass.so older than the extension's SQL (the function is declared
            -- but its library has no such symbol): the chunk is written by SQL.
            n := NULL;
        END;
        IF n IS NOT NULL THEN
            PERFORM skyclass.complete_scoring_chunk(run, chunk, n);
            RETURN n;
        END IF;
    END IF;
    -- JIT compiles every chunk's expressions again and costs more than it saves here.
    SET LOCAL jit = off;
    -- The rows are written in object_id order: an index scan would give that order without a
    -- sort, but fetches every row through its own buffer lookup (the feature table is in the
    -- catalog's sky order); a bitmap scan and a sort cost 1 us per row less.
    SET LOCAL enable_indexscan = off;
    IF current_setting('max_parallel_workers_per_gather')::integer > 0 THEN
        -- One session alone (CALL skyclass.rescore, pg_cron): CREATE TABLE AS may use parallel
        -- workers, INSERT ... SELECT never does in PostgreSQL 15.
        EXECUTE format('CREATE TABLE %s AS %s', r.target_table || '_' || chunk, q);
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSE
        -- Several sessions fill the cores: insert into a table made with its constraints, which
        -- spares the scans that constraining a CREATE TABLE AS result costs.
        EXECUTE format('INSERT INTO %s %s', skyclass.create_chunk_table(run, chunk), q);
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    PERFORM skyclass.complete_scoring_chunk(run, chunk, n);
    RETURN n;
END
$function$;
COMMENT ON FUNCTION skyclass.score_chunk(bigint,integer) IS
'Score one claimed chunk and complete it (same transaction): with the extension''s bulk '
'writer skyclass.score_chunk_into (0.4.0) for full runs of classification versions, '
'otherwise with skyclass.predict in SQL (skyclass.scoring_chunk_query); the setting '
'skyclass.chunk_writer = sql forces the SQL path (native or sql, else 22023). Unknown run or '
'chunk: SQLSTATE 42704; a run not planned by plan_scoring_run: 55000.';

CREATE OR REPLACE FUNCTION skyclass.release_scoring_lock(run bigint)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    released boolean;
BEGIN
    IF run IS NULL THEN
        RAISE EXCEPTION 'run must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE skyclass.scoring_lease AS l
       SET holder_pid = NULL, holder_started = NULL, holder_user = NULL, taken_at = NULL
      FROM skyclass.scoring_run AS s
     WHERE s.run_id = run AND l.model_version_id = s.model_version_id
       AND l.catalog_id = s.catalog_id AND l.holder_pid = pg_backend_pid();
    GET DIAGNOSTICS released = ROW_COUNT;
    RETURN released;
END
$function$;
COMMENT ON FUNCTION skyclass.release_scoring_lock(bigint) IS
'Release a run''s job lease (skyclass.scoring_lease) if this session holds it.';

CREATE OR REPLACE FUNCTION skyclass.fail_scoring_run(run bigint, message text, new_status text DEFAULT 'failed'::text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF new_status IS NULL OR new_status NOT IN ('failed', 'interrupted') THEN
        RAISE EXCEPTION 'a run can only be marked failed or interrupted, not %',
            coalesce(quote_literal(new_status), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE skyclass.scoring_run AS s
       SET status = new_status, error = message, finished_at = clock_timestamp()
     WHERE s.run_id = run AND s.status = 'running';
    PERFORM skyclass.release_scoring_lock(run);
END
$function$;
COMMENT ON FUNCTION skyclass.fail_scoring_run(bigint,text,text) IS
'Mark a running run failed (or interrupted) with a message and release its lock; the next '
'start of the same job resumes it. A run not running is left as it is; another status: 22023.';

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

CREATE OR REPLACE PROCEDURE skyclass.score_chunks(IN run bigint)
 LANGUAGE plpgsql
AS $procedure$
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
$procedure$;
COMMENT ON PROCEDURE skyclass.score_chunks(bigint) IS
'Worker loop: claim, score and commit chunks of a run until none is left. Several sessions '
'may run it on one run at once; a failing chunk marks the run failed.';

CREATE OR REPLACE PROCEDURE skyclass.rescore(IN deployment_or_version text, IN catalog text, IN only_new boolean DEFAULT false, IN chunk_size integer DEFAULT 50000, IN schedule_name text DEFAULT NULL::text)
 LANGUAGE plpgsql
AS $procedure$
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
$procedure$;
COMMENT ON PROCEDURE skyclass.rescore(text,text,boolean,integer,text) IS
'Score a catalog with a deployment (or MODEL:VERSION, or a model_version_id) in this session,'
' committing per chunk: CALL skyclass.rescore(''sgq_current'', ''sdss17''). Resumes an '
'interrupted run, refuses to start when the same job runs elsewhere, only_new scores objects '
'without a prediction of that version. Usable from psql and pg_cron; `skyclass score` runs '
'the same job with several sessions.';

CREATE OR REPLACE FUNCTION skyclass.publish_predictions()
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    t        record;
    codec    record;
    branches text[] := '{}';
BEGIN
    -- Publishers take turns (the lock conflicts with itself, not with readers) and read the
    -- registry once they hold it, so none writes a view that misses a run another published.
    LOCK TABLE skyclass.prediction_table IN SHARE ROW EXCLUSIVE MODE;
    FOR t IN
        SELECT p.model_version_id, p.catalog_id, p.run_id, p.table_name,
               coalesce(r.finished_at, clock_timestamp()) AS scored_at
          FROM skyclass.prediction_table AS p JOIN skyclass.scoring_run AS r USING (run_id)
         ORDER BY p.model_version_id, p.catalog_id, p.run_id
    LOOP
        IF to_regclass(t.table_name) IS NULL THEN
            RAISE EXCEPTION 'prediction table % of run % does not exist', t.table_name, t.run_id
                USING ERRCODE = 'undefined_table';
        END IF;
        codec := skyclass.prediction_codec(t.model_version_id);
        branches := branches || format(
            'SELECT %s::bigint AS model_version_id, t.object_id, %s::bigint AS run_id, '
            '%s::integer AS catalog_id, %s, %L::timestamptz AS scored_at, %s FROM %s AS t',
            t.model_version_id, t.run_id, t.catalog_id, codec.decode, t.scored_at,
            codec.decode_labels, t.table_name);
    END LOOP;
    IF cardinality(branches) = 0 THEN
        branches := ARRAY['SELECT NULL::bigint AS model_version_id, NULL::bigint AS object_id, '
            'NULL::bigint AS run_id, NULL::integer AS catalog_id, NULL::real AS top_probability, '
            'NULL::real AS z_mean, NULL::real AS z_median, NULL::real AS z_mode, NULL::real AS z_lo68, '
            'NULL::real AS z_hi68, NULL::real AS z_lo95, NULL::real AS z_hi95, '
            'NULL::timestamptz AS scored_at, NULL::text COLLATE "C" AS top_label, NULL::real[] AS probabilities '
            'WHERE false'];
    END IF;
    EXECUTE 'CREATE OR REPLACE VIEW skyclass.prediction AS ' || array_to_string(branches, ' UNION ALL ');
    RETURN cardinality(branches);
END
$function$;
COMMENT ON FUNCTION skyclass.publish_predictions() IS
'Rewrite the view skyclass.prediction as one branch per published run table of '
'skyclass.prediction_table (decoded with skyclass.prediction_codec, the run''s constants as '
'literals); returns the number of branches. Called in the transaction that changes the '
'registry, so readers see the old set of runs or the new one.';

CREATE OR REPLACE FUNCTION skyclass.unpublish_predictions(catalog integer)
 RETURNS SETOF text
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF catalog IS NULL THEN
        RAISE EXCEPTION 'catalog must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOCK TABLE skyclass.prediction_table IN SHARE ROW EXCLUSIVE MODE;
    RETURN QUERY DELETE FROM skyclass.prediction_table AS p WHERE p.catalog_id = catalog
        RETURNING p.table_name;
    PERFORM skyclass.publish_predictions();
END
$function$;
COMMENT ON FUNCTION skyclass.unpublish_predictions(integer) IS
'Withdraw every published prediction table of a catalog (id) from skyclass.prediction and '
'return their names (the caller drops them in the same transaction). NULL: SQLSTATE 22023.';
