-- skyclass head SQL: Published queries over predictions.
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

CREATE OR REPLACE FUNCTION skyclass.class_changes(version_a bigint, version_b bigint, catalog text DEFAULT NULL::text)
 RETURNS TABLE(catalog text, object_id bigint, label_a text, probability_a real, label_b text, probability_b real)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT c.name, a.object_id, a.top_label, a.top_probability, b.top_label, b.top_probability
      FROM skyclass.prediction AS a
      JOIN skyclass.prediction AS b
        ON b.catalog_id = a.catalog_id AND b.object_id = a.object_id
      JOIN skyclass.catalog AS c ON c.catalog_id = a.catalog_id
     WHERE a.model_version_id = version_a AND b.model_version_id = version_b
       AND a.top_label <> b.top_label
       AND (class_changes.catalog IS NULL OR c.name = class_changes.catalog)
$function$;
COMMENT ON FUNCTION skyclass.class_changes(bigint,bigint,text) IS
'Objects whose top label differs between two model versions (optionally in one catalog), with'
' both labels and probabilities.';
