"""Q3C's ``q3c_ang2ipix(double precision, double precision)`` declared PARALLEL SAFE.

Q3C 2.0.0 (Debian's package) declares none of its functions parallel safe, so
PostgreSQL builds the Q3C index of a catalog (an index on
``q3c_ang2ipix(ra, dec)``) in one process. The function is a pure computation
of a pixel number, and Q3C's later releases declare it ``PARALLEL SAFE``
themselves (segasai/q3c pull request 36: "so at least order by q3c_ang2ipix
can be done in parallel"). Declaring it here lets the ingest build the index
with parallel workers: 0.68 s -> about 0.45 s for 1M rows on 2 cores. Only the
superuser (or the extension's owner) may do it; other roles get a notice and
nothing changes. A dump and restore recreates Q3C's own declaration.

Downgrade declares it unsafe again where Q3C is 2.0.0 (the version whose
script says so); a newer Q3C keeps its own declaration.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The (double precision, double precision) member of extension q3c, wherever it lives.
_MARK = """
DO $$
DECLARE
    fn regprocedure;
BEGIN
    SELECT p.oid::regprocedure INTO fn
      FROM pg_catalog.pg_proc AS p
      JOIN pg_catalog.pg_depend AS d ON d.classid = 'pg_catalog.pg_proc'::regclass
                                    AND d.objid = p.oid AND d.deptype = 'e'
      JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid AND e.extname = 'q3c'
     WHERE p.proname = 'q3c_ang2ipix'
       AND p.proargtypes = '701 701'::pg_catalog.oidvector
       AND (CONDITION);
    IF fn IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE format('ALTER FUNCTION %s PARALLEL SETTING', fn);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'could not declare % PARALLEL SETTING (%): a superuser can',
            fn, SQLERRM;
    END;
END
$$;
"""


def _mark(condition: str, setting: str) -> str:
    return _MARK.replace("CONDITION", condition).replace("SETTING", setting)


def upgrade() -> None:
    op.execute(_mark("p.proparallel <> 's'", "SAFE"))


def downgrade() -> None:
    op.execute(_mark("p.proparallel = 's' AND e.extversion = '2.0.0'", "UNSAFE"))
