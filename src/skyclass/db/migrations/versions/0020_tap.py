"""IVOA TAP: the portal login role, TAP_SCHEMA as views over the registry, the UWS job list.

- Role ``skyclass_portal`` (LOGIN, member of ``skyclass_reader``): what the web
  service connects as. It reads what the reader reads, plus the UWS job list.
- ``skyclass.tap_published``: the relations TAP serves, one row each: the
  five ``TAP_SCHEMA`` tables, the published views
  ``skyclass.current_classification`` and ``skyclass.prediction_long``, and
  ``catalogs.<name>`` of every registered catalog that ``skyclass_reader`` may
  read. ``skyclass.tap_column`` gives their columns with VOTable datatypes,
  units, UCDs and descriptions (``skyclass.catalog_column`` for catalogs; the
  standard texts for ``TAP_SCHEMA``; the view comments otherwise). Both are
  views: TAP_SCHEMA can never disagree with the database.
- Schema ``tap_schema``: ``schemas``, ``tables``, ``columns``, ``keys`` and
  ``key_columns`` (TAP 1.1 column sets) as views over the two above, readable
  by ``skyclass_reader``.
- ``skyclass.tap_job``: the UWS 1.1 job list of ``/tap/async`` (parameters,
  phase, times, destruction, error, the serialized result). The portal role
  may insert, update and delete its rows; nobody else but the owner.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

UPGRADE = r"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'skyclass_portal') THEN
        CREATE ROLE skyclass_portal LOGIN;
    END IF;
END
$$;
GRANT skyclass_reader TO skyclass_portal;

CREATE SCHEMA tap_schema;
COMMENT ON SCHEMA tap_schema IS
    'IVOA TAP_SCHEMA (TAP 1.1): views over the skyclass registry describing what TAP serves.';

CREATE VIEW skyclass.tap_published AS
WITH fixed(schema_name, table_name, relation, table_type, description, table_index) AS (
    VALUES
    ('TAP_SCHEMA', 'TAP_SCHEMA.schemas', to_regclass('tap_schema.schemas'), 'table',
     'Schemas served by this TAP service.', 1),
    ('TAP_SCHEMA', 'TAP_SCHEMA.tables', to_regclass('tap_schema.tables'), 'table',
     'Tables served by this TAP service.', 2),
    ('TAP_SCHEMA', 'TAP_SCHEMA.columns', to_regclass('tap_schema.columns'), 'table',
     'Columns of the tables served by this TAP service.', 3),
    ('TAP_SCHEMA', 'TAP_SCHEMA.keys', to_regclass('tap_schema.keys'), 'table',
     'Foreign keys between the tables served.', 4),
    ('TAP_SCHEMA', 'TAP_SCHEMA.key_columns', to_regclass('tap_schema.key_columns'), 'table',
     'Columns of the foreign keys in TAP_SCHEMA.keys.', 5),
    ('skyclass', 'skyclass.current_classification',
     to_regclass('skyclass.current_classification'), 'view',
     'The predictions of the model version each deployment points at now, per catalog and '
     'object: class probabilities, top label, photo-z summaries. Join catalogs.<catalog> '
     'on object_id (and filter on catalog).', 10),
    ('skyclass', 'skyclass.prediction_long', to_regclass('skyclass.prediction_long'), 'view',
     'Predictions in long form: one row per object, model version and class, with the '
     'probability and its rank (1 = most probable).', 11)
)
SELECT schema_name, table_name, relation, table_type, description, table_index,
       NULL::integer AS catalog_id
  FROM fixed
 WHERE relation IS NOT NULL
UNION ALL
SELECT 'catalogs', 'catalogs.' || c.name, r.oid::regclass,
       CASE WHEN r.relkind = 'v' THEN 'view' ELSE 'table' END,
       coalesce(c.description, 'Catalog ' || c.name || ' (skyclass ' || c.kind || ' catalog).'),
       100 + (row_number() OVER (ORDER BY c.name))::integer, c.catalog_id
  FROM skyclass.catalog AS c
  JOIN pg_class AS r ON r.relname = c.table_name
  JOIN pg_namespace AS n ON n.oid = r.relnamespace AND n.nspname = c.schema_name
 WHERE c.schema_name = 'catalogs' AND c.table_name = c.name
   AND r.relkind IN ('r', 'p', 'v', 'm')
   AND has_table_privilege('skyclass_reader', r.oid, 'SELECT');
COMMENT ON VIEW skyclass.tap_published IS
    'The relations IVOA TAP serves (TAP_SCHEMA, the published views, every catalog '
    'skyclass_reader may read), with their TAP names; nothing else is reachable through TAP.';

CREATE VIEW skyclass.tap_column AS
WITH known(table_name, column_name, unit, ucd, description, principal, std) AS (
    VALUES
    ('TAP_SCHEMA.schemas', 'schema_name', NULL, 'meta.id', 'schema name, for reference', 1, 1),
    ('TAP_SCHEMA.schemas', 'utype', NULL, NULL, 'lists the utypes of schemas', 0, 1),
    ('TAP_SCHEMA.schemas', 'description', NULL, 'meta.note', 'describes schemas', 1, 1),
    ('TAP_SCHEMA.schemas', 'schema_index', NULL, NULL,
     'recommended sort order when listing schemas', 0, 1),
    ('TAP_SCHEMA.tables', 'schema_name', NULL, 'meta.id', 'the schema name from TAP_SCHEMA.schemas', 1, 1),
    ('TAP_SCHEMA.tables', 'table_name', NULL, 'meta.id;meta.main',
     'the fully qualified table name', 1, 1),
    ('TAP_SCHEMA.tables', 'table_type', NULL, NULL, 'one of: table, view', 1, 1),
    ('TAP_SCHEMA.tables', 'utype', NULL, NULL, 'lists the utype of tables', 0, 1),
    ('TAP_SCHEMA.tables', 'description', NULL, 'meta.note', 'describes tables', 1, 1),
    ('TAP_SCHEMA.tables', 'table_index', NULL, NULL,
     'recommended sort order when listing tables', 0, 1),
    ('TAP_SCHEMA.columns', 'table_name', NULL, 'meta.id', 'the table this column belongs to', 1, 1),
    ('TAP_SCHEMA.columns', 'column_name', NULL, 'meta.id;meta.main', 'the column name', 1, 1),
    ('TAP_SCHEMA.columns', 'utype', NULL, NULL, 'lists the utypes of columns', 0, 1),
    ('TAP_SCHEMA.columns', 'ucd', NULL, NULL, 'lists the UCDs of columns', 1, 1),
    ('TAP_SCHEMA.columns', 'unit', NULL, NULL, 'lists the unit used for column values', 1, 1),
    ('TAP_SCHEMA.columns', 'description', NULL, 'meta.note', 'describes the columns', 1, 1),
    ('TAP_SCHEMA.columns', 'datatype', NULL, NULL, 'lists the ADQL datatype of columns', 1, 1),
    ('TAP_SCHEMA.columns', 'arraysize', NULL, NULL, 'lists the size of variable-length columns',
     0, 1),
    ('TAP_SCHEMA.columns', 'xtype', NULL, NULL, 'a DALI or custom extended type annotation', 0, 1),
    ('TAP_SCHEMA.columns', 'size', NULL, NULL, 'deprecated: use arraysize', 0, 1),
    ('TAP_SCHEMA.columns', 'principal', NULL, NULL,
     'a principal column; 1 means 1, 0 means 0', 0, 1),
    ('TAP_SCHEMA.columns', 'indexed', NULL, NULL, 'an indexed column; 1 means 1, 0 means 0', 0, 1),
    ('TAP_SCHEMA.columns', 'std', NULL, NULL,
     'a standard column; 1 means 1, 0 means 0', 0, 1),
    ('TAP_SCHEMA.columns', 'column_index', NULL, NULL,
     'recommended sort order when listing columns', 0, 1),
    ('TAP_SCHEMA.keys', 'key_id', NULL, 'meta.id', 'unique key identifier', 1, 1),
    ('TAP_SCHEMA.keys', 'from_table', NULL, NULL, 'fully qualified table name', 1, 1),
    ('TAP_SCHEMA.keys', 'target_table', NULL, NULL, 'fully qualified table name', 1, 1),
    ('TAP_SCHEMA.keys', 'utype', NULL, NULL, 'lists the utype of keys', 0, 1),
    ('TAP_SCHEMA.keys', 'description', NULL, 'meta.note', 'describes keys', 1, 1),
    ('TAP_SCHEMA.key_columns', 'key_id', NULL, 'meta.id', 'key identifier from TAP_SCHEMA.keys', 1, 1),
    ('TAP_SCHEMA.key_columns', 'from_column', NULL, NULL, 'key column name in the from_table', 1, 1),
    ('TAP_SCHEMA.key_columns', 'target_column', NULL, NULL,
     'key column name in the target_table', 1, 1),
    ('skyclass.current_classification', 'deployment', NULL, 'meta.id',
     'deployment name (a stable name of the model version in use)', 1, 0),
    ('skyclass.current_classification', 'catalog', NULL, 'meta.id', 'catalog name', 1, 0),
    ('skyclass.current_classification', 'object_id', NULL, 'meta.id;meta.main',
     'object identifier in the catalog', 1, 0),
    ('skyclass.current_classification', 'model_version_id', NULL, 'meta.id;meta.code',
     'model version that made the prediction', 1, 0),
    ('skyclass.current_classification', 'top_label', NULL, 'src.class', 'most probable class', 1, 0),
    ('skyclass.current_classification', 'top_probability', NULL, 'stat.probability',
     'probability of the most probable class', 1, 0),
    ('skyclass.current_classification', 'probabilities', NULL, 'stat.probability',
     'class probabilities in the model version''s class order', 0, 0),
    ('skyclass.current_classification', 'z_mean', NULL, 'src.redshift.phot;stat.mean',
     'photometric redshift: mean of the PDF (NULL for classifiers)', 0, 0),
    ('skyclass.current_classification', 'z_median', NULL, 'src.redshift.phot;stat.median',
     'photometric redshift: median of the PDF', 0, 0),
    ('skyclass.current_classification', 'z_mode', NULL, 'src.redshift.phot',
     'photometric redshift: mode of the PDF', 0, 0),
    ('skyclass.current_classification', 'z_lo68', NULL, 'src.redshift.phot;stat.min',
     'lower bound of the 68% interval of the redshift PDF', 0, 0),
    ('skyclass.current_classification', 'z_hi68', NULL, 'src.redshift.phot;stat.max',
     'upper bound of the 68% interval of the redshift PDF', 0, 0),
    ('skyclass.current_classification', 'z_lo95', NULL, 'src.redshift.phot;stat.min',
     'lower bound of the 95% interval of the redshift PDF', 0, 0),
    ('skyclass.current_classification', 'z_hi95', NULL, 'src.redshift.phot;stat.max',
     'upper bound of the 95% interval of the redshift PDF', 0, 0),
    ('skyclass.current_classification', 'run_id', NULL, 'meta.id',
     'scoring run that wrote the prediction', 0, 0),
    ('skyclass.current_classification', 'scored_at', NULL, 'time.processing',
     'when the prediction was written', 0, 0),
    ('skyclass.prediction_long', 'catalog', NULL, 'meta.id', 'catalog name', 1, 0),
    ('skyclass.prediction_long', 'object_id', NULL, 'meta.id;meta.main',
     'object identifier in the catalog', 1, 0),
    ('skyclass.prediction_long', 'model_version_id', NULL, 'meta.id;meta.code',
     'model version that made the prediction', 1, 0),
    ('skyclass.prediction_long', 'class', NULL, 'src.class', 'class name', 1, 0),
    ('skyclass.prediction_long', 'probability', NULL, 'stat.probability',
     'probability of the class', 1, 0),
    ('skyclass.prediction_long', 'rank', NULL, 'meta.number',
     'rank of the class (1 = most probable)', 1, 0)
),
adql_reserved(word) AS (
    -- ADQL 2.1 reserved words (SQL-92's and ADQL's own, DEC excepted as ADQL does):
    -- a column of such a name is published delimited ("size"), as TAP requires
    SELECT unnest(ARRAY[
    'absolute', 'action', 'add', 'all', 'allocate', 'alter', 'and', 'any', 'are', 'as', 'asc',
    'assertion', 'at', 'authorization', 'avg', 'begin', 'between', 'bit', 'bit_length', 'both',
    'by', 'cascade', 'cascaded', 'case', 'cast', 'catalog', 'char', 'character', 'char_length',
    'character_length', 'check', 'close', 'coalesce', 'collate', 'collation', 'column',
    'commit', 'connect', 'connection', 'constraint', 'constraints', 'continue', 'convert',
    'corresponding', 'count', 'create', 'cross', 'current', 'current_date', 'current_time',
    'current_timestamp', 'current_user', 'cursor', 'date', 'day', 'deallocate', 'decimal',
    'declare', 'default', 'deferrable', 'deferred', 'delete', 'desc', 'describe', 'descriptor',
    'diagnostics', 'disconnect', 'distinct', 'domain', 'double', 'drop', 'else', 'end',
    'end-exec', 'escape', 'except', 'exception', 'exec', 'execute', 'exists', 'external',
    'extract', 'false', 'fetch', 'first', 'float', 'for', 'foreign', 'found', 'from', 'full',
    'get', 'global', 'go', 'goto', 'grant', 'group', 'having', 'hour', 'identity', 'immediate',
    'in', 'indicator', 'initially', 'inner', 'input', 'insensitive', 'insert', 'int',
    'integer', 'intersect', 'interval', 'into', 'is', 'isolation', 'join', 'key', 'language',
    'last', 'leading', 'left', 'level', 'like', 'local', 'lower', 'match', 'max', 'min',
    'minute', 'module', 'month', 'names', 'national', 'natural', 'nchar', 'next', 'no', 'not',
    'null', 'nullif', 'numeric', 'octet_length', 'of', 'on', 'only', 'open', 'option', 'or',
    'order', 'outer', 'output', 'overlaps', 'pad', 'partial', 'position', 'precision',
    'prepare', 'preserve', 'primary', 'prior', 'privileges', 'procedure', 'public', 'read',
    'real', 'references', 'relative', 'restrict', 'revoke', 'right', 'rollback', 'rows',
    'schema', 'scroll', 'second', 'section', 'select', 'session', 'session_user', 'set',
    'size', 'smallint', 'some', 'space', 'sql', 'sqlcode', 'sqlerror', 'sqlstate', 'substring',
    'sum', 'system_user', 'table', 'temporary', 'then', 'time', 'timestamp', 'timezone_hour',
    'timezone_minute', 'to', 'trailing', 'transaction', 'translate', 'translation', 'trim',
    'true', 'union', 'unique', 'unknown', 'update', 'upper', 'usage', 'user', 'using', 'value',
    'values', 'varchar', 'varying', 'view', 'when', 'whenever', 'where', 'with', 'work',
    'write', 'year', 'zone', 'abs', 'acos', 'area', 'asin', 'atan', 'atan2', 'bigint', 'box',
    'ceiling', 'centroid', 'circle', 'contains', 'coord1', 'coord2', 'coordsys', 'cos', 'cot',
    'degrees', 'distance', 'exp', 'floor', 'ilike', 'intersects', 'in_unit', 'log', 'log10',
    'mod', 'offset', 'pi', 'point', 'polygon', 'power', 'radians', 'region', 'rand', 'round',
    'sin', 'sqrt', 'top', 'tan', 'truncate'
    ])
),
attributes AS (
    SELECT p.table_name, p.catalog_id, p.relation, a.attname::text AS column_name, a.attnum,
           a.atttypid,
           coalesce(nullif(t.typelem, 0), a.atttypid) AS base_type,
           t.typelem <> 0 AND t.typlen = -1 AS is_array
      FROM skyclass.tap_published AS p
      JOIN pg_attribute AS a ON a.attrelid = p.relation AND a.attnum > 0 AND NOT a.attisdropped
      JOIN pg_type AS t ON t.oid = a.atttypid
)
SELECT a.table_name,
       CASE WHEN a.column_name ~ '^[a-z][a-z0-9_]*$'
                 AND a.column_name NOT IN (SELECT word FROM adql_reserved)
            THEN a.column_name
            ELSE '"' || replace(a.column_name, '"', '""') || '"' END AS column_name,
       coalesce(cc.description, k.description, col_description(a.relation, a.attnum),
                CASE a.column_name WHEN 'object_id' THEN 'object identifier'
                                   WHEN 'ra' THEN 'right ascension (ICRS)'
                                   WHEN 'dec' THEN 'declination (ICRS)' END) AS description,
       coalesce(cc.unit, k.unit,
                CASE WHEN a.catalog_id IS NOT NULL AND a.column_name IN ('ra', 'dec')
                     THEN 'deg' END) AS unit,
       coalesce(cc.ucd, k.ucd,
                CASE WHEN a.catalog_id IS NULL THEN NULL
                     WHEN a.column_name = 'object_id' THEN 'meta.id;meta.main'
                     WHEN a.column_name = 'ra' THEN 'pos.eq.ra;meta.main'
                     WHEN a.column_name = 'dec' THEN 'pos.eq.dec;meta.main' END) AS ucd,
       NULL::text AS utype,
       CASE WHEN a.base_type = 'int2'::regtype THEN 'short'
            WHEN a.base_type = 'int4'::regtype THEN 'int'
            WHEN a.base_type = 'int8'::regtype THEN 'long'
            WHEN a.base_type = 'float4'::regtype THEN 'float'
            WHEN a.base_type IN ('float8'::regtype, 'numeric'::regtype) THEN 'double'
            WHEN a.base_type = 'bool'::regtype THEN 'boolean'
            ELSE 'char' END AS datatype,
       CASE WHEN a.is_array OR a.base_type NOT IN ('int2'::regtype, 'int4'::regtype,
                 'int8'::regtype, 'float4'::regtype, 'float8'::regtype, 'numeric'::regtype,
                 'bool'::regtype)
            THEN '*' END AS arraysize,
       CASE WHEN a.base_type IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
                 AND NOT a.is_array
            THEN 'timestamp' END AS xtype,
       NULL::integer AS size,
       CASE WHEN coalesce(k.principal, 0) = 1
                 OR (a.catalog_id IS NOT NULL AND a.column_name IN ('object_id', 'ra', 'dec'))
            THEN 1 ELSE 0 END AS principal,
       CASE WHEN EXISTS (SELECT FROM pg_index AS i
                          WHERE i.indrelid = a.relation AND i.indkey[0] = a.attnum)
                 OR (a.column_name IN ('ra', 'dec') AND EXISTS (
                        SELECT FROM pg_index AS i
                         WHERE i.indrelid = a.relation
                           AND pg_get_indexdef(i.indexrelid) LIKE '%q3c_ang2ipix%'))
            THEN 1 ELSE 0 END AS indexed,
       coalesce(k.std, 0) AS std,
       a.attnum::integer AS column_index
  FROM attributes AS a
  LEFT JOIN known AS k ON k.table_name = a.table_name AND k.column_name = a.column_name
  LEFT JOIN skyclass.catalog_column AS cc
         ON cc.catalog_id = a.catalog_id AND cc.column_name = a.column_name;
COMMENT ON VIEW skyclass.tap_column IS
    'Columns of the relations in skyclass.tap_published with their VOTable datatype, '
    'arraysize, xtype, unit, UCD and description, as TAP_SCHEMA.columns publishes them.';

CREATE VIEW tap_schema.schemas AS
SELECT s.schema_name, NULL::text AS utype, s.description, s.schema_index
  FROM (VALUES ('TAP_SCHEMA', 'Metadata of the tables this TAP service serves.', 0),
               ('skyclass', 'skyclass classifications: current and long-form predictions.', 1),
               ('catalogs', 'Survey catalogs registered in skyclass.', 2))
       AS s(schema_name, description, schema_index);
COMMENT ON VIEW tap_schema.schemas IS 'TAP_SCHEMA.schemas: the schemas this TAP service serves.';

CREATE VIEW tap_schema.tables AS
SELECT schema_name, table_name, table_type, NULL::text AS utype, description, table_index
  FROM skyclass.tap_published;
COMMENT ON VIEW tap_schema.tables IS 'TAP_SCHEMA.tables: the tables this TAP service serves.';

CREATE VIEW tap_schema.columns AS
SELECT table_name, column_name, utype, ucd, unit, description, datatype, arraysize, xtype,
       size, principal, indexed, std, column_index
  FROM skyclass.tap_column;
COMMENT ON VIEW tap_schema.columns IS
    'TAP_SCHEMA.columns: the columns of the tables this TAP service serves.';

CREATE VIEW tap_schema.keys AS
SELECT k.key_id, k.from_table, k.target_table, NULL::text AS utype, k.description
  FROM (VALUES
        ('ts_tables_schema', 'TAP_SCHEMA.tables', 'TAP_SCHEMA.schemas',
         'the schema of a table'),
        ('ts_columns_table', 'TAP_SCHEMA.columns', 'TAP_SCHEMA.tables',
         'the table of a column'),
        ('ts_keys_from', 'TAP_SCHEMA.keys', 'TAP_SCHEMA.tables', 'the table a key is from'),
        ('ts_keys_target', 'TAP_SCHEMA.keys', 'TAP_SCHEMA.tables',
         'the table a key points to'),
        ('ts_key_columns_key', 'TAP_SCHEMA.key_columns', 'TAP_SCHEMA.keys',
         'the key of a key column'))
       AS k(key_id, from_table, target_table, description);
COMMENT ON VIEW tap_schema.keys IS 'TAP_SCHEMA.keys: foreign keys between the tables served.';

CREATE VIEW tap_schema.key_columns AS
SELECT c.key_id, c.from_column, c.target_column
  FROM (VALUES ('ts_tables_schema', 'schema_name', 'schema_name'),
               ('ts_columns_table', 'table_name', 'table_name'),
               ('ts_keys_from', 'from_table', 'table_name'),
               ('ts_keys_target', 'target_table', 'table_name'),
               ('ts_key_columns_key', 'key_id', 'key_id'))
       AS c(key_id, from_column, target_column);
COMMENT ON VIEW tap_schema.key_columns IS 'TAP_SCHEMA.key_columns: the columns of each key.';

GRANT USAGE ON SCHEMA tap_schema TO skyclass_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA tap_schema TO skyclass_reader;

CREATE TABLE skyclass.tap_job (
    job_id             text PRIMARY KEY CHECK (job_id ~ '^[a-z0-9]{8,64}$'),
    phase              text NOT NULL DEFAULT 'PENDING'
                       CHECK (phase IN ('PENDING', 'QUEUED', 'EXECUTING', 'COMPLETED', 'ERROR',
                                        'ABORTED', 'UNKNOWN', 'HELD', 'SUSPENDED', 'ARCHIVED')),
    run_id             text CHECK (length(run_id) <= 200),
    parameters         jsonb NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    destruction        timestamptz NOT NULL,
    execution_duration integer NOT NULL CHECK (execution_duration >= 0),
    error_message      text,
    result             bytea,
    result_type        text,
    result_rows        bigint CHECK (result_rows >= 0),
    overflow           boolean,
    backend_pid        integer,
    CHECK ((phase = 'COMPLETED') = (result IS NOT NULL)),
    CHECK ((phase = 'ERROR') = (error_message IS NOT NULL))
);
CREATE INDEX ix_tap_job_destruction ON skyclass.tap_job (destruction);
COMMENT ON TABLE skyclass.tap_job IS
    'UWS 1.1 jobs of the TAP service (/tap/async): parameters, phase, times, destruction, '
    'error and the serialized result; rows are deleted at their destruction time.';
GRANT SELECT, INSERT, UPDATE, DELETE ON skyclass.tap_job TO skyclass_portal;
"""

DOWNGRADE = r"""
DROP TABLE skyclass.tap_job;
DROP SCHEMA tap_schema CASCADE;
DROP VIEW skyclass.tap_column;
DROP VIEW skyclass.tap_published;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
