-- skyclass 0.2.0: score compiled tree-ensemble models inside PostgreSQL, and cross-match
-- two catalogs by a zone sweep in memory.
-- Released scripts are frozen: change the extension with skyclass--0.2.0--X.Y.Z.sql.
--
-- The scoring functions read skyclass.model_version and skyclass.model_artifact (created
-- by the skyclass migrations, not by this script) with the caller's privileges.
-- They are STABLE (they read tables; a model version never changes), STRICT
-- (NULL in, NULL out) and PARALLEL SAFE; COST 1000 tells the planner a call is
-- expensive, which is what makes it use parallel workers for scoring scans.
-- crossmatch_sweep reads the two tables it is given, also with the caller's privileges.

\echo Use "CREATE EXTENSION skyclass" to load this file. \quit

CREATE FUNCTION predict(model_version bigint, features real[])
RETURNS real[]
AS 'MODULE_PATHNAME', 'skyclass_predict'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 1000;

COMMENT ON FUNCTION predict(bigint, real[]) IS
'Calibrated class probabilities (or PDF bin probabilities) of one object under a model version, '
'in the order of skyclass.model_version.classes. features must hold exactly the model''s '
'feature count, as real; NaN means missing.';

CREATE FUNCTION predict_top_label(model_version bigint, features real[])
RETURNS text
AS 'MODULE_PATHNAME', 'skyclass_predict_top_label'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 1000;

COMMENT ON FUNCTION predict_top_label(bigint, real[]) IS
'Name of the most probable class (the first one on ties) of one object under a model version.';

CREATE FUNCTION predict_top_probability(model_version bigint, features real[])
RETURNS real
AS 'MODULE_PATHNAME', 'skyclass_predict_top_probability'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 1000;

COMMENT ON FUNCTION predict_top_probability(bigint, real[]) IS
'Calibrated probability of the most probable class of one object under a model version.';

CREATE FUNCTION model_info(
    model_version bigint,
    OUT n_features integer,
    OUT n_classes integer,
    OUT classes text[],
    OUT n_outputs integer,
    OUT output_transform text,
    OUT calibration_kind text,
    OUT sha256 text,
    OUT loaded boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'skyclass_model_info'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 100;

COMMENT ON FUNCTION model_info(bigint) IS
'What the scorer knows about a model version: feature count, classes, raw outputs and how they '
'become probabilities, calibration kind, artifact sha256 (hex), and whether this session has '
'loaded the artifact''s library yet (model_info itself never loads it).';

CREATE FUNCTION crossmatch_sweep(
    table_a regclass,
    table_b regclass,
    radius_arcsec double precision,
    best_only boolean DEFAULT true)
RETURNS TABLE (object_id_a bigint, object_id_b bigint, distance_arcsec double precision,
               match_rank integer)
AS 'MODULE_PATHNAME', 'skyclass_crossmatch_sweep'
LANGUAGE C STRICT STABLE PARALLEL SAFE COST 100000 ROWS 100000;

COMMENT ON FUNCTION crossmatch_sweep(regclass, regclass, double precision, boolean) IS
'Cross-match two tables with columns object_id, ra and "dec" (degrees) by a zone sweep in memory: '
'for each object of table_a its nearest object of table_b within radius_arcsec (0 < r <= 3600; '
'ties by smaller object_id_b), or with best_only false all of them ranked by distance; the same '
'table twice pairs distinct objects only. Rows with NULL or out-of-range positions are left out. '
'Same rows, distances and order as skyclass.crossmatch''s cells method; that function '
'(method sweep) is the entry point for registered catalogs. Needs about 32 bytes per row of '
'each table and 24 per match of memory. Bad radius: SQLSTATE 22023; missing column 42703; '
'wrong column type 42804.';
