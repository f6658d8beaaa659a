"""Cheaper count of catalog objects without features per scoring chunk.

``skyclass.complete_scoring_chunk`` counts the catalog objects of a chunk's range
that have no feature row. For partition runs it now anti-joins the catalog with the
chunk's own table (a row per feature row of the range, in object_id order, its pages
all-visible when the extension's bulk writer wrote them) instead of the feature
table, whose index-only scan visits the heap of every row: 0.60 -> 0.27 us per row
of backend CPU in a 150,000-row trial. The value is the same (feature rows whose
objects left the catalog are in both tables and are not counted). Insert runs keep
the feature table.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE OR REPLACE FUNCTION skyclass.complete_scoring_chunk(run bigint, chunk integer, n_rows bigint)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    r       skyclass.scoring_run;
    c       skyclass.scoring_chunk;
    tbl     text;
    missing bigint;
    bitmap  text;
    idx     text;
BEGIN
    IF n_rows IS NULL OR n_rows < 0 THEN
        RAISE EXCEPTION 'n_rows must be a count of rows (0 or more), not %', coalesce(n_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    SELECT * INTO c FROM skyclass.scoring_chunk AS k WHERE k.run_id = run AND k.chunk_no = chunk FOR UPDATE;
    IF c.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no chunk %', run, chunk USING ERRCODE = 'undefined_object';
    END IF;
    IF c.done_at IS NOT NULL THEN
        RAISE EXCEPTION 'chunk % of scoring run % is already done', chunk, run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF to_regclass(nullif(r.target_table, '')) IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no target table', run
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'plan the run with skyclass.plan_scoring_run first';
    END IF;
    BEGIN
        tbl := r.target_table || '_' || chunk;
        IF to_regclass(tbl) IS NULL THEN
            RAISE EXCEPTION 'chunk % of scoring run % has no table %', chunk, run, tbl
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'write it first (skyclass.create_chunk_table) in the same transaction';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                        WHERE conrelid = to_regclass(tbl) AND conname = 'chunk_' || chunk) THEN
            -- Made by CREATE TABLE AS: constrain it now (one scan of the chunk each).
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, 'chunk_' || chunk,
                           skyclass.chunk_check(run, chunk));
            EXECUTE format('ALTER TABLE %s %s', tbl,
                (SELECT string_agg(format('ALTER %I SET NOT NULL', a.attname), ', ' ORDER BY a.attnum)
                   FROM pg_catalog.pg_attribute AS a
                  WHERE a.attrelid = to_regclass(tbl) AND a.attnum > 0 AND NOT a.attisdropped));
        END IF;
        -- Attaching builds the chunk's index (rows are in object_id order).
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)',
            r.target_table, tbl,
            CASE WHEN c.first_object_id = (-9223372036854775807)::bigint - 1 THEN 'MINVALUE'
                 ELSE c.first_object_id::text END,
            CASE WHEN c.last_object_id = 9223372036854775807 THEN 'MAXVALUE' ELSE (c.last_object_id + 1)::text END);
    END;
    -- Objects of the catalog that the feature table lacks are not scored: count them, range by
    -- range (the chunks cover every object id), so the count costs no serial pass.
    -- (The range on both sides lets the planner merge two index scans: 3x faster than
    -- probing the feature table once per catalog object.) A partition run's chunk table holds
    -- a row for every feature row of the range, so it stands for the feature table: its pages
    -- are few, in object_id order and (written by score_chunk_into) all-visible, where an
    -- index-only scan of the feature table visits the heap of every row (its visibility map is
    -- not set) in sky order. Feature rows whose objects left the catalog have rows in both and
    -- are not counted either way. An insert run writes only the objects without a published
    -- prediction: it counts against the feature table. The chunk table has no statistics yet,
    -- so the planner would read it with a bitmap scan and sort it: the index-only scan is
    -- cheaper (and has nothing to fetch from an all-visible heap). Index scans are allowed for
    -- this statement (score_chunk's SQL path turns them off for its own query; with both off
    -- the planner would read the whole catalog for every chunk).
    bitmap := current_setting('enable_bitmapscan');
    idx := current_setting('enable_indexscan');
    IF r.write_kind = 'partition' THEN
        PERFORM set_config('enable_bitmapscan', 'off', true);
        PERFORM set_config('enable_indexscan', 'on', true);
    END IF;
    EXECUTE format('SELECT count(*) FROM %1$s AS c WHERE c.object_id BETWEEN %3$L::bigint AND %4$L::bigint '
                   'AND NOT EXISTS (SELECT 1 FROM %2$s AS f WHERE f.object_id = c.object_id '
                   'AND f.object_id BETWEEN %3$L::bigint AND %4$L::bigint)',
                   r.catalog_table,
                   CASE WHEN r.write_kind = 'partition' THEN tbl ELSE r.feature_table END,
                   c.first_object_id, c.last_object_id)
       INTO missing;
    PERFORM set_config('enable_bitmapscan', bitmap, true);
    PERFORM set_config('enable_indexscan', idx, true);
    UPDATE skyclass.scoring_chunk AS k
       SET rows = n_rows, objects_without_features = missing, done_at = clock_timestamp()
     WHERE k.run_id = run AND k.chunk_no = chunk;
    UPDATE skyclass.scoring_run AS s
       SET chunks_done = s.chunks_done + 1, rows_scored = s.rows_scored + n_rows,
           objects_without_features = coalesce(s.objects_without_features, 0) + missing
     WHERE s.run_id = run;
END
$function$;
COMMENT ON FUNCTION skyclass.complete_scoring_chunk(bigint,integer,bigint) IS
'Mark a chunk done in the transaction that wrote its predictions (attaching its chunk table '
'to the run''s table). Shared by the in-database scorer and the client-side fallback. Unknown '
'chunk: SQLSTATE 42704; done already, run not planned or no chunk table: 55000; bad n_rows: '
'22023.';
"""

DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION skyclass.complete_scoring_chunk(run bigint, chunk integer, n_rows bigint)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    r       skyclass.scoring_run;
    c       skyclass.scoring_chunk;
    tbl     text;
    missing bigint;
BEGIN
    IF n_rows IS NULL OR n_rows < 0 THEN
        RAISE EXCEPTION 'n_rows must be a count of rows (0 or more), not %', coalesce(n_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run;
    SELECT * INTO c FROM skyclass.scoring_chunk AS k WHERE k.run_id = run AND k.chunk_no = chunk FOR UPDATE;
    IF c.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no chunk %', run, chunk USING ERRCODE = 'undefined_object';
    END IF;
    IF c.done_at IS NOT NULL THEN
        RAISE EXCEPTION 'chunk % of scoring run % is already done', chunk, run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF to_regclass(nullif(r.target_table, '')) IS NULL THEN
        RAISE EXCEPTION 'scoring run % has no target table', run
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'plan the run with skyclass.plan_scoring_run first';
    END IF;
    BEGIN
        tbl := r.target_table || '_' || chunk;
        IF to_regclass(tbl) IS NULL THEN
            RAISE EXCEPTION 'chunk % of scoring run % has no table %', chunk, run, tbl
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'write it first (skyclass.create_chunk_table) in the same transaction';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                        WHERE conrelid = to_regclass(tbl) AND conname = 'chunk_' || chunk) THEN
            -- Made by CREATE TABLE AS: constrain it now (one scan of the chunk each).
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, 'chunk_' || chunk,
                           skyclass.chunk_check(run, chunk));
            EXECUTE format('ALTER TABLE %s %s', tbl,
                (SELECT string_agg(format('ALTER %I SET NOT NULL', a.attname), ', ' ORDER BY a.attnum)
                   FROM pg_catalog.pg_attribute AS a
                  WHERE a.attrelid = to_regclass(tbl) AND a.attnum > 0 AND NOT a.attisdropped));
        END IF;
        -- Attaching builds the chunk's index (rows are in object_id order).
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)',
            r.target_table, tbl,
            CASE WHEN c.first_object_id = (-9223372036854775807)::bigint - 1 THEN 'MINVALUE'
                 ELSE c.first_object_id::text END,
            CASE WHEN c.last_object_id = 9223372036854775807 THEN 'MAXVALUE' ELSE (c.last_object_id + 1)::text END);
    END;
    -- Objects of the catalog that the feature table lacks are not scored: count them, range by
    -- range (the chunks cover every object id), so the count costs no serial pass.
    -- (The range on both sides lets the planner merge two index-only scans: 3x faster than
    -- probing the feature table once per catalog object.)
    EXECUTE format('SELECT count(*) FROM %1$s AS c WHERE c.object_id BETWEEN %3$L::bigint AND %4$L::bigint '
                   'AND NOT EXISTS (SELECT 1 FROM %2$s AS f WHERE f.object_id = c.object_id '
                   'AND f.object_id BETWEEN %3$L::bigint AND %4$L::bigint)',
                   r.catalog_table, r.feature_table, c.first_object_id, c.last_object_id)
       INTO missing;
    UPDATE skyclass.scoring_chunk AS k
       SET rows = n_rows, objects_without_features = missing, done_at = clock_timestamp()
     WHERE k.run_id = run AND k.chunk_no = chunk;
    UPDATE skyclass.scoring_run AS s
       SET chunks_done = s.chunks_done + 1, rows_scored = s.rows_scored + n_rows,
           objects_without_features = coalesce(s.objects_without_features, 0) + missing
     WHERE s.run_id = run;
END
$function$;
COMMENT ON FUNCTION skyclass.complete_scoring_chunk(bigint,integer,bigint) IS
'Mark a chunk done in the transaction that wrote its predictions (attaching its chunk table '
'to the run''s table). Shared by the in-database scorer and the client-side fallback. Unknown '
'chunk: SQLSTATE 42704; done already, run not planned or no chunk table: 55000; bad n_rows: '
'22023.';
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
