"""Compact predictions: run tables without per-row constants, 16-bit probabilities, a view.

Revision ID: 0017
Revises: 0016

``skyclass.prediction`` was a partitioned table whose every row repeated its model
version, catalog, run and time, a text label and a ``real[]`` with its array header,
under a b-tree primary key: 159 bytes per 3-class prediction. Now each scoring run
writes a table of its own, ``predictions.mv_<v>_c<c>_r<run>`` (range-partitioned by
object_id into one table per chunk), in the layout ``skyclass.prediction_codec``
gives: object_id, the top class and 16-bit probabilities (photo-z: 16-bit point
estimates and the CDF in 8 bits per inner edge), rows in object_id order under a
b-tree on object_id (or a BRIN index with ``skyclass.prediction_index = brin``).
``skyclass.prediction_table`` lists the published run tables and ``skyclass.prediction``
becomes a view over them, rewritten by
``skyclass.publish_predictions`` in the transaction that publishes a run, with the
same columns and meaning (``scored_at`` is now the time the run finished). The
views ``current_classification`` and ``prediction_long`` are re-created unchanged.
Existing predictions are converted (one table per version, catalog and run that wrote
rows); runs left unfinished lose their tables and start afresh. The downgrade
converts the published predictions back into the partitioned table.
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _run(sql: str) -> None:
    # The driver's own execute: no bind-parameter parsing of the function bodies.
    op.get_bind().connection.driver_connection.execute(sql)  # type: ignore[union-attr]


PREDICTION_TABLE = r"""
CREATE TABLE skyclass.prediction_table (
    run_id bigint PRIMARY KEY REFERENCES skyclass.scoring_run (run_id),
    model_version_id bigint NOT NULL REFERENCES skyclass.model_version (model_version_id),
    catalog_id integer NOT NULL REFERENCES skyclass.catalog (catalog_id),
    table_name text NOT NULL UNIQUE
);
CREATE INDEX ix_prediction_table_model_version_id_catalog_id
    ON skyclass.prediction_table (model_version_id, catalog_id);
COMMENT ON TABLE skyclass.prediction_table IS
'The published prediction tables: one row per run whose table the view skyclass.prediction '
'shows (the last full run of a version and catalog, and the only_new runs after it).';
"""

VIEWS = r"""
CREATE VIEW skyclass.current_classification AS
 SELECT d.name AS deployment,
    c.name AS catalog,
    p.object_id,
    p.model_version_id,
    p.top_label,
    p.top_probability,
    p.probabilities,
    p.z_mean,
    p.z_median,
    p.z_mode,
    p.z_lo68,
    p.z_hi68,
    p.z_lo95,
    p.z_hi95,
    p.run_id,
    p.scored_at
   FROM skyclass.deployment d
     JOIN skyclass.prediction p ON p.model_version_id = d.model_version_id
     JOIN skyclass.catalog c ON c.catalog_id = p.catalog_id;
COMMENT ON VIEW skyclass.current_classification IS
'The predictions of the version each deployment points at now, per catalog and object: filter on deployment and catalog and JOIN catalogs.<catalog> USING (object_id), e.g. inside a cone search. Switching a deployment switches this view in one transaction.';
CREATE VIEW skyclass.prediction_long AS
 SELECT c.name AS catalog,
    p.object_id,
    p.model_version_id,
    v.classes[u.k] AS class,
    u.probability,
    u.rank
   FROM skyclass.prediction p
     JOIN skyclass.model_version v ON v.model_version_id = p.model_version_id
     JOIN skyclass.catalog c ON c.catalog_id = p.catalog_id
     CROSS JOIN LATERAL ( SELECT e.k::integer AS k,
            e.probability,
            row_number() OVER (ORDER BY e.probability DESC, e.k) AS rank
           FROM unnest(p.probabilities) WITH ORDINALITY e(probability, k)) u;
COMMENT ON VIEW skyclass.prediction_long IS
'Predictions in long form: one row per object, model version and class with its probability and rank (1 = most probable; ties ranked in class order).';
GRANT SELECT ON skyclass.current_classification, skyclass.prediction_long TO skyclass_reader;
"""

PREDICTION_COMMENTS = r"""
COMMENT ON COLUMN skyclass.prediction.z_mean IS 'Photo-z: mean of the PDF (bin centres)';
COMMENT ON COLUMN skyclass.prediction.z_median IS 'Photo-z: median (CDF linear inside bins)';
COMMENT ON COLUMN skyclass.prediction.z_mode IS 'Photo-z: centre of the densest bin';
COMMENT ON COLUMN skyclass.prediction.z_lo68 IS 'Photo-z: lower bound of the central 68% interval';
COMMENT ON COLUMN skyclass.prediction.z_hi68 IS 'Photo-z: upper bound of the central 68% interval';
COMMENT ON COLUMN skyclass.prediction.z_lo95 IS 'Photo-z: lower bound of the central 95% interval';
COMMENT ON COLUMN skyclass.prediction.z_hi95 IS 'Photo-z: upper bound of the central 95% interval';
COMMENT ON COLUMN skyclass.prediction.probabilities IS 'Calibrated class probabilities, or PDF bin masses, in model_version.classes order';
"""

VIEW_COMMENT = r"""
COMMENT ON VIEW skyclass.prediction IS
'One prediction per object, catalog and model version: calibrated probabilities (or PDF bin masses) in the order of model_version.classes (stored in 16 bits: within 7.7e-6; PDFs as their CDF in 8 bits), the top label and its probability, photo-z point estimates (NULL for classifiers), the run that wrote it and when that run finished. A view over the published run tables (skyclass.prediction_table), rewritten atomically when a run is published; versions never overwrite each other.';
GRANT SELECT ON skyclass.prediction TO skyclass_reader;
"""

# Old rows into the compact run tables: one table per version, catalog and run that wrote rows.
CONVERT = r"""
DO $convert$
DECLARE
    t     record;
    codec record;
    tbl   text;
BEGIN
    FOR t IN SELECT DISTINCT p.model_version_id, p.catalog_id, p.run_id
               FROM predictions_0012.prediction AS p ORDER BY 1, 2, 3
    LOOP
        codec := skyclass.prediction_codec(t.model_version_id);
        tbl := format('predictions.%I', format('mv_%s_c%s_r%s', t.model_version_id, t.catalog_id, t.run_id));
        EXECUTE format('CREATE TABLE %s (%s) PARTITION BY RANGE (object_id)', tbl, codec.columns);
        EXECUTE format('CREATE INDEX ON %s (object_id)', tbl);
        EXECUTE format('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (MINVALUE) TO (MAXVALUE)',
                       tbl || '_0', tbl);
        EXECUTE format('INSERT INTO %s SELECT %s FROM (SELECT o.object_id, o.probabilities AS p, o.z_mean, '
                       'o.z_median, o.z_mode, o.z_lo68, o.z_hi68, o.z_lo95, o.z_hi95 '
                       'FROM predictions_0012.prediction AS o WHERE o.model_version_id = %s '
                       'AND o.catalog_id = %s AND o.run_id = %s ORDER BY o.object_id) AS s',
                       tbl, codec.encode, t.model_version_id, t.catalog_id, t.run_id);
        INSERT INTO skyclass.prediction_table (run_id, model_version_id, catalog_id, table_name)
        VALUES (t.run_id, t.model_version_id, t.catalog_id, tbl);
        UPDATE skyclass.scoring_run AS s
           SET target_table = tbl, finished_at = coalesce(s.finished_at, clock_timestamp())
         WHERE s.run_id = t.run_id;
    END LOOP;
    -- Unfinished runs had tables in the old layout: they start afresh.
    UPDATE skyclass.scoring_run AS s SET target_table = ''
     WHERE s.status <> 'succeeded'
       AND NOT EXISTS (SELECT 1 FROM skyclass.prediction_table AS p WHERE p.run_id = s.run_id);
END
$convert$;
"""

UP_FUNCTIONS = r"""
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
    -- The rows are written in object_id order: an index scan would give that order without a
    -- sort, but fetches every row through its own buffer lookup (the feature table is in the
    -- catalog's sky order); a bitmap scan and a sort cost 1 us per row less.
    SET LOCAL enable_indexscan = off;
    -- A chunk's commit need not wait for its WAL flush: WAL is replayed in order, so a crash
    -- loses the last chunks together with their completion marks (the resume redoes them),
    -- never one without the other; finish_scoring_run commits synchronously, so a run reported
    -- succeeded is durable with every chunk before it.
    SET LOCAL synchronous_commit = off;
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
'Score one claimed chunk with skyclass.predict and complete it (same transaction). Unknown '
'run or chunk: SQLSTATE 42704; a run not planned by plan_scoring_run: 55000.';

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
'Complete a run whose chunks are all done: publish its table (a full run replaces the tables '
'of its version and catalog, only_new adds its own; skyclass.publish_predictions rewrites the '
'view in the same transaction), mark it succeeded, release the lock. Unknown run: SQLSTATE 42704; not running, not planned, chunks left or lock held '
'elsewhere: 55000.';

"""

DOWN_FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION skyclass.prediction_partition(model_version bigint, catalog integer)
 RETURNS text
 LANGUAGE sql
 STABLE STRICT
AS $function$
    SELECT format('predictions.%I', c.relname)
      FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
     WHERE i.inhparent = to_regclass(format('predictions.%I', 'mv_' || model_version))
       AND c.relname LIKE format('mv\_%s\_c%s\_r%%', model_version, catalog)
$function$;
COMMENT ON FUNCTION skyclass.prediction_partition(bigint,integer) IS
'The attached partition holding a model version''s predictions of a catalog, or NULL.';

CREATE OR REPLACE FUNCTION skyclass.scoring_chunk_query(run bigint, chunk integer)
 RETURNS text
 LANGUAGE plpgsql
 STABLE
AS $function$
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
$function$;
COMMENT ON FUNCTION skyclass.scoring_chunk_query(bigint,integer) IS
'The SQL that scores one chunk of a run with skyclass.predict (for EXPLAIN and debugging).';

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
    r        skyclass.scoring_run;
    leaf     text;
    target_t text;
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
    -- The version's partition of skyclass.prediction, created on first scoring (jobs of other
    -- catalogs may race to create it).
    -- (No advisory lock: any role could take its key and block every job.) A racing
    -- creator waits on the catalog's unique index and then finds the name taken.
    IF to_regclass(format('predictions.%I', 'mv_' || r.model_version_id)) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE predictions.%I PARTITION OF skyclass.prediction '
                           'FOR VALUES IN (%s) PARTITION BY LIST (catalog_id)',
                           'mv_' || r.model_version_id, r.model_version_id);
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            NULL;
        END;
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
        UPDATE skyclass.scoring_run SET write_kind = 'partition', target_table = target_t
         WHERE run_id = run;
    END IF;
    PERFORM skyclass.plan_scoring_chunks(run);
    RETURN (SELECT chunks_total FROM skyclass.scoring_run WHERE run_id = run);
END
$function$;
COMMENT ON FUNCTION skyclass.plan_scoring_run(bigint) IS
'Plan a new run (a no-op for a resumed one): create the version''s partition if needed and '
'the run''s catalog partition (or, for only_new on a scored catalog, insert into the existing'
' one), split the objects into chunks.';

CREATE OR REPLACE FUNCTION skyclass.chunk_check(run bigint, chunk integer)
 RETURNS text
 LANGUAGE sql
 STABLE STRICT
AS $function$
    SELECT format(
        'CHECK (model_version_id = %s AND catalog_id = %s AND object_id >= %L::bigint '
        'AND object_id <= %L::bigint AND run_id IS NOT NULL AND top_probability IS NOT NULL '
        'AND scored_at IS NOT NULL AND top_label IS NOT NULL AND probabilities IS NOT NULL)',
        r.model_version_id, r.catalog_id, c.first_object_id, c.last_object_id)
      FROM skyclass.scoring_run AS r
      JOIN skyclass.scoring_chunk AS c USING (run_id)
     WHERE r.run_id = run AND c.chunk_no = chunk
$function$;
COMMENT ON FUNCTION skyclass.chunk_check(bigint,integer) IS
'The CHECK constraint of a chunk table (everything its partition bound and NOT NULLs need).';

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
$function$;
COMMENT ON FUNCTION skyclass.complete_scoring_chunk(bigint,integer,bigint) IS
'Mark a chunk done in the transaction that wrote its predictions (attaching its chunk table '
'for partition runs). Shared by the in-database scorer and the client-side fallback. Unknown '
'chunk: SQLSTATE 42704; done already, run not planned or no chunk table: 55000; bad n_rows: '
'22023.';

CREATE OR REPLACE FUNCTION skyclass.score_chunk(run bigint, chunk integer)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
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
$function$;
COMMENT ON FUNCTION skyclass.score_chunk(bigint,integer) IS
'Score one claimed chunk with skyclass.predict and complete it (same transaction). Unknown '
'run or chunk: SQLSTATE 42704; a run not planned by plan_scoring_run: 55000.';

CREATE OR REPLACE FUNCTION skyclass.finish_scoring_run(run bigint)
 RETURNS skyclass.scoring_run
 LANGUAGE plpgsql
AS $function$
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
$function$;
COMMENT ON FUNCTION skyclass.finish_scoring_run(bigint) IS
'Complete a run whose chunks are all done: swap its catalog partition in (replacing the '
'previous one of that version and catalog in one transaction), mark it succeeded, release the'
' lock. Unknown run: SQLSTATE 42704; not running, not planned, chunks left or lock held '
'elsewhere: 55000.';

"""

OLD_PREDICTION = r"""
CREATE TABLE skyclass.prediction (
    model_version_id bigint NOT NULL,
    object_id bigint NOT NULL,
    run_id bigint NOT NULL,
    catalog_id integer NOT NULL,
    top_probability real NOT NULL,
    z_mean real,
    z_median real,
    z_mode real,
    z_lo68 real,
    z_hi68 real,
    z_lo95 real,
    z_hi95 real,
    scored_at timestamp with time zone DEFAULT now() NOT NULL,
    top_label text COLLATE "C" NOT NULL,
    probabilities real[] NOT NULL,
    CONSTRAINT prediction_pkey PRIMARY KEY (model_version_id, catalog_id, object_id)
) PARTITION BY LIST (model_version_id);
COMMENT ON TABLE skyclass.prediction IS
'One prediction per object, catalog and model version: calibrated probabilities (or PDF bin masses) in the order of model_version.classes, the top label and its probability, photo-z point estimates (NULL for classifiers), and the run that wrote it. Versions never overwrite each other; a full re-score of a version replaces its catalog partition atomically.';
GRANT SELECT ON skyclass.prediction TO skyclass_reader;
"""

# Back into the partitioned table: each version and catalog's published rows into one
# catalog partition named after its last full run.
UNCONVERT = r"""
DO $unconvert$
DECLARE
    t   record;
    tbl text;
BEGIN
    FOR t IN SELECT p.model_version_id, p.catalog_id, max(p.run_id) AS run_id
               FROM skyclass.prediction_table AS p GROUP BY 1, 2 ORDER BY 1, 2
    LOOP
        IF to_regclass(format('predictions.%I', 'mv_' || t.model_version_id)) IS NULL THEN
            EXECUTE format('CREATE TABLE predictions.%I PARTITION OF skyclass.prediction '
                           'FOR VALUES IN (%s) PARTITION BY LIST (catalog_id)',
                           'mv_' || t.model_version_id, t.model_version_id);
        END IF;
        tbl := format('predictions.%I', format('mv_%s_c%s_r%s', t.model_version_id, t.catalog_id, t.run_id));
        EXECUTE format('CREATE TABLE %s PARTITION OF predictions.%I FOR VALUES IN (%s)',
                       tbl, 'mv_' || t.model_version_id, t.catalog_id);
        EXECUTE format('INSERT INTO skyclass.prediction SELECT * FROM predictions_0017.prediction AS p '
                       'WHERE p.model_version_id = %s AND p.catalog_id = %s',
                       t.model_version_id, t.catalog_id);
        UPDATE skyclass.scoring_run AS s SET target_table = tbl WHERE s.run_id = t.run_id;
    END LOOP;
END
$unconvert$;
"""


def _move_schema(source: str, target: str) -> None:
    _run(
        f"""
DO $move$
DECLARE
    rel text;
BEGIN
    FOR rel IN SELECT c.relname FROM pg_catalog.pg_class AS c
                WHERE c.relnamespace = '{source}'::regnamespace AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER TABLE {source}.%I SET SCHEMA {target}', rel);
    END LOOP;
END
$move$;
"""
    )


def upgrade() -> None:
    _run("DROP VIEW skyclass.current_classification, skyclass.prediction_long")
    _run("CREATE SCHEMA predictions_0012")
    _move_schema("predictions", "predictions_0012")
    _run("ALTER TABLE skyclass.prediction SET SCHEMA predictions_0012")
    _run(PREDICTION_TABLE)
    _run(UP_FUNCTIONS)
    _run(CONVERT)
    _run("SELECT skyclass.publish_predictions()")
    _run(VIEW_COMMENT)
    _run(PREDICTION_COMMENTS)
    _run(VIEWS)
    _run("DROP SCHEMA predictions_0012 CASCADE")


def downgrade() -> None:
    _run("DROP VIEW skyclass.current_classification, skyclass.prediction_long")
    _run("CREATE SCHEMA predictions_0017")
    _move_schema("predictions", "predictions_0017")
    _run("ALTER VIEW skyclass.prediction SET SCHEMA predictions_0017")
    _run(OLD_PREDICTION)
    _run(PREDICTION_COMMENTS)
    _run(UNCONVERT)
    _run(VIEWS)
    _run(DOWN_FUNCTIONS)
    _run(
        "DROP FUNCTION skyclass.unpublish_predictions(integer), skyclass.publish_predictions(), "
        "skyclass.prediction_codec(bigint)"
    )
    _run("DROP SCHEMA predictions_0017 CASCADE")
    _run("DROP TABLE skyclass.prediction_table")
