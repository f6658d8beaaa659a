-- skyclass 0.2.0 -> 0.3.0: raw-score model versions (output_transform 'raw_score',
-- e.g. the OOD forest of a model version) and the helpers of the OOD score.
-- Released scripts are frozen.

\echo Use "ALTER EXTENSION skyclass UPDATE TO '0.3.0'" to load this file. \quit

CREATE FUNCTION predict_raw(model_version bigint, features real[])
RETURNS double precision[]
AS 'MODULE_PATHNAME', 'skyclass_predict_raw'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 1000;

COMMENT ON FUNCTION predict_raw(bigint, real[]) IS
'The raw outputs of a compiled model version''s library for one row of features (NaN = '
'missing), before any transform or calibration: the anomaly score of a raw_score version '
'(task anomaly: higher is stranger), the margins or probabilities of a classifier. Same '
'security checks as skyclass.predict. Unknown version 42704, not compiled 55000, wrong '
'feature count 22023.';

CREATE FUNCTION score_percentile(score double precision, reference double precision[])
RETURNS real
AS 'MODULE_PATHNAME', 'skyclass_score_percentile'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE COST 10;

COMMENT ON FUNCTION score_percentile(double precision, double precision[]) IS
'Percentile (0 to 100) of score among m equally spaced quantiles of a reference distribution '
'(reference[1] = 0th, reference[m] = 100th percentile): linear between quantiles, 0 below the '
'first, 100 at or above the last; numpy.interp(score, reference, linspace(0, 100, m)). The '
'reference needs 2 or more finite, non-decreasing values (else SQLSTATE 22023).';

CREATE FUNCTION out_of_range(features real[], low real[], high real[])
RETURNS boolean[]
AS 'MODULE_PATHNAME', 'skyclass_out_of_range'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE COST 10;

COMMENT ON FUNCTION out_of_range(real[], real[], real[]) IS
'Per feature: true when features[i] < low[i] or features[i] > high[i]; NaN is never out of '
'range. All three arrays one-dimensional, without NULL, of equal length (else SQLSTATE 22023).';

CREATE FUNCTION fill_missing(features real[], fill real[])
RETURNS real[]
AS 'MODULE_PATHNAME', 'skyclass_fill_missing'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE COST 10;

COMMENT ON FUNCTION fill_missing(real[], real[]) IS
'The features with every NaN replaced by the value of fill at the same position (e.g. the '
'training medians of an OOD forest). Arrays one-dimensional, without NULL, of equal length '
'(else SQLSTATE 22023).';
