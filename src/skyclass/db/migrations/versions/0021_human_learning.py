"""Human learning: explanations, partial dependence and ICE curves, the active-learning queue.

- ``skyclass.explanation_run`` / ``skyclass.explanation``: one ``skyclass explain``
  call and, per object, the raw margin per output and every feature's
  contribution (base + sum = margin); the view ``skyclass.explanation_long``
  has one row per object, output and feature.
- ``skyclass.dependence_run`` / ``skyclass.dependence_curve``: partial
  dependence, the median object's curve and ICE curves, computed in the
  database with the compiled model by ``skyclass.partial_dependence``.
- ``skyclass.explain_object(target, catalog, object_id)``: one object's stored
  explanation with its feature values.
- ``skyclass.label_queue``: objects proposed for labelling per iteration, by
  strategy and score, with their state and label provenance;
  ``skyclass.create_label_queue`` writes an iteration from stored predictions;
  ``skyclass.learning_simulation`` / ``learning_curve`` hold simulated loops.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
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

CREATE TABLE skyclass.label_queue (
    queue_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version_id bigint NOT NULL REFERENCES skyclass.model_version,
    catalog_id       integer NOT NULL REFERENCES skyclass.catalog ON DELETE CASCADE,
    object_id        bigint NOT NULL,
    strategy         text NOT NULL
        CHECK (strategy IN ('entropy', 'margin', 'least_confident', 'random')),
    ood_weighted     boolean NOT NULL DEFAULT false,
    score            float8 NOT NULL,
    iteration        integer NOT NULL CHECK (iteration >= 1),
    rank             integer NOT NULL CHECK (rank >= 1),
    state            text NOT NULL DEFAULT 'proposed'
        CHECK (state IN ('proposed', 'observed', 'labelled', 'expired')),
    label            text,
    label_source     text,
    labelled_by      text,
    labelled_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       text NOT NULL DEFAULT current_user,
    UNIQUE (model_version_id, catalog_id, object_id, iteration),
    UNIQUE (model_version_id, catalog_id, iteration, rank),
    CHECK ((state = 'labelled') = (label IS NOT NULL)),
    CHECK ((label IS NULL) = (label_source IS NULL))
);
CREATE INDEX ix_label_queue_labelled ON skyclass.label_queue (catalog_id, object_id)
    WHERE state = 'labelled';
COMMENT ON TABLE skyclass.label_queue IS
    'Active-learning queue: objects proposed for follow-up (e.g. spectroscopy) by a model '
    'version''s uncertainty, ranked per iteration; state proposed -> observed -> labelled '
    '(or expired), with the label and its provenance.';

CREATE TABLE skyclass.learning_simulation (
    simulation_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    catalog_name   text NOT NULL,
    feature_set_id integer REFERENCES skyclass.feature_set ON DELETE SET NULL,
    label_column   text NOT NULL,
    target_class   text NOT NULL,
    purity         float8 NOT NULL CHECK (purity > 0 AND purity < 1),
    params         jsonb NOT NULL,
    seconds        float8 NOT NULL CHECK (seconds >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL DEFAULT current_user
);
COMMENT ON TABLE skyclass.learning_simulation IS
    'A simulated active-learning loop on labelled objects (skyclass queue simulate): '
    'start size, step, rounds, seeds, model and the held-out test set.';

CREATE TABLE skyclass.learning_curve (
    simulation_id   bigint NOT NULL REFERENCES skyclass.learning_simulation ON DELETE CASCADE,
    strategy        text NOT NULL,
    seed            integer NOT NULL,
    round           integer NOT NULL CHECK (round >= 0),
    n_labels        integer NOT NULL CHECK (n_labels > 0),
    accuracy        float8 NOT NULL CHECK (accuracy BETWEEN 0 AND 1),
    completeness_at_purity float8 CHECK (completeness_at_purity BETWEEN 0 AND 1),
    PRIMARY KEY (simulation_id, strategy, seed, round)
);
COMMENT ON TABLE skyclass.learning_curve IS
    'Learning curves of a simulation: held-out accuracy and the target class''s completeness '
    'at the purity target after each round, per strategy and seed.';

CREATE TRIGGER learning_simulation_immutable BEFORE UPDATE ON skyclass.learning_simulation
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();

GRANT SELECT ON skyclass.label_queue, skyclass.learning_simulation, skyclass.learning_curve
    TO skyclass_reader;

CREATE OR REPLACE FUNCTION skyclass.label_queue_guard()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF (NEW.model_version_id, NEW.catalog_id, NEW.object_id, NEW.strategy, NEW.ood_weighted,
        NEW.score, NEW.iteration, NEW.rank, NEW.created_at, NEW.created_by)
       IS DISTINCT FROM
       (OLD.model_version_id, OLD.catalog_id, OLD.object_id, OLD.strategy, OLD.ood_weighted,
        OLD.score, OLD.iteration, OLD.rank, OLD.created_at, OLD.created_by) THEN
        RAISE EXCEPTION 'a queue entry''s proposal is immutable; only its state and label change'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF OLD.state IN ('labelled', 'expired') AND NEW IS DISTINCT FROM OLD THEN
        RAISE EXCEPTION 'queue entry % of object % is % and cannot change',
            OLD.queue_id, OLD.object_id, OLD.state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF OLD.state = 'observed' AND NEW.state = 'proposed' THEN
        RAISE EXCEPTION 'queue entry % of object % was observed: it cannot be proposed again',
            OLD.queue_id, OLD.object_id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NEW.state = 'labelled' AND OLD.state <> 'labelled' THEN
        NEW.labelled_at := now();
        NEW.labelled_by := current_user;
    END IF;
    RETURN NEW;
END
$function$;
COMMENT ON FUNCTION skyclass.label_queue_guard() IS
'BEFORE UPDATE trigger of skyclass.label_queue: the proposal is immutable, states only move '
'forward (proposed -> observed -> labelled, or expired), labelled and expired entries are '
'final, and labelling stamps labelled_at and labelled_by.';

CREATE TRIGGER label_queue_guard BEFORE UPDATE ON skyclass.label_queue
    FOR EACH ROW EXECUTE FUNCTION skyclass.label_queue_guard();

CREATE OR REPLACE FUNCTION skyclass.create_label_queue(target text, catalog text, strategy text, budget integer, ood_weight boolean DEFAULT false, seed integer DEFAULT 0)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    t        record;
    cat      skyclass.catalog;
    snap     text;
    shift    bigint;
    next_it  integer;
    n        integer;
BEGIN
    IF strategy IS NULL OR strategy NOT IN ('entropy', 'margin', 'least_confident', 'random') THEN
        RAISE EXCEPTION 'strategy must be entropy, margin, least_confident or random, not %',
            quote_literal(coalesce(strategy, 'NULL')) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF budget IS NULL OR budget < 1 OR budget > 1000000 THEN
        RAISE EXCEPTION 'budget must be between 1 and 1000000, not %', budget
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ood_weight IS NULL OR seed IS NULL THEN
        RAISE EXCEPTION 'ood_weight and seed must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := skyclass.resolve_scoring_target(target);
    SELECT * INTO cat FROM skyclass.catalog AS c WHERE c.name = create_label_queue.catalog;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'catalog % is not registered', quote_literal(coalesce(catalog, 'NULL'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM skyclass.prediction AS p
                    WHERE p.model_version_id = t.model_version_id
                      AND p.catalog_id = cat.catalog_id) THEN
        RAISE EXCEPTION 'catalog % has no predictions by model version %', cat.name,
            t.model_version_id USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('score it first: skyclass score %s --catalog %s', target, cat.name);
    END IF;
    IF ood_weight THEN
        SELECT max(d.domain_shift_id) INTO shift FROM skyclass.domain_shift AS d
         WHERE d.model_version_id = t.model_version_id AND d.catalog_id = cat.catalog_id;
        IF shift IS NULL THEN
            RAISE EXCEPTION 'ood_weight needs a domain analysis of model version % on catalog %',
                t.model_version_id, cat.name USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = format('run: skyclass domain %s --catalog %s', target, cat.name);
        END IF;
    END IF;
    -- Objects of the version's own training snapshot on this catalog are labelled already.
    SELECT s.table_name INTO snap
      FROM skyclass.model_version AS v
      JOIN skyclass.training_snapshot AS s USING (snapshot_id)
      JOIN skyclass.feature_set AS fs ON fs.feature_set_id = s.feature_set_id
     WHERE v.model_version_id = t.model_version_id AND fs.catalog_id = cat.catalog_id;
    -- One queue per version and catalog at a time: concurrent calls take turns on a row of
    -- skyclass.operation_lock (no advisory keys: any role could take those).
    INSERT INTO skyclass.operation_lock (resource)
    VALUES (format('catalog:%s:label_queue:%s', cat.name, t.model_version_id))
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM skyclass.operation_lock AS l
      WHERE l.resource = format('catalog:%s:label_queue:%s', cat.name, t.model_version_id)
        FOR UPDATE;
    SELECT coalesce(max(q.iteration), 0) + 1 INTO next_it FROM skyclass.label_queue AS q
     WHERE q.model_version_id = t.model_version_id AND q.catalog_id = cat.catalog_id;
    EXECUTE format($sql$
        INSERT INTO skyclass.label_queue (model_version_id, catalog_id, object_id, strategy,
                    ood_weighted, score, iteration, rank)
        SELECT $1, $2, s.object_id, $3, $4, s.score, $5,
               row_number() OVER (ORDER BY s.score DESC, s.object_id)
          FROM (SELECT p.object_id,
                       CASE $3
                         WHEN 'entropy' THEN (SELECT -sum(CASE WHEN e > 0 THEN e * ln(e) ELSE 0 END)
                                                FROM unnest(p.probabilities) AS e)
                         WHEN 'least_confident' THEN 1 - (SELECT max(e) FROM unnest(p.probabilities) AS e)
                         WHEN 'margin' THEN 1 - (SELECT max(e) - coalesce(min(e), 0) FROM
                                                   (SELECT e FROM unnest(p.probabilities) AS e
                                                     ORDER BY e DESC LIMIT 2) AS top2)
                         ELSE (hashint8extended(p.object_id, $6) & 9007199254740991)::float8
                              / 9007199254740992
                       END * CASE WHEN $4 THEN coalesce(d.propensity, 0) ELSE 1 END AS score
                  FROM skyclass.prediction AS p
                  LEFT JOIN skyclass.domain_object AS d
                         ON $4 AND d.domain_shift_id = $7 AND d.object_id = p.object_id
                 WHERE p.model_version_id = $1 AND p.catalog_id = $2
                   AND NOT EXISTS (SELECT FROM skyclass.label_queue AS q
                                    WHERE q.model_version_id = $1 AND q.catalog_id = $2
                                      AND q.object_id = p.object_id AND q.state <> 'expired')
                   %s
                 ORDER BY score DESC, p.object_id
                 LIMIT $8) AS s
        $sql$,
        CASE WHEN snap IS NULL THEN ''
             ELSE format('AND NOT EXISTS (SELECT FROM snapshots.%I AS l '
                         'WHERE l.object_id = p.object_id)', snap) END)
    USING t.model_version_id, cat.catalog_id, strategy, ood_weight, next_it, seed::bigint,
          shift, budget;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RAISE EXCEPTION 'no unlabelled, unqueued object of catalog % is left to propose', cat.name
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN next_it;
END
$function$;
COMMENT ON FUNCTION skyclass.create_label_queue(text,text,text,integer,boolean,integer) IS
'Propose the budget objects of a catalog whose labels would teach a model version most: '
'scored from the version''s stored predictions by entropy, margin (1 - (p1 - p2)), '
'least_confident (1 - max p) or random (seeded hash), optionally times the domain '
'propensity p(application | x) (ood_weight, from skyclass domain), leaving out objects already '
'queued or in the version''s training snapshot. Writes the next iteration of '
'skyclass.label_queue and returns its number.';
"""

DOWNGRADE = r"""
DROP FUNCTION skyclass.create_label_queue(text, text, text, integer, boolean, integer);
DROP TABLE skyclass.learning_curve;
DROP TABLE skyclass.learning_simulation;
DROP TABLE skyclass.label_queue;
DROP FUNCTION skyclass.label_queue_guard();
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
