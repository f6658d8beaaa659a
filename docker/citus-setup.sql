-- The Citus path of docs/scale-out.md, run once on the coordinator of the `citus` compose
-- profile after `skyclass db migrate` there (the citus-setup service does both). Not run
-- on the development machines (no Docker engine, no Citus package): checked statically by
-- tests/docs/test_compose.py.
CREATE EXTENSION IF NOT EXISTS citus;
SELECT citus_set_coordinator_host('citus-coordinator', 5432);
SELECT citus_add_node('citus-worker-1', 5432);
SELECT citus_add_node('citus-worker-2', 5432);

-- Registry tables (catalogs, feature definitions, models, versions, artifacts,
-- deployments, runs) are small and joined with everything: reference tables, replicated
-- to every node, so a worker scoring its shard reads the model artifact locally.
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass FROM pg_class AS c
        WHERE c.relnamespace = 'skyclass'::regnamespace AND c.relkind = 'r'
          AND NOT c.relispartition
          AND c.relname NOT IN ('prediction', 'alembic_version')
        ORDER BY c.relname
    LOOP
        PERFORM create_reference_table(t);
    END LOOP;
END
$$;

-- Catalogs, their feature tables and the predictions are distributed by object id and
-- co-located, so INSERT ... SELECT skyclass.predict(...) FROM features runs on every
-- worker at once against its own shards. Per catalog (here the demo's sdss17):
--   SELECT create_distributed_table('catalogs.sdss17', 'object_id');
--   SELECT create_distributed_table('features.<its feature table>', 'object_id',
--                                   colocate_with => 'catalogs.sdss17');
SELECT create_distributed_table('skyclass.prediction', 'object_id');

-- The scoring entry point exists on every worker (the extension's C function, loading the
-- artifact from the replicated model_artifact reference table): a co-located
-- INSERT INTO skyclass.prediction ... SELECT skyclass.predict(...) FROM features.<t> runs
-- on every worker at once, each against its own shards.
SELECT create_distributed_function('skyclass.predict(bigint, real[])');
