-- skyclass head SQL: Deployments: named aliases of model versions and their history.
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

CREATE OR REPLACE FUNCTION skyclass.deployment_guard()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
DECLARE
    new_model integer;
    new_task  text;
    old_model text;
    old_task  text;
BEGIN
    SELECT v.model_id, v.task INTO new_model, new_task
      FROM skyclass.model_version AS v WHERE v.model_version_id = NEW.model_version_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % does not exist', NEW.model_version_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.model_id := new_model;
    ELSE
        IF NEW.name <> OLD.name THEN
            RAISE EXCEPTION 'deployment names cannot change (% -> %); create a new deployment',
                OLD.name, NEW.name USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        IF new_model <> OLD.model_id THEN
            SELECT m.name, m.task INTO old_model, old_task
              FROM skyclass.model AS m WHERE m.model_id = OLD.model_id;
            RAISE EXCEPTION 'deployment % is of model % (%), model version % is not (it is a % model)',
                OLD.name, old_model, old_task, NEW.model_version_id, new_task
                USING ERRCODE = 'check_violation',
                      HINT = 'a deployment keeps one model; create another deployment for this one';
        END IF;
        NEW.model_id := OLD.model_id;
        NEW.created_at := OLD.created_at;
        NEW.created_by := OLD.created_by;
        NEW.updated_at := now();
        NEW.updated_by := current_user;
    END IF;
    RETURN NEW;
END
$function$;
COMMENT ON FUNCTION skyclass.deployment_guard() IS
'Trigger function: a deployment keeps its model (and task) and its name; stamps updates.';

CREATE OR REPLACE FUNCTION skyclass.deployment_log()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO skyclass.deployment_history (name, model_version_id, previous_version_id)
        VALUES (NEW.name, NEW.model_version_id, NULL);
    ELSIF TG_OP = 'UPDATE' THEN
        IF NEW.model_version_id IS DISTINCT FROM OLD.model_version_id THEN
            INSERT INTO skyclass.deployment_history (name, model_version_id, previous_version_id)
            VALUES (NEW.name, NEW.model_version_id, OLD.model_version_id);
        END IF;
    ELSE
        INSERT INTO skyclass.deployment_history (name, model_version_id, previous_version_id)
        VALUES (OLD.name, NULL, OLD.model_version_id);
    END IF;
    RETURN NULL;
END
$function$;
COMMENT ON FUNCTION skyclass.deployment_log() IS
'Trigger function: appends every deployment change to skyclass.deployment_history.';

CREATE OR REPLACE FUNCTION skyclass.deploy(deployment text, model_version bigint, description text DEFAULT NULL::text)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    previous bigint;
BEGIN
    IF deployment IS NULL OR deployment !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid deployment name %: use a-z, 0-9 and _, starting with a letter, '
            'at most 63 characters', quote_literal(coalesce(deployment, 'NULL'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF model_version IS NULL THEN
        RAISE EXCEPTION 'model_version must be a model_version_id, not NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'remove a deployment with DELETE FROM skyclass.deployment';
    END IF;
    SELECT d.model_version_id INTO previous
      FROM skyclass.deployment AS d WHERE d.name = deployment FOR UPDATE;
    IF FOUND THEN
        UPDATE skyclass.deployment AS d
           SET model_version_id = model_version,
               description = coalesce(deploy.description, d.description)
         WHERE d.name = deployment;
    ELSE
        INSERT INTO skyclass.deployment (name, model_id, model_version_id, description)
        VALUES (deployment, 0, model_version, deploy.description);
    END IF;
    RETURN previous;
END
$function$;
COMMENT ON FUNCTION skyclass.deploy(text,bigint,text) IS
'Point deployment at a model version (creating it if new) in one statement; returns the '
'previous version (NULL when new). Refused when the version belongs to another model (23514) '
'or does not exist (23503); a bad name or a NULL version: 22023.';

CREATE OR REPLACE FUNCTION skyclass.deployed_version(deployment text, at_time timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS bigint
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE WHEN at_time IS NULL THEN
               (SELECT d.model_version_id FROM skyclass.deployment AS d WHERE d.name = deployment)
           ELSE
               (SELECT h.model_version_id FROM skyclass.deployment_history AS h
                 WHERE h.name = deployment AND h.switched_at <= at_time
                 ORDER BY h.switched_at DESC, h.history_id DESC LIMIT 1)
           END
$function$;
COMMENT ON FUNCTION skyclass.deployed_version(text,timestamp with time zone) IS
'The model version a deployment points at now, or pointed at at_time (from the history); NULL'
' when it does not exist (or did not then).';
