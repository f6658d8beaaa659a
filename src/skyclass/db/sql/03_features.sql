-- skyclass head SQL: Feature definitions and their builds (feature sets).
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

CREATE OR REPLACE FUNCTION skyclass.feature_differences(wanted jsonb, built jsonb)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE STRICT
AS $function$
DECLARE
    parts text[] := '{}';
    f     record;
BEGIN
    IF jsonb_typeof(wanted -> 'features') IS DISTINCT FROM 'array'
       OR jsonb_typeof(built -> 'features') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'feature_differences expects two canonical specs with a features array'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR f IN
        SELECT coalesce(w.value ->> 'name', o.value ->> 'name') AS name,
               w.value AS w, o.value AS o, w.ord AS wo, o.ord AS oo
          FROM jsonb_array_elements(wanted -> 'features') WITH ORDINALITY AS w(value, ord)
          FULL JOIN jsonb_array_elements(built -> 'features') WITH ORDINALITY AS o(value, ord)
            ON w.value ->> 'name' = o.value ->> 'name'
         ORDER BY coalesce(w.ord, o.ord + 100000)
    LOOP
        IF f.o IS NULL THEN
            parts := parts || format('%s missing', f.name);
        ELSIF f.w IS NULL THEN
            parts := parts || format('%s extra', f.name);
        ELSIF f.w ->> 'expr' IS DISTINCT FROM f.o ->> 'expr' THEN
            parts := parts || format('%s is %s, not %s', f.name, f.o ->> 'expr', f.w ->> 'expr');
        ELSIF f.w IS DISTINCT FROM f.o THEN
            parts := parts || format('%s differs in group, missing or nondetection', f.name);
        ELSIF f.wo <> f.oo THEN
            parts := parts || format('%s is feature %s, not %s', f.name, f.oo, f.wo);
        END IF;
    END LOOP;
    IF cardinality(parts) = 0 THEN
        RETURN 'same features';
    END IF;
    RETURN array_to_string(parts, ', ');
END
$function$;
COMMENT ON FUNCTION skyclass.feature_differences(jsonb,jsonb) IS
'How the features of canonical spec built differ from those of wanted (missing, extra, other '
'expression, other options or order), as one line of text.';

CREATE OR REPLACE FUNCTION skyclass.feature_set_guard()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    -- The only change allowed: the catalog was dropped (ON DELETE SET NULL).
    IF NEW.catalog_id IS NULL AND OLD.catalog_id IS NOT NULL
       AND to_jsonb(NEW) - 'catalog_id' = to_jsonb(OLD) - 'catalog_id' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% rows are immutable; register a new one instead', TG_TABLE_NAME
        USING ERRCODE = 'object_not_in_prerequisite_state';
END
$function$;
COMMENT ON FUNCTION skyclass.feature_set_guard() IS
'Trigger function: refuses UPDATE of feature builds except catalog_id becoming NULL when '
'their catalog is dropped.';
