-- skyclass head SQL: Sky positions: angular distance, cone search and cross-match of registered catalogs.
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

CREATE OR REPLACE FUNCTION skyclass.angular_distance(ra1 double precision, dec1 double precision, ra2 double precision, dec2 double precision)
 RETURNS double precision
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE STRICT
RETURN degrees(atan2(sqrt((((cos(radians(dec2)) * sin(radians((ra2 - ra1)))) ^ (2)::double precision) + (((cos(radians(dec1)) * sin(radians(dec2))) - ((sin(radians(dec1)) * cos(radians(dec2))) * cos(radians((ra2 - ra1))))) ^ (2)::double precision))), ((sin(radians(dec1)) * sin(radians(dec2))) + ((cos(radians(dec1)) * cos(radians(dec2))) * cos(radians((ra2 - ra1)))))));
COMMENT ON FUNCTION skyclass.angular_distance(double precision,double precision,double precision,double precision) IS
'Angular distance in degrees between (ra1, dec1) and (ra2, dec2), all in degrees (Vincenty '
'formula, as astropy SkyCoord.separation; exact 0 for identical positions).';

CREATE OR REPLACE FUNCTION skyclass._q3c_schema()
 RETURNS text
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE
AS $function$
DECLARE
    schema_name text;
BEGIN
    SELECT e.extnamespace::regnamespace::text INTO schema_name
    FROM pg_catalog.pg_extension AS e
    WHERE e.extname = 'q3c';
    IF schema_name IS NULL THEN
        RAISE EXCEPTION 'the q3c extension is not installed in this database'
            USING ERRCODE = 'undefined_object',
                  HINT = 'Run `skyclass db migrate` (it names the package to install).';
    END IF;
    RETURN schema_name;
END
$function$;
COMMENT ON FUNCTION skyclass._q3c_schema() IS
'Quoted name of the schema holding the q3c extension (internal).';

CREATE OR REPLACE FUNCTION skyclass._catalog_table(catalog text)
 RETURNS text
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE STRICT
AS $function$
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
$function$;
COMMENT ON FUNCTION skyclass._catalog_table(text) IS
'Quoted schema.table of registered catalog, locked ACCESS SHARE for the transaction '
'(internal); SQLSTATE 42P01 when unknown, 22023 when it has no sky positions.';

CREATE OR REPLACE FUNCTION skyclass.cone_search(catalog text, center_ra double precision, center_dec double precision, radius_deg double precision)
 RETURNS TABLE(object_id bigint, ra double precision, "dec" double precision, distance_arcsec double precision)
 LANGUAGE plpgsql
 STRICT ROWS 100
 SET jit TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
 SET extra_float_digits TO '3'
AS $function$
DECLARE
    target text;
    has_positions boolean;
    prepared text;
    call text;
    ranges text;
BEGIN
    -- Q3C clamps or wraps out-of-range coordinates and returns NULL for NaN,
    -- so every argument is checked here first. NaN compares greater than every
    -- number in PostgreSQL, so the upper bounds also reject it.
    IF NOT (center_ra >= 0 AND center_ra < 360) THEN
        RAISE EXCEPTION 'center_ra must be in [0, 360) degrees, not %', center_ra
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (center_dec >= -90 AND center_dec <= 90) THEN
        RAISE EXCEPTION 'center_dec must be in [-90, 90] degrees, not %', center_dec
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Bounded: Q3C before 2.0.3 could miss objects at radii of tens of degrees.
    IF NOT (radius_deg >= 0 AND radius_deg <= 10) THEN
        RAISE EXCEPTION 'radius_deg must be in [0, 10] degrees, not %', radius_deg
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The lookup of skyclass._catalog_table, inline: a nested PL/pgSQL call
    -- costs a noticeable share of a 0.1 ms query.
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
    -- waits here for an ingest --replace to commit, and the next statement, with a new
    -- snapshot, reads the whole new table. LOCK (a third of the time of planning a
    -- SELECT); ONLY: a registered view's tables are locked, not every leaf partition.
    EXECUTE 'LOCK TABLE ONLY ' || target || ' IN ACCESS SHARE MODE';
    -- The query is planned once per session and table: a statement prepared under a name
    -- derived from the table, run with a generic plan (force_generic_plan above). Planning
    -- it on every call (EXECUTE of the text) took 2/3 of the function's time at 1M rows.
    -- The plan cache re-analyses the statement when the table it names is replaced or
    -- altered, and the lock above is already held, so it reads the table now named so.
    -- PREPARE changes session state, refused in parallel mode: hence PARALLEL UNSAFE (a
    -- query calling cone_search is planned without parallel workers), which also allows
    -- the exception block below.
    -- Q3C only selects candidates through the index; the cut is the exact distance. Q3C
    -- keeps distances strictly below its radius, so it gets a margin, and at least 1e-5
    -- deg: Q3C 2.0.0's q3c_radial_query finds nothing at radii below about 1e-6 deg
    -- (measured), radius 0 included. The pixel ranges q3c_radial_query would OR together
    -- are taken as rows instead, each probed by its own index range scan: same objects,
    -- ~0.5 ms at 10M rows instead of ~6 ms (bench/bench_cone.py). Fully-inside and
    -- partial ranges are disjoint. Arguments go in as literals (EXECUTE of a prepared
    -- statement takes no parameters), exact with extra_float_digits 3.
    prepared := 'skyclass_cone_' || md5(target);
    call := format('EXECUTE %I(%L, %L, %L, %L)', prepared, center_ra, center_dec, radius_deg,
                   greatest(radius_deg * (1 + 1e-9), 1e-5));
    BEGIN
        RETURN QUERY EXECUTE call;
        RETURN;
    EXCEPTION WHEN syntax_error THEN
        -- "EXECUTE query does not return tuples": not prepared in this session yet (or
        -- deallocated since). Raised before any row is returned.
        NULL;
    END;
    -- The pixel ranges as rows. On a catalog sharded over foreign servers every range is a
    -- remote query (round trips), so adjacent ranges are merged first (disjoint ranges:
    -- the union is unchanged); locally the merge would cost more than it saves.
    ranges := '(SELECT %2$s.q3c_radial_query_it($1, $2, $4, 2 * k, f) AS lo,'
              '        %2$s.q3c_radial_query_it($1, $2, $4, 2 * k + 1, f) AS hi'
              ' FROM generate_series(0, 49) AS k, (VALUES (0), (1)) AS v(f))';
    IF EXISTS (SELECT FROM skyclass.shard_range AS s WHERE s.catalog_name = catalog) THEN
        ranges := '(SELECT min(lo) AS lo, max(hi) AS hi FROM ('
                  '   SELECT lo, hi, count(*) FILTER (WHERE NOT joined) OVER (ORDER BY lo) AS g'
                  '   FROM (SELECT lo, hi, lo <= lag(hi) OVER (ORDER BY lo) AS joined'
                  '         FROM ' || ranges || ' AS a WHERE lo < hi) AS b) AS c GROUP BY g)';
    END IF;
    EXECUTE format(
        'PREPARE %3$I(double precision, double precision, double precision, double precision)'
        ' AS SELECT s.object_id, s.ra, s.dec, s.d * 3600 FROM ('
        '  SELECT c.object_id, c.ra, c.dec,'
        '         skyclass.angular_distance($1, $2, c.ra, c.dec) AS d'
        '  FROM ' || ranges || ' AS r'
        '  CROSS JOIN LATERAL ('
        '      SELECT t.object_id, t.ra, t.dec FROM %1$s AS t'
        '      WHERE %2$s.q3c_ang2ipix(t.ra, t.dec) >= r.lo'
        '        AND %2$s.q3c_ang2ipix(t.ra, t.dec) < r.hi OFFSET 0) AS c'
        '  WHERE r.lo < r.hi) AS s'
        ' WHERE s.d <= $3'
        ' ORDER BY s.d, s.object_id',
        target, skyclass._q3c_schema(), prepared);
    RETURN QUERY EXECUTE call;
END
$function$;
COMMENT ON FUNCTION skyclass.cone_search(text,double precision,double precision,double precision) IS
'Objects of registered catalog within radius_deg (0..10) degrees of (center_ra, center_dec), '
'nearest first (ties by object_id), with their distance in arcsec. Uses the Q3C index; radius'
' 0 returns objects at exactly that position. Bad coordinates or radius, or a catalog without'
' sky positions: SQLSTATE 22023; unknown catalog: 42P01.';

CREATE OR REPLACE FUNCTION skyclass._crossmatch_sql(catalog_a text, catalog_b text, radius_arcsec double precision, best_only boolean DEFAULT true, method text DEFAULT 'auto'::text)
 RETURNS TABLE(object_id_a bigint, object_id_b bigint, distance_arcsec double precision, match_rank integer)
 LANGUAGE plpgsql
 PARALLEL SAFE STRICT
 SET enable_mergejoin TO 'off'
 SET jit TO 'off'
AS $function$
DECLARE
    table_a text := skyclass._catalog_table(catalog_a);
    table_b text := skyclass._catalog_table(catalog_b);
    rows_a double precision;
    rows_b double precision;
    self_pairs text := '';
    r double precision;          -- radius in degrees
    r_cell double precision;     -- radius the cells are sized for (>= 0.01 arcsec)
    h double precision;          -- zone height in degrees
    k double precision;          -- cells per zone ring at the equator
    g bigint;                    -- zones per band
    cells bigint[];              -- cells per zone ring, per band
    candidates text;
    ranked text;
    spread text;                 -- side given 4 cell keys
    single text;                 -- side given 1 cell key
BEGIN
    IF NOT (radius_arcsec > 0 AND radius_arcsec <= 3600) THEN
        RAISE EXCEPTION 'radius_arcsec must be in (0, 3600] arcsec, not %', radius_arcsec
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF method NOT IN ('auto', 'cells', 'index') THEN
        RAISE EXCEPTION 'method must be auto, cells or index, not %', quote_literal(method)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF catalog_a = catalog_b THEN
        -- A self-match pairs distinct objects, never an object with itself.
        self_pairs := ' AND b.object_id <> a.object_id';
    END IF;
    SELECT greatest(c.reltuples, 0) INTO rows_a FROM pg_catalog.pg_class AS c
    WHERE c.oid = table_a::regclass;
    SELECT greatest(c.reltuples, 0) INTO rows_b FROM pg_catalog.pg_class AS c
    WHERE c.oid = table_b::regclass;
    IF method = 'auto' THEN
        -- A few objects against a big catalog: index probes beat reading all of b.
        method := CASE WHEN rows_a * 20 < rows_b THEN 'index' ELSE 'cells' END;
    END IF;
    r := radius_arcsec / 3600;

    IF method = 'index' THEN
        -- Candidates through b's Q3C index (margin as in cone_search).
        candidates := format(
            'SELECT a.object_id AS id_a, m.object_id AS id_b, m.d'
            ' FROM %1$s AS a CROSS JOIN LATERAL ('
            '   SELECT b.object_id, skyclass.angular_distance(a.ra, a.dec, b.ra, b.dec) * 3600 AS d'
            '   FROM %2$s AS b'
            '   WHERE %3$s.q3c_join(a.ra, a.dec, b.ra, b.dec, greatest($6 * (1 + 1e-9), 1e-5))%4$s'
            '   %5$s) AS m',
            table_a, table_b, skyclass._q3c_schema(), self_pairs,
            CASE WHEN best_only THEN 'ORDER BY d, b.object_id LIMIT 1' ELSE '' END);
    ELSE
        r_cell := greatest(r, 0.01 / 3600.0);
        h := 2 * r_cell * 1.0001;
        k := 360 / (2.1 * r_cell);
        g := greatest(1, floor(0.1 / h))::bigint;
        SELECT array_agg(CASE WHEN x >= 6 THEN x ELSE 1 END ORDER BY band) INTO cells
        FROM (SELECT band,
                     floor(cosd(least(90::double precision,
                                      greatest(abs(band * g * h - 90),
                                               abs((band * g + g) * h - 90)) + h)) * k)::bigint
                         AS x
              FROM generate_series(0::bigint, floor(180 / h / g)::bigint + 1) AS band) AS q;
        -- The expanded side is the one with fewer rows (the result is the same).
        spread := CASE WHEN rows_a <= rows_b THEN 'a' ELSE 'b' END;
        single := CASE WHEN spread = 'a' THEN 'b' ELSE 'a' END;
        -- Literals are float8 on purpose: numeric arithmetic here is ~10x slower.
        -- Keys are zone * 2^27 + cell (zones < 2^25, cells < 2^26 at r >= 0.01").
        candidates := format(
            'SELECT a.object_id AS id_a, b.object_id AS id_b,'
            '       skyclass.angular_distance(a.ra, a.dec, b.ra, b.dec) * 3600 AS d'
            ' FROM ('
            '   SELECT object_id, ra, dec, unnest(ARRAY['
            '       (m - 1) * 134217728 + (q0 + n0 - 1) %% n0,'
            '       CASE WHEN n0 > 1 THEN (m - 1) * 134217728 + q0 %% n0 END,'
            '       m * 134217728 + (q1 + n1 - 1) %% n1,'
            '       CASE WHEN n1 > 1 THEN m * 134217728 + q1 %% n1 END]) AS k'
            '   FROM (SELECT object_id, ra, dec, m, n0, n1,'
            '                floor(ra * n0 / 360 + 0.5::float8)::bigint AS q0,'
            '                floor(ra * n1 / 360 + 0.5::float8)::bigint AS q1'
            '         FROM (SELECT object_id, ra, dec, m,'
            '                      ($1)[(m - 1) / $2 + 1] AS n0, ($1)[m / $2 + 1] AS n1'
            '               FROM (SELECT object_id, ra, dec,'
            '                            floor((dec + 90) / $3 + 0.5::float8)::bigint AS m'
            '                     FROM %1$s'
            '                     WHERE ra >= 0 AND ra < 360 AND dec BETWEEN -90 AND 90) AS s0'
            '              ) AS s1) AS s2) AS %3$s'
            ' JOIN ('
            '   SELECT object_id, ra, dec, z * 134217728 + floor(ra * n / 360)::bigint %% n AS k'
            '   FROM (SELECT object_id, ra, dec, z, ($1)[z / $2 + 1] AS n'
            '         FROM (SELECT object_id, ra, dec, floor((dec + 90) / $3)::bigint AS z'
            '               FROM %2$s'
            '               WHERE ra >= 0 AND ra < 360 AND dec BETWEEN -90 AND 90) AS t0'
            '        ) AS t1) AS %4$s'
            ' ON a.k = b.k'
            -- Cheap haversine pre-cut with a margin; the exact cut comes after ranking.
            ' WHERE sin(radians(b.dec - a.dec) / 2) ^ 2'
            '       + cos(radians(a.dec)) * cos(radians(b.dec)) * sin(radians(b.ra - a.ra) / 2) ^ 2'
            '       <= $4%5$s',
            CASE WHEN spread = 'a' THEN table_a ELSE table_b END,
            CASE WHEN spread = 'a' THEN table_b ELSE table_a END,
            spread, single, self_pairs);
    END IF;

    -- Rank every candidate, then keep those within the radius: candidates beyond
    -- it sort after all those within, so the kept ranks are 1, 2, ... and the
    -- exact distance is computed once per candidate.
    IF best_only THEN
        ranked := 'SELECT DISTINCT ON (id_a) id_a, id_b, d, 1 AS match_rank'
                  ' FROM (' || candidates || ') AS c ORDER BY id_a, d, id_b';
    ELSE
        ranked := 'SELECT id_a, id_b, d,'
                  ' row_number() OVER (PARTITION BY id_a ORDER BY d, id_b)::integer AS match_rank'
                  ' FROM (' || candidates || ') AS c';
    END IF;
    -- With best_only the ranks are all 1 and DISTINCT ON already sorted by id_a.
    RETURN QUERY EXECUTE
        'SELECT id_a, id_b, d, match_rank FROM (' || ranked || ') AS ranked'
        ' WHERE d <= $5 ORDER BY id_a'
        || CASE WHEN best_only THEN '' ELSE ', match_rank' END
    -- The pre-cut's margin also covers the rounding of sin() next to a full turn
    -- (pairs across RA 0/360), which is absolute, not relative.
    USING cells, g, h, (sin(radians(r) / 2) * (1 + 1e-6) + 1e-15) ^ 2, radius_arcsec, r;
END
$function$;
COMMENT ON FUNCTION skyclass._crossmatch_sql(text,text,double precision,boolean,text) IS
'The SQL methods of skyclass.crossmatch (cells, index, auto between them): call that.';

CREATE OR REPLACE FUNCTION skyclass.crossmatch(catalog_a text, catalog_b text, radius_arcsec double precision, best_only boolean DEFAULT true, method text DEFAULT 'auto'::text)
 RETURNS TABLE(object_id_a bigint, object_id_b bigint, distance_arcsec double precision, match_rank integer)
 LANGUAGE plpgsql
 PARALLEL SAFE STRICT
AS $function$
DECLARE
    table_a text := skyclass._catalog_table(catalog_a);
    table_b text := skyclass._catalog_table(catalog_b);
    sweep_available boolean := to_regprocedure(
        'skyclass.crossmatch_sweep(regclass, regclass, double precision, boolean)') IS NOT NULL;
    rows_a double precision;
    rows_b double precision;
    bound_a double precision;    -- rows_a, or an upper bound when never analyzed
    bound_b double precision;
BEGIN
    IF NOT (radius_arcsec > 0 AND radius_arcsec <= 3600) THEN
        RAISE EXCEPTION 'radius_arcsec must be in (0, 3600] arcsec, not %', radius_arcsec
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF method NOT IN ('auto', 'cells', 'index', 'sweep') THEN
        RAISE EXCEPTION 'method must be auto, cells, index or sweep, not %', quote_literal(method)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF method = 'sweep' AND NOT sweep_available THEN
        RAISE EXCEPTION 'cross-match method sweep needs the skyclass extension 0.2.0 or later '
                        'in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Install it on the server (make extension, see docs/extension.md), then '
                         'run CREATE EXTENSION skyclass or ALTER EXTENSION skyclass UPDATE; '
                         'or use method cells or index, which give the same result.';
    END IF;
    IF method = 'auto' THEN
        -- reltuples is -1 before the first ANALYZE; the sweep's memory guard then
        -- assumes the densest possible heap (48 bytes per row at least).
        SELECT greatest(c.reltuples, 0),
               CASE WHEN c.reltuples >= 0 THEN c.reltuples
                    ELSE pg_catalog.pg_relation_size(c.oid) / 48 END
        INTO rows_a, bound_a FROM pg_catalog.pg_class AS c WHERE c.oid = table_a::regclass;
        SELECT greatest(c.reltuples, 0),
               CASE WHEN c.reltuples >= 0 THEN c.reltuples
                    ELSE pg_catalog.pg_relation_size(c.oid) / 48 END
        INTO rows_b, bound_b FROM pg_catalog.pg_class AS c WHERE c.oid = table_b::regclass;
        -- A few objects against a big catalog: index probes beat reading all of b.
        -- Otherwise the in-memory sweep while both fit in 20M rows, else the cell join.
        method := CASE WHEN rows_a * 20 < rows_b THEN 'index'
                       WHEN sweep_available AND bound_a + bound_b <= 20000000 THEN 'sweep'
                       ELSE 'cells' END;
    END IF;
    RAISE DEBUG 'skyclass.crossmatch(%, %): method %', catalog_a, catalog_b, method;
    IF method = 'sweep' THEN
        RETURN QUERY EXECUTE
            'SELECT * FROM skyclass.crossmatch_sweep($1::regclass, $2::regclass, $3, $4)'
        USING table_a, table_b, radius_arcsec, best_only;
    ELSE
        RETURN QUERY SELECT * FROM skyclass._crossmatch_sql(
            catalog_a, catalog_b, radius_arcsec, best_only, method);
    END IF;
END
$function$;
COMMENT ON FUNCTION skyclass.crossmatch(text,text,double precision,boolean,text) IS
'Cross-match registered catalogs: for each object of catalog_a, its nearest object of '
'catalog_b within radius_arcsec (0 < r <= 3600; ties by smaller object_id_b), or with '
'best_only false all of them ranked by distance. Matching a catalog with itself pairs '
'distinct objects only. method: sweep (zone sweep in memory, C extension 0.2.0), cells '
'(parallel hash join on sky cells), index (Q3C index probes into catalog_b, for a small '
'catalog_a) or auto (index for a small catalog_a, else sweep up to 20M rows in all when the '
'extension is there, else cells); results are identical. Bad radius or method, or a catalog '
'without sky positions: SQLSTATE 22023; unknown catalog: 42P01; sweep without the extension: '
'0A000.';
