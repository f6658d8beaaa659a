-- skyclass head SQL: the portal service (skyclass serve).
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

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
