-- skyclass 0.1.0: score compiled tree-ensemble models inside PostgreSQL.
-- Released scripts are frozen: change the extension with skyclass--0.1.0--X.Y.Z.sql.
--
-- The functions read skyclass.model_version and skyclass.model_artifact (created
-- by the skyclass migrations, not by this script) with the caller's privileges.
-- They are STABLE (they read tables; a model version never changes), STRICT
-- (NULL in, NULL out) and PARALLEL SAFE; COST 1000 tells the planner a call is
-- expensive, which is what makes it use parallel workers for scoring scans.

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
