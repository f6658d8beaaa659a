-- skyclass 0.3.0 -> 0.4.0: score_chunk_into, the bulk writer of the scoring job
-- (one chunk of a feature table scored and written with multi-inserts, as COPY writes).
-- Released scripts are frozen.

\echo Use "ALTER EXTENSION skyclass UPDATE TO '0.4.0'" to load this file. \quit

CREATE FUNCTION score_chunk_into(model_version bigint, features regclass,
                                 first_object_id bigint, last_object_id bigint,
                                 target regclass)
RETURNS bigint
AS 'MODULE_PATHNAME', 'skyclass_score_chunk_into'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE COST 1000000;

COMMENT ON FUNCTION score_chunk_into(bigint, regclass, bigint, bigint, regclass) IS
'Score the rows of a feature table (object_id bigint, x real[]) with first_object_id <= '
'object_id <= last_object_id with a classification model version, and insert them, in '
'object_id order, into target in the compact layout of skyclass.prediction_codec '
'(object_id, top, p1..pn smallint) with multi-inserts (one WAL record per page, as COPY); '
'returns the number of rows. Same trust checks as skyclass.predict; needs INSERT on target. '
'The scoring job calls it per chunk (skyclass.score_chunk). NULL argument 22004; '
'first > last 22023; target not a plain table of those columns 42809/42P16; triggers or '
'row security on target 0A000; a photo-z or raw-score version 0A000/42809; more rows than '
'maintenance_work_mem holds (about 20 bytes a row) 54000.';
