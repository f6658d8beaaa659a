"""Cross-match method ``sweep``: the zone sweep of the skyclass extension 0.2.0.

Updates the ``skyclass`` extension from 0.1.0 to 0.2.0 where it is created
and the server has the 0.2.0 files (0.2.0 adds ``skyclass.crossmatch_sweep``,
a zone sweep in memory in C), and replaces ``skyclass.crossmatch`` (0002) so
that ``method`` accepts ``sweep``; ``auto`` picks ``sweep`` when that function
exists and both catalogs together hold at most 20 million rows, after the
rule that sends a small first catalog to ``index``. Without the extension
(managed PostgreSQL) ``sweep`` raises SQLSTATE 0A000 with a hint, and ``auto``
never picks it. Results are identical for every method.

Downgrade restores 0002's ``skyclass.crossmatch`` text exactly (read from that
revision's file). The extension stays at 0.2.0: it only adds a function that
nothing of revision 0005 uses, there is no downgrade script, and dropping a
function a user may call directly is not the schema's business; downgrading
past 0003 drops the extension anyway.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

from skyclass.db.migrate import frozen_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Bring an existing 0.1.0 extension to 0.2.0. Skipped with a notice when the server
# only has older files (run `make extension` there) or the role may not update it
# (the extension is untrusted: superuser only); `sweep` then names what is missing.
UPDATE_EXTENSION = """
DO $$
DECLARE
    installed text;
BEGIN
    SELECT e.extversion INTO installed FROM pg_catalog.pg_extension AS e
    WHERE e.extname = 'skyclass';
    IF installed IS DISTINCT FROM '0.1.0' THEN
        RETURN;  -- not created here (scoring runs client-side), or already 0.2.0 or later
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_available_extension_versions AS v
                   WHERE v.name = 'skyclass' AND v.version = '0.2.0') THEN
        RAISE NOTICE 'the skyclass extension files on this server are older than 0.2.0: '
            'cross-match method sweep is unavailable until `make extension` installs them '
            'and ALTER EXTENSION skyclass UPDATE runs';
        RETURN;
    END IF;
    BEGIN
        ALTER EXTENSION skyclass UPDATE TO '0.2.0';
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'could not update the skyclass extension to 0.2.0 (%): a superuser can run '
            'ALTER EXTENSION skyclass UPDATE', SQLERRM;
    END;
END
$$;
"""

# 0002's function with a third method. The row limit of `auto` keeps the sweep's
# memory (32 bytes per row of each catalog, 24 per match) to about 1 GB.
CROSSMATCH = r"""
CREATE OR REPLACE FUNCTION skyclass.crossmatch(
    catalog_a text,
    catalog_b text,
    radius_arcsec double precision,
    best_only boolean DEFAULT true,
    method text DEFAULT 'auto')
RETURNS TABLE (object_id_a bigint, object_id_b bigint, distance_arcsec double precision,
               match_rank integer)
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
-- A merge join over sorted cell keys or JIT compilation of the key expressions
-- made the cell join several times slower in measurements; the settings only
-- last for the call.
SET enable_mergejoin = off
SET jit = off
AS $$
DECLARE
    table_a text := skyclass._catalog_table(catalog_a);
    table_b text := skyclass._catalog_table(catalog_b);
    rows_a double precision;
    rows_b double precision;
    bound_a double precision;    -- rows_a, or an upper bound when never analyzed
    bound_b double precision;
    sweep_available boolean := to_regprocedure(
        'skyclass.crossmatch_sweep(regclass, regclass, double precision, boolean)') IS NOT NULL;
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
    IF catalog_a = catalog_b THEN
        -- A self-match pairs distinct objects, never an object with itself.
        self_pairs := ' AND b.object_id <> a.object_id';
    END IF;
    -- reltuples is -1 before the first ANALYZE; the sweep's memory guard then
    -- assumes the densest possible heap (48 bytes per row at least).
    SELECT greatest(c.reltuples, 0),
           CASE WHEN c.reltuples >= 0 THEN c.reltuples
                ELSE pg_catalog.pg_relation_size(c.oid) / 48 END
    INTO rows_a, bound_a FROM pg_catalog.pg_class AS c
    WHERE c.oid = table_a::regclass;
    SELECT greatest(c.reltuples, 0),
           CASE WHEN c.reltuples >= 0 THEN c.reltuples
                ELSE pg_catalog.pg_relation_size(c.oid) / 48 END
    INTO rows_b, bound_b FROM pg_catalog.pg_class AS c
    WHERE c.oid = table_b::regclass;
    IF method = 'auto' THEN
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
        RETURN;
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
$$;

COMMENT ON FUNCTION skyclass.crossmatch(text, text, double precision, boolean, text) IS
'Cross-match registered catalogs: for each object of catalog_a, its nearest object of '
'catalog_b within radius_arcsec (0 < r <= 3600; ties by smaller object_id_b), or with '
'best_only false all of them ranked by distance. Matching a catalog with itself pairs '
'distinct objects only. method: sweep (zone sweep in memory, C extension 0.2.0), cells '
'(parallel hash join on sky cells), index (Q3C index probes into catalog_b, for a small '
'catalog_a) or auto (index for a small catalog_a, else sweep up to 20M rows in all when the '
'extension is there, else cells); results are identical. Bad radius or method, or a catalog '
'without sky positions: SQLSTATE 22023; unknown catalog: 42P01; sweep without the '
'extension: 0A000.';
"""


def upgrade() -> None:
    op.execute(UPDATE_EXTENSION)
    op.execute(CROSSMATCH)


def downgrade() -> None:
    original = frozen_sql("0002_spatial_functions.py", "CROSSMATCH")
    # In place (CREATE OR REPLACE), so privileges granted on the function survive.
    replaced = original.replace(
        "CREATE FUNCTION skyclass.crossmatch(", "CREATE OR REPLACE FUNCTION skyclass.crossmatch(", 1
    )
    if replaced == original:
        raise RuntimeError("0002's crossmatch definition has an unexpected form")
    op.execute(replaced)
