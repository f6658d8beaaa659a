"""Explanations and model interrogation: TreeSHAP rows, partial dependence and ICE curves.

- ``skyclass.explanation_run`` / ``skyclass.explanation``: one ``skyclass explain``
  call and, per object, the raw margin per output and every feature's
  contribution (base + sum = margin); the view ``skyclass.explanation_long``
  has one row per object, output and feature.
- ``skyclass.dependence_run`` / ``skyclass.dependence_curve``: partial
  dependence, the median object's curve and ICE curves, computed in the
  database with the compiled model by ``skyclass.partial_dependence``.
- ``skyclass.explain_object(target, catalog, object_id)``: one object's stored
  explanation with its feature values.

Revision ID: 0021
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0012"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE skyclass.explanation_run (
    explanation_run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version_id   bigint NOT NULL REFERENCES skyclass.model_version,
    catalog_id         integer REFERENCES skyclass.catalog ON DELETE CASCADE,
    catalog_name       text NOT NULL,
    feature_set_id     integer NOT NULL REFERENCES skyclass.feature_set ON DELETE CASCADE,
    method             text NOT NULL CHECK (method = 'treeshap'),
    model_output       text NOT NULL CHECK (model_output IN ('softmax_logit', 'logit', 'probability')),
    feature_names      text[] NOT NULL CHECK (cardinality(feature_names) > 0),
    output_names       text[] NOT NULL CHECK (cardinality(output_names) > 0),
    base               float8[] NOT NULL,
    selection          text NOT NULL,
    n_objects          bigint NOT NULL CHECK (n_objects >= 0),
    seconds            float8 NOT NULL CHECK (seconds >= 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by         text NOT NULL DEFAULT current_user,
    CHECK (cardinality(base) = cardinality(output_names))
);
CREATE INDEX ix_explanation_run_pair ON skyclass.explanation_run (model_version_id, catalog_id);
COMMENT ON TABLE skyclass.explanation_run IS
    'One `skyclass explain` call: exact TreeSHAP of a model version''s raw outputs on catalog '
    'objects; the base value per output, the feature and output order of its rows.';

CREATE TABLE skyclass.explanation (
    explanation_run_id bigint NOT NULL REFERENCES skyclass.explanation_run ON DELETE CASCADE,
    object_id          bigint NOT NULL,
    margin             float8[] NOT NULL,
    contributions      float8[] NOT NULL,
    PRIMARY KEY (explanation_run_id, object_id)
);
CREATE INDEX ix_explanation_object ON skyclass.explanation (object_id);
COMMENT ON TABLE skyclass.explanation IS
    'Per object: the raw margin per output and the contribution of every feature to every '
    'output, feature-major (contributions[f * n_outputs + k + 1]); base + sum = margin.';

CREATE TABLE skyclass.dependence_run (
    dependence_run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version_id  bigint NOT NULL REFERENCES skyclass.model_version,
    catalog_id        integer REFERENCES skyclass.catalog ON DELETE CASCADE,
    catalog_name      text NOT NULL,
    feature_set_id    integer NOT NULL REFERENCES skyclass.feature_set ON DELETE CASCADE,
    feature           text NOT NULL,
    grid              float8[] NOT NULL CHECK (cardinality(grid) >= 2),
    second_feature    text,
    second_quantile   float8 CHECK (second_quantile > 0 AND second_quantile < 1),
    second_value      float8,
    median_object     float8[] NOT NULL,
    n_reference       integer NOT NULL CHECK (n_reference > 0),
    n_ice             integer NOT NULL CHECK (n_ice >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    CHECK ((second_feature IS NULL) = (second_quantile IS NULL))
);
CREATE INDEX ix_dependence_run_pair ON skyclass.dependence_run (model_version_id, catalog_id);
COMMENT ON TABLE skyclass.dependence_run IS
    'A partial-dependence / ICE computation in the database: one feature varied over a grid '
    '(2nd to 98th percentile), optionally a second feature held at a quantile.';

CREATE TABLE skyclass.dependence_curve (
    dependence_run_id bigint NOT NULL REFERENCES skyclass.dependence_run ON DELETE CASCADE,
    curve             text NOT NULL CHECK (curve IN ('pd', 'median', 'ice')),
    object_id         bigint NOT NULL DEFAULT -1,
    class_name        text NOT NULL,
    grid_index        integer NOT NULL CHECK (grid_index >= 1),
    value             float8 NOT NULL,
    probability       float8 NOT NULL CHECK (probability BETWEEN 0 AND 1),
    PRIMARY KEY (dependence_run_id, curve, object_id, class_name, grid_index),
    CHECK ((curve = 'ice') = (object_id >= 0))
);
COMMENT ON TABLE skyclass.dependence_curve IS
    'Calibrated class probability along the grid: the mean over the ICE objects (pd), the '
    'median object (median) and each sampled object (ice; object_id = -1 otherwise).';

CREATE TRIGGER explanation_run_immutable BEFORE UPDATE ON skyclass.explanation_run
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();
CREATE TRIGGER dependence_run_immutable BEFORE UPDATE ON skyclass.dependence_run
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();

CREATE VIEW skyclass.explanation_long AS
SELECT r.model_version_id, r.catalog_id, r.catalog_name AS catalog, e.object_id,
       r.output_names[k] AS class_name, r.feature_names[f] AS feature,
       e.contributions[(f - 1) * cardinality(r.output_names) + k] AS contribution,
       r.base[k] AS base, e.margin[k] AS margin, r.explanation_run_id, r.created_at
  FROM skyclass.explanation AS e
  JOIN skyclass.explanation_run AS r USING (explanation_run_id)
 CROSS JOIN LATERAL generate_subscripts(r.output_names, 1) AS k
 CROSS JOIN LATERAL generate_subscripts(r.feature_names, 1) AS f;
COMMENT ON VIEW skyclass.explanation_long IS
    'Explanations one row per object, output and feature: join with predictions on '
    '(model_version_id, catalog_id, object_id).';

GRANT SELECT ON skyclass.explanation_run, skyclass.explanation, skyclass.dependence_run,
    skyclass.dependence_curve, skyclass.explanation_long TO skyclass_reader;

CREATE OR REPLACE FUNCTION skyclass.explain_object(target text, catalog text, object_id bigint)
 RETURNS TABLE(class_name text, feature text, feature_value real, contribution double precision, base double precision, margin double precision, explanation_run_id bigint)
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    t   record;
    cat skyclass.catalog;
    r   skyclass.explanation_run;
    e   skyclass.explanation;
    x   real[];
BEGIN
    IF object_id IS NULL THEN
        RAISE EXCEPTION 'object_id must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := skyclass.resolve_scoring_target(target);
    SELECT * INTO cat FROM skyclass.catalog AS c WHERE c.name = explain_object.catalog;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'catalog % is not registered', quote_literal(coalesce(catalog, 'NULL'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT ex.* INTO e
      FROM skyclass.explanation AS ex
      JOIN skyclass.explanation_run AS er ON er.explanation_run_id = ex.explanation_run_id
     WHERE er.model_version_id = t.model_version_id AND er.catalog_id = cat.catalog_id
       AND ex.object_id = explain_object.object_id
     ORDER BY er.explanation_run_id DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'object % of catalog % has no stored explanation by %',
            explain_object.object_id, cat.name, target
            USING ERRCODE = 'no_data_found',
                  HINT = format('compute it: skyclass explain %s --catalog %s --ids %s',
                                target, cat.name, explain_object.object_id);
    END IF;
    SELECT er.* INTO r FROM skyclass.explanation_run AS er
     WHERE er.explanation_run_id = e.explanation_run_id;
    EXECUTE format('SELECT f.x FROM features.%I AS f WHERE f.object_id = $1',
                   (SELECT fs.table_name FROM skyclass.feature_set AS fs
                     WHERE fs.feature_set_id = r.feature_set_id))
       INTO x USING explain_object.object_id;
    RETURN QUERY
    SELECT r.output_names[k], r.feature_names[f], x[f],
           e.contributions[(f - 1) * cardinality(r.output_names) + k], r.base[k], e.margin[k],
           r.explanation_run_id
      FROM generate_subscripts(r.output_names, 1) AS k,
           generate_subscripts(r.feature_names, 1) AS f
     ORDER BY k, abs(e.contributions[(f - 1) * cardinality(r.output_names) + k]) DESC, f;
END
$function$;
COMMENT ON FUNCTION skyclass.explain_object(text,text,bigint) IS
'Why a model classified one object: the newest stored TreeSHAP explanation (skyclass explain) '
'of the object by a deployment, MODEL:VERSION or model_version_id, one row per output and '
'feature with the feature value, its contribution to the raw margin, the base value and the '
'margin (base + sum of contributions = margin), largest contributions first.';

CREATE OR REPLACE FUNCTION skyclass.partial_dependence(target text, catalog text, feature text, grid_points integer DEFAULT 25, ice_objects integer DEFAULT 50, second_feature text DEFAULT NULL::text, second_quantile double precision DEFAULT NULL::double precision, reference_objects integer DEFAULT 20000)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    t        record;
    cat      skyclass.catalog;
    fs       skyclass.feature_set;
    j        integer;
    j2       integer;
    lo       float8;
    hi       float8;
    grid     float8[];
    med      float8[];
    second   float8;
    n_ref    integer;
    classes  text[];
    run      bigint;
BEGIN
    IF grid_points IS NULL OR grid_points < 2 OR grid_points > 200 THEN
        RAISE EXCEPTION 'grid_points must be between 2 and 200, not %', grid_points
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ice_objects IS NULL OR ice_objects < 0 OR ice_objects > 1000 THEN
        RAISE EXCEPTION 'ice_objects must be between 0 and 1000, not %', ice_objects
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF reference_objects IS NULL OR reference_objects < 10 OR reference_objects > 1000000 THEN
        RAISE EXCEPTION 'reference_objects must be between 10 and 1000000, not %',
            reference_objects USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (second_feature IS NULL) <> (second_quantile IS NULL) THEN
        RAISE EXCEPTION 'second_feature and second_quantile go together'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF second_quantile IS NOT NULL AND NOT (second_quantile > 0 AND second_quantile < 1) THEN
        RAISE EXCEPTION 'second_quantile must lie strictly between 0 and 1, not %',
            second_quantile USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := skyclass.resolve_scoring_target(target);
    SELECT * INTO cat FROM skyclass.catalog AS c WHERE c.name = partial_dependence.catalog;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'catalog % is not registered', quote_literal(coalesce(catalog, 'NULL'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO fs FROM skyclass.feature_set AS s
     WHERE s.feature_set_id = skyclass.scoring_feature_set(t.model_version_id, cat.catalog_id);
    j := array_position(fs.feature_names, feature);
    IF j IS NULL THEN
        RAISE EXCEPTION 'model % has no feature %; its features: %', target,
            quote_literal(coalesce(feature, 'NULL')), array_to_string(fs.feature_names, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF second_feature IS NOT NULL THEN
        j2 := array_position(fs.feature_names, second_feature);
        IF j2 IS NULL OR j2 = j THEN
            RAISE EXCEPTION 'second_feature % is not another feature of model %; its features: %',
                quote_literal(second_feature), target, array_to_string(fs.feature_names, ', ')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    SELECT v.classes INTO classes FROM skyclass.model_version AS v
     WHERE v.model_version_id = t.model_version_id;
    -- A reproducible reference sample: the objects with the smallest hashes of their ids.
    EXECUTE format('CREATE TEMPORARY TABLE pd_reference ON COMMIT DROP AS '
                   'SELECT f.object_id, f.x FROM features.%I AS f '
                   'ORDER BY hashint8(f.object_id), f.object_id LIMIT $1', fs.table_name)
        USING reference_objects;
    SELECT count(*) INTO n_ref FROM pd_reference;
    IF n_ref = 0 THEN
        RAISE EXCEPTION 'catalog % has no features to vary', cat.name
            USING ERRCODE = 'no_data_found';
    END IF;
    SELECT percentile_cont(0.02) WITHIN GROUP (ORDER BY r.x[j]),
           percentile_cont(0.98) WITHIN GROUP (ORDER BY r.x[j])
      INTO lo, hi FROM pd_reference AS r WHERE r.x[j] <> 'NaN';
    IF lo IS NULL OR NOT hi > lo THEN
        RAISE EXCEPTION 'feature % has no spread in catalog % (2nd to 98th percentile: % to %)',
            feature, cat.name, lo, hi USING ERRCODE = 'data_exception';
    END IF;
    SELECT array_agg(lo + (hi - lo) * (g - 1) / (grid_points - 1) ORDER BY g)
      INTO grid FROM generate_series(1, grid_points) AS g;
    SELECT array_agg(m ORDER BY k) INTO med
      FROM (SELECT k, percentile_cont(0.5) WITHIN GROUP (ORDER BY r.x[k]) AS m
              FROM pd_reference AS r, generate_subscripts(fs.feature_names, 1) AS k
             WHERE r.x[k] <> 'NaN' GROUP BY k) AS s;
    IF cardinality(med) IS DISTINCT FROM cardinality(fs.feature_names) THEN
        RAISE EXCEPTION 'a feature of catalog % is missing in every reference object', cat.name
            USING ERRCODE = 'data_exception';
    END IF;
    IF j2 IS NOT NULL THEN
        SELECT percentile_cont(second_quantile) WITHIN GROUP (ORDER BY r.x[j2])
          INTO second FROM pd_reference AS r WHERE r.x[j2] <> 'NaN';
        med[j2] := second;
    END IF;
    INSERT INTO skyclass.dependence_run (model_version_id, catalog_id, catalog_name,
                feature_set_id, feature, grid, second_feature, second_quantile, second_value,
                median_object, n_reference, n_ice)
    VALUES (t.model_version_id, cat.catalog_id, cat.name, fs.feature_set_id, feature, grid,
            second_feature, second_quantile, second, med, n_ref,
            LEAST(ice_objects, n_ref))
    RETURNING dependence_run_id INTO run;
    -- Each object's features with feature j set to every grid value (and j2 held).
    WITH objects AS (
        SELECT -1::bigint AS object_id, med::real[] AS x
        UNION ALL
        SELECT r.object_id, r.x FROM (SELECT * FROM pd_reference
                                       ORDER BY hashint8(object_id), object_id
                                       LIMIT ice_objects) AS r
    ), varied AS (
        SELECT o.object_id, g AS grid_index,
               skyclass.predict(t.model_version_id,
                   (SELECT array_agg(CASE WHEN k = j THEN grid[g]::real
                                          WHEN k = j2 THEN second::real
                                          ELSE o.x[k] END ORDER BY k)
                      FROM generate_subscripts(o.x, 1) AS k)) AS p
          FROM objects AS o, generate_series(1, grid_points) AS g
    ), rows AS (
        SELECT v.object_id, v.grid_index, classes[c] AS class_name, v.p[c]::float8 AS probability
          FROM varied AS v, generate_subscripts(classes, 1) AS c
    ), ins_curves AS (
        INSERT INTO skyclass.dependence_curve
        SELECT run, CASE WHEN r.object_id = -1 THEN 'median' ELSE 'ice' END, r.object_id,
               r.class_name, r.grid_index, grid[r.grid_index], least(1, greatest(0, r.probability))
          FROM rows AS r
        RETURNING 1
    )
    INSERT INTO skyclass.dependence_curve
    SELECT run, 'pd', -1, r.class_name, r.grid_index, grid[r.grid_index],
           least(1, greatest(0, avg(r.probability)))
      FROM rows AS r WHERE r.object_id >= 0
     GROUP BY r.class_name, r.grid_index;
    DROP TABLE pd_reference;
    RETURN run;
END
$function$;
COMMENT ON FUNCTION skyclass.partial_dependence(text,text,text,integer,integer,text,double precision,integer) IS
'Interrogate a model in the database: vary one feature over a grid (its 2nd to 98th '
'percentile in a reproducible reference sample of the catalog) and score with the compiled '
'model (skyclass.predict): the median object''s curve, ICE curves of ice_objects objects and '
'their mean (partial dependence), optionally with second_feature held at its second_quantile. '
'Rows go to skyclass.dependence_curve; returns the dependence_run_id.';
"""

DOWNGRADE = r"""
DROP FUNCTION skyclass.partial_dependence(text, text, text, integer, integer, text,
    double precision, integer);
DROP FUNCTION skyclass.explain_object(text, text, bigint);
DROP VIEW skyclass.explanation_long;
DROP TABLE skyclass.dependence_curve;
DROP TABLE skyclass.dependence_run;
DROP TABLE skyclass.explanation;
DROP TABLE skyclass.explanation_run;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
