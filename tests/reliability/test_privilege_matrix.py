"""The privilege matrix: which role may do what, as one table checked cell by cell.

Rows are roles, columns are actions; a cell says whether the action is
``ALLOWED`` or ``DENIED`` (SQLSTATE 42501, insufficient_privilege) for that
role. Each cell runs as the role (``SET LOCAL ROLE``) in a transaction that is
rolled back, so cells are independent and the database is left unchanged. Any
other error fails the test: the action's SQL itself must be right, which the
control row (the database owner, a superuser) proves.

The same table is in docs/reliability.md ("Privileges"); change both together.
Only superusers insert artifacts (native code, revision 0008), and a job is
held through its row of ``skyclass.scoring_lease``, which no role below may
update.

The "another OS user" row (it cannot connect to the embedded cluster at all)
is tested with the cluster, in tests/db.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import drop_database
from tests.score.jobs_support import add_objects, jobs_database, object_features, register

pytestmark = pytest.mark.reliability

ALLOWED, DENIED = "allowed", "denied"
CATALOG = "test_catalog"
NO_GRANTS = "no_grants"  # stands for a fresh role created with no grants

# Each action as SQL ({v}: a compiled model version, {c}: the catalog's id, {t}: the oid of
# its table). Writes that
# need a whole valid row insert nothing (SELECT ... WHERE false): privileges are checked
# before any row is.
ACTIONS: dict[str, str] = {
    "read published views": (
        "SELECT count(*) FROM skyclass.current_classification AS p "
        "JOIN skyclass.prediction_long AS l USING (object_id)"
    ),
    "read catalogs": "SELECT count(*) FROM catalogs.test_catalog",
    "read the catalog registry": "SELECT count(*) FROM skyclass.catalog",
    # The C sweep reads the tables it is given (by OID: no name lookup) as the caller.
    "read catalogs through crossmatch_sweep": (
        "SELECT count(*) FROM skyclass.crossmatch_sweep({t}::oid::regclass, {t}::oid::regclass, "
        "1, true)"
    ),
    # skyclass.prediction is a view over the published run tables (revision 0017): writing
    # predictions means publishing a run table in its registry.
    "write predictions": (
        "INSERT INTO skyclass.prediction_table (model_version_id) SELECT {v} WHERE false"
    ),
    "insert an artifact": (
        "INSERT INTO skyclass.model_artifact (model_version_id) SELECT {v} WHERE false"
    ),
    "read artifact bytes": "SELECT count(library) FROM skyclass.model_artifact",
    "call predict": "SELECT skyclass.predict({v}, array_fill(1::real, ARRAY[9]))",
    "call predict_raw": "SELECT skyclass.predict_raw({v}, array_fill(1::real, ARRAY[9]))",
    "read OOD scores": "SELECT count(*) FROM skyclass.ood_object",
    "write OOD scores": (
        "INSERT INTO skyclass.ood_score (model_version_id) SELECT {v} WHERE false"
    ),
    "start an OOD run": "SELECT 1 FROM skyclass.ood_run WHERE false FOR UPDATE",
    "start a scoring job": "SELECT skyclass.start_scoring_run('{v}', 'test_catalog')",
    "claim a chunk": "SELECT * FROM skyclass.claim_scoring_chunk(1)",
    # A job is held through its lease row (revision 0008), which only its owner may update.
    "take a job's lease": (
        "UPDATE skyclass.scoring_lease SET holder_pid = pg_backend_pid() "
        "WHERE model_version_id = {v} AND catalog_id = {c}"
    ),
    # Ingest, register, drop and feature builds hold a row of operation_lock (revision 0011).
    "take an ingest or build lock": (
        "INSERT INTO skyclass.operation_lock (resource) VALUES ('catalog:test_catalog') "
        "ON CONFLICT DO NOTHING; "
        "SELECT 1 FROM skyclass.operation_lock WHERE resource = 'catalog:test_catalog' FOR UPDATE"
    ),
    "create objects in schema skyclass": "CREATE TABLE skyclass.mine (x int)",
    "create objects in schema catalogs": "CREATE TABLE catalogs.mine (x int)",
    "deploy": "SELECT skyclass.deploy('portal', {v})",
    "drop a catalog": "DROP TABLE catalogs.test_catalog",
    "unregister a catalog": "DELETE FROM skyclass.catalog WHERE false",
    # Per-OOD-bin uncertainty of a version (revision 0014): read and applied by readers.
    "read interval calibrations": (
        "SELECT count(*) FROM skyclass.interval_calibration "
        "UNION ALL SELECT count(*) FROM skyclass.probability_recalibration"
    ),
    "write interval calibrations": (
        "INSERT INTO skyclass.probability_recalibration (model_version_id) SELECT {v} WHERE false"
    ),
    "call recalibrated_probabilities": (
        "SELECT skyclass.recalibrated_probabilities({v}, array_fill(0.25::real, "
        "ARRAY[(SELECT cardinality(classes) FROM skyclass.model_version "
        "WHERE model_version_id = {v})]), 50)"
    ),
    # Domain fits (skyclass domain, revisions 0012 and 0015): published read-only like
    # predictions; only the owner writes them (it registers and compiles the classifier).
    "read domain fits and expected metrics": (
        "SELECT count(*) FROM skyclass.domain_shift AS d "
        "JOIN skyclass.domain_metric AS m USING (domain_shift_id) "
        "JOIN skyclass.domain_object AS o USING (domain_shift_id)"
    ),
    "write domain fits": (
        "INSERT INTO skyclass.domain_shift (model_version_id) SELECT {v} WHERE false"
    ),
    # Drift (revision 0016): scoring runs write it in their finish step; readers read it.
    "read drift summaries and alerts": (
        "SELECT count(*) FROM skyclass.drift AS d "
        "JOIN skyclass.drift_summary AS s USING (run_id, scope, bin) "
        "JOIN skyclass.drift_run AS r USING (run_id) "
        "JOIN skyclass.drift_reference AS f USING (model_version_id) "
        "JOIN skyclass.drift_reference_bin AS b USING (model_version_id)"
    ),
    "write drift rows": "INSERT INTO skyclass.drift_summary (run_id) SELECT 1 WHERE false",
    # Shards (revision 0018): adding one also needs a foreign server, superuser-only here.
    "read the shard registry": ("SELECT count(*) FROM skyclass.shard, skyclass.shard_range"),
    "register a shard": (
        "INSERT INTO skyclass.shard (name, server_name, conninfo) SELECT 'a', 'b', 'c' WHERE false"
    ),
    # TAP (revision 0020): TAP_SCHEMA is published; the UWS job list is the portal's to write.
    "read TAP_SCHEMA": "SELECT count(*) FROM tap_schema.columns",
    "write TAP jobs": "DELETE FROM skyclass.tap_job WHERE false",
    # The portal's model cards (revision 0019): views over registry tables the reader cannot read.
    "read model cards": (
        "SELECT count(*) FROM skyclass.published_model_version AS v "
        "JOIN skyclass.published_metric USING (model_version_id) "
        "JOIN skyclass.published_curve USING (model_version_id)"
    ),
    # A SECURITY DEFINER function reading the training snapshot (revision 0019).
    "compute a purity threshold": (
        "SELECT count(*) FROM skyclass.purity_threshold({v}, "
        "(SELECT classes[1] FROM skyclass.model_version WHERE model_version_id = {v}), 0.5)"
    ),
    "read training snapshots": "SELECT count(*) FROM skyclass.training_snapshot",
}

A, D = ALLOWED, DENIED
# fmt: off
EXPECTED: dict[str, dict[str, str]] = {
    # The database owner (superuser): the control row, everything is allowed.
    "owner": {action: A for action in ACTIONS},
    "skyclass_reader": {
        "read published views": A,
        "read catalogs": A,
        "read the catalog registry": A,
        "read catalogs through crossmatch_sweep": A,
        "write predictions": D,
        "insert an artifact": D,
        "read artifact bytes": D,
        "call predict": D,
        "call predict_raw": D,
        "read OOD scores": A,
        "write OOD scores": D,
        "start an OOD run": D,
        "start a scoring job": D,
        "claim a chunk": D,
        "take a job's lease": D,
        "take an ingest or build lock": D,
        "create objects in schema skyclass": D,
        "create objects in schema catalogs": D,
        "deploy": D,
        "drop a catalog": D,
        "unregister a catalog": D,
        "read interval calibrations": A,
        "write interval calibrations": D,
        "call recalibrated_probabilities": A,
        "read domain fits and expected metrics": A,
        "write domain fits": D,
        "read drift summaries and alerts": A,
        "write drift rows": D,
        "read the shard registry": A,
        "register a shard": D,
        "read TAP_SCHEMA": A,
        "write TAP jobs": D,
    },
    # The TAP service's login role (0020): the reader's rights and the UWS job list.
    "skyclass_portal": {
        "read published views": A,
        "read catalogs": A,
        "read the catalog registry": A,
        "read catalogs through crossmatch_sweep": A,
        "write predictions": D,
        "insert an artifact": D,
        "read artifact bytes": D,
        "call predict": D,
        "start a scoring job": D,
        "claim a chunk": D,
        "take a job's lease": D,
        "take an ingest or build lock": D,
        "create objects in schema skyclass": D,
        "create objects in schema catalogs": D,
        "deploy": D,
        "drop a catalog": D,
        "unregister a catalog": D,
        "read TAP_SCHEMA": A,
        "write TAP jobs": A,
        "read model cards": A,
        "compute a purity threshold": A,
        "read training snapshots": D,
    },
    "skyclass_model_admin": {
        "read published views": D,
        "read catalogs": D,
        "read the catalog registry": D,
        "read catalogs through crossmatch_sweep": D,
        "write predictions": D,
        "insert an artifact": D,  # superusers only: an artifact is native code (0008)
        "read artifact bytes": A,
        "call predict": A,  # it may read model_version and model_artifact
        "call predict_raw": A,
        "read OOD scores": D,
        "write OOD scores": D,
        "start an OOD run": D,
        "start a scoring job": D,
        "claim a chunk": D,
        "take a job's lease": D,
        "take an ingest or build lock": D,
        "create objects in schema skyclass": D,
        "create objects in schema catalogs": D,
        "deploy": D,
        "drop a catalog": D,
        "unregister a catalog": D,
        "read interval calibrations": A,
        "write interval calibrations": D,
        "call recalibrated_probabilities": A,
        "read domain fits and expected metrics": D,
        "write domain fits": D,
        "read drift summaries and alerts": D,
        "write drift rows": D,
        "read the shard registry": D,
        "register a shard": D,
        "read TAP_SCHEMA": D,
        "write TAP jobs": D,
        "read model cards": D,
        "compute a purity threshold": D,
        "read training snapshots": D,
    },
    NO_GRANTS: {action: D for action in ACTIONS},
}
# The login role of `skyclass serve` (revision 0019) may do exactly what skyclass_reader may.
EXPECTED["skyclass_reader"].update(
    {"read model cards": A, "compute a purity threshold": A, "read training snapshots": D}
)
EXPECTED["skyclass_model_admin"].update(
    {"read model cards": D, "compute a purity threshold": D, "read training snapshots": D}
)
# ... and, for the TAP service (revision 0020), keeps the UWS job list.
EXPECTED["skyclass_portal"] = {**EXPECTED["skyclass_reader"], "write TAP jobs": A}
# fmt: on


@pytest.fixture(scope="module")
def matrix_db(
    skyclass_extension: None, server_url: str, template_url: str
) -> Iterator[tuple[str, dict[str, str], dict[str, int]]]:
    """A database with a compiled version, objects and a deployment; the roles of the rows."""
    url = jobs_database(server_url)
    fresh = f"no_grants_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            version = register(conn)
            add_objects(conn, version, object_features(50, seed=5))
            conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
            conn.execute(
                "INSERT INTO skyclass.probability_recalibration VALUES (%s, 0, 0, 99, 1.1, 100)",
                (version,),
            )
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(fresh)))
            row = conn.execute(
                "SELECT catalog_id FROM skyclass.catalog WHERE name = %s", (CATALOG,)
            ).fetchone()
            owner = conn.execute("SELECT current_user").fetchone()
            table = conn.execute("SELECT 'catalogs.test_catalog'::regclass::oid").fetchone()
        assert row is not None and owner is not None and table is not None
        roles = {
            "owner": str(owner[0]),
            "skyclass_reader": "skyclass_reader",
            "skyclass_portal": "skyclass_portal",
            "skyclass_model_admin": "skyclass_model_admin",
            NO_GRANTS: fresh,
        }
        yield url, roles, {"v": version, "c": int(row[0]), "t": int(table[0])}
    finally:
        drop_database(server_url, url)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(fresh)))


def _outcome(conn: psycopg.Connection[Any], role: str, statement: str) -> str:
    """ALLOWED or DENIED for ``statement`` run as ``role``; any other error is raised."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            conn.execute(statement)
        return ALLOWED
    except psycopg.errors.InsufficientPrivilege:
        return DENIED
    finally:
        # Session advisory locks outlive the rollback.
        conn.execute("SELECT pg_advisory_unlock_all()")


def test_every_role_may_do_exactly_what_the_matrix_says(
    matrix_db: tuple[str, dict[str, str], dict[str, int]],
) -> None:
    url, roles, ids = matrix_db
    assert set(EXPECTED) == set(roles)
    wrong = []
    for row, role in roles.items():
        assert set(EXPECTED[row]) == set(ACTIONS), row
        # A session per role: the extension keeps a model loaded by one role for the session.
        with psycopg.connect(url, autocommit=True) as conn:
            for action, statement in ACTIONS.items():
                got = _outcome(conn, role, statement.format(**ids))
                if got != EXPECTED[row][action]:
                    wrong.append(f"{row} / {action}: {got}, expected {EXPECTED[row][action]}")
    assert not wrong, "\n".join(wrong)


def test_a_model_loaded_by_one_role_is_not_usable_by_another_in_the_session(
    matrix_db: tuple[str, dict[str, str], dict[str, int]],
) -> None:
    url, _, ids = matrix_db
    predict = ACTIONS["call predict"].format(**ids)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(predict)  # loaded by the owner
        assert _outcome(conn, "skyclass_reader", predict) == DENIED
