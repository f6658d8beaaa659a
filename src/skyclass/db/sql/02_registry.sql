-- skyclass head SQL: Model registry: append-only and immutable rows, the trusted artifact registrar.
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

CREATE OR REPLACE FUNCTION skyclass.refuse_update()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    RAISE EXCEPTION '% rows are immutable; register a new one instead', TG_TABLE_NAME
        USING ERRCODE = 'object_not_in_prerequisite_state';
END
$function$;
COMMENT ON FUNCTION skyclass.refuse_update() IS
'Trigger function: refuses UPDATE of immutable registry rows.';

CREATE OR REPLACE FUNCTION skyclass.refuse_change()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'object_not_in_prerequisite_state';
END
$function$;
COMMENT ON FUNCTION skyclass.refuse_change() IS
'Trigger function: refuses UPDATE and DELETE on append-only tables.';

CREATE OR REPLACE FUNCTION skyclass.model_artifact_register()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles AS r
                      WHERE r.rolname = current_user), false) THEN
        RAISE EXCEPTION 'only a superuser may register a model artifact; % is not one', current_user
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'An artifact is native code that every backend scoring its version loads.',
                  HINT = 'run `skyclass compile` as a superuser (docs/operations.md)';
    END IF;
    NEW.registered_by := current_user;
    RETURN NEW;
END
$function$;
COMMENT ON FUNCTION skyclass.model_artifact_register() IS
'Trigger function: refuses artifact inserts by non-superusers and stamps registered_by.';
