--
-- skyclass extension regression test (pg_regress).
--
-- Needs a database migrated by skyclass (revision 0003 or later) and the fixture
-- written by tests/score/test_regress.py: real models compiled from SDSS17
-- photometry, registered in skyclass.model_version/model_artifact (plus one version
-- left uncompiled), and two tables: regress_model(name, model_version) and
-- regress_expected(name, row_id, features, proba, top_label) holding scikit-learn's
-- calibrated probabilities.
--
SET extra_float_digits = 0;
SELECT model_version AS multi FROM regress_model WHERE name = 'multiclass' \gset
SELECT model_version AS multi_t FROM regress_model WHERE name = 'multiclass_temperature' \gset
SELECT model_version AS multi_i FROM regress_model WHERE name = 'multiclass_isotonic' \gset
SELECT model_version AS bin FROM regress_model WHERE name = 'binary' \gset
SELECT model_version AS pdf FROM regress_model WHERE name = 'pdf' \gset
SELECT model_version AS uncompiled FROM regress_model WHERE name = 'uncompiled' \gset

-- Every function: costed and commented; STRICT, STABLE, PARALLEL SAFE but the chunk writer
-- score_chunk_into (it writes: volatile, parallel unsafe, and names a NULL argument).
SELECT p.oid::regprocedure AS function, p.provolatile AS volatility, p.proparallel AS parallel,
       p.proisstrict AS strict, p.procost AS cost,
       obj_description(p.oid, 'pg_proc') IS NOT NULL AS commented
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'skyclass'
 ORDER BY 1::text;

-- model_info reads the version without loading its library.
SELECT n_features, n_classes, classes, n_outputs, output_transform, calibration_kind,
       length(sha256) AS sha256_hex_length, loaded
  FROM skyclass.model_info(:multi);
SELECT n_classes, classes, n_outputs, output_transform, calibration_kind
  FROM skyclass.model_info(:bin);
SELECT n_classes, classes, calibration_kind FROM skyclass.model_info(:pdf);
SELECT i.sha256 = encode(a.sha256, 'hex') AS sha256_matches_artifact
  FROM skyclass.model_info(:multi) AS i,
       skyclass.model_artifact AS a
 WHERE a.model_version_id = :multi;

-- Parity with scikit-learn's predict_proba (after the same calibration).
SELECT e.name, count(DISTINCT e.row_id) AS n_rows,
       max(abs(p.value - e.proba[p.k])) <= 1e-6 AS within_1e_6
  FROM regress_expected AS e
  JOIN regress_model AS m USING (name),
       LATERAL unnest(skyclass.predict(m.model_version, e.features)) WITH ORDINALITY AS p(value, k)
 GROUP BY e.name ORDER BY e.name;
SELECT e.name,
       bool_and(skyclass.predict_top_label(m.model_version, e.features) = e.top_label)
           AS same_top_label,
       bool_and(abs(skyclass.predict_top_probability(m.model_version, e.features)
                    - (SELECT max(v) FROM unnest(e.proba) AS v)) <= 1e-6) AS same_top_probability,
       bool_and(abs((SELECT sum(v) FROM unnest(skyclass.predict(m.model_version, e.features)) AS v)
                    - 1) <= 1e-6) AS sums_to_one
  FROM regress_expected AS e JOIN regress_model AS m USING (name)
 GROUP BY e.name ORDER BY e.name;

-- A few objects, as a user sees them.
SELECT row_id, skyclass.predict_top_label(:multi, features) AS label,
       round(skyclass.predict_top_probability(:multi, features)::numeric, 3) AS probability,
       skyclass.predict_top_label(:multi_t, features) AS label_temperature,
       skyclass.predict_top_label(:multi_i, features) AS label_isotonic
  FROM regress_expected WHERE name = 'multiclass' AND row_id < 5 ORDER BY row_id;
SELECT array_length(skyclass.predict(:pdf, features), 1) AS pdf_bins
  FROM regress_expected WHERE name = 'pdf' AND row_id = 0;

-- Missing and non-finite values are values: NaN means missing, +-inf compare as numbers.
SELECT array_length(skyclass.predict(:multi, array_fill('NaN'::real, ARRAY[9])), 1) AS all_missing;
SELECT skyclass.predict(:multi, array_fill('NaN'::real, ARRAY[9]))
     = skyclass.predict(:multi, array_fill('NaN'::real, ARRAY[9])) AS deterministic;
SELECT array_length(skyclass.predict(:multi,
         '{Infinity,-Infinity,0,-0,1e-45,3.4e38,-3.4e38,NaN,22.5}'), 1) AS odd_values;
SELECT skyclass.predict(:bin, '[0:8]={19,18,17.5,17.2,17,1,0.5,0.3,0.2}'::real[])
     = skyclass.predict(:bin, '{19,18,17.5,17.2,17,1,0.5,0.3,0.2}') AS lower_bound_ignored;

-- STRICT: NULL arguments give NULL.
SELECT skyclass.predict(NULL, array_fill(1::real, ARRAY[9])) IS NULL AS null_version,
       skyclass.predict(:multi, NULL) IS NULL AS null_features,
       skyclass.predict_top_label(:multi, NULL) IS NULL AS null_label,
       skyclass.predict_top_probability(NULL, NULL) IS NULL AS null_probability,
       skyclass.model_info(NULL) IS NULL AS null_info;

-- Bad calls raise errors (never crash).
SELECT skyclass.predict(:multi, '{}');
SELECT skyclass.predict(:multi, '{19,18,17.5,17.2,17,1,0.5,0.3}');
SELECT skyclass.predict(:multi, '{19,18,17.5,17.2,17,1,0.5,0.3,0.2,0.1}');
SELECT skyclass.predict(:multi, '{{19,18,17.5},{17.2,17,1},{0.5,0.3,0.2}}');
SELECT skyclass.predict(:multi, '{19,18,17.5,17.2,17,1,0.5,0.3,NULL}');
SELECT skyclass.predict_top_label(:multi, '{1,2,3}');
SELECT skyclass.predict_top_probability(:multi, '{NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL}');
SELECT skyclass.predict(:multi, array_fill(1::real, ARRAY[1000000]));
SELECT skyclass.predict(-1, array_fill(1::real, ARRAY[9]));
SELECT skyclass.predict_top_label(9223372036854775807, array_fill(1::real, ARRAY[9]));
SELECT * FROM skyclass.model_info(0);
SELECT skyclass.predict(1, ARRAY[1, 2, 3, 4, 5, 6, 7, 8, 9]::float8[]);

-- The SQLSTATE of each kind of bad call.
CREATE FUNCTION pg_temp.sqlstate_of(query text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;
SELECT call, pg_temp.sqlstate_of(replace(call, '$v', :'multi')) AS sqlstate
  FROM (VALUES
    ('SELECT skyclass.predict($v, array_fill(1::real, ARRAY[9]))'),
    ('SELECT skyclass.predict($v, ''{}'')'),
    ('SELECT skyclass.predict($v, array_fill(1::real, ARRAY[8]))'),
    ('SELECT skyclass.predict($v, array_fill(1::real, ARRAY[3, 3]))'),
    ('SELECT skyclass.predict($v, ''{1,2,3,4,5,6,7,8,NULL}'')'),
    ('SELECT skyclass.predict_top_label($v, ''{1}'')'),
    ('SELECT skyclass.predict_top_probability($v, ''{{1}}'')'),
    ('SELECT skyclass.predict(-1, array_fill(1::real, ARRAY[9]))'),
    ('SELECT skyclass.model_info(-42)'),
    ('SELECT skyclass.predict($v, ARRAY[1e39]::real[])')
  ) AS calls(call);

-- A registered version without an artifact: "not compiled" (55000), not "does not
-- exist" (42704); the message names the command to run (its id shown as <id> here).
CREATE FUNCTION pg_temp.message_of(query text, id bigint) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || replace(SQLERRM, id::text, '<id>');
END
$$;
SELECT pg_temp.message_of(format('SELECT skyclass.predict(%s, array_fill(1::real, ARRAY[9]))',
                                 :uncompiled), :uncompiled) AS predict_uncompiled;
SELECT pg_temp.message_of(format('SELECT skyclass.model_info(%s)', :uncompiled), :uncompiled)
       AS info_uncompiled;
SELECT pg_temp.sqlstate_of(format('SELECT skyclass.predict(%s, ''{}'')', :uncompiled))
       AS checked_before_features;

-- Scoring loaded the library into this session.
SELECT loaded FROM skyclass.model_info(:multi);

-- Raw-score versions (extension 0.3.0): the OOD forest (task anomaly) of the multiclass
-- version, with regress_raw holding scikit-learn's IsolationForest scores, percentiles and
-- range flags of 200 rows (some NaN, some out of range).
SELECT o.ood_version_id AS ood FROM skyclass.ood_model AS o
  JOIN regress_model AS m ON m.model_version = o.model_version_id
 WHERE m.name = 'multiclass' \gset
SELECT n_features, n_classes, classes, n_outputs, output_transform, calibration_kind
  FROM skyclass.model_info(:ood);
SELECT count(*) AS n_rows,
       max(abs((skyclass.predict_raw(:ood, skyclass.fill_missing(e.features, o.fill)))[1]
               - e.score)) <= 1e-6 AS score_within_1e_6,
       max(abs(skyclass.score_percentile(
                   (skyclass.predict_raw(:ood, skyclass.fill_missing(e.features, o.fill)))[1],
                   o.reference) - e.percentile)) <= 0.1 AS percentile_within_0_1,
       bool_and(skyclass.out_of_range(e.features, o.low, o.high) = e.out_of_range)
           AS same_range_flags,
       count(*) FILTER (WHERE true = ANY (e.out_of_range)) AS rows_out_of_range
  FROM regress_raw AS e, skyclass.ood_model AS o
 WHERE o.ood_version_id = :ood;
-- A raw score is no probability; predict_raw also reads a classifier's raw outputs.
SELECT skyclass.predict(:ood, features) FROM regress_raw WHERE row_id = 0;
SELECT skyclass.predict_top_label(:ood, features) FROM regress_raw WHERE row_id = 0;
SELECT array_length(skyclass.predict_raw(:multi, features), 1) AS classifier_outputs
  FROM regress_expected WHERE name = 'multiclass' AND row_id = 0;
SELECT skyclass.predict_raw(:ood, ARRAY[1, 2]::real[]);
SELECT skyclass.predict_raw(:uncompiled, features) FROM regress_raw WHERE row_id = 0;
-- The helpers: percentiles like numpy.interp, range flags, NaN fill, and their refusals.
SELECT skyclass.score_percentile(0.45, ARRAY[0.3, 0.4, 0.5, 0.6, 0.7]) AS p,
       skyclass.score_percentile(0.2, ARRAY[0.3, 0.4]) AS below,
       skyclass.score_percentile(0.4, ARRAY[0.3, 0.4]) AS at_top,
       skyclass.score_percentile(0.3, ARRAY[0.3, 0.3, 0.5]) AS tied,
       skyclass.score_percentile('NaN', ARRAY[0.3, 0.4]) AS nan;
SELECT skyclass.score_percentile(0.5, ARRAY[0.7, 0.3]);
SELECT skyclass.score_percentile(0.5, ARRAY[0.3]);
SELECT skyclass.score_percentile(0.5, ARRAY[0.3, 'Infinity']);
SELECT skyclass.score_percentile(0.5, ARRAY[0.3, NULL]);
SELECT skyclass.out_of_range(ARRAY[1, 5, 'NaN', -1]::real[], ARRAY[0, 0, 0, 0]::real[],
                             ARRAY[2, 2, 2, 2]::real[]);
SELECT skyclass.out_of_range(ARRAY[1, 5]::real[], ARRAY[0]::real[], ARRAY[2, 2]::real[]);
SELECT skyclass.fill_missing(ARRAY[1, 'NaN', 3]::real[], ARRAY[0, 2, 0]::real[]);
SELECT skyclass.fill_missing(ARRAY[1, 'NaN']::real[], ARRAY[[0, 2]]::real[]);
-- score_chunk_into: a range of features scored and written in the codec's columns, in
-- object_id order, with the same values as the SQL encoding (16-bit probabilities, top class).
CREATE TABLE regress_features AS
SELECT (1000 - row_id)::bigint AS object_id, features AS x
  FROM regress_expected WHERE name = 'multiclass';
CREATE TABLE regress_chunk (object_id bigint NOT NULL, top smallint NOT NULL,
                            p1 smallint NOT NULL, p2 smallint NOT NULL, p3 smallint NOT NULL);
SELECT skyclass.score_chunk_into(:multi, 'regress_features', 850, 949, 'regress_chunk') AS written;
SELECT bool_and(c.top = array_position(p.p, greatest(p.p[1], p.p[2], p.p[3])) - 1
                AND c.p1 = (least(greatest(p.p[1]::float8, 0), 1) * 65535 - 32768)::smallint
                AND c.p2 = (least(greatest(p.p[2]::float8, 0), 1) * 65535 - 32768)::smallint
                AND c.p3 = (least(greatest(p.p[3]::float8, 0), 1) * 65535 - 32768)::smallint)
           AS same_as_sql,
       count(*) AS n
  FROM regress_chunk AS c
  JOIN (SELECT f.object_id, skyclass.predict(:multi, f.x) AS p FROM regress_features AS f) AS p
 USING (object_id);
SELECT bool_and(object_id > prev) AS in_object_id_order
  FROM (SELECT object_id, lag(object_id, 1, 0::bigint) OVER (ORDER BY ctid) AS prev
          FROM regress_chunk) AS o;
SELECT skyclass.score_chunk_into(:multi, 'regress_features', 10, 9, 'regress_chunk');
SELECT skyclass.score_chunk_into(:multi, NULL, 0, 9, 'regress_chunk');
SELECT skyclass.score_chunk_into(:multi, 'regress_features', 0, 9, 'regress_features');
SELECT skyclass.score_chunk_into(:multi, 'regress_chunk', 0, 9, 'regress_features');
SELECT skyclass.score_chunk_into(:bin, 'regress_features', 0, 9, 'regress_chunk');
SELECT skyclass.score_chunk_into(:ood, 'regress_features', 0, 9, 'regress_chunk');
SELECT skyclass.score_chunk_into(:uncompiled, 'regress_features', 0, 9, 'regress_chunk');
DROP TABLE regress_chunk, regress_features;
