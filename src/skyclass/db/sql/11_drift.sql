-- skyclass head SQL: drift by sky region and magnitude (issue 11, item 5).
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.
-- Thresholds, regions and bins are explained in docs/drift.md.

CREATE OR REPLACE FUNCTION skyclass._drift_argument_error(message text)
 RETURNS bigint
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE
AS $function$
BEGIN
    -- Declared IMMUTABLE so that SQL functions calling it for a bad constant argument stay
    -- inlinable; it never returns.
    RAISE EXCEPTION '%', coalesce(message, 'invalid argument')
        USING ERRCODE = 'invalid_parameter_value';
END
$function$;
COMMENT ON FUNCTION skyclass._drift_argument_error(text) IS
'Raise SQLSTATE 22023 with the message (used by SQL-language functions to refuse an argument).';

CREATE OR REPLACE FUNCTION skyclass.healpix_ring(nside integer, ra_deg double precision, dec_deg double precision)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    -- HEALPix ang2pix in the RING scheme (Gorski et al. 2005, ApJ 622, 759, eqs. 4-9):
    -- z = sin(dec), t = ra / 90 deg; the equatorial belt |z| <= 2/3, then the polar caps.
    -- One expression of the arguments only (no FROM, no volatile or stable call), so the
    -- planner inlines it: 1M objects take about 0.3 s, a plpgsql version 20 times longer.
    SELECT CASE
        WHEN nside IS NULL OR nside < 1 OR nside > 8192 OR nside & (nside - 1) <> 0 THEN
            skyclass._drift_argument_error('nside must be a power of 2 from 1 to 8192, not ' || coalesce(nside::text, 'NULL'))
        WHEN ra_deg IS NULL OR dec_deg IS NULL OR ra_deg IN ('NaN', 'Infinity', '-Infinity') OR NOT dec_deg BETWEEN -90 AND 90 THEN NULL
        WHEN abs(sin(radians(dec_deg))) <= 2.0 / 3 THEN
            2 * nside * (nside - 1) + (nside + floor(nside * (0.5 + ((ra_deg - 360 * floor(ra_deg / 360)) / 90)) - nside * sin(radians(dec_deg)) * 0.75)::bigint - floor(nside * (0.5 + ((ra_deg - 360 * floor(ra_deg / 360)) / 90)) + nside * sin(radians(dec_deg)) * 0.75)::bigint) * 4 * nside
            + ((floor(nside * (0.5 + ((ra_deg - 360 * floor(ra_deg / 360)) / 90)) - nside * sin(radians(dec_deg)) * 0.75)::bigint + floor(nside * (0.5 + ((ra_deg - 360 * floor(ra_deg / 360)) / 90)) + nside * sin(radians(dec_deg)) * 0.75)::bigint - nside + 2 - (nside + 1 + floor(nside * (0.5 + ((ra_deg - 360 * floor(ra_deg / 360)) / 90)) - nside * sin(radians(dec_deg)) * 0.75)::bigint - floor(nside * (0.5 + ((ra_deg - 360 * floor(ra_deg / 360)) / 90)) + nside * sin(radians(dec_deg)) * 0.75)::bigint) % 2) / 2) % (4 * nside)
        WHEN dec_deg > 0 THEN
            2 * (floor((((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + floor((1 - (((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90)))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + 1) * ((floor((((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + floor((1 - (((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90)))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + 1) - 1) + floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90) * (floor((((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + floor((1 - (((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90)))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + 1))::bigint % (4 * (floor((((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + floor((1 - (((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90)))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + 1))
        ELSE
            12 * nside * nside - 2 * (floor((((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + floor((1 - (((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90)))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + 1) * ((floor((((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + floor((1 - (((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90)))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + 1) + 1) + floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90) * (floor((((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + floor((1 - (((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90)))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + 1))::bigint % (4 * (floor((((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + floor((1 - (((ra_deg - 360 * floor(ra_deg / 360)) / 90) - floor(((ra_deg - 360 * floor(ra_deg / 360)) / 90)))) * nside * sqrt(3 * (1 - abs(sin(radians(dec_deg))))))::bigint + 1))
    END

$function$;
COMMENT ON FUNCTION skyclass.healpix_ring(integer,double precision,double precision) IS
'HEALPix pixel (RING scheme, 0 .. 12 nside^2 - 1) of a position in degrees: equal-area sky '
'regions for drift summaries. nside must be a power of 2 up to 8192 (SQLSTATE 22023); NULL, '
'non-finite or |dec| > 90 positions give NULL.';

CREATE OR REPLACE FUNCTION skyclass.drift_psi(current_counts bigint[], reference_counts bigint[])
 RETURNS double precision
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    -- Population stability index sum((p - q) ln(p / q)) over the bins of two histograms of
    -- the same bins; an empty bin counts as a share of 1e-4 (as Evidently does), so a bin
    -- empty on one side adds a bounded term instead of infinity.
    SELECT CASE
        WHEN current_counts IS NULL OR reference_counts IS NULL THEN NULL
        WHEN cardinality(current_counts) <> cardinality(reference_counts) THEN
            skyclass._drift_argument_error('the histograms must have the same number of bins, not '
                || cardinality(current_counts) || ' and ' || cardinality(reference_counts))::float8
        ELSE (SELECT CASE WHEN count(c) = count(*) AND count(r) = count(*) AND min(least(c, r)) >= 0
                               AND min(sc.nc) > 0 AND min(sr.nr) > 0
                          THEN sum((greatest(c / sc.nc, 1e-4) - greatest(r / sr.nr, 1e-4))
                                   * ln(greatest(c / sc.nc, 1e-4) / greatest(r / sr.nr, 1e-4))) END
                FROM unnest(current_counts, reference_counts) AS u(c, r)
                CROSS JOIN (SELECT nullif(sum(x), 0)::float8 FROM unnest(current_counts) AS x) AS sc(nc)
                CROSS JOIN (SELECT nullif(sum(x), 0)::float8 FROM unnest(reference_counts) AS x) AS sr(nr))
    END
$function$;
COMMENT ON FUNCTION skyclass.drift_psi(bigint[],bigint[]) IS
'Population stability index of two histograms over the same bins (element order; any array '
'shape): sum((p - q) ln(p / q)) with empty bins counted as 1e-4. NULL when either side is '
'empty, NULL or has a negative count; different bin counts: SQLSTATE 22023.';

CREATE OR REPLACE FUNCTION skyclass.drift_wasserstein(current_counts bigint[], reference_counts bigint[], edges double precision[])
 RETURNS double precision
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE
AS $function$
DECLARE
    n     integer := cardinality(current_counts);
    nc    float8;
    nr    float8;
    fc    float8 := 0;
    fr    float8 := 0;
    d0    float8 := 0;
    d1    float8;
    w     float8;
    total float8 := 0;
    c     bigint[];
    r     bigint[];
BEGIN
    IF current_counts IS NULL OR reference_counts IS NULL OR edges IS NULL THEN
        RETURN NULL;
    END IF;
    IF n <> cardinality(reference_counts) OR cardinality(edges) <> n + 1 THEN
        RAISE EXCEPTION 'expected two histograms of the same bins and one more edge than bins, '
                        'not % and % bins with % edges',
            n, cardinality(reference_counts), cardinality(edges)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    c := ARRAY(SELECT unnest(current_counts));
    r := ARRAY(SELECT unnest(reference_counts));
    edges := ARRAY(SELECT unnest(edges));
    FOR k IN 1 .. n + 1 LOOP
        IF edges[k] IS NULL OR edges[k] IN ('NaN', 'Infinity', '-Infinity')
           OR (k > 1 AND edges[k] < edges[k - 1]) THEN
            RAISE EXCEPTION 'edges must be finite and ascending, not %', edges
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    SELECT sum(x) INTO nc FROM unnest(c) AS x;
    SELECT sum(x) INTO nr FROM unnest(r) AS x;
    IF nc IS NULL OR nr IS NULL OR nc <= 0 OR nr <= 0 OR 0 > ANY (c) OR 0 > ANY (r)
       OR array_position(c, NULL) IS NOT NULL
       OR array_position(r, NULL) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    -- Inside a bin both distributions are uniform, so both CDFs are linear and the integral
    -- of |Fc - Fr| over the bin is exact: a trapezoid, or two triangles where they cross.
    FOR k IN 1 .. n LOOP
        fc := fc + c[k] / nc;
        fr := fr + r[k] / nr;
        d1 := fc - fr;
        w := edges[k + 1] - edges[k];
        IF d0 * d1 >= 0 THEN
            total := total + w * (abs(d0) + abs(d1)) / 2;
        ELSE
            total := total + w * (d0 * d0 + d1 * d1) / (2 * (abs(d0) + abs(d1)));
        END IF;
        d0 := d1;
    END LOOP;
    RETURN total;
END
$function$;
COMMENT ON FUNCTION skyclass.drift_wasserstein(bigint[],bigint[],double precision[]) IS
'Wasserstein-1 distance between two histograms over the same bins (edges: one more than '
'bins, finite, ascending), each bin''s objects spread uniformly over it. NULL when a side is '
'empty, NULL or negative; bad shapes or edges: SQLSTATE 22023.';

CREATE OR REPLACE FUNCTION skyclass.drift_reference_of(run bigint)
 RETURNS skyclass.drift_reference
 LANGUAGE plpgsql
AS $function$
DECLARE
    r        skyclass.scoring_run;
    ref      skyclass.drift_reference;
    v        record;
    src      text;
    n        bigint;
    total    bigint;
    mag      text;
    mag_idx  integer;
    mag_e    float8[];
    lo       float8;
    hi       float8;
    step     float8;
    label    text;
BEGIN
    IF run IS NULL THEN
        RAISE EXCEPTION 'run must be a scoring run id, not NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    SELECT * INTO ref FROM skyclass.drift_reference WHERE model_version_id = r.model_version_id;
    IF FOUND THEN
        RETURN ref;
    END IF;
    -- One reference per model version, made once: lock the version's row against a
    -- concurrent first run (the second one then finds the reference).
    PERFORM 1 FROM skyclass.model_version WHERE model_version_id = r.model_version_id FOR UPDATE;
    SELECT * INTO ref FROM skyclass.drift_reference WHERE model_version_id = r.model_version_id;
    IF FOUND THEN
        RETURN ref;
    END IF;
    SELECT mv.snapshot_id, mv.classes, fs.feature_names, fs.spec, s.table_name
      INTO v
      FROM skyclass.model_version AS mv
      JOIN skyclass.feature_set AS fs USING (feature_set_id)
      JOIN skyclass.training_snapshot AS s ON s.snapshot_id = mv.snapshot_id
     WHERE mv.model_version_id = r.model_version_id;
    src := format('snapshots.%I', v.table_name);
    IF to_regclass(src) IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FROM %s', src) INTO n;
    END IF;
    IF coalesce(n, 0) = 0 THEN
        -- No training rows to compare with: the bins come from this run's own features.
        EXECUTE format('SELECT count(*) FROM %s', r.feature_table) INTO total;
        src := r.feature_table;
        n := 0;
    ELSE
        total := n;
    END IF;
    -- Deciles and training histograms of more than 200,000 rows: of a fixed hash sample of
    -- them (a decile of 200,000 values is known to a fraction of a percent).
    IF total > 200000 THEN
        src := format('(SELECT * FROM %s AS s WHERE (hashint8(s.object_id) & 1048575) < %s)',
                      src, ceil(200000::float8 / total * 1048576)::bigint);
    END IF;
    -- The magnitude of the magnitude bins: the feature named r, else the first feature of a
    -- group named like "magnitudes"; none (no magnitude summaries) otherwise.
    SELECT f.ord::integer, f.item ->> 'name' INTO mag_idx, mag
      FROM jsonb_array_elements(CASE WHEN jsonb_typeof(v.spec -> 'features') = 'array'
                                     THEN v.spec -> 'features' ELSE '[]'::jsonb END)
           WITH ORDINALITY AS f(item, ord)
     WHERE f.item ->> 'name' = 'r' OR f.item ->> 'group' ILIKE 'mag%'
     ORDER BY (f.item ->> 'name' = 'r') DESC, f.ord
     LIMIT 1;
    IF mag_idx IS NOT NULL AND mag_idx > cardinality(v.feature_names) THEN
        mag_idx := NULL;
        mag := NULL;
    END IF;
    -- Deciles of each feature (NaN = missing excluded). The outer bins of the Wasserstein
    -- distance end one neighbouring bin width beyond the outer deciles (not at the extremes,
    -- which outliers make arbitrary), and sigma is robust: the 10-90% span / 2.563, as for a
    -- normal distribution.
    EXECUTE format(
        'SELECT array_agg(coalesce(q.edges, array_fill(0::float8, ARRAY[9])) ORDER BY g.j), '
        '       array_agg(coalesce(2 * q.edges[1] - q.edges[2], 0) ORDER BY g.j), '
        '       array_agg(coalesce(2 * q.edges[9] - q.edges[8], 0) ORDER BY g.j), '
        '       array_agg((q.edges[9] - q.edges[1]) / 2.563 ORDER BY g.j) '
        '  FROM generate_series(1, %s) AS g(j) LEFT JOIN ('
        '    SELECT u.j, percentile_cont(ARRAY[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) '
        '             WITHIN GROUP (ORDER BY u.v) AS edges '
        '      FROM %s AS t, unnest(t.x) WITH ORDINALITY AS u(v, j) '
        '     WHERE u.v <> ''NaN''::real AND u.v IS NOT NULL AND u.j <= %s GROUP BY u.j) AS q USING (j)',
        cardinality(v.feature_names), src, cardinality(v.feature_names))
      INTO ref.feature_edges, ref.feature_lo, ref.feature_hi, ref.feature_std;
    IF mag_idx IS NOT NULL THEN
        EXECUTE format('SELECT percentile_cont(0.01) WITHIN GROUP (ORDER BY t.x[%1$s]), '
                       'percentile_cont(0.99) WITHIN GROUP (ORDER BY t.x[%1$s]) FROM %2$s AS t '
                       'WHERE t.x[%1$s] <> ''NaN''::real', mag_idx, src)
           INTO lo, hi;
    END IF;
    IF lo IS NOT NULL AND hi IS NOT NULL THEN
        lo := floor(2 * lo) / 2;
        hi := greatest(ceil(2 * hi) / 2, lo + 0.5);
        -- 0.5 mag bins, wider when the range is so large (not a magnitude?) that it would take
        -- more than 40 of them.
        step := greatest(0.5, ceil((hi - lo) / 40 * 2) / 2);
        mag_e := ARRAY(SELECT lo + k * step FROM generate_series(0, ceil((hi - lo) / step)::integer) AS k);
    ELSE
        mag_idx := NULL;
        mag := NULL;
    END IF;
    INSERT INTO skyclass.drift_reference (model_version_id, snapshot_id, source, n_train, nside,
                                          feature_names, feature_edges, feature_lo, feature_hi,
                                          feature_std, magnitude_feature, magnitude_edges, classes)
    VALUES (r.model_version_id, v.snapshot_id,
            CASE WHEN n > 0 THEN 'training_snapshot' ELSE 'first_run' END, n, 4,
            v.feature_names, ref.feature_edges, ref.feature_lo, ref.feature_hi,
            ref.feature_std, mag, mag_e, v.classes)
    RETURNING * INTO ref;
    IF n > 0 THEN
        label := format('CASE WHEN t.label_index BETWEEN 0 AND %s THEN t.label_index + 1 END',
                        cardinality(v.classes) - 1);
        EXECUTE format(
            'INSERT INTO skyclass.drift_reference_bin (model_version_id, scope, bin, n_objects, '
            '                                          feature_counts, class_counts) '
            'WITH cells AS (SELECT o.magbin, %8$s AS j, %9$s AS b, count(*) AS n '
            '                 FROM (SELECT %1$s AS magbin, %2$s AS label, %4$s FROM %3$s AS t) AS o '
            '                GROUP BY GROUPING SETS (%10$s)), '
            'o AS (SELECT magbin, b AS label, n FROM cells WHERE j = 0), '
            'scoped AS (SELECT ''all''::text AS scope, 0 AS bin, j, b, n FROM cells WHERE j > 0 '
            '           UNION ALL SELECT ''magnitude'', magbin, j, b, n FROM cells '
            '            WHERE j > 0 AND magbin IS NOT NULL), '
            'objects AS (SELECT ''all''::text AS scope, 0 AS bin, label, sum(n) AS n FROM o GROUP BY label '
            '            UNION ALL SELECT ''magnitude'', magbin, label, sum(n) FROM o '
            '             WHERE magbin IS NOT NULL GROUP BY magbin, label), '
            'bins AS (SELECT DISTINCT scope, bin FROM objects), '
            'hist AS (SELECT k.scope, k.bin, k.j, array_agg(coalesce(s.n, 0) ORDER BY k.b) AS h '
            '           FROM (SELECT * FROM bins, generate_series(1, %5$s) AS j, generate_series(0, 10) AS b) AS k '
            '           LEFT JOIN (SELECT scope, bin, j, b, sum(n) AS n FROM scoped GROUP BY 1, 2, 3, 4) AS s '
            '             USING (scope, bin, j, b) GROUP BY 1, 2, 3), '
            'cls AS (SELECT k.scope, k.bin, array_agg(coalesce(s.n, 0) ORDER BY k.c) AS counts '
            '          FROM (SELECT * FROM bins, generate_series(1, %6$s) AS c) AS k '
            '          LEFT JOIN (SELECT scope, bin, label AS c, sum(n) AS n FROM objects GROUP BY 1, 2, 3) AS s '
            '            USING (scope, bin, c) GROUP BY 1, 2) '
            'SELECT %7$s, b.scope, b.bin, (SELECT sum(n) FROM objects AS x WHERE x.scope = b.scope AND x.bin = b.bin), '
            '       (SELECT array_agg(h.h ORDER BY h.j) FROM hist AS h WHERE h.scope = b.scope AND h.bin = b.bin), '
            '       c.counts '
            '  FROM bins AS b JOIN cls AS c USING (scope, bin)',
            skyclass._drift_magnitude_sql(ref, 't.x'), label, src, skyclass._drift_bins_sql(ref, 't.x'),
            cardinality(v.feature_names), cardinality(v.classes), r.model_version_id,
            skyclass._drift_grouping_sql(cardinality(v.feature_names), 'j'),
            skyclass._drift_grouping_sql(cardinality(v.feature_names), 'b'),
            skyclass._drift_grouping_sql(cardinality(v.feature_names), 'sets', 'magbin'));
    END IF;
    RETURN ref;
END
$function$;
COMMENT ON FUNCTION skyclass.drift_reference_of(bigint) IS
'The drift reference of a scoring run''s model version (skyclass.drift_reference), made on '
'first use from the version''s training snapshot: decile bin edges per feature, magnitude '
'bins and the training histograms (skyclass.drift_reference_bin). A snapshot without rows '
'gives bins from the run''s own features and no training histograms. Unknown run: SQLSTATE '
'42704; NULL: 22023.';

CREATE OR REPLACE FUNCTION skyclass._drift_bins_sql(ref skyclass.drift_reference, x text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    -- "bin of feature 1 AS b1, ...": 0 .. 9 by the reference deciles, 10 when missing (NaN).
    SELECT string_agg(format('CASE WHEN %2$s[%1$s] = ''NaN''::real OR %2$s[%1$s] IS NULL '
                             'THEN 10 ELSE width_bucket(%2$s[%1$s], %3$L::float8[]) END AS b%1$s', j, x,
                             ARRAY(SELECT unnest(ref.feature_edges[j:j][1:9]))), ', ' ORDER BY j)
      FROM generate_series(1, cardinality(ref.feature_names)) AS j
$function$;
COMMENT ON FUNCTION skyclass._drift_bins_sql(skyclass.drift_reference,text) IS
'SQL text of a select list "bin of feature 1 AS b1, ..." for the real[] expression x: 0-9 by '
'the reference deciles, 10 missing. For the drift queries.';

CREATE OR REPLACE FUNCTION skyclass._drift_magnitude_sql(ref skyclass.drift_reference, x text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT CASE WHEN ref.magnitude_feature IS NULL THEN 'NULL::integer'
                ELSE format('CASE WHEN %1$s[%2$s] = ''NaN''::real OR %1$s[%2$s] IS NULL THEN -1 '
                            'ELSE width_bucket(%1$s[%2$s], %3$L::float8[]) END', x,
                            array_position(ref.feature_names, ref.magnitude_feature),
                            ref.magnitude_edges) END
$function$;
COMMENT ON FUNCTION skyclass._drift_magnitude_sql(skyclass.drift_reference,text) IS
'SQL text giving the magnitude bin of the real[] expression x (-1 missing), or NULL::integer '
'when the reference has no magnitude feature. For the drift queries.';

CREATE OR REPLACE FUNCTION skyclass._drift_grouping_sql(n_features integer, part text, keys text DEFAULT ''::text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    -- The drift queries group each object once per histogram: by predicted class (label,
    -- j = 0) and by the bin of every feature (b1 .. bn, j = 1 .. n), all in one pass with
    -- GROUPING SETS, so that per-object expressions (the HEALPix region) are computed once.
    SELECT CASE part
        WHEN 'sets' THEN
            format('(%s, label), ', keys)
            || string_agg(format('(%s, b%s)', keys, j), ', ' ORDER BY j)
        WHEN 'j' THEN
            'CASE WHEN GROUPING(label) = 0 THEN 0 '
            || string_agg(format('WHEN GROUPING(b%1$s) = 0 THEN %1$s', j), ' ' ORDER BY j) || ' END'
        WHEN 'b' THEN
            'CASE WHEN GROUPING(label) = 0 THEN label '
            || string_agg(format('WHEN GROUPING(b%1$s) = 0 THEN b%1$s', j), ' ' ORDER BY j) || ' END'
        ELSE skyclass._drift_argument_error('part must be sets, j or b, not ' || coalesce(part, 'NULL'))::text
    END
      FROM generate_series(1, CASE WHEN n_features BETWEEN 0 AND 1000 THEN n_features
                                   ELSE skyclass._drift_argument_error('n_features must be between 0 and '
                                        || '1000, not ' || coalesce(n_features::text, 'NULL')) END) AS j
$function$;
COMMENT ON FUNCTION skyclass._drift_grouping_sql(integer,text,text) IS
'SQL text for the drift queries'' GROUPING SETS over label and b1 .. bn (part sets, with the '
'grouping keys), and the expressions of the histogram number j and bin b of each group '
'(parts j and b).';

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

CREATE OR REPLACE FUNCTION skyclass.drift_level(metric text, value double precision, n_objects bigint, n_reference bigint)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    -- PSI: 0.1 warn, 0.25 alert (the usual PSI rule; Evidently flags PSI >= 0.1).
    -- Wasserstein / training sigma: 0.1 (Evidently's threshold for large samples) warn, 0.25
    -- alert. Mean top probability and OOD fraction: a change of 0.05 warn, 0.1 alert. Object
    -- count: 10% warn, 25% alert. Fewer than 500 objects on either side: low_count, no alert.
    SELECT CASE
        WHEN metric IS NULL OR metric NOT IN ('psi', 'wasserstein_sigma', 'abs_change', 'relative_change') THEN
            skyclass._drift_argument_error('metric must be psi, wasserstein_sigma, abs_change or '
                                          'relative_change, not ' || coalesce(metric, 'NULL'))::text
        WHEN coalesce(n_objects, 0) < 500 OR coalesce(n_reference, 0) < 500 THEN 'low_count'
        WHEN value IS NULL OR value = 'NaN' THEN 'ok'
        WHEN value >= CASE metric WHEN 'psi' THEN 0.25 WHEN 'wasserstein_sigma' THEN 0.25
                                  WHEN 'abs_change' THEN 0.1 ELSE 0.25 END THEN 'alert'
        WHEN value >= CASE metric WHEN 'psi' THEN 0.1 WHEN 'wasserstein_sigma' THEN 0.1
                                  WHEN 'abs_change' THEN 0.05 ELSE 0.1 END THEN 'warn'
        ELSE 'ok'
    END
$function$;
COMMENT ON FUNCTION skyclass.drift_level(text,double precision,bigint,bigint) IS
'Alert level of a drift value: psi and wasserstein_sigma warn at 0.1 and alert at 0.25, '
'abs_change (mean top probability, OOD fraction) at 0.05 and 0.1, relative_change (object '
'count) at 0.1 and 0.25; low_count below 500 objects on either side. Unknown metric: 22023.';

CREATE OR REPLACE FUNCTION skyclass.compare_run_drift(run bigint)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    d        skyclass.drift_run;
    ref      skyclass.drift_reference;
    prev     skyclass.drift_run;
    prev_ref skyclass.drift_reference;
    same_bins boolean := false;
    same_classes boolean := false;
    both_full boolean := false;
    n        integer;
BEGIN
    IF run IS NULL THEN
        RAISE EXCEPTION 'run must be a scoring run id, not NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO d FROM skyclass.drift_run WHERE run_id = run;
    IF d.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no drift summaries', run USING ERRCODE = 'undefined_object',
            HINT = 'summarise it with skyclass.record_run_drift';
    END IF;
    SELECT * INTO ref FROM skyclass.drift_reference WHERE model_version_id = d.model_version_id;
    DELETE FROM skyclass.drift WHERE run_id = run;
    -- Against the training snapshot: regions and the whole run against all training objects,
    -- each magnitude bin against the training objects of the same bin.
    INSERT INTO skyclass.drift (run_id, reference, scope, bin, quantity, metric, value,
                                n_objects, n_reference, level)
    SELECT run, 'training', s.scope, s.bin, q.quantity, q.metric, q.value, q.n, t.n_objects,
           skyclass.drift_level(q.metric, q.value, q.n, t.n_objects)
      FROM skyclass.drift_summary AS s
      JOIN skyclass.drift_reference_bin AS t
        ON t.model_version_id = d.model_version_id
       AND t.scope = CASE s.scope WHEN 'magnitude' THEN 'magnitude' ELSE 'all' END
       AND t.bin = CASE s.scope WHEN 'magnitude' THEN s.bin ELSE 0 END
     CROSS JOIN LATERAL (
        SELECT ref.feature_names[j] AS quantity, 'psi' AS metric, s.n_sampled AS n,
               skyclass.drift_psi(s.feature_counts[j:j][1:11], t.feature_counts[j:j][1:11]) AS value
          FROM generate_series(1, cardinality(ref.feature_names)) AS j WHERE s.n_sampled > 0
        UNION ALL
        SELECT ref.feature_names[j], 'wasserstein_sigma', s.n_sampled,
               skyclass.drift_wasserstein(s.feature_counts[j:j][1:10], t.feature_counts[j:j][1:10],
                   ref.feature_lo[j] || ARRAY(SELECT unnest(ref.feature_edges[j:j][1:9])) || ref.feature_hi[j])
               / nullif(ref.feature_std[j], 0)
          FROM generate_series(1, cardinality(ref.feature_names)) AS j
         WHERE s.n_sampled > 0 AND ref.feature_hi[j] > ref.feature_lo[j]
        UNION ALL
        SELECT 'class', 'psi', s.n_sampled, skyclass.drift_psi(s.class_counts, t.class_counts)) AS q
     WHERE s.run_id = run;
    SELECT * INTO prev FROM skyclass.drift_run WHERE run_id = d.previous_run_id;
    IF prev.run_id IS NOT NULL THEN
        SELECT * INTO prev_ref FROM skyclass.drift_reference WHERE model_version_id = prev.model_version_id;
        same_bins := prev_ref.feature_names = ref.feature_names AND prev_ref.feature_edges = ref.feature_edges
                     AND prev_ref.nside = ref.nside
                     AND prev_ref.magnitude_edges IS NOT DISTINCT FROM ref.magnitude_edges;
        same_classes := prev_ref.classes = ref.classes;
        SELECT bool_and(s.mode = 'full') INTO both_full FROM skyclass.scoring_run AS s
         WHERE s.run_id IN (run, prev.run_id);
        INSERT INTO skyclass.drift (run_id, reference, scope, bin, quantity, metric, value,
                                    n_objects, n_reference, level)
        SELECT run, 'previous_run', s.scope, s.bin, q.quantity, q.metric, q.value, q.n, q.n_ref,
               skyclass.drift_level(q.metric, q.value, q.n, q.n_ref)
          FROM skyclass.drift_summary AS s
          JOIN skyclass.drift_summary AS p ON p.run_id = prev.run_id AND p.scope = s.scope AND p.bin = s.bin
         CROSS JOIN LATERAL (
            SELECT ref.feature_names[j] AS quantity, 'psi' AS metric, s.n_sampled AS n,
                   p.n_sampled AS n_ref,
                   skyclass.drift_psi(s.feature_counts[j:j][1:11], p.feature_counts[j:j][1:11]) AS value
              FROM generate_series(1, cardinality(ref.feature_names)) AS j
             WHERE same_bins AND s.n_sampled > 0 AND p.n_sampled > 0
            UNION ALL
            SELECT ref.feature_names[j], 'wasserstein_sigma', s.n_sampled, p.n_sampled,
                   skyclass.drift_wasserstein(s.feature_counts[j:j][1:10], p.feature_counts[j:j][1:10],
                       ref.feature_lo[j] || ARRAY(SELECT unnest(ref.feature_edges[j:j][1:9])) || ref.feature_hi[j])
                   / nullif(ref.feature_std[j], 0)
              FROM generate_series(1, cardinality(ref.feature_names)) AS j
             WHERE same_bins AND s.n_sampled > 0 AND p.n_sampled > 0
               AND ref.feature_hi[j] > ref.feature_lo[j]
            UNION ALL
            SELECT 'class', 'psi', s.n_sampled, p.n_sampled, skyclass.drift_psi(s.class_counts, p.class_counts)
             WHERE same_classes
            UNION ALL
            SELECT 'top_probability', 'abs_change', s.n_sampled, p.n_sampled,
                   abs(s.top_probability_mean - p.top_probability_mean)
            UNION ALL
            SELECT 'ood_fraction', 'abs_change', s.n_sampled, p.n_sampled, abs(s.ood_fraction - p.ood_fraction)
             WHERE s.ood_fraction IS NOT NULL AND p.ood_fraction IS NOT NULL
            UNION ALL
            SELECT 'n_objects', 'relative_change', s.n_sampled, p.n_sampled,
                   abs(s.n_objects - p.n_objects)::float8 / p.n_objects
             WHERE both_full) AS q
         WHERE s.run_id = run;
    END IF;
    SELECT count(*) INTO n FROM skyclass.drift WHERE run_id = run;
    RETURN n;
END
$function$;
COMMENT ON FUNCTION skyclass.compare_run_drift(bigint) IS
'Write the drift rows of a summarised run (skyclass.drift): each summary against the training '
'snapshot (regions and overall against all training objects, magnitude bins bin by bin) and '
'against the same region or bin of the previous run of the same deployment (or model '
'version) on the catalog. Returns the number of rows. NULL: 22023; no summaries: 42704.';

CREATE OR REPLACE FUNCTION skyclass.drift_alerts(target text, catalog text, run bigint DEFAULT NULL::bigint, min_level text DEFAULT 'warn'::text)
 RETURNS TABLE(run_id bigint, reference text, scope text, bin integer, quantity text, metric text, value double precision, level text, n_objects bigint, n_reference bigint, ra_mean double precision, dec_mean double precision, bin_low double precision, bin_high double precision)
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    t       record;
    cat_id  integer;
    chosen  skyclass.drift_run;
    ref     skyclass.drift_reference;
BEGIN
    IF min_level IS NULL OR min_level NOT IN ('ok', 'warn', 'alert') THEN
        RAISE EXCEPTION 'min_level must be ok, warn or alert, not %', coalesce(quote_literal(min_level), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF target IS NULL OR catalog IS NULL THEN
        RAISE EXCEPTION 'name a deployment (or MODEL:VERSION) and a catalog, not NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO t FROM skyclass.resolve_scoring_target(target);
    SELECT c.catalog_id INTO cat_id FROM skyclass.catalog AS c WHERE c.name = catalog;
    IF cat_id IS NULL THEN
        RAISE EXCEPTION 'no catalog named %', quote_literal(catalog) USING ERRCODE = 'undefined_object';
    END IF;
    SELECT d.* INTO chosen FROM skyclass.drift_run AS d
     WHERE d.catalog_id = cat_id
       AND CASE WHEN t.deployment IS NOT NULL THEN d.deployment = t.deployment
                ELSE d.model_version_id = t.model_version_id END
       AND (drift_alerts.run IS NULL OR d.run_id = drift_alerts.run)
     ORDER BY d.run_id DESC LIMIT 1;
    IF chosen.run_id IS NULL THEN
        RAISE EXCEPTION '%', CASE WHEN drift_alerts.run IS NULL
                                  THEN format('%s has no scoring run with drift summaries on catalog %s', target, catalog)
                                  ELSE format('scoring run %s is not a run of %s on catalog %s with drift summaries',
                                              drift_alerts.run, target, catalog) END
            USING ERRCODE = 'undefined_object',
                  HINT = 'score the catalog (skyclass score): every run that finishes records its drift';
    END IF;
    SELECT * INTO ref FROM skyclass.drift_reference AS x WHERE x.model_version_id = chosen.model_version_id;
    RETURN QUERY
    SELECT d.run_id, d.reference, d.scope, d.bin, d.quantity, d.metric, d.value, d.level,
           d.n_objects, d.n_reference, s.ra_mean, s.dec_mean,
           CASE WHEN d.scope = 'magnitude' AND d.bin > 0 THEN ref.magnitude_edges[d.bin] END,
           CASE WHEN d.scope = 'magnitude' AND d.bin >= 0 THEN ref.magnitude_edges[d.bin + 1] END
      FROM skyclass.drift AS d
      JOIN skyclass.drift_summary AS s ON s.run_id = d.run_id AND s.scope = d.scope AND s.bin = d.bin
     WHERE d.run_id = chosen.run_id
       AND (min_level = 'ok' OR d.level = 'alert' OR (min_level = 'warn' AND d.level = 'warn'))
     ORDER BY CASE d.level WHEN 'alert' THEN 0 WHEN 'warn' THEN 1 WHEN 'ok' THEN 2 ELSE 3 END,
              d.value DESC NULLS LAST, d.reference, d.scope, d.bin, d.quantity, d.metric;
END
$function$;
COMMENT ON FUNCTION skyclass.drift_alerts(text,text,bigint,text) IS
'Drift rows of the newest summarised scoring run of a deployment (or MODEL:VERSION, or a '
'model_version_id) on a catalog, or of the given run: those at min_level or above (ok: all), '
'worst first, with the region''s mean position or the magnitude bin''s edges. What `skyclass '
'drift` prints. Unknown target, catalog or run: SQLSTATE 42704; bad min_level or NULL: 22023.';
