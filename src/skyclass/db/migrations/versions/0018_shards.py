"""Cone search planned once per session; the shard registry (postgres_fdw scale-out).

- ``skyclass.cone_search`` prepares its query once per session and catalog table
  (a statement named ``skyclass_cone_<md5 of the table>``) and runs it with a
  generic plan instead of planning the dynamic SQL on every call (2/3 of its
  time at 1M rows); it takes the table's ``ACCESS SHARE`` lock with ``LOCK TABLE
  ONLY`` (a third of the time of planning a ``SELECT``), still in a statement of
  its own before the query, and stays ``VOLATILE``. ``PREPARE`` is refused in
  parallel mode, so the function becomes ``PARALLEL UNSAFE`` (was ``SAFE``).
- ``skyclass.shard``: the PostgreSQL databases a catalog may be sharded over (a
  postgres_fdw foreign server each, its connection string without password).
- ``skyclass.shard_range``: which Q3C pixel range of which sharded catalog each
  shard holds (the bounds of the coordinator's foreign partitions).
- Schema ``shards``: the coordinator's partitioned tables over the shards.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

CONE_SEARCH = r"""
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
"""

CONE_SEARCH_0009 = r"""
CREATE OR REPLACE FUNCTION skyclass.cone_search(catalog text, center_ra double precision, center_dec double precision, radius_deg double precision)
 RETURNS TABLE(object_id bigint, ra double precision, "dec" double precision, distance_arcsec double precision)
 LANGUAGE plpgsql
 PARALLEL SAFE STRICT ROWS 100
 SET jit TO 'off'
AS $function$
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
    -- Q3C only selects candidates through the index; the cut is the exact
    -- distance. Q3C keeps distances strictly below its radius, so it gets a
    -- margin, and at least 1e-5 deg: Q3C 2.0.0's q3c_radial_query finds nothing
    -- at radii below about 1e-6 deg (measured), radius 0 included.
    -- The pixel ranges q3c_radial_query would OR together (100 conditions the
    -- planner re-plans on every call: ~6 ms at 10M rows) are taken as rows
    -- instead, each probed by its own index range scan: same objects, ~0.5 ms
    -- (bench/bench_cone.py). Fully-inside and partial ranges are disjoint.
    RETURN QUERY EXECUTE format(
        'SELECT s.object_id, s.ra, s.dec, s.d * 3600 FROM ('
        '  SELECT c.object_id, c.ra, c.dec,'
        '         skyclass.angular_distance($1, $2, c.ra, c.dec) AS d'
        '  FROM (SELECT %2$s.q3c_radial_query_it($1, $2, $4, 2 * k, f) AS lo,'
        '               %2$s.q3c_radial_query_it($1, $2, $4, 2 * k + 1, f) AS hi'
        '        FROM generate_series(0, 49) AS k, (VALUES (0), (1)) AS v(f)) AS r'
        '  CROSS JOIN LATERAL ('
        '      SELECT t.object_id, t.ra, t.dec FROM %1$s AS t'
        '      WHERE %2$s.q3c_ang2ipix(t.ra, t.dec) >= r.lo'
        '        AND %2$s.q3c_ang2ipix(t.ra, t.dec) < r.hi OFFSET 0) AS c'
        '  WHERE r.lo < r.hi) AS s'
        ' WHERE s.d <= $3'
        ' ORDER BY s.d, s.object_id',
        skyclass._catalog_table(catalog), skyclass._q3c_schema())
    USING center_ra, center_dec, radius_deg, greatest(radius_deg * (1 + 1e-9), 1e-5);
END
$function$;
"""

UPGRADE = r"""
CREATE SCHEMA IF NOT EXISTS shards;
COMMENT ON SCHEMA shards IS
    'Coordinator tables of sharded catalogs: partitioned by Q3C pixel range, partitions are '
    'postgres_fdw foreign tables on the shards (skyclass shard attach).';
CREATE TABLE skyclass.shard (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    server_name text NOT NULL UNIQUE,
    conninfo    text NOT NULL,
    added_by    text NOT NULL DEFAULT current_user,
    added_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE skyclass.shard IS
    'A PostgreSQL database holding part of sharded catalogs: its postgres_fdw foreign server '
    '(extensions q3c and skyclass, async_capable) and its connection string without password '
    '(the CLI connects there to run scoring jobs in place).';
CREATE TABLE skyclass.shard_range (
    catalog_name text NOT NULL,
    shard_name   text NOT NULL REFERENCES skyclass.shard ON DELETE RESTRICT,
    ipix_lo      bigint,
    ipix_hi      bigint,
    object_count bigint NOT NULL,
    attached_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (catalog_name, shard_name),
    CHECK (ipix_lo IS NULL OR ipix_hi IS NULL OR ipix_lo < ipix_hi)
);
COMMENT ON TABLE skyclass.shard_range IS
    'The Q3C pixel range [ipix_lo, ipix_hi) of sharded catalog catalog_name held by shard '
    'shard_name (NULL: unbounded), as the coordinator''s foreign partition bounds say; '
    'object_count as counted when attached.';
GRANT USAGE ON SCHEMA shards TO skyclass_reader;
GRANT SELECT ON skyclass.shard, skyclass.shard_range TO skyclass_reader;
"""

DOWNGRADE = r"""
DROP TABLE skyclass.shard_range;
DROP TABLE skyclass.shard;
DROP SCHEMA shards;
"""


def upgrade() -> None:
    op.execute(CONE_SEARCH)
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
    op.execute(CONE_SEARCH_0009)
