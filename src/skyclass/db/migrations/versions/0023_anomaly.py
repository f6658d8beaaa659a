"""Anomaly models of a feature set: an IsolationForest fitted on a catalog's features, no labels.

``skyclass anomaly fit NAME --feature-set FS --catalog CAT`` draws a sample of
the catalog's feature build, freezes it as a training snapshot of task
``anomaly`` (no labels, no classes: fold 0 fits the forest, fold -1 is the
held-out reference for percentiles), and registers the forest as a version of
model NAME (task ``anomaly``) whose ``skyclass.ood_model`` row points at
itself. The OOD job of revision 0013 then scores it in the database unchanged.

- ``skyclass.training_snapshot`` accepts task ``anomaly`` (``classes = '{}'``,
  one fold or more).
- ``skyclass.anomaly_rank(target, catalog)``: the scored objects ranked 1..N,
  strangest first, for an anomaly model or a classifier's OOD forest.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE skyclass.training_snapshot DROP CONSTRAINT training_snapshot_task_check;
ALTER TABLE skyclass.training_snapshot ADD CONSTRAINT training_snapshot_task_check
    CHECK (task IN ('classification', 'photoz', 'anomaly'));
ALTER TABLE skyclass.training_snapshot DROP CONSTRAINT training_snapshot_classes_check;
ALTER TABLE skyclass.training_snapshot ADD CONSTRAINT training_snapshot_classes_check
    CHECK ((task = 'anomaly' AND classes = '{}') OR (task <> 'anomaly' AND cardinality(classes) >= 2));
ALTER TABLE skyclass.training_snapshot DROP CONSTRAINT training_snapshot_n_folds_check;
ALTER TABLE skyclass.training_snapshot ADD CONSTRAINT training_snapshot_n_folds_check
    CHECK (n_folds >= 2 OR (task = 'anomaly' AND n_folds >= 1));

CREATE FUNCTION skyclass.anomaly_rank(target text, catalog text)
 RETURNS TABLE(rank bigint, object_id bigint, raw_score double precision, percentile real, in_domain boolean, model_version_id bigint)
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    ranked  bigint;
    cat_id  integer;
    version_label text;
BEGIN
    IF target IS NULL OR catalog IS NULL THEN
        RAISE EXCEPTION 'target and catalog must not be NULL' USING ERRCODE = '22023';
    END IF;
    BEGIN
        ranked := (skyclass.resolve_scoring_target(target)).model_version_id;
    EXCEPTION WHEN undefined_object THEN
        -- A model name alone: its newest version.
        SELECT v.model_version_id INTO ranked
          FROM skyclass.model_version AS v JOIN skyclass.model AS m USING (model_id)
         WHERE m.name = target ORDER BY v.version DESC LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no anomaly model, model version or deployment named %',
                quote_literal(target) USING ERRCODE = '22023',
                HINT = 'Name an anomaly model (skyclass anomaly fit), MODEL:VERSION, a '
                       'model_version_id or a deployment.';
        END IF;
    END;
    SELECT c.catalog_id INTO cat_id FROM skyclass.catalog AS c WHERE c.name = anomaly_rank.catalog;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no catalog named %', quote_literal(catalog) USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM skyclass.ood_model AS o WHERE o.model_version_id = ranked) THEN
        RAISE EXCEPTION 'model version % has no anomaly forest', ranked
            USING ERRCODE = '22023',
                  HINT = 'Fit one: `skyclass anomaly fit NAME --feature-set FS --catalog CAT` '
                         '(a feature set) or `skyclass ood fit MODEL:VERSION` (a classifier).';
    END IF;
    IF NOT EXISTS (SELECT FROM skyclass.ood_run AS r
                    WHERE r.model_version_id = ranked AND r.catalog_id = cat_id
                      AND r.status = 'done') THEN
        SELECT m.name || ':' || v.version INTO version_label
          FROM skyclass.model_version AS v JOIN skyclass.model AS m USING (model_id)
         WHERE v.model_version_id = ranked;
        RAISE EXCEPTION 'model version % (%) has no finished anomaly scores on catalog %', ranked,
            version_label, quote_literal(catalog) USING ERRCODE = '55000',
            HINT = format('Run `skyclass anomaly score %s --catalog %s` or CALL '
                          'skyclass.refresh_ood(%L, %L).', version_label, catalog,
                          version_label, catalog);
    END IF;
    RETURN QUERY
        SELECT row_number() OVER (ORDER BY s.raw_score DESC, s.object_id),
               s.object_id, s.raw_score, s.percentile, s.in_domain, s.model_version_id
          FROM skyclass.ood_score AS s
         WHERE s.model_version_id = ranked AND s.catalog_id = cat_id
         ORDER BY s.raw_score DESC, s.object_id;
END
$function$;

COMMENT ON FUNCTION skyclass.anomaly_rank(text,text) IS
'The objects of a catalog ranked by anomaly score, strangest first: rank 1..N without gaps '
'(ties broken by object_id), the forest''s raw score (higher = stranger), its percentile among '
'the held-out rows the forest was fitted against, in_domain, and the version ranked (its '
'ood_score rows). target names an anomaly model '
'(its newest version; skyclass anomaly fit), MODEL:VERSION, a model_version_id or a deployment '
'(then the version''s OOD forest). Needs a finished OOD run of the pair (skyclass anomaly score, '
'skyclass.refresh_ood): 55000; bad arguments: 22023. '
'SELECT * FROM skyclass.anomaly_rank(''oddities'', ''sdss17'') WHERE rank <= 100.';
"""

DOWNGRADE = r"""
DROP FUNCTION skyclass.anomaly_rank(text, text);
ALTER TABLE skyclass.training_snapshot DROP CONSTRAINT training_snapshot_n_folds_check;
ALTER TABLE skyclass.training_snapshot ADD CONSTRAINT training_snapshot_n_folds_check
    CHECK (n_folds >= 2);
ALTER TABLE skyclass.training_snapshot DROP CONSTRAINT training_snapshot_classes_check;
ALTER TABLE skyclass.training_snapshot ADD CONSTRAINT training_snapshot_classes_check
    CHECK (cardinality(classes) >= 2);
ALTER TABLE skyclass.training_snapshot DROP CONSTRAINT training_snapshot_task_check;
ALTER TABLE skyclass.training_snapshot ADD CONSTRAINT training_snapshot_task_check
    CHECK (task IN ('classification', 'photoz'));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
