-- skyclass 0.1.0 -> 0.2.0: the zone-sweep cross-match (crossmatch_sweep).
-- Released scripts are frozen.

\echo Use "ALTER EXTENSION skyclass UPDATE TO '0.2.0'" to load this file. \quit

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
