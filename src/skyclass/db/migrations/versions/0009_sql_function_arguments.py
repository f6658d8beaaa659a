"""SQL functions that validate their arguments; readers that see a replaced catalog whole.

Atomic replace for readers: ``skyclass ingest --replace`` builds a new table,
drops the old one and renames the new one into place in one transaction. A
query waits for that transaction's lock and then reads the new table, but a
``STABLE`` function reads with the snapshot its calling statement took before
it waited, in which the new table's rows (written by the replace) do not
exist yet: ``cone_search`` returned no rows. ``_catalog_table`` now takes the
catalog table's ``ACCESS SHARE`` lock when it names the table (so a reader
waits for a replace there), and ``cone_search``, ``crossmatch`` and
``_crossmatch_sql`` become ``VOLATILE``, so each of their statements takes a
new snapshot after that lock: they read the old table or the whole new one.

Argument validation (SQLSTATE 22023 for an invalid argument, 42704 for a run
or chunk that does not exist, 55000 for one in the wrong state; no dynamic SQL
is built from an unchecked argument):

* ``pdf_summary``: both arrays one-dimensional; edges finite, within the range
  of ``real`` and strictly increasing (equal edges divided by zero, decreasing
  ones gave lo68 > hi68, NaN ones all-NaN results); masses finite,
  non-negative and summing to 1 within 0.001 (they are still renormalised).
  Arrays may start at any index.
* ``plan_scoring_chunks``: the run must exist, be running, unplanned, with its
  target table made by ``plan_scoring_run``, and its tables must exist (a
  missing run built ``FROM  AS f``, SQLSTATE 42601).
* ``create_chunk_table``: the chunk must exist in a partition run (a NULL
  chunk built ``CREATE TABLE`` without a name, SQLSTATE 42601).
* ``complete_scoring_chunk``: ``n_rows`` is a non-negative count, and the run has
  its target table.
* ``score_chunk``: the run must have its target table (a run whose chunks were
  planned without ``plan_scoring_run`` created a table ``_<chunk>`` in the
  search path and then built ``ALTER TABLE  ATTACH``, SQLSTATE 42601).
* ``finish_scoring_run``: the run must be planned (a run never planned analysed the
  whole database, detached and dropped the published partition, then built
  ``ATTACH PARTITION  FOR VALUES``, SQLSTATE 42601, which rolled it all back).
* ``fail_scoring_run``: a NULL status is refused like any other bad one.
* ``deploy``: a NULL model version is refused (22023, not 23503).

Downgrade restores the functions as 0002, 0004 and (finish_scoring_run) 0008 made them and the readers'
``STABLE`` label (this file keeps copies of those texts: it reads no other
migration).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_CONE = "skyclass.cone_search(text, double precision, double precision, double precision)"
_CROSSMATCH = "(text, text, double precision, boolean, text)"
_READERS = (_CONE, f"skyclass.crossmatch{_CROSSMATCH}", f"skyclass._crossmatch_sql{_CROSSMATCH}")

# -- atomic replace ------------------------------------------------------------------------------
CATALOG_TABLE = """
CREATE OR REPLACE FUNCTION skyclass._catalog_table(catalog text)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    target text;
    has_positions boolean;
BEGIN
    SELECT format('%I.%I', c.schema_name, c.table_name), c.ra_column IS NOT NULL
    INTO target, has_positions
    FROM skyclass.catalog AS c
    WHERE c.name = catalog;
    IF target IS NULL THEN
        RAISE EXCEPTION 'catalog % is not registered', quote_literal(catalog)
            USING ERRCODE = 'undefined_table',
                  HINT = 'List the registered catalogs with `skyclass catalog list` '
                         'or SELECT name FROM skyclass.catalog.';
    END IF;
    IF NOT has_positions THEN
        RAISE EXCEPTION 'catalog % has no sky positions', catalog
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It was loaded with --no-positions (no ra/dec columns); cone search '
                         'and cross-match need a catalog with RA and Dec.';
    END IF;
    -- Take the table's ACCESS SHARE lock now (kept to the end of the transaction): a reader
    -- waits here for an ingest --replace to commit, and the caller's next statement, with a
    -- new snapshot, reads the whole new table.
    EXECUTE format('SELECT FROM %s WHERE false', target);
    RETURN target;
END
$$;

COMMENT ON FUNCTION skyclass._catalog_table(text) IS
'Quoted schema.table of registered catalog, locked ACCESS SHARE for the transaction '
'(internal); SQLSTATE 42P01 when unknown, 22023 when it has no sky positions.';
"""

CATALOG_TABLE_0002 = """
CREATE OR REPLACE FUNCTION skyclass._catalog_table(catalog text)
RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    target text;
    has_positions boolean;
BEGIN
    SELECT format('%I.%I', c.schema_name, c.table_name), c.ra_column IS NOT NULL
    INTO target, has_positions
    FROM skyclass.catalog AS c
    WHERE c.name = catalog;
    IF target IS NULL THEN
        RAISE EXCEPTION 'catalog % is not registered', quote_literal(catalog)
            USING ERRCODE = 'undefined_table',
                  HINT = 'List the registered catalogs with `skyclass catalog list` '
                         'or SELECT name FROM skyclass.catalog.';
    END IF;
    IF NOT has_positions THEN
        -- Registered names are identifiers (a-z, 0-9, _), so printed as they are.
        RAISE EXCEPTION 'catalog % has no sky positions', catalog
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It was loaded with --no-positions (no ra/dec columns); cone search '
                         'and cross-match need a catalog with RA and Dec.';
    END IF;
    RETURN target;
END
$$;

COMMENT ON FUNCTION skyclass._catalog_table(text) IS
'Quoted schema.table of registered catalog (internal); SQLSTATE 42P01 when unknown, '
'22023 when it has no sky positions.';
"""

# -- pdf_summary -----------------------------------------------------------------------------------
PDF_SUMMARY = """
CREATE OR REPLACE FUNCTION skyclass.pdf_summary(
    pdf real[], edges double precision[],
    OUT z_mean real, OUT z_median real, OUT z_mode real,
    OUT z_lo68 real, OUT z_hi68 real, OUT z_lo95 real, OUT z_hi95 real)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    n      integer := cardinality(pdf);
    lo     integer := array_lower(pdf, 1) - 1;
    elo    integer := array_lower(edges, 1) - 1;
    e      double precision[];
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
    IF array_ndims(pdf) > 1 OR array_ndims(edges) > 1 THEN
        RAISE EXCEPTION 'pdf and edges must be one-dimensional arrays, not %-dimensional',
            greatest(array_ndims(pdf), array_ndims(edges))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n < 2 OR cardinality(edges) <> n + 1 THEN
        RAISE EXCEPTION 'a PDF of % bins needs % edges, not %', n, n + 1, cardinality(edges)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a PDF has at least 2 bins';
    END IF;
    -- Edges: finite, representable as real (the results are real) and strictly increasing.
    e := array_fill(0::double precision, ARRAY[n + 1]);
    FOR k IN 1..n + 1 LOOP
        e[k] := edges[elo + k];
        IF e[k] IS NULL OR NOT (abs(e[k]) <= 3.4028234663852886e38) THEN
            RAISE EXCEPTION 'PDF bin edges must be finite real numbers, not % (edge %)',
                coalesce(e[k]::text, 'NULL'), k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF k > 1 AND e[k] <= e[k - 1] THEN
            RAISE EXCEPTION 'PDF bin edges must be strictly increasing, not % after %', e[k], e[k - 1]
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    FOR k IN 1..n LOOP
        IF pdf[lo + k] IS NULL OR NOT (pdf[lo + k] >= 0 AND pdf[lo + k] < 'Infinity'::real) THEN
            RAISE EXCEPTION 'PDF masses must be finite and non-negative, not % (bin %)',
                coalesce(pdf[lo + k]::text, 'NULL'), k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        total := total + pdf[lo + k];
    END LOOP;
    IF NOT (abs(total - 1) <= 1e-3) THEN
        RAISE EXCEPTION 'PDF masses must sum to 1 (within 0.001), not %', total
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    p := array_fill(0::double precision, ARRAY[n]);
    cum := p;
    FOR k IN 1..n LOOP
        p[k] := pdf[lo + k]::double precision / total;
        acc := acc + p[k];
        cum[k] := acc;
        mean := mean + p[k] * (0.5 * (e[k] + e[k + 1]));
        dens := p[k] / (e[k + 1] - e[k]);
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
        z[t] := e[j] + frac * (e[j + 1] - e[j]);
    END LOOP;
    -- Rounding can put the mean a hair outside the edges; keep it inside.
    z_mean := least(greatest(mean, e[1]), e[n + 1]);
    z_mode := 0.5 * (e[imode] + e[imode + 1]);
    z_median := z[1];
    z_lo68 := z[2];
    z_hi68 := z[3];
    z_lo95 := z[4];
    z_hi95 := z[5];
END
$$;
COMMENT ON FUNCTION skyclass.pdf_summary(real[], double precision[]) IS
    'Photo-z point estimates of PDF bin masses on bin edges: mean, median, mode and the central '
    '68% and 95% intervals (the CDF is linear inside a bin), with edges[1] <= z_lo95 <= z_lo68 '
    '<= z_median <= z_hi68 <= z_hi95 <= edges[n+1]. n >= 2 masses, finite, non-negative and '
    'summing to 1 within 0.001 (renormalised); n + 1 finite, strictly increasing edges; '
    'otherwise SQLSTATE 22023. NULL arguments give NULL.';
"""

# -- the job engine --------------------------------------------------------------------------------
PLAN_SCORING_CHUNKS = """
CREATE OR REPLACE FUNCTION skyclass.plan_scoring_chunks(run bigint) RETURNS integer
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
    'Split a new run''s objects into contiguous object_id ranges of chunk_size objects. The run '
    'must be running and not yet planned (SQLSTATE 55000; unknown run: 42704; NULL: 22023).';
"""

CREATE_CHUNK_TABLE = """
CREATE OR REPLACE FUNCTION skyclass.create_chunk_table(run bigint, chunk integer) RETURNS text
LANGUAGE plpgsql AS $$
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
    IF r.write_kind IS DISTINCT FROM 'partition' OR r.target_table = '' THEN
        RAISE EXCEPTION 'scoring run % does not write chunk tables', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM skyclass.scoring_chunk AS c WHERE c.run_id = run AND c.chunk_no = chunk) THEN
        RAISE EXCEPTION 'scoring run % has no chunk %', run, chunk USING ERRCODE = 'undefined_object';
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
    'fill it, then call skyclass.complete_scoring_chunk in the same transaction. Unknown run or '
    'chunk: SQLSTATE 42704; NULL: 22023.';
"""

COMPLETE_SCORING_CHUNK = """
CREATE OR REPLACE FUNCTION skyclass.complete_scoring_chunk(run bigint, chunk integer, n_rows bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r       skyclass.scoring_run;
    c       skyclass.scoring_chunk;
    tbl     text;
    missing bigint;
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
    IF r.write_kind = 'partition' THEN
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
    'for partition runs). Shared by the in-database scorer and the client-side fallback. '
    'Unknown chunk: SQLSTATE 42704; done already, run not planned or no chunk table: 55000; '
    'bad n_rows: 22023.';
"""

SCORE_CHUNK = """
CREATE OR REPLACE FUNCTION skyclass.score_chunk(run bigint, chunk integer) RETURNS bigint
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
    -- A run that plan_scoring_run has not planned has no target table: writing its chunk
    -- would create a table named after nothing.
    IF to_regclass(nullif(r.target_table, '')) IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no target table', run
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'plan the run with skyclass.plan_scoring_run first';
    END IF;
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
    'Score one claimed chunk with skyclass.predict and complete it (same transaction). Unknown '
    'run or chunk: SQLSTATE 42704; a run not planned by plan_scoring_run: 55000.';
"""

FINISH_SCORING_RUN = """
CREATE OR REPLACE FUNCTION skyclass.finish_scoring_run(run bigint) RETURNS skyclass.scoring_run
LANGUAGE plpgsql AS $$
DECLARE
    r        skyclass.scoring_run;
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
    'the lock. Unknown run: SQLSTATE 42704; not running, not planned, chunks left or lock '
    'held elsewhere: 55000.';
"""

FAIL_SCORING_RUN = """
CREATE OR REPLACE FUNCTION skyclass.fail_scoring_run(run bigint, message text, new_status text DEFAULT 'failed')
RETURNS void
LANGUAGE plpgsql AS $$
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
$$;
COMMENT ON FUNCTION skyclass.fail_scoring_run(bigint, text, text) IS
    'Mark a running run failed (or interrupted) with a message and release its lock; the next '
    'start of the same job resumes it. A run not running is left as it is; another status: 22023.';
"""

DEPLOY = """
CREATE OR REPLACE FUNCTION skyclass.deploy(deployment text, model_version bigint, description text DEFAULT NULL)
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
    IF model_version IS NULL THEN
        RAISE EXCEPTION 'model_version must be a model_version_id, not NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'remove a deployment with DELETE FROM skyclass.deployment';
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
    'previous version (NULL when new). Refused when the version belongs to another model '
    '(23514) or does not exist (23503); a bad name or a NULL version: 22023.';
"""

# -- what downgrade restores: the texts of 0004 -------------------------------------------------
PDF_SUMMARY_0004 = """
CREATE OR REPLACE FUNCTION skyclass.pdf_summary(
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
"""

PLAN_SCORING_CHUNKS_0004 = """
CREATE OR REPLACE FUNCTION skyclass.plan_scoring_chunks(run bigint) RETURNS integer
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
"""

CREATE_CHUNK_TABLE_0004 = """
CREATE OR REPLACE FUNCTION skyclass.create_chunk_table(run bigint, chunk integer) RETURNS text
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
"""

COMPLETE_SCORING_CHUNK_0004 = """
CREATE OR REPLACE FUNCTION skyclass.complete_scoring_chunk(run bigint, chunk integer, n_rows bigint)
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
"""

SCORE_CHUNK_0004 = """
CREATE OR REPLACE FUNCTION skyclass.score_chunk(run bigint, chunk integer) RETURNS bigint
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
"""

FINISH_SCORING_RUN_0008 = """
CREATE OR REPLACE FUNCTION skyclass.finish_scoring_run(run bigint) RETURNS skyclass.scoring_run
LANGUAGE plpgsql AS $$
DECLARE
    r        skyclass.scoring_run;
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
    IF skyclass.scoring_job_holder(r.model_version_id, r.catalog_id) IS DISTINCT FROM pg_backend_pid() THEN
        RAISE EXCEPTION 'this session does not hold the job of scoring run %', run
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
"""

FAIL_SCORING_RUN_0004 = """
CREATE OR REPLACE FUNCTION skyclass.fail_scoring_run(run bigint, message text, new_status text DEFAULT 'failed')
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
"""

DEPLOY_0004 = """
CREATE OR REPLACE FUNCTION skyclass.deploy(deployment text, model_version bigint, description text DEFAULT NULL)
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
"""


def upgrade() -> None:
    op.execute(CATALOG_TABLE)
    for function in _READERS:
        op.execute(f"ALTER FUNCTION {function} VOLATILE")
    for text in (
        PDF_SUMMARY,
        PLAN_SCORING_CHUNKS,
        CREATE_CHUNK_TABLE,
        COMPLETE_SCORING_CHUNK,
        SCORE_CHUNK,
        FINISH_SCORING_RUN,
        FAIL_SCORING_RUN,
        DEPLOY,
    ):
        op.execute(text)


def downgrade() -> None:
    for text in (
        PDF_SUMMARY_0004,
        PLAN_SCORING_CHUNKS_0004,
        CREATE_CHUNK_TABLE_0004,
        COMPLETE_SCORING_CHUNK_0004,
        SCORE_CHUNK_0004,
        FINISH_SCORING_RUN_0008,
        FAIL_SCORING_RUN_0004,
        DEPLOY_0004,
    ):
        op.execute(text)
    for function in _READERS:
        op.execute(f"ALTER FUNCTION {function} STABLE")
    op.execute(CATALOG_TABLE_0002)
