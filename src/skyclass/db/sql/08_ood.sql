-- skyclass head SQL: Out-of-distribution scores (the OOD forest of a model version).
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

CREATE OR REPLACE FUNCTION skyclass.ood_percentile(model_version bigint, features real[])
 RETURNS real
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE
AS $function$
DECLARE
    m skyclass.ood_model;
BEGIN
    IF model_version IS NULL OR features IS NULL THEN
        RAISE EXCEPTION 'model_version and features must not be NULL' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO m FROM skyclass.ood_model AS o WHERE o.model_version_id = ood_percentile.model_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % has no OOD forest', model_version
            USING ERRCODE = '22023',
                  HINT = 'Fit one with `skyclass ood fit MODEL:VERSION` (or `skyclass domain`).';
    END IF;
    IF cardinality(features) <> cardinality(m.feature_names) THEN
        RAISE EXCEPTION 'expected % features (%), not %', cardinality(m.feature_names),
            array_to_string(m.feature_names, ', '), cardinality(features) USING ERRCODE = '22023';
    END IF;
    RETURN skyclass.score_percentile(
        (skyclass.predict_raw(m.ood_version_id, skyclass.fill_missing(features, m.fill)))[1],
        m.reference);
END
$function$;

COMMENT ON FUNCTION skyclass.ood_percentile(bigint,real[]) IS
'OOD percentile (0 to 100) of one row of features for a model version: its OOD forest''s '
'score read against held-out training scores (99 = stranger than 99% of them). Needs the '
'skyclass extension 0.3.0 and an OOD forest (skyclass ood fit). Bad arguments: 22023.';
