"""Bulk writer of the scoring job: the skyclass extension 0.4.0 and ``skyclass.score_chunk`` using it.

- The skyclass extension goes to 0.4.0 where the server has its files:
  ``skyclass.score_chunk_into(model_version, features, first_object_id,
  last_object_id, target)`` scores one chunk of a feature table and writes its
  compact rows (``skyclass.prediction_codec``) in object_id order with
  multi-inserts, one WAL record per page as ``COPY`` writes them. Without the
  files (or without the privilege to update the extension) a notice says so and
  the job keeps its SQL path.
- ``skyclass.score_chunk`` writes the chunks of full runs of classification
  versions with it; ``only_new`` runs on a published catalog, photo-z versions,
  servers with an older extension and the setting ``skyclass.chunk_writer = sql``
  keep the ``INSERT ... SELECT`` of revision 0017.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

UPGRADE = r"""
DO $$
DECLARE
    installed text;
BEGIN
    SELECT e.extversion INTO installed FROM pg_catalog.pg_extension AS e
     WHERE e.extname = 'skyclass';
    IF installed IS NULL OR installed NOT IN ('0.1.0', '0.2.0', '0.3.0') THEN
        RETURN;  -- not created here (scoring runs client-side), or already 0.4.0 or later
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_available_extension_versions AS v
                   WHERE v.name = 'skyclass' AND v.version = '0.4.0') THEN
        RAISE NOTICE 'the skyclass extension files on this server are older than 0.4.0: '
            'the scoring job writes its chunks with SQL until `make extension` installs '
            'them and ALTER EXTENSION skyclass UPDATE runs';
        RETURN;
    END IF;
    BEGIN
        ALTER EXTENSION skyclass UPDATE TO '0.4.0';
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'could not update the skyclass extension to 0.4.0 (%): a superuser can run '
            'ALTER EXTENSION skyclass UPDATE', SQLERRM;
    END;
END
$$;

CREATE OR REPLACE FUNCTION skyclass.score_chunk(run bigint, chunk integer)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    r      skyclass.scoring_run;
    c      skyclass.scoring_chunk;
    q      text;
    n      bigint;
    writer text := coalesce(nullif(current_setting('skyclass.chunk_writer', true), ''), 'native');
BEGIN
    IF to_regprocedure('skyclass.predict(bigint, real[])') IS NULL THEN
        RAISE EXCEPTION 'the skyclass extension is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'run the job with `skyclass score` (it falls back to client-side scoring), '
                         'or install the extension (docs/extension.md)';
    END IF;
    IF writer NOT IN ('native', 'sql') THEN
        RAISE EXCEPTION 'skyclass.chunk_writer must be native or sql, not %', quote_literal(writer)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    q := skyclass.scoring_chunk_query(run, chunk);
    -- A run that plan_scoring_run has not planned has no target table: writing its chunk
    -- would create a table named after nothing.
    IF to_regclass(nullif(r.target_table, '')) IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no target table', run
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'plan the run with skyclass.plan_scoring_run first';
    END IF;
    -- A chunk's commit need not wait for its WAL flush: WAL is replayed in order, so a crash
    -- loses the last chunks together with their completion marks (the resume redoes them),
    -- never one without the other; finish_scoring_run commits synchronously, so a run reported
    -- succeeded is durable with every chunk before it.
    SET LOCAL synchronous_commit = off;
    -- The extension's bulk writer (0.4.0): one scan of the chunk's features, the rows scored,
    -- encoded as skyclass.prediction_codec does, put in object_id order and written with
    -- multi-inserts (one WAL record per page, as COPY). Full runs of classification versions;
    -- only_new runs on a published catalog (an anti-join) and photo-z versions (their PDF
    -- summaries) keep the SQL below, and so does a server whose extension is older.
    IF writer = 'native' AND r.write_kind = 'partition'
       AND to_regprocedure('skyclass.score_chunk_into(bigint, regclass, bigint, bigint, regclass)') IS NOT NULL
       AND (SELECT mv.task FROM skyclass.model_version AS mv
             WHERE mv.model_version_id = r.model_version_id) = 'classification' THEN
        SELECT * INTO c FROM skyclass.scoring_chunk AS k WHERE k.run_id = run AND k.chunk_no = chunk;
        BEGIN
            n := skyclass.score_chunk_into(r.model_version_id, r.feature_table::regclass,
                                           c.first_object_id, c.last_object_id,
                                           skyclass.create_chunk_table(run, chunk)::regclass);
        EXCEPTION WHEN program_limit_exceeded OR undefined_function THEN
            -- A chunk larger than maintenance_work_mem holds (the SQL below sorts on disk),
            -- or a skyclass.so older than the extension's SQL (the function is declared
            -- but its library has no such symbol): the chunk is written by SQL.
            n := NULL;
        END;
        IF n IS NOT NULL THEN
            PERFORM skyclass.complete_scoring_chunk(run, chunk, n);
            RETURN n;
        END IF;
    END IF;
    -- JIT compiles every chunk's expressions again and costs more than it saves here.
    SET LOCAL jit = off;
    -- The rows are written in object_id order: an index scan would give that order without a
    -- sort, but fetches every row through its own buffer lookup (the feature table is in the
    -- catalog's sky order); a bitmap scan and a sort cost 1 us per row less.
    SET LOCAL enable_indexscan = off;
    IF current_setting('max_parallel_workers_per_gather')::integer > 0 THEN
        -- One session alone (CALL skyclass.rescore, pg_cron): CREATE TABLE AS may use parallel
        -- workers, INSERT ... SELECT never does in PostgreSQL 15.
        EXECUTE format('CREATE TABLE %s AS %s', r.target_table || '_' || chunk, q);
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSE
        -- Several sessions fill the cores: insert into a table made with its constraints, which
        -- spares the scans that constraining a CREATE TABLE AS result costs.
        EXECUTE format('INSERT INTO %s %s', skyclass.create_chunk_table(run, chunk), q);
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    PERFORM skyclass.complete_scoring_chunk(run, chunk, n);
    RETURN n;
END
$function$;
COMMENT ON FUNCTION skyclass.score_chunk(bigint,integer) IS
'Score one claimed chunk and complete it (same transaction): with the extension''s bulk '
'writer skyclass.score_chunk_into (0.4.0) for full runs of classification versions, '
'otherwise with skyclass.predict in SQL (skyclass.scoring_chunk_query); the setting '
'skyclass.chunk_writer = sql forces the SQL path (native or sql, else 22023). Unknown run or '
'chunk: SQLSTATE 42704; a run not planned by plan_scoring_run: 55000.';
"""

# The text of revision 0017 (the extension stays at 0.4.0: it has no downgrade script, and
# nothing calls score_chunk_into once this text is back).
DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION skyclass.score_chunk(run bigint, chunk integer)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    r skyclass.scoring_run;
    q text;
    n bigint;
BEGIN
    IF to_regprocedure('skyclass.predict(bigint, real[])') IS NULL THEN
        RAISE EXCEPTION 'the skyclass extension is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'run the job with `skyclass score` (it falls back to client-side scoring), '
                         'or install the extension (docs/extension.md)';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    q := skyclass.scoring_chunk_query(run, chunk);
    -- A run that plan_scoring_run has not planned has no target table: writing its chunk
    -- would create a table named after nothing.
    IF to_regclass(nullif(r.target_table, '')) IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no target table', run
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'plan the run with skyclass.plan_scoring_run first';
    END IF;
    -- JIT compiles every chunk's expressions again and costs more than it saves here.
    SET LOCAL jit = off;
    -- The rows are written in object_id order: an index scan would give that order without a
    -- sort, but fetches every row through its own buffer lookup (the feature table is in the
    -- catalog's sky order); a bitmap scan and a sort cost 1 us per row less.
    SET LOCAL enable_indexscan = off;
    -- A chunk's commit need not wait for its WAL flush: WAL is replayed in order, so a crash
    -- loses the last chunks together with their completion marks (the resume redoes them),
    -- never one without the other; finish_scoring_run commits synchronously, so a run reported
    -- succeeded is durable with every chunk before it.
    SET LOCAL synchronous_commit = off;
    IF current_setting('max_parallel_workers_per_gather')::integer > 0 THEN
        -- One session alone (CALL skyclass.rescore, pg_cron): CREATE TABLE AS may use parallel
        -- workers, INSERT ... SELECT never does in PostgreSQL 15.
        EXECUTE format('CREATE TABLE %s AS %s', r.target_table || '_' || chunk, q);
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSE
        -- Several sessions fill the cores: insert into a table made with its constraints, which
        -- spares the scans that constraining a CREATE TABLE AS result costs.
        EXECUTE format('INSERT INTO %s %s', skyclass.create_chunk_table(run, chunk), q);
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    PERFORM skyclass.complete_scoring_chunk(run, chunk, n);
    RETURN n;
END
$function$;
COMMENT ON FUNCTION skyclass.score_chunk(bigint,integer) IS
'Score one claimed chunk with skyclass.predict and complete it (same transaction). Unknown '
'run or chunk: SQLSTATE 42704; a run not planned by plan_scoring_run: 55000.';
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
