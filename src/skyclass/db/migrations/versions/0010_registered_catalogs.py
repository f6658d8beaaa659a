"""Registered catalogs, feature definitions apart from their builds, drops without orphans.

- ``skyclass.catalog`` gains ``kind`` (``ingested``: skyclass made the table;
  ``registered``: an existing table used in place) and ``source_schema`` /
  ``source_table`` (the archive's table behind a registered catalog, whose
  ``catalogs.<name>`` is a view renaming the mapped columns to
  ``object_id``/``ra``/``dec``).
- ``skyclass.catalog_registration``: who registered which table when, its row
  estimate, the checks run (with counts) and the Q3C index found or built.
- ``skyclass.feature_definition``: a named feature definition, versioned by
  the sha256 of its canonical JSON without the catalog (``definition_hash``).
  ``skyclass.feature_set`` rows become the builds of a definition on one
  catalog: they gain ``definition_hash``, ``column_map`` (spec column ->
  catalog column) and ``catalog_name`` (kept when the catalog is dropped:
  ``catalog_id`` becomes NULL, ON DELETE SET NULL, so model versions keep
  their provenance). Existing feature sets are converted exactly: the stored
  canonical spec is re-hashed and must give the stored ``spec_hash``, then
  its definition is the same JSON without ``catalog``.
- The feature-set immutability trigger lets exactly one change through: the
  catalog going away (``catalog_id`` to NULL).
- ``skyclass.scoring_feature_set`` finds the build of the model version's
  definition on the catalog and, when there is none, says what differs
  (through ``skyclass.feature_differences``).

Downgrade refuses while registered catalogs, mapped builds or builds of dropped
catalogs exist (they cannot be represented before this revision).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BEFORE = r"""
ALTER TABLE skyclass.catalog
    ADD COLUMN kind text NOT NULL DEFAULT 'ingested',
    ADD COLUMN source_schema text,
    ADD COLUMN source_table text,
    ADD CONSTRAINT ck_catalog_kind_known CHECK (kind IN ('ingested', 'registered')),
    ADD CONSTRAINT ck_catalog_source_of_registered
        CHECK ((kind = 'registered') = (source_table IS NOT NULL)
               AND (source_schema IS NULL) = (source_table IS NULL));
COMMENT ON COLUMN skyclass.catalog.kind IS
    'ingested: skyclass made catalogs.<name>; registered: catalogs.<name> is a view over '
    'source_schema.source_table, which skyclass never drops';

CREATE TABLE skyclass.catalog_registration (
    registration_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    catalog_id      integer NOT NULL REFERENCES skyclass.catalog ON DELETE CASCADE,
    source_schema   text NOT NULL,
    source_table    text NOT NULL,
    source_kind     text NOT NULL CHECK (source_kind IN ('table', 'partitioned table')),
    -- view column -> source column
    column_map      jsonb NOT NULL,
    row_estimate    bigint NOT NULL CHECK (row_estimate >= 0),
    -- each check run: what, how (unique index or one-time scan), offending rows
    checks          jsonb NOT NULL,
    q3c_index       text,
    index_created   boolean NOT NULL DEFAULT false,
    skyclass_version text NOT NULL,
    os_user         text NOT NULL,
    db_user         text NOT NULL DEFAULT current_user,
    registered_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_catalog_registration_catalog_id ON skyclass.catalog_registration (catalog_id);
COMMENT ON TABLE skyclass.catalog_registration IS
    'Provenance of a registered catalog: the table used in place, its column map, row estimate, '
    'the checks run with their counts, the Q3C index, who and when.';

CREATE TABLE skyclass.feature_definition (
    definition_hash text PRIMARY KEY CHECK (definition_hash ~ '^[0-9a-f]{64}$'),
    name            text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    definition      jsonb NOT NULL,
    feature_names   text[] NOT NULL CHECK (cardinality(feature_names) > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL DEFAULT current_user
);
CREATE INDEX ix_feature_definition_name ON skyclass.feature_definition (name);
COMMENT ON TABLE skyclass.feature_definition IS
    'Feature definitions: a name and ordered feature expressions, versioned by the sha256 of '
    'their canonical JSON (no catalog); skyclass.feature_set holds their builds per catalog.';
CREATE TRIGGER feature_definition_immutable BEFORE UPDATE ON skyclass.feature_definition
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();

ALTER TABLE skyclass.feature_set
    ADD COLUMN definition_hash text REFERENCES skyclass.feature_definition,
    ADD COLUMN column_map jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN catalog_name text;
COMMENT ON COLUMN skyclass.feature_set.column_map IS
    'Spec column -> catalog column used by this build ({} when the names are the same)';
COMMENT ON COLUMN skyclass.feature_set.catalog_id IS
    'The catalog built on; NULL once that catalog was dropped (its table is gone, the row stays '
    'for the model versions trained on it)';
"""

AFTER = r"""
ALTER TABLE skyclass.feature_set
    ALTER COLUMN definition_hash SET NOT NULL,
    ALTER COLUMN catalog_name SET NOT NULL,
    ALTER COLUMN catalog_id DROP NOT NULL,
    DROP CONSTRAINT feature_set_catalog_id_fkey,
    ADD CONSTRAINT feature_set_catalog_id_fkey FOREIGN KEY (catalog_id)
        REFERENCES skyclass.catalog ON DELETE SET NULL;
CREATE INDEX ix_feature_set_definition ON skyclass.feature_set (definition_hash, catalog_id);
COMMENT ON TABLE skyclass.feature_set IS
    'Feature builds: a definition computed for one catalog through a column map; spec is the '
    'canonical build spec, spec_hash its sha256, features.<table_name> the rows.';

CREATE FUNCTION skyclass.feature_set_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The only change allowed: the catalog was dropped (ON DELETE SET NULL).
    IF NEW.catalog_id IS NULL AND OLD.catalog_id IS NOT NULL
       AND to_jsonb(NEW) - 'catalog_id' = to_jsonb(OLD) - 'catalog_id' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% rows are immutable; register a new one instead', TG_TABLE_NAME
        USING ERRCODE = 'object_not_in_prerequisite_state';
END
$$;
COMMENT ON FUNCTION skyclass.feature_set_guard() IS
    'Trigger function: refuses UPDATE of feature builds except catalog_id becoming NULL when '
    'their catalog is dropped.';
DROP TRIGGER feature_set_immutable ON skyclass.feature_set;
CREATE TRIGGER feature_set_immutable BEFORE UPDATE ON skyclass.feature_set
    FOR EACH ROW EXECUTE FUNCTION skyclass.feature_set_guard();

CREATE FUNCTION skyclass.feature_differences(wanted jsonb, built jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
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
$$;
COMMENT ON FUNCTION skyclass.feature_differences(jsonb, jsonb) IS
    'How the features of canonical spec built differ from those of wanted (missing, extra, '
    'other expression, other options or order), as one line of text.';

CREATE OR REPLACE FUNCTION skyclass.scoring_feature_set(model_version bigint, catalog integer)
RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    own      record;
    found_id integer;
    cat_name text;
    others   text;
BEGIN
    SELECT fs.* INTO own
      FROM skyclass.model_version AS v JOIN skyclass.feature_set AS fs USING (feature_set_id)
     WHERE v.model_version_id = model_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % does not exist', model_version
            USING ERRCODE = 'undefined_object';
    END IF;
    IF own.catalog_id = catalog THEN
        RETURN own.feature_set_id;
    END IF;
    SELECT fs.feature_set_id INTO found_id
      FROM skyclass.feature_set AS fs
     WHERE fs.catalog_id = catalog AND fs.definition_hash = own.definition_hash
     ORDER BY fs.created_at DESC, fs.feature_set_id DESC LIMIT 1;
    IF found_id IS NOT NULL THEN
        RETURN found_id;
    END IF;
    SELECT c.name INTO cat_name FROM skyclass.catalog AS c WHERE c.catalog_id = catalog;
    SELECT string_agg(format('%s (definition %s: %s)', fs.name, left(fs.definition_hash, 12),
                             skyclass.feature_differences(own.spec, fs.spec)), '; '
                      ORDER BY fs.feature_set_id)
      INTO others
      FROM skyclass.feature_set AS fs
     WHERE fs.catalog_id = catalog AND fs.name = own.name;
    RAISE EXCEPTION 'catalog % has no build of feature definition % version % (the features of '
                    'model version %)%', cat_name, own.name, left(own.definition_hash, 12),
        model_version,
        CASE WHEN others IS NULL THEN ''
             ELSE '; its builds of that name have another definition: ' || others END
        USING ERRCODE = 'undefined_object',
              HINT = format('build it: skyclass features build SPEC --catalog %s '
                            '[--map SPEC_COLUMN=CATALOG_COLUMN ...]', cat_name);
END
$$;
COMMENT ON FUNCTION skyclass.scoring_feature_set(bigint, integer) IS
    'The feature build that feeds a model version on a catalog: the version''s own, or the '
    'newest build of the same feature definition (hash) on that catalog; otherwise an error '
    'naming what differs.';
"""

DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION skyclass.scoring_feature_set(model_version bigint, catalog integer)
RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    own   record;
    other integer;
BEGIN
    SELECT fs.* INTO own
      FROM skyclass.model_version AS v JOIN skyclass.feature_set AS fs USING (feature_set_id)
     WHERE v.model_version_id = model_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % does not exist', model_version
            USING ERRCODE = 'undefined_object';
    END IF;
    IF own.catalog_id = catalog THEN
        RETURN own.feature_set_id;
    END IF;
    SELECT fs.feature_set_id INTO other
      FROM skyclass.feature_set AS fs
     WHERE fs.catalog_id = catalog AND fs.name = own.name
       AND fs.feature_names = own.feature_names
       AND fs.spec -> 'features' IS NOT DISTINCT FROM own.spec -> 'features'
     ORDER BY fs.created_at DESC, fs.feature_set_id DESC LIMIT 1;
    IF other IS NULL THEN
        RAISE EXCEPTION 'catalog % has no feature set % with the features of model version %',
            (SELECT c.name FROM skyclass.catalog AS c WHERE c.catalog_id = catalog),
            own.name, model_version
            USING ERRCODE = 'undefined_object',
                  HINT = 'build the feature set for that catalog first (skyclass features build)';
    END IF;
    RETURN other;
END
$$;
COMMENT ON FUNCTION skyclass.scoring_feature_set(bigint, integer) IS
    'The feature set whose table feeds a model version on a catalog: the version''s own, or one '
    'of the same name and features built for that catalog.';
DROP FUNCTION skyclass.feature_differences(jsonb, jsonb);
DROP TRIGGER feature_set_immutable ON skyclass.feature_set;
CREATE TRIGGER feature_set_immutable BEFORE UPDATE ON skyclass.feature_set
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();
DROP FUNCTION skyclass.feature_set_guard();
DROP INDEX skyclass.ix_feature_set_definition;
ALTER TABLE skyclass.feature_set
    DROP CONSTRAINT feature_set_catalog_id_fkey,
    ALTER COLUMN catalog_id SET NOT NULL,
    ADD CONSTRAINT feature_set_catalog_id_fkey FOREIGN KEY (catalog_id)
        REFERENCES skyclass.catalog ON DELETE CASCADE,
    DROP COLUMN definition_hash,
    DROP COLUMN column_map,
    DROP COLUMN catalog_name;
COMMENT ON TABLE skyclass.feature_set IS
    'Feature set versions: the canonical spec, its sha256 (the version) and the table features.<table_name>.';
DROP TABLE skyclass.feature_definition;
DROP TABLE skyclass.catalog_registration;
ALTER TABLE skyclass.catalog
    DROP CONSTRAINT ck_catalog_source_of_registered,
    DROP CONSTRAINT ck_catalog_kind_known,
    DROP COLUMN source_table,
    DROP COLUMN source_schema,
    DROP COLUMN kind;
"""


def _hash(data: dict[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _as_hashed(spec: dict[str, Any]) -> dict[str, Any]:
    """The stored spec with the limits of non-detections as floats, as they were hashed.

    jsonb keeps ``26.0`` as written but prints ``1e+20`` as an integer; the
    canonical spec held floats there.
    """
    for feature in spec.get("features") or []:
        nd = feature.get("nondetection") if isinstance(feature, dict) else None
        if nd is not None:
            for key in ("above", "below"):
                if nd.get(key) is not None:
                    nd[key] = float(nd[key])
    return spec


def upgrade() -> None:
    op.execute(BEFORE)
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT fs.feature_set_id, fs.name, fs.spec_hash, fs.spec, fs.feature_names, c.name "
            "FROM skyclass.feature_set AS fs JOIN skyclass.catalog AS c USING (catalog_id) "
            "ORDER BY fs.feature_set_id"
        )
    ).fetchall()
    op.execute("ALTER TABLE skyclass.feature_set DISABLE TRIGGER feature_set_immutable")
    for set_id, name, spec_hash, spec, feature_names, catalog_name in rows:
        spec = _as_hashed(dict(spec))
        if _hash(spec) != spec_hash:
            raise RuntimeError(
                f"feature set {name} (id {set_id}): its stored spec does not hash to its "
                f"version {spec_hash[:12]}; not converting it. Restore the row or drop the "
                "feature set, then migrate again"
            )
        definition = {k: v for k, v in spec.items() if k != "catalog"}
        definition_hash = _hash(definition)
        bind.execute(
            sa.text(
                "INSERT INTO skyclass.feature_definition (definition_hash, name, definition, "
                "feature_names) VALUES (:h, :n, CAST(:d AS jsonb), :f) "
                "ON CONFLICT (definition_hash) DO NOTHING"
            ),
            {"h": definition_hash, "n": name, "d": json.dumps(definition), "f": feature_names},
        )
        bind.execute(
            sa.text(
                "UPDATE skyclass.feature_set SET definition_hash = :h, catalog_name = :c "
                "WHERE feature_set_id = :i"
            ),
            {"h": definition_hash, "c": catalog_name, "i": set_id},
        )
    op.execute("ALTER TABLE skyclass.feature_set ENABLE TRIGGER feature_set_immutable")
    op.execute(AFTER)


def downgrade() -> None:
    bind = op.get_bind()
    blockers = bind.execute(
        sa.text(
            "SELECT (SELECT count(*) FROM skyclass.catalog WHERE kind = 'registered'), "
            "(SELECT count(*) FROM skyclass.feature_set "
            " WHERE catalog_id IS NULL OR column_map <> '{}'::jsonb)"
        )
    ).one()
    if blockers[0] or blockers[1]:
        raise RuntimeError(
            f"cannot downgrade below 0010: {blockers[0]} registered catalogs and {blockers[1]} "
            "feature builds with a column map or of a dropped catalog exist; drop them first "
            "(skyclass catalog drop NAME --cascade)"
        )
    op.execute(DOWNGRADE)
