"""Cross-match method ``sweep``: the zone sweep of the skyclass extension 0.2.0.

Updates the ``skyclass`` extension from 0.1.0 to 0.2.0 where it is created
and the server has the 0.2.0 files (0.2.0 adds ``skyclass.crossmatch_sweep``,
a zone sweep in memory in C), and replaces ``skyclass.crossmatch`` (0002) so
that ``method`` accepts ``sweep``; ``auto`` picks ``sweep`` when that function
exists and both catalogs together hold at most 20 million rows, after the
rule that sends a small first catalog to ``index``. Without the extension
(managed PostgreSQL) ``sweep`` raises SQLSTATE 0A000 with a hint, and ``auto``
never picks it. Results are identical for every method.

0002's function stays, renamed ``skyclass._crossmatch_sql``, and the new
``skyclass.crossmatch`` calls it for the SQL methods. Downgrade drops the new
function and gives the old one back its name and 0002's comment (read from that
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

# 0002's function keeps the SQL methods under the name skyclass._crossmatch_sql; the
# new skyclass.crossmatch adds the sweep in front of it. The row limit of `auto` keeps
# the sweep's memory (32 bytes per row of each catalog, 24 per match) to about 1 GB.
SIGNATURE = "(text, text, double precision, boolean, text)"
CROSSMATCH = rf"""
ALTER FUNCTION skyclass.crossmatch{SIGNATURE} RENAME TO _crossmatch_sql;
COMMENT ON FUNCTION skyclass._crossmatch_sql{SIGNATURE} IS
'The SQL methods of skyclass.crossmatch (cells, index, auto between them): call that.';

CREATE FUNCTION skyclass.crossmatch(
    catalog_a text,
    catalog_b text,
    radius_arcsec double precision,
    best_only boolean DEFAULT true,
    method text DEFAULT 'auto')
RETURNS TABLE (object_id_a bigint, object_id_b bigint, distance_arcsec double precision,
               match_rank integer)
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
AS $$
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
$$;

COMMENT ON FUNCTION skyclass.crossmatch{SIGNATURE} IS
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


# 0002's comment on skyclass.crossmatch (restored by downgrade): this revision's own
# frozen copy, equal byte for byte to the statement in 0002.
CROSSMATCH_COMMENT_0002 = r"""
COMMENT ON FUNCTION skyclass.crossmatch(text, text, double precision, boolean, text) IS
'Cross-match registered catalogs: for each object of catalog_a, its nearest object of '
'catalog_b within radius_arcsec (0 < r <= 3600; ties by smaller object_id_b), or with '
'best_only false all of them ranked by distance. Matching a catalog with itself pairs '
'distinct objects only. method: cells (parallel hash join on sky cells), index (Q3C index '
'probes into catalog_b, for a small catalog_a) or auto (chosen from table sizes); results '
'are identical. Bad radius or a catalog without sky positions: SQLSTATE 22023; unknown '
'catalog: 42P01.';
"""


def upgrade() -> None:
    op.execute(UPDATE_EXTENSION)
    op.execute(CROSSMATCH)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION skyclass.crossmatch{SIGNATURE}")
    op.execute(f"ALTER FUNCTION skyclass._crossmatch_sql{SIGNATURE} RENAME TO crossmatch")
    op.execute(CROSSMATCH_COMMENT_0002)
