"""Domain classifier scored in the database; expected metrics from SQL.

- ``skyclass.domain_shift`` gains ``domain_version_id`` (the domain
  classifier registered as a model version of its own, classes
  ``{training, catalog}``, compiled like any model) and ``scorer``
  (``database``: the catalog's propensities came from ``skyclass.predict``;
  ``python``: from scikit-learn, when the role may not register artifacts or
  the extension is missing). Rows written before are ``python``.
- ``skyclass.importance_weight``: the clipped density-ratio weight of a
  propensity, as ``skyclass.domain.weights.importance_weights`` computes it.
- ``skyclass.domain_propensity``: a catalog's propensities from a compiled
  domain classifier (the catalog's build of its feature definition).
- ``skyclass.domain_score``: propensities, weights, clipping and the
  uncovered flag of a catalog's objects under a stored domain fit.
- ``skyclass.expected_metrics``: the expected metrics of (model version,
  catalog) from the newest domain fit, with error bars, effective sample
  size, the CV value and the reliability verdict.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE skyclass.domain_shift
    ADD COLUMN domain_version_id bigint REFERENCES skyclass.model_version,
    ADD COLUMN scorer text NOT NULL DEFAULT 'python' CHECK (scorer IN ('python', 'database')),
    ADD CONSTRAINT domain_shift_scorer_version_check
        CHECK (scorer = 'python' OR domain_version_id IS NOT NULL);
COMMENT ON COLUMN skyclass.domain_shift.domain_version_id IS
    'The domain classifier as a model version (classes training, catalog); NULL before 0015';
COMMENT ON COLUMN skyclass.domain_shift.scorer IS
    'Where the catalog propensities were computed: database (skyclass.predict) or python';

CREATE FUNCTION skyclass.importance_weight(
    propensity double precision, n_train bigint, n_sample bigint,
    w_min double precision, w_max double precision,
    OUT weight double precision, OUT clipped boolean)
RETURNS record
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $function$
DECLARE
    raw double precision;
BEGIN
    -- One test on the common path (called once per catalog object); the details on failure.
    -- NaN sorts above every number in PostgreSQL: w_max < infinity also refuses NaN.
    IF (propensity >= 0 AND propensity <= 1 AND n_train >= 1 AND n_sample >= 1
        AND w_min > 0 AND w_min < w_max AND w_max < 'Infinity'::double precision) IS NOT TRUE
    THEN
        IF propensity IS NULL OR NOT (propensity >= 0 AND propensity <= 1) THEN
            RAISE EXCEPTION 'propensity must be in [0, 1], not %',
                coalesce(propensity::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF n_train IS NULL OR n_sample IS NULL OR n_train < 1 OR n_sample < 1 THEN
            RAISE EXCEPTION 'n_train and n_sample must be positive, not % and %',
                coalesce(n_train::text, 'NULL'), coalesce(n_sample::text, 'NULL')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RAISE EXCEPTION 'clip bounds must satisfy 0 < w_min < w_max < infinity, not % and %',
            coalesce(w_min::text, 'NULL'), coalesce(w_max::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    raw := least(greatest(propensity, 1e-6), 1 - 1e-6);
    raw := raw / (1 - raw) * (n_train::double precision / n_sample::double precision);
    clipped := raw < w_min OR raw > w_max;
    weight := least(greatest(raw, w_min), w_max);
END
$function$;
COMMENT ON FUNCTION skyclass.importance_weight(double precision, bigint, bigint, double precision, double precision) IS
'Importance weight p/(1-p) * n_train/n_sample of a domain-classifier propensity (held in '
'[1e-6, 1-1e-6]) clipped to [w_min, w_max], and whether it was clipped; 22023 on bad input.';

CREATE FUNCTION skyclass.domain_propensity(domain_version bigint, catalog text)
RETURNS TABLE (object_id bigint, propensity real)
LANGUAGE plpgsql STABLE
AS $function$
#variable_conflict use_column
DECLARE
    classes  text[];
    cat_id   integer;
    features text;
BEGIN
    IF domain_version IS NULL OR catalog IS NULL THEN
        RAISE EXCEPTION 'domain_version and catalog must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT v.classes INTO classes
      FROM skyclass.model_version AS v WHERE v.model_version_id = domain_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % does not exist', domain_version
            USING ERRCODE = 'undefined_object';
    END IF;
    IF classes IS DISTINCT FROM ARRAY['training', 'catalog']::text[] THEN
        RAISE EXCEPTION 'model version % is not a domain classifier (its classes are %, not '
                        '{training,catalog})', domain_version, classes
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'fit one with: skyclass domain MODEL --catalog NAME';
    END IF;
    SELECT c.catalog_id INTO cat_id FROM skyclass.catalog AS c WHERE c.name = catalog;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'catalog % is not registered', quote_literal(catalog)
            USING ERRCODE = 'undefined_table',
                  HINT = 'List the registered catalogs with `skyclass catalog list`.';
    END IF;
    SELECT format('%I.%I', 'features', fs.table_name) INTO features
      FROM skyclass.feature_set AS fs
     WHERE fs.feature_set_id = skyclass.scoring_feature_set(domain_version, cat_id);
    RETURN QUERY EXECUTE format(
        'SELECT f.object_id, (skyclass.predict($1, f.x))[2] FROM %s AS f WHERE f.x IS NOT NULL',
        features) USING domain_version;
END
$function$;
COMMENT ON FUNCTION skyclass.domain_propensity(bigint, text) IS
'Propensity p(catalog | x) of every object of a catalog (with features) from a compiled '
'domain classifier model version, scored in the database by skyclass.predict.';

CREATE FUNCTION skyclass.domain_score(domain_shift bigint, catalog text DEFAULT NULL)
RETURNS TABLE (object_id bigint, propensity real, weight real, clipped boolean,
               uncovered boolean)
LANGUAGE plpgsql STABLE
AS $function$
#variable_conflict use_column
DECLARE
    s record;
BEGIN
    IF domain_shift IS NULL THEN
        RAISE EXCEPTION 'domain_shift must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT d.domain_version_id, d.catalog_name, d.n_train, d.n_sample, d.w_min, d.w_max,
           d.uncovered_threshold
      INTO s FROM skyclass.domain_shift AS d WHERE d.domain_shift_id = domain_shift;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'domain shift % does not exist', domain_shift
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT domain_shift_id FROM skyclass.domain_shift lists them.';
    END IF;
    IF s.domain_version_id IS NULL THEN
        RAISE EXCEPTION 'domain shift % has no compiled domain classifier', domain_shift
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'run skyclass domain again as a role that may register artifacts';
    END IF;
    RETURN QUERY
    SELECT p.object_id, p.propensity, w.weight::real, w.clipped,
           p.propensity > s.uncovered_threshold
      FROM skyclass.domain_propensity(s.domain_version_id, coalesce(catalog, s.catalog_name)) AS p
     CROSS JOIN LATERAL skyclass.importance_weight(p.propensity, s.n_train, s.n_sample,
                                                   s.w_min, s.w_max) AS w;
END
$function$;
COMMENT ON FUNCTION skyclass.domain_score(bigint, text) IS
'Scores a catalog (default: the fit''s own) with the compiled domain classifier of a stored '
'domain fit: propensity, clipped importance weight, whether clipped, whether uncovered.';

CREATE FUNCTION skyclass.expected_metrics(target text, catalog text)
RETURNS TABLE (metric text, class_name text, expected double precision,
               std double precision, cv double precision, n_effective double precision,
               reliable boolean, uncovered_fraction double precision, problems text[],
               auc double precision, domain_shift_id bigint)
LANGUAGE plpgsql STABLE
AS $function$
#variable_conflict use_column
DECLARE
    version bigint;
    shift   bigint;
BEGIN
    IF target IS NULL OR catalog IS NULL THEN
        RAISE EXCEPTION 'target and catalog must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A bare model name that is not a deployment means the model's newest version.
    IF target ~ '^[a-z][a-z0-9_]{0,62}$'
       AND NOT EXISTS (SELECT FROM skyclass.deployment AS d WHERE d.name = target) THEN
        SELECT v.model_version_id INTO version
          FROM skyclass.model_version AS v JOIN skyclass.model AS m USING (model_id)
         WHERE m.name = target ORDER BY v.version DESC LIMIT 1;
    END IF;
    IF version IS NULL THEN
        version := (skyclass.resolve_scoring_target(target)).model_version_id;
    END IF;
    IF NOT EXISTS (SELECT FROM skyclass.catalog AS c WHERE c.name = catalog) THEN
        RAISE EXCEPTION 'catalog % is not registered', quote_literal(catalog)
            USING ERRCODE = 'undefined_table',
                  HINT = 'List the registered catalogs with `skyclass catalog list`.';
    END IF;
    SELECT d.domain_shift_id INTO shift
      FROM skyclass.domain_shift AS d
     WHERE d.model_version_id = version AND d.catalog_name = catalog
     ORDER BY d.created_at DESC, d.domain_shift_id DESC LIMIT 1;
    IF shift IS NULL THEN
        RAISE EXCEPTION 'model version % has no domain fit on catalog %', version, catalog
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('run: skyclass domain %s --catalog %s', target, catalog);
    END IF;
    RETURN QUERY
    SELECT m.name, m.class_name, m.value, m.std, m.unweighted, m.n_effective, d.reliable,
           d.uncovered_fraction, d.problems, d.auc, d.domain_shift_id
      FROM skyclass.domain_metric AS m
      JOIN skyclass.domain_shift AS d USING (domain_shift_id)
     WHERE m.domain_shift_id = shift
     ORDER BY m.name, m.class_name;
END
$function$;
COMMENT ON FUNCTION skyclass.expected_metrics(text, text) IS
'Expected metrics of a model version (deployment, MODEL, MODEL:VERSION or id) on a catalog '
'from its newest domain fit: importance-weighted value, bootstrap std, unweighted CV value, '
'Kish n_eff, reliability, uncovered fraction, domain-classifier AUC.';
"""

DOWNGRADE = r"""
DROP FUNCTION skyclass.expected_metrics(text, text);
DROP FUNCTION skyclass.domain_score(bigint, text);
DROP FUNCTION skyclass.domain_propensity(bigint, text);
DROP FUNCTION skyclass.importance_weight(double precision, bigint, bigint, double precision,
                                         double precision);
ALTER TABLE skyclass.domain_shift DROP COLUMN scorer, DROP COLUMN domain_version_id;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
