"""Native code only from superusers; single-flight scoring jobs that no stranger can block.

Artifacts (issue 9, item 3). A model artifact is a shared library that every
backend scoring its version ``dlopen``s, and loading a library runs its
constructors. Until now ``skyclass_model_admin`` could insert one, so any
member of that role could run code as ``postgres``. From this revision only a
superuser registers artifacts: INSERT is revoked from ``skyclass_model_admin``,
and a trigger refuses any other inserter and stamps the new column
``registered_by`` with the inserting role. The extension loads an artifact only
when that role is still a superuser and ``skyclass.model_artifact`` is owned
by a superuser (a non-superuser owner could disable the trigger; changing
``session_replication_role`` needs a superuser already). Artifacts registered
before this revision have no ``registered_by`` and are not loaded until a
superuser registers them again (docs/operations.md).

Single flight (item 4). Jobs took a session advisory lock on
``hashtextextended('skyclass.rescore:V:C', 0)``; any role, even one without
grants, could take that key first and block the job forever. Now each job
(model version, catalog) has a row in ``skyclass.scoring_lease``: the starter
locks it (``FOR UPDATE``, so concurrent starters serialise for the few
milliseconds the start takes), and when its holder's backend is gone (pid and
backend start no longer in ``pg_stat_activity``) takes it with an UPDATE.
Only roles that may write the table can do that (nobody but its owner by
default). The lease lasts across the job's per-chunk commits and dies with
its backend, as the lock did. ``skyclass.scoring_job_holder`` replaces
``skyclass.scoring_lock_holder`` (kept, but jobs no longer take that lock);
``plan_scoring_run`` no longer takes an advisory lock either.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ARTIFACTS = r"""
ALTER TABLE skyclass.model_artifact ADD COLUMN registered_by name;
COMMENT ON COLUMN skyclass.model_artifact.registered_by IS
    'The role that inserted the row, stamped by a trigger (NULL: registered before revision '
    '0008). The extension loads the library only while this role is a superuser.';

CREATE FUNCTION skyclass.model_artifact_register() RETURNS trigger
LANGUAGE plpgsql AS $$
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
$$;
COMMENT ON FUNCTION skyclass.model_artifact_register() IS
    'Trigger function: refuses artifact inserts by non-superusers and stamps registered_by.';
CREATE TRIGGER model_artifact_register BEFORE INSERT ON skyclass.model_artifact
    FOR EACH ROW EXECUTE FUNCTION skyclass.model_artifact_register();
REVOKE INSERT ON skyclass.model_artifact FROM skyclass_model_admin;
COMMENT ON TABLE skyclass.model_artifact IS
    'Compiled libraries of model versions with their sha256, registered by superusers only; the '
    'extension re-hashes the bytes and checks the registrar before loading them.';
"""

ARTIFACTS_DOWN = r"""
GRANT INSERT ON skyclass.model_artifact TO skyclass_model_admin;
DROP TRIGGER model_artifact_register ON skyclass.model_artifact;
DROP FUNCTION skyclass.model_artifact_register();
ALTER TABLE skyclass.model_artifact DROP COLUMN registered_by;
COMMENT ON TABLE skyclass.model_artifact IS
    'Compiled libraries of model versions with their sha256; the scorer re-hashes the bytes before loading them.';
"""

LEASE = r"""
CREATE TABLE skyclass.scoring_lease (
    model_version_id bigint NOT NULL REFERENCES skyclass.model_version,
    catalog_id       integer NOT NULL REFERENCES skyclass.catalog,
    -- the run the holder is working on (NULL while it is being started)
    run_id           bigint REFERENCES skyclass.scoring_run ON DELETE SET NULL,
    -- the backend holding the job, NULL when free; stale when it is gone
    holder_pid       integer,
    holder_started   timestamptz,
    holder_user      text,
    taken_at         timestamptz,
    PRIMARY KEY (model_version_id, catalog_id),
    CHECK ((holder_pid IS NULL) = (holder_started IS NULL))
);
COMMENT ON TABLE skyclass.scoring_lease IS
    'Single flight of scoring jobs: one row per model version and catalog naming the backend '
    '(pid and start time) that runs the job. Taken by skyclass.start_scoring_run, released by '
    'finish/fail, stale once that backend is gone. Only roles that may UPDATE it start jobs.';
REVOKE ALL ON skyclass.scoring_lease FROM PUBLIC;

CREATE FUNCTION skyclass.scoring_backend_alive(pid integer, started timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    -- backend_start of another role's session is hidden from a non-superuser (NULL): a pid
    -- match then counts as alive, which can keep a job waiting, never run it twice.
    SELECT pid IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_stat_activity AS a
         WHERE a.pid = scoring_backend_alive.pid
           AND (a.backend_start IS NULL OR a.backend_start = started))
$$;
COMMENT ON FUNCTION skyclass.scoring_backend_alive(integer, timestamptz) IS
    'True when the backend with this pid and start time still exists (false for a NULL pid).';

CREATE FUNCTION skyclass.scoring_job_holder(model_version bigint, catalog integer) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT l.holder_pid FROM skyclass.scoring_lease AS l
     WHERE l.model_version_id = model_version AND l.catalog_id = catalog
       AND skyclass.scoring_backend_alive(l.holder_pid, l.holder_started)
$$;
COMMENT ON FUNCTION skyclass.scoring_job_holder(bigint, integer) IS
    'Backend pid running the scoring job of a model version and catalog, or NULL when none does.';

COMMENT ON FUNCTION skyclass.scoring_lock_key(bigint, integer) IS
    'Key of the advisory lock scoring jobs took before revision 0008 (they no longer do: see '
    'skyclass.scoring_lease).';
COMMENT ON FUNCTION skyclass.scoring_lock_holder(bigint) IS
    'Backend pid holding an advisory lock key, or NULL (scoring jobs no longer take one since '
    'revision 0008: use skyclass.scoring_job_holder).';
COMMENT ON TABLE skyclass.scoring_run IS
    'One rescoring job of a model version over a catalog: mode, progress, outcome, who, which '
    'backend. An interrupted or failed run is resumed (attempts + 1) by the next start of the '
    'same job; one job runs at a time (skyclass.scoring_lease).';
"""

LEASE_DOWN = r"""
COMMENT ON FUNCTION skyclass.scoring_lock_key(bigint, integer) IS
    'Key of the session advisory lock that keeps one scoring job per model version and catalog.';
COMMENT ON FUNCTION skyclass.scoring_lock_holder(bigint) IS
    'Backend pid holding a scoring job''s advisory lock, or NULL when no job runs.';
COMMENT ON TABLE skyclass.scoring_run IS
    'One rescoring job of a model version over a catalog: mode, progress, outcome, who, which '
    'backend. An interrupted or failed run is resumed (attempts + 1) by the next start of the '
    'same job; one job runs at a time (session advisory lock on version and catalog).';
DROP FUNCTION skyclass.scoring_job_holder(bigint, integer);
DROP FUNCTION skyclass.scoring_backend_alive(integer, timestamptz);
DROP TABLE skyclass.scoring_lease;
"""

JOB_FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION skyclass.start_scoring_run(
    target text,
    catalog text,
    only_new boolean DEFAULT false,
    chunk_size integer DEFAULT 50000,
    scorer text DEFAULT 'database',
    triggered_by text DEFAULT 'manual',
    schedule_name text DEFAULT NULL,
    resume boolean DEFAULT true,
    workers integer DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t         record;
    cat       skyclass.catalog;
    fs        skyclass.feature_set;
    v         record;
    lease     skyclass.scoring_lease;
    running   skyclass.scoring_run;
    last_run  skyclass.scoring_run;
    old       record;
    run       bigint;
    mode      text := CASE WHEN only_new THEN 'only_new' ELSE 'full' END;
    ftable    regclass;
BEGIN
    IF chunk_size IS NULL OR chunk_size < 1 OR chunk_size > 100000000 THEN
        RAISE EXCEPTION 'chunk_size must be between 1 and 100000000, not %', chunk_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF workers IS NULL OR workers < 1 THEN
        RAISE EXCEPTION 'workers must be at least 1, not %', workers
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF scorer IS NULL OR scorer NOT IN ('database', 'client') THEN
        RAISE EXCEPTION 'scorer must be database or client, not %', scorer
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := skyclass.resolve_scoring_target(target);
    SELECT * INTO cat FROM skyclass.catalog AS c WHERE c.name = start_scoring_run.catalog;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'catalog % is not registered', quote_literal(coalesce(catalog, 'NULL'))
            USING ERRCODE = 'undefined_object', HINT = 'see skyclass.catalog (skyclass catalog list)';
    END IF;
    SELECT mv.n_features, mv.task, mv.classes, mv.bin_edges INTO v
      FROM skyclass.model_version AS mv WHERE mv.model_version_id = t.model_version_id;
    IF v.task = 'photoz' AND (cardinality(v.bin_edges) <> cardinality(v.classes) + 1
        OR EXISTS (SELECT 1 FROM unnest(v.bin_edges) AS e(z)
                    WHERE z IN ('NaN', 'Infinity', '-Infinity'))) THEN
        RAISE EXCEPTION 'model version % has % PDF bins but % bin edges (they must be finite)',
            t.model_version_id, cardinality(v.classes), cardinality(v.bin_edges)
            USING ERRCODE = 'invalid_object_definition';
    END IF;
    SELECT * INTO fs FROM skyclass.feature_set AS f
     WHERE f.feature_set_id = skyclass.scoring_feature_set(t.model_version_id, cat.catalog_id);
    IF cardinality(fs.feature_names) <> v.n_features THEN
        RAISE EXCEPTION 'feature set % has % features, model version % expects %', fs.name,
            cardinality(fs.feature_names), t.model_version_id, v.n_features
            USING ERRCODE = 'invalid_object_definition';
    END IF;
    ftable := to_regclass(format('features.%I', fs.table_name));
    IF ftable IS NULL THEN
        RAISE EXCEPTION 'feature table features.% of feature set % does not exist', fs.table_name, fs.name
            USING ERRCODE = 'undefined_table', HINT = 'rebuild the feature set';
    END IF;

    -- Single flight: a lease row per job, taken by an UPDATE only roles that may write
    -- skyclass.scoring_lease can run. It survives the per-chunk commits of the job and
    -- goes stale when its holder's backend is gone (pid and backend start no longer in
    -- pg_stat_activity). Concurrent starters queue on the row lock for the few
    -- milliseconds this transaction lasts, then see its holder and run.
    INSERT INTO skyclass.scoring_lease AS l (model_version_id, catalog_id)
    VALUES (t.model_version_id, cat.catalog_id) ON CONFLICT DO NOTHING;
    SELECT * INTO lease FROM skyclass.scoring_lease AS l
     WHERE l.model_version_id = t.model_version_id AND l.catalog_id = cat.catalog_id
       FOR UPDATE;
    IF lease.holder_pid IS DISTINCT FROM pg_backend_pid()
       AND skyclass.scoring_backend_alive(lease.holder_pid, lease.holder_started) THEN
        SELECT * INTO running FROM skyclass.scoring_run AS s WHERE s.run_id = lease.run_id;
        RAISE EXCEPTION 'scoring model version % on catalog % is already running (run %, started %, pid %)',
            t.model_version_id, cat.name, coalesce(running.run_id::text, '?'),
            coalesce(date_trunc('second', coalesce(running.resumed_at, running.started_at))::text, '?'),
            lease.holder_pid
            USING ERRCODE = 'lock_not_available',
                  HINT = CASE WHEN (SELECT a.state FROM pg_catalog.pg_stat_activity AS a
                                     WHERE a.pid = lease.holder_pid) = 'idle'
                         THEN format('backend %s holds the job but is idle (a cancelled CALL?): end that session',
                                     lease.holder_pid)
                         ELSE 'wait for it to finish, or follow it in skyclass.scoring_run' END;
    END IF;
    UPDATE skyclass.scoring_lease AS l
       SET holder_pid = pg_backend_pid(),
           holder_started = (SELECT a.backend_start FROM pg_catalog.pg_stat_activity AS a
                              WHERE a.pid = pg_backend_pid()),
           holder_user = current_user, taken_at = clock_timestamp(), run_id = NULL
     WHERE l.model_version_id = t.model_version_id AND l.catalog_id = cat.catalog_id;
    BEGIN
        -- We hold the lease, so runs still marked running have lost their backend.
        UPDATE skyclass.scoring_run AS s
           SET status = 'interrupted', finished_at = clock_timestamp(),
               error = coalesce(s.error, format(
                   'backend %s ended before the run finished (terminated, cancelled or server restart)',
                   s.backend_pid))
         WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
           AND s.status = 'running';

        SELECT * INTO last_run FROM skyclass.scoring_run AS s
         WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
         ORDER BY s.run_id DESC LIMIT 1;
        IF resume AND last_run.run_id IS NOT NULL AND last_run.status IN ('interrupted', 'failed')
           AND last_run.mode = mode AND last_run.feature_set_id = fs.feature_set_id
           AND (last_run.chunks_total = 0 OR to_regclass(nullif(last_run.target_table, '')) IS NOT NULL) THEN
            run := last_run.run_id;
            UPDATE skyclass.scoring_run AS s
               SET status = 'running', attempts = s.attempts + 1, resumed_at = clock_timestamp(),
                   finished_at = NULL, error = NULL, backend_pid = pg_backend_pid(),
                   db_user = current_user, scorer = start_scoring_run.scorer,
                   triggered_by = start_scoring_run.triggered_by,
                   schedule_name = start_scoring_run.schedule_name,
                   workers = start_scoring_run.workers,
                   deployment = coalesce(t.deployment, s.deployment)
             WHERE s.run_id = run;
            UPDATE skyclass.scoring_lease AS l SET run_id = run
             WHERE l.model_version_id = t.model_version_id AND l.catalog_id = cat.catalog_id;
            RAISE NOTICE 'resuming run % (% of % chunks done)', run, last_run.chunks_done, last_run.chunks_total;
            RETURN run;
        END IF;

        -- Unfinished runs that will never be resumed: drop their unpublished partitions.
        FOR old IN
            SELECT s.run_id, s.target_table FROM skyclass.scoring_run AS s
             WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
               AND s.status IN ('interrupted', 'failed') AND s.write_kind = 'partition'
               AND to_regclass(nullif(s.target_table, '')) IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits AS i
                                WHERE i.inhrelid = to_regclass(s.target_table))
        LOOP
            EXECUTE format('DROP TABLE %s', old.target_table);
        END LOOP;

        INSERT INTO skyclass.scoring_run AS s
            (model_version_id, catalog_id, feature_set_id, deployment, mode, write_kind, scorer,
             chunk_size, catalog_table, feature_table, target_table, workers, triggered_by,
             schedule_name)
        VALUES (t.model_version_id, cat.catalog_id, fs.feature_set_id, t.deployment, mode,
                'partition', scorer, chunk_size, format('%I.%I', cat.schema_name, cat.table_name),
                format('features.%I', fs.table_name), '', workers,
                start_scoring_run.triggered_by, start_scoring_run.schedule_name)
        RETURNING s.run_id INTO run;
        UPDATE skyclass.scoring_lease AS l SET run_id = run
         WHERE l.model_version_id = t.model_version_id AND l.catalog_id = cat.catalog_id;
    END;
    RETURN run;
END
$$;

CREATE OR REPLACE FUNCTION skyclass.plan_scoring_run(run bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r        skyclass.scoring_run;
    leaf     text;
    target_t text;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run FOR UPDATE;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.chunks_total > 0 THEN
        RETURN r.chunks_total;  -- planned already (a resumed run)
    END IF;
    IF skyclass.scoring_job_holder(r.model_version_id, r.catalog_id) IS DISTINCT FROM pg_backend_pid() THEN
        RAISE EXCEPTION 'this session does not hold the job of scoring run %', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- The version's partition of skyclass.prediction, created on first scoring (jobs of other
    -- catalogs may race to create it).
    -- (No advisory lock: any role could take its key and block every job.) A racing
    -- creator waits on the catalog's unique index and then finds the name taken.
    IF to_regclass(format('predictions.%I', 'mv_' || r.model_version_id)) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE predictions.%I PARTITION OF skyclass.prediction '
                           'FOR VALUES IN (%s) PARTITION BY LIST (catalog_id)',
                           'mv_' || r.model_version_id, r.model_version_id);
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- Without a catalog partition yet, only_new is a full run.
    leaf := skyclass.prediction_partition(r.model_version_id, r.catalog_id);
    IF r.mode = 'only_new' AND leaf IS NOT NULL THEN
        UPDATE skyclass.scoring_run SET write_kind = 'insert', target_table = leaf WHERE run_id = run;
    ELSE
        target_t := format('predictions.%I',
                           format('mv_%s_c%s_r%s', r.model_version_id, r.catalog_id, run));
        IF to_regclass(target_t) IS NOT NULL THEN
            EXECUTE format('DROP TABLE %s', target_t);
        END IF;
        EXECUTE format('CREATE TABLE %s (LIKE skyclass.prediction INCLUDING DEFAULTS) '
                       'PARTITION BY RANGE (object_id)', target_t);
        EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (model_version_id, catalog_id, object_id)', target_t);
        UPDATE skyclass.scoring_run SET write_kind = 'partition', target_table = target_t
         WHERE run_id = run;
    END IF;
    PERFORM skyclass.plan_scoring_chunks(run);
    RETURN (SELECT chunks_total FROM skyclass.scoring_run WHERE run_id = run);
END
$$;

CREATE OR REPLACE FUNCTION skyclass.finish_scoring_run(run bigint) RETURNS skyclass.scoring_run
LANGUAGE plpgsql AS $$
DECLARE
    r        skyclass.scoring_run;
    left_    integer;
    old      text;
    parent   text;
    timeout  text := current_setting('lock_timeout');
    attempt  integer := 0;
    done     boolean := false;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run FOR UPDATE;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.status <> 'running' THEN
        RAISE EXCEPTION 'scoring run % is %, not running', run, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF skyclass.scoring_job_holder(r.model_version_id, r.catalog_id) IS DISTINCT FROM pg_backend_pid() THEN
        RAISE EXCEPTION 'this session does not hold the job of scoring run %', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT count(*) INTO left_ FROM skyclass.scoring_chunk AS c WHERE c.run_id = run AND c.done_at IS NULL;
    IF left_ > 0 THEN
        RAISE EXCEPTION 'scoring run % still has % unfinished chunks', run, left_
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF r.write_kind = 'partition' THEN
        -- Statistics for the planner before readers see the rows; a small sample is enough for
        -- these columns (3 labels, probabilities, ids) and costs a tenth of the default one.
        SET LOCAL default_statistics_target = 10;
        EXECUTE format('ANALYZE %s', r.target_table);
        parent := format('predictions.%I', 'mv_' || r.model_version_id);
        -- Swap the new catalog partition in: readers see the old rows or the new ones, never a
        -- mix. DETACH needs an exclusive lock on the version's partition; wait for it in short
        -- tries so that new readers do not queue behind us for long.
        WHILE NOT done LOOP
            BEGIN
                SET LOCAL lock_timeout = '2s';
                old := skyclass.prediction_partition(r.model_version_id, r.catalog_id);
                IF old IS NOT NULL THEN
                    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, old);
                    EXECUTE format('DROP TABLE %s', old);
                END IF;
                EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES IN (%s)',
                               parent, r.target_table, r.catalog_id);
                done := true;
            EXCEPTION WHEN lock_not_available THEN
                attempt := attempt + 1;
                IF attempt >= 30 THEN
                    RAISE;
                END IF;
                PERFORM pg_sleep(0.1 * attempt);
            END;
        END LOOP;
        PERFORM set_config('lock_timeout', timeout, true);
    END IF;
    UPDATE skyclass.scoring_run AS s
       SET status = 'succeeded', finished_at = clock_timestamp(), error = NULL,
           chunks_done = (SELECT count(*) FROM skyclass.scoring_chunk AS c WHERE c.run_id = run),
           rows_scored = (SELECT coalesce(sum(c.rows), 0) FROM skyclass.scoring_chunk AS c WHERE c.run_id = run),
           objects_without_features = (SELECT coalesce(sum(c.objects_without_features), 0)
                                         FROM skyclass.scoring_chunk AS c WHERE c.run_id = run)
     WHERE s.run_id = run
    RETURNING * INTO r;
    PERFORM skyclass.release_scoring_lock(run);
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION skyclass.release_scoring_lock(run bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    released boolean;
BEGIN
    IF run IS NULL THEN
        RAISE EXCEPTION 'run must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE skyclass.scoring_lease AS l
       SET holder_pid = NULL, holder_started = NULL, holder_user = NULL, taken_at = NULL
      FROM skyclass.scoring_run AS s
     WHERE s.run_id = run AND l.model_version_id = s.model_version_id
       AND l.catalog_id = s.catalog_id AND l.holder_pid = pg_backend_pid();
    GET DIAGNOSTICS released = ROW_COUNT;
    RETURN released;
END
$$;
"""

# The functions as revisions 0004 and 0005 left them.
JOB_FUNCTIONS_0007 = r"""
CREATE OR REPLACE FUNCTION skyclass.start_scoring_run(
    target text,
    catalog text,
    only_new boolean DEFAULT false,
    chunk_size integer DEFAULT 50000,
    scorer text DEFAULT 'database',
    triggered_by text DEFAULT 'manual',
    schedule_name text DEFAULT NULL,
    resume boolean DEFAULT true,
    workers integer DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t         record;
    cat       skyclass.catalog;
    fs        skyclass.feature_set;
    v         record;
    key       bigint;
    holder    integer;
    running   skyclass.scoring_run;
    last_run  skyclass.scoring_run;
    old       record;
    run       bigint;
    mode      text := CASE WHEN only_new THEN 'only_new' ELSE 'full' END;
    ftable    regclass;
    waited    integer := 0;
BEGIN
    IF chunk_size IS NULL OR chunk_size < 1 OR chunk_size > 100000000 THEN
        RAISE EXCEPTION 'chunk_size must be between 1 and 100000000, not %', chunk_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF workers IS NULL OR workers < 1 THEN
        RAISE EXCEPTION 'workers must be at least 1, not %', workers
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF scorer IS NULL OR scorer NOT IN ('database', 'client') THEN
        RAISE EXCEPTION 'scorer must be database or client, not %', scorer
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := skyclass.resolve_scoring_target(target);
    SELECT * INTO cat FROM skyclass.catalog AS c WHERE c.name = start_scoring_run.catalog;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'catalog % is not registered', quote_literal(coalesce(catalog, 'NULL'))
            USING ERRCODE = 'undefined_object', HINT = 'see skyclass.catalog (skyclass catalog list)';
    END IF;
    SELECT mv.n_features, mv.task, mv.classes, mv.bin_edges INTO v
      FROM skyclass.model_version AS mv WHERE mv.model_version_id = t.model_version_id;
    IF v.task = 'photoz' AND (cardinality(v.bin_edges) <> cardinality(v.classes) + 1
        OR EXISTS (SELECT 1 FROM unnest(v.bin_edges) AS e(z)
                    WHERE z IN ('NaN', 'Infinity', '-Infinity'))) THEN
        RAISE EXCEPTION 'model version % has % PDF bins but % bin edges (they must be finite)',
            t.model_version_id, cardinality(v.classes), cardinality(v.bin_edges)
            USING ERRCODE = 'invalid_object_definition';
    END IF;
    SELECT * INTO fs FROM skyclass.feature_set AS f
     WHERE f.feature_set_id = skyclass.scoring_feature_set(t.model_version_id, cat.catalog_id);
    IF cardinality(fs.feature_names) <> v.n_features THEN
        RAISE EXCEPTION 'feature set % has % features, model version % expects %', fs.name,
            cardinality(fs.feature_names), t.model_version_id, v.n_features
            USING ERRCODE = 'invalid_object_definition';
    END IF;
    ftable := to_regclass(format('features.%I', fs.table_name));
    IF ftable IS NULL THEN
        RAISE EXCEPTION 'feature table features.% of feature set % does not exist', fs.table_name, fs.name
            USING ERRCODE = 'undefined_table', HINT = 'rebuild the feature set';
    END IF;

    -- Single flight: the lock lives as long as this session (or until finish/fail release it).
    key := skyclass.scoring_lock_key(t.model_version_id, cat.catalog_id);
    IF NOT pg_try_advisory_lock(key) THEN
        holder := skyclass.scoring_lock_holder(key);
        -- The holder commits its run row right after taking the lock: give it a moment so
        -- that the message can name the run.
        LOOP
            SELECT * INTO running FROM skyclass.scoring_run AS s
             WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
               AND s.status = 'running' ORDER BY s.run_id DESC LIMIT 1;
            EXIT WHEN running.run_id IS NOT NULL OR waited >= 50;
            PERFORM pg_sleep(0.02);
            waited := waited + 1;
        END LOOP;
        RAISE EXCEPTION 'scoring model version % on catalog % is already running (run %, started %, pid %)',
            t.model_version_id, cat.name, coalesce(running.run_id::text, '?'),
            coalesce(date_trunc('second', running.started_at)::text, '?'),
            coalesce(holder::text, '?')
            USING ERRCODE = 'lock_not_available',
                  HINT = CASE WHEN (SELECT a.state FROM pg_catalog.pg_stat_activity AS a WHERE a.pid = holder) = 'idle'
                         THEN format('backend %s holds the lock but is idle (a cancelled CALL?): end that session', holder)
                         ELSE 'wait for it to finish, or follow it in skyclass.scoring_run' END;
    END IF;
    BEGIN
        -- We hold the lock, so runs still marked running have lost their backend.
        UPDATE skyclass.scoring_run AS s
           SET status = 'interrupted', finished_at = clock_timestamp(),
               error = coalesce(s.error, format(
                   'backend %s ended before the run finished (terminated, cancelled or server restart)',
                   s.backend_pid))
         WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
           AND s.status = 'running';

        SELECT * INTO last_run FROM skyclass.scoring_run AS s
         WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
         ORDER BY s.run_id DESC LIMIT 1;
        IF resume AND last_run.run_id IS NOT NULL AND last_run.status IN ('interrupted', 'failed')
           AND last_run.mode = mode AND last_run.feature_set_id = fs.feature_set_id
           AND (last_run.chunks_total = 0 OR to_regclass(nullif(last_run.target_table, '')) IS NOT NULL) THEN
            run := last_run.run_id;
            UPDATE skyclass.scoring_run AS s
               SET status = 'running', attempts = s.attempts + 1, resumed_at = clock_timestamp(),
                   finished_at = NULL, error = NULL, backend_pid = pg_backend_pid(),
                   db_user = current_user, scorer = start_scoring_run.scorer,
                   triggered_by = start_scoring_run.triggered_by,
                   schedule_name = start_scoring_run.schedule_name,
                   workers = start_scoring_run.workers,
                   deployment = coalesce(t.deployment, s.deployment)
             WHERE s.run_id = run;
            RAISE NOTICE 'resuming run % (% of % chunks done)', run, last_run.chunks_done, last_run.chunks_total;
            RETURN run;
        END IF;

        -- Unfinished runs that will never be resumed: drop their unpublished partitions.
        FOR old IN
            SELECT s.run_id, s.target_table FROM skyclass.scoring_run AS s
             WHERE s.model_version_id = t.model_version_id AND s.catalog_id = cat.catalog_id
               AND s.status IN ('interrupted', 'failed') AND s.write_kind = 'partition'
               AND to_regclass(nullif(s.target_table, '')) IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits AS i
                                WHERE i.inhrelid = to_regclass(s.target_table))
        LOOP
            EXECUTE format('DROP TABLE %s', old.target_table);
        END LOOP;

        INSERT INTO skyclass.scoring_run AS s
            (model_version_id, catalog_id, feature_set_id, deployment, mode, write_kind, scorer,
             chunk_size, catalog_table, feature_table, target_table, workers, triggered_by,
             schedule_name)
        VALUES (t.model_version_id, cat.catalog_id, fs.feature_set_id, t.deployment, mode,
                'partition', scorer, chunk_size, format('%I.%I', cat.schema_name, cat.table_name),
                format('features.%I', fs.table_name), '', workers,
                start_scoring_run.triggered_by, start_scoring_run.schedule_name)
        RETURNING s.run_id INTO run;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_advisory_unlock(key);
        RAISE;
    END;
    RETURN run;
END
$$;

CREATE OR REPLACE FUNCTION skyclass.plan_scoring_run(run bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r        skyclass.scoring_run;
    leaf     text;
    target_t text;
    key      bigint;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run FOR UPDATE;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.chunks_total > 0 THEN
        RETURN r.chunks_total;  -- planned already (a resumed run)
    END IF;
    key := skyclass.scoring_lock_key(r.model_version_id, r.catalog_id);
    IF skyclass.scoring_lock_holder(key) IS DISTINCT FROM pg_backend_pid() THEN
        RAISE EXCEPTION 'this session does not hold the lock of scoring run %', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- The version's partition of skyclass.prediction, created on first scoring (jobs of other
    -- catalogs may race to create it).
    PERFORM pg_advisory_xact_lock(hashtextextended('skyclass.prediction_partition', 0));
    IF to_regclass(format('predictions.%I', 'mv_' || r.model_version_id)) IS NULL THEN
        EXECUTE format('CREATE TABLE predictions.%I PARTITION OF skyclass.prediction '
                       'FOR VALUES IN (%s) PARTITION BY LIST (catalog_id)',
                       'mv_' || r.model_version_id, r.model_version_id);
    END IF;
    -- Without a catalog partition yet, only_new is a full run.
    leaf := skyclass.prediction_partition(r.model_version_id, r.catalog_id);
    IF r.mode = 'only_new' AND leaf IS NOT NULL THEN
        UPDATE skyclass.scoring_run SET write_kind = 'insert', target_table = leaf WHERE run_id = run;
    ELSE
        target_t := format('predictions.%I',
                           format('mv_%s_c%s_r%s', r.model_version_id, r.catalog_id, run));
        IF to_regclass(target_t) IS NOT NULL THEN
            EXECUTE format('DROP TABLE %s', target_t);
        END IF;
        EXECUTE format('CREATE TABLE %s (LIKE skyclass.prediction INCLUDING DEFAULTS) '
                       'PARTITION BY RANGE (object_id)', target_t);
        EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (model_version_id, catalog_id, object_id)', target_t);
        UPDATE skyclass.scoring_run SET write_kind = 'partition', target_table = target_t
         WHERE run_id = run;
    END IF;
    PERFORM skyclass.plan_scoring_chunks(run);
    RETURN (SELECT chunks_total FROM skyclass.scoring_run WHERE run_id = run);
END
$$;

CREATE OR REPLACE FUNCTION skyclass.finish_scoring_run(run bigint) RETURNS skyclass.scoring_run
LANGUAGE plpgsql AS $$
DECLARE
    r        skyclass.scoring_run;
    key      bigint;
    left_    integer;
    old      text;
    parent   text;
    timeout  text := current_setting('lock_timeout');
    attempt  integer := 0;
    done     boolean := false;
BEGIN
    SELECT * INTO r FROM skyclass.scoring_run WHERE run_id = run FOR UPDATE;
    IF r.run_id IS NULL THEN
        RAISE EXCEPTION 'scoring run % does not exist', run USING ERRCODE = 'undefined_object';
    END IF;
    IF r.status <> 'running' THEN
        RAISE EXCEPTION 'scoring run % is %, not running', run, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    key := skyclass.scoring_lock_key(r.model_version_id, r.catalog_id);
    IF skyclass.scoring_lock_holder(key) IS DISTINCT FROM pg_backend_pid() THEN
        RAISE EXCEPTION 'this session does not hold the lock of scoring run %', run
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT count(*) INTO left_ FROM skyclass.scoring_chunk AS c WHERE c.run_id = run AND c.done_at IS NULL;
    IF left_ > 0 THEN
        RAISE EXCEPTION 'scoring run % still has % unfinished chunks', run, left_
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF r.write_kind = 'partition' THEN
        -- Statistics for the planner before readers see the rows; a small sample is enough for
        -- these columns (3 labels, probabilities, ids) and costs a tenth of the default one.
        SET LOCAL default_statistics_target = 10;
        EXECUTE format('ANALYZE %s', r.target_table);
        parent := format('predictions.%I', 'mv_' || r.model_version_id);
        -- Swap the new catalog partition in: readers see the old rows or the new ones, never a
        -- mix. DETACH needs an exclusive lock on the version's partition; wait for it in short
        -- tries so that new readers do not queue behind us for long.
        WHILE NOT done LOOP
            BEGIN
                SET LOCAL lock_timeout = '2s';
                old := skyclass.prediction_partition(r.model_version_id, r.catalog_id);
                IF old IS NOT NULL THEN
                    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, old);
                    EXECUTE format('DROP TABLE %s', old);
                END IF;
                EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES IN (%s)',
                               parent, r.target_table, r.catalog_id);
                done := true;
            EXCEPTION WHEN lock_not_available THEN
                attempt := attempt + 1;
                IF attempt >= 30 THEN
                    RAISE;
                END IF;
                PERFORM pg_sleep(0.1 * attempt);
            END;
        END LOOP;
        PERFORM set_config('lock_timeout', timeout, true);
    END IF;
    UPDATE skyclass.scoring_run AS s
       SET status = 'succeeded', finished_at = clock_timestamp(), error = NULL,
           chunks_done = (SELECT count(*) FROM skyclass.scoring_chunk AS c WHERE c.run_id = run),
           rows_scored = (SELECT coalesce(sum(c.rows), 0) FROM skyclass.scoring_chunk AS c WHERE c.run_id = run),
           objects_without_features = (SELECT coalesce(sum(c.objects_without_features), 0)
                                         FROM skyclass.scoring_chunk AS c WHERE c.run_id = run)
     WHERE s.run_id = run
    RETURNING * INTO r;
    PERFORM skyclass.release_scoring_lock(run);
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION skyclass.release_scoring_lock(run bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    key      bigint;
    released boolean := false;
BEGIN
    SELECT skyclass.scoring_lock_key(s.model_version_id, s.catalog_id) INTO key
      FROM skyclass.scoring_run AS s WHERE s.run_id = run;
    -- A session that started the job again after a cancel holds the lock more than once.
    WHILE key IS NOT NULL AND skyclass.scoring_lock_holder(key) = pg_backend_pid() LOOP
        PERFORM pg_advisory_unlock(key);
        released := true;
    END LOOP;
    RETURN released;
END
$$;
"""

COMMENTS = r"""
COMMENT ON FUNCTION skyclass.start_scoring_run(text, text, boolean, integer, text, text, text, boolean, integer) IS
    'Start (or resume) the scoring job of a deployment or model version over a catalog and '
    'return its run_id. Takes the job''s row of skyclass.scoring_lease (fails at once with '
    '"already running (run, started, pid)" while another live backend holds it), marks runs '
    'whose backend died as interrupted, resumes the last interrupted or failed run of the same '
    'mode, or registers a new one; commit, then call skyclass.plan_scoring_run.';
COMMENT ON FUNCTION skyclass.release_scoring_lock(bigint) IS
    'Release a run''s job lease (skyclass.scoring_lease) if this session holds it.';
"""

COMMENTS_DOWN = r"""
COMMENT ON FUNCTION skyclass.start_scoring_run(text, text, boolean, integer, text, text, text, boolean, integer) IS
    'Start (or resume) the scoring job of a deployment or model version over a catalog and '
    'return its run_id. Takes the job''s session advisory lock (fails at once with "already '
    'running" when another session holds it), marks runs whose backend died as interrupted, '
    'resumes the last interrupted or failed run of the same mode, or registers a new one; commit, '
    'then call skyclass.plan_scoring_run so that other starters see the run at once.';
COMMENT ON FUNCTION skyclass.release_scoring_lock(bigint) IS
    'Release a run''s single-flight lock if this session holds it.';
"""


def upgrade() -> None:
    op.execute(ARTIFACTS)
    op.execute(LEASE)
    op.execute(JOB_FUNCTIONS)
    op.execute(COMMENTS)


def downgrade() -> None:
    op.execute(JOB_FUNCTIONS_0007)
    op.execute(COMMENTS_DOWN)
    op.execute(LEASE_DOWN)
    op.execute(ARTIFACTS_DOWN)
