"""The portal service: its login role, published model cards and the purity threshold.

- Role ``skyclass_portal`` (LOGIN, member of ``skyclass_reader``): the role
  ``skyclass serve`` connects as. Made only when missing (roles belong to the
  server, and other migrations may make the same role); never dropped by the
  downgrade, which only revokes what this revision granted.
- Views ``skyclass.published_model_version`` (a version with its provenance:
  model, feature set and catalog, snapshot sizes and class counts, training
  run library versions and git commit, calibration kind),
  ``skyclass.published_metric`` (the cross-validated metrics, mean and K-fold
  std, of the version's own estimator and of the baselines trained beside it)
  and ``skyclass.published_curve`` (the evaluation curves of the version's
  own estimator: reliability diagrams, ROC, PIT...), readable by
  ``skyclass_reader``, which cannot read the registry tables behind them.
- Function ``skyclass.purity_threshold(model_version, class_name, purity)``:
  the threshold reaching a purity on the calibration split of the version's
  snapshot (the demo's example SQL as one call). SECURITY DEFINER: the
  portal role cannot read training snapshots; EXECUTE only for
  ``skyclass_reader``.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

FUNCTION = r"""
CREATE OR REPLACE FUNCTION skyclass.purity_threshold(model_version bigint, class_name text, purity double precision)
 RETURNS TABLE(threshold real, selected bigint, achieved_purity double precision, completeness double precision, calibration_objects bigint)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_task    text;
    v_k       integer;
    v_table   text;
    v_catalog integer;
BEGIN
    IF model_version IS NULL OR class_name IS NULL OR purity IS NULL THEN
        RAISE EXCEPTION 'model_version, class_name and purity are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (purity > 0 AND purity <= 1) THEN
        RAISE EXCEPTION 'purity must be in (0, 1], not %', purity
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT v.task, array_position(v.classes, purity_threshold.class_name), s.table_name,
           f.catalog_id
      INTO v_task, v_k, v_table, v_catalog
      FROM skyclass.model_version AS v
      JOIN skyclass.training_snapshot AS s ON s.snapshot_id = v.snapshot_id
      JOIN skyclass.feature_set AS f ON f.feature_set_id = s.feature_set_id
     WHERE v.model_version_id = model_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % does not exist', model_version
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_task <> 'classification' THEN
        RAISE EXCEPTION 'model version % is a % model: purity thresholds need classes',
            model_version, v_task USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_k IS NULL THEN
        RAISE EXCEPTION 'model version % has no class %', model_version, quote_literal(class_name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_catalog IS NULL THEN
        RETURN;  -- the catalog of the training snapshot was dropped: no calibration predictions
    END IF;
    -- The calibration split (fold -1) of the version's own training snapshot, never trained on,
    -- scored by the version's in-database predictions: the lowest threshold whose selection is
    -- at least `purity` pure, i.e. the largest completeness at that purity.
    RETURN QUERY EXECUTE format(
        'WITH cal AS ('
        '  SELECT s.label = $1 AS hit, p.probabilities[$2] AS p'
        '    FROM snapshots.%I AS s'
        '    JOIN skyclass.prediction AS p'
        '      ON p.model_version_id = $3 AND p.catalog_id = $4 AND p.object_id = s.object_id'
        '   WHERE s.fold = -1),'
        ' ranked AS ('
        '  SELECT p, count(*) FILTER (WHERE hit) OVER w AS hits, count(*) OVER w AS sel,'
        '         count(*) FILTER (WHERE hit) OVER () AS all_hits, count(*) OVER () AS n'
        '    FROM cal WINDOW w AS (ORDER BY p DESC))'
        ' SELECT p, sel, hits::float8 / sel, hits::float8 / nullif(all_hits, 0), n'
        '   FROM ranked WHERE hits >= $5 * sel AND hits > 0'
        '  ORDER BY p LIMIT 1', v_table)
    USING class_name, v_k, model_version, v_catalog, purity;
END
$function$;
COMMENT ON FUNCTION skyclass.purity_threshold(bigint,text,double precision) IS
'The lowest probability threshold for class_name whose selection on the calibration split (fold'
' -1, never trained on) of the version''s training snapshot is at least purity pure, with the'
' selection size, its purity and completeness and the number of calibration objects scored. No'
' row when no threshold reaches the purity or the version has not scored its snapshot''s'
' catalog. Runs as its owner (the portal role cannot read snapshots). Bad arguments: SQLSTATE'
' 22023.';
"""

UPGRADE = (
    r"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'skyclass_portal') THEN
        CREATE ROLE skyclass_portal LOGIN IN ROLE skyclass_reader;
    END IF;
END
$$;
GRANT skyclass_reader TO skyclass_portal;

CREATE VIEW skyclass.published_model_version AS
SELECT v.model_version_id, m.name AS model, v.version, m.name || ':' || v.version AS label,
       v.task, v.estimator, v.params, v.n_features, v.classes, v.bin_edges,
       v.calibration_kind, m.description, v.created_at, v.created_by,
       f.name AS feature_set, f.feature_names, f.catalog_name AS training_catalog,
       s.n_rows AS snapshot_rows, s.n_folds, s.calibration_fraction, s.class_counts,
       s.label_source, r.library_versions, r.git_commit, r.started_at AS trained_at
  FROM skyclass.model_version AS v
  JOIN skyclass.model AS m ON m.model_id = v.model_id
  JOIN skyclass.training_snapshot AS s ON s.snapshot_id = v.snapshot_id
  JOIN skyclass.feature_set AS f ON f.feature_set_id = v.feature_set_id
  JOIN skyclass.training_run AS r ON r.training_run_id = v.training_run_id;
COMMENT ON VIEW skyclass.published_model_version IS
    'Model versions with their provenance for portals (model card): model, feature set and the '
    'catalog it was built on, training snapshot sizes and class counts, library versions and git '
    'commit of the training run, calibration kind. No checkpoint, no artifact.';

CREATE VIEW skyclass.published_metric AS
SELECT v.model_version_id, e.estimator, e.role, e.evaluation_id = v.evaluation_id AS is_version,
       x.name, x.class_name, x.stage, x.mean, x.std, cardinality(x.fold_values) AS n_folds
  FROM skyclass.model_version AS v
  JOIN skyclass.evaluation AS e ON e.training_run_id = v.training_run_id
  JOIN skyclass.metric AS x ON x.evaluation_id = e.evaluation_id;
COMMENT ON VIEW skyclass.published_metric IS
    'Cross-validated metrics (mean and K-fold std) of each model version (is_version) and of the '
    'baselines trained beside it in the same run, per class and stage (raw / calibrated).';

CREATE VIEW skyclass.published_curve AS
SELECT v.model_version_id, c.name, c.class_name, c.stage, c.data
  FROM skyclass.model_version AS v
  JOIN skyclass.evaluation_curve AS c ON c.evaluation_id = v.evaluation_id;
COMMENT ON VIEW skyclass.published_curve IS
    'Evaluation curves of each model version''s own estimator (reliability diagrams, ROC, PIT, '
    'coverage...) as JSON, per class and stage.';

GRANT SELECT ON skyclass.published_model_version, skyclass.published_metric,
    skyclass.published_curve TO skyclass_reader;
"""
    + FUNCTION
    + r"""
REVOKE ALL ON FUNCTION skyclass.purity_threshold(bigint, text, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION skyclass.purity_threshold(bigint, text, double precision)
    TO skyclass_reader;
"""
)

DOWNGRADE = r"""
DROP FUNCTION skyclass.purity_threshold(bigint, text, double precision);
DROP VIEW skyclass.published_curve;
DROP VIEW skyclass.published_metric;
DROP VIEW skyclass.published_model_version;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
