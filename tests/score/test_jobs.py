"""Scoring jobs in the database: CALL skyclass.rescore, history, only-new, failures, single flight.

Each test gets its own migrated database with the extension and a compiled
3-class HistGradientBoosting model (isotonic calibration) of
tests/score/models.py, and scores SDSS17 photometry with 10% NaN.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from skyclass.score.codec import MAX_PROBABILITY_ERROR
from skyclass.score.errors import AlreadyRunningError
from skyclass.score.jobs import score_catalog
from skyclass.score.runs import get_run, list_runs
from tests.conftest import drop_database
from tests.score.jobs_support import (
    CASE,
    add_objects,
    jobs_database,
    object_features,
    predictions,
    register,
    run_row,
    version_tables,
)
from tests.score.models import case

CATALOG = "test_catalog"
ALREADY_RUNNING = re.compile(
    r"already running \(run (?P<run>\d+), started (?P<started>[^,]+), pid (?P<pid>\d+)\)"
)


@pytest.fixture
def jobs_url(skyclass_extension: None, server_url: str, template_url: str) -> Iterator[str]:
    url = jobs_database(server_url)
    try:
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture
def conn(jobs_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(jobs_url, autocommit=True) as connection:
        yield connection


def _latest_run(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute("SELECT max(run_id) FROM skyclass.scoring_run").fetchone()
    assert row is not None and row[0] is not None
    return run_row(conn, int(row[0]))


def _feature_table(conn: psycopg.Connection[Any], version: int) -> sql.Identifier:
    row = conn.execute(
        "SELECT f.table_name FROM skyclass.model_version JOIN skyclass.feature_set AS f "
        "USING (feature_set_id) WHERE model_version_id = %s",
        (version,),
    ).fetchone()
    assert row is not None
    return sql.Identifier("features", str(row[0]))


def _partitions(conn: psycopg.Connection[Any], version: int) -> list[str]:
    """The published run tables of a version (skyclass.prediction shows exactly these)."""
    rows = conn.execute(
        "SELECT table_name FROM skyclass.prediction_table WHERE model_version_id = %s "
        "ORDER BY run_id",
        (version,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def test_rescore_full_only_new_and_full_again(conn: psycopg.Connection[Any]) -> None:
    version = register(conn)
    x = object_features(5000, seed=1)
    ids = add_objects(conn, version, x)
    conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))

    conn.execute("CALL skyclass.rescore('sgq_current', %s, chunk_size => 1000)", (CATALOG,))
    first = _latest_run(conn)
    assert first["status"] == "succeeded"
    assert (first["chunks_total"], first["chunks_done"], first["rows_scored"]) == (5, 5, 5000)
    assert first["triggered_by"] == "manual" and first["deployment"] == "sgq_current"
    assert first["scorer"] == "database" and first["objects_without_features"] == 0

    # One prediction per object, equal to scikit-learn + the same calibration.
    preds = predictions(conn, version)
    assert sorted(preds) == ids.tolist()
    proba = np.array([preds[i][3] for i in ids.tolist()], dtype=np.float64)
    reference = case(CASE).reference(x, "isotonic")
    assert np.abs(proba - reference).max() <= MAX_PROBABILITY_ERROR + 1e-6
    classes = np.array(case(CASE).classes)
    labels = [preds[i][1] for i in ids.tolist()]
    assert labels == classes[np.argmax(proba.astype(np.float32), axis=1)].tolist()
    top = np.array([preds[i][2] for i in ids.tolist()], dtype=np.float64)
    assert np.array_equal(top, proba.max(axis=1))
    assert all(preds[i][4] is None for i in ids.tolist())  # no photo-z columns

    # Only new objects: the others keep their run.
    new_ids = add_objects(conn, version, object_features(700, seed=2))
    conn.execute("CALL skyclass.rescore('sgq_current', %s, true, 300)", (CATALOG,))
    second = _latest_run(conn)
    assert second["status"] == "succeeded" and second["write_kind"] == "insert"
    assert (second["chunks_total"], second["rows_scored"]) == (3, 700)
    preds = predictions(conn, version)
    assert len(preds) == 5700
    assert {preds[i][0] for i in ids.tolist()} == {first["run_id"]}
    assert {preds[i][0] for i in new_ids.tolist()} == {second["run_id"]}
    conn.execute("CALL skyclass.rescore('sgq_current', %s, true)", (CATALOG,))
    assert _latest_run(conn)["rows_scored"] == 0

    # A full re-score replaces the catalog partition: still one row per object.
    before = _partitions(conn, version)
    conn.execute("CALL skyclass.rescore(%s, %s, chunk_size => 2000)", (str(version), CATALOG))
    third = _latest_run(conn)
    assert third["status"] == "succeeded" and third["deployment"] is None
    preds = predictions(conn, version)
    assert len(preds) == 5700 and {p[0] for p in preds.values()} == {third["run_id"]}
    after = _partitions(conn, version)
    # The full run and the two only_new runs (the last one empty) were published; the new
    # full run replaced all three, and their tables are gone.
    assert len(before) == 3 and len(after) == 1 and after[0] not in before
    for table in before:
        assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
    count = conn.execute(
        "SELECT count(*), count(DISTINCT object_id) FROM skyclass.prediction"
    ).fetchone()
    assert count == (5700, 5700)


def test_versions_keep_their_history_and_class_changes(conn: psycopg.Connection[Any]) -> None:
    v1 = register(conn, method="identity", model="sgq")
    v2 = register(conn, method="isotonic", model="sgq")
    ids = add_objects(conn, v1, object_features(3000, seed=3))
    for v in (v1, v2):
        conn.execute("CALL skyclass.rescore(%s, %s)", (f"sgq:{2 if v == v2 else 1}", CATALOG))
    p1, p2 = predictions(conn, v1), predictions(conn, v2)
    assert len(p1) == len(p2) == len(ids)
    changed = {i for i in ids.tolist() if p1[i][1] != p2[i][1]}
    assert changed, "isotonic calibration should move some objects to another class"
    rows = conn.execute(
        "SELECT * FROM skyclass.class_changes(%s, %s, %s)", (v1, v2, CATALOG)
    ).fetchall()
    assert {r[1] for r in rows} == changed
    for cat, object_id, label_a, prob_a, label_b, prob_b in rows:
        assert cat == CATALOG
        assert (label_a, prob_a, label_b, prob_b) == (*p1[object_id][1:3], *p2[object_id][1:3])

    # The long view: one row per class, ranked by probability, classes named.
    some = int(ids[0])
    long_rows = conn.execute(
        "SELECT class, probability, rank FROM skyclass.prediction_long "
        "WHERE model_version_id = %s AND object_id = %s ORDER BY rank",
        (v2, some),
    ).fetchall()
    classes = case(CASE).classes
    assert [r[2] for r in long_rows] == [1, 2, 3]
    assert long_rows[0][0] == p2[some][1]
    assert sorted(r[1] for r in long_rows) == sorted(p2[some][3])
    assert {r[0] for r in long_rows} == set(classes)

    # The current classification follows the deployment.
    conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (v1,))
    current = dict(
        conn.execute(
            "SELECT object_id, model_version_id FROM skyclass.current_classification "
            "WHERE deployment = 'sgq_current' AND catalog = %s",
            (CATALOG,),
        ).fetchall()
    )
    assert set(current.values()) == {v1} and len(current) == len(ids)
    conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (v2,))
    labels = dict(
        conn.execute(
            "SELECT object_id, top_label FROM skyclass.current_classification "
            "WHERE deployment = 'sgq_current'"
        ).fetchall()
    )
    assert labels == {i: p2[i][1] for i in ids.tolist()}


def test_objects_without_features_are_counted(conn: psycopg.Connection[Any]) -> None:
    version = register(conn)
    add_objects(conn, version, object_features(1000, seed=4))
    add_objects(conn, version, object_features(37, seed=5), with_features=False)
    conn.execute("CALL skyclass.rescore(%s, %s)", (str(version), CATALOG))
    run = _latest_run(conn)
    assert (run["rows_scored"], run["objects_without_features"]) == (1000, 37)


@pytest.mark.parametrize("writer", ["native", "sql"])
def test_objects_without_features_exact_after_objects_left_the_catalog(
    conn: psycopg.Connection[Any], writer: str
) -> None:
    # An in-place catalog loses objects whose feature rows stay (until the feature set is
    # rebuilt): those rows are scored, and the objects without features are still exactly
    # the catalog's objects that have no feature row, on either chunk writer.
    version = register(conn)
    ids = add_objects(conn, version, object_features(1000, seed=4))
    add_objects(conn, version, object_features(37, seed=5), with_features=False)
    catalog, _ = version_tables(conn, version)
    gone = ids[::80].tolist()
    conn.execute(sql.SQL("DELETE FROM {} WHERE object_id = ANY(%s)").format(catalog), (gone,))
    conn.execute(sql.SQL("SET skyclass.chunk_writer = {}").format(sql.Literal(writer)))
    conn.execute("CALL skyclass.rescore(%s, %s, chunk_size => 300)", (str(version), CATALOG))
    run = _latest_run(conn)
    assert len(gone) == 13
    assert (run["rows_scored"], run["objects_without_features"]) == (1000, 37)


def test_failed_chunk_marks_run_failed_and_next_start_resumes(
    conn: psycopg.Connection[Any],
) -> None:
    version = register(conn)
    ids = add_objects(conn, version, object_features(4000, seed=6))
    table = _feature_table(conn, version)
    bad = int(ids[2500])
    # A feature row that breaks the contract (8 values): the model refuses it.
    conn.execute(sql.SQL("UPDATE {} SET x = x[1:8] WHERE object_id = %s").format(table), (bad,))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="expected 9 features"):
        conn.execute("CALL skyclass.rescore(%s, %s, chunk_size => 500)", (str(version), CATALOG))
    run = _latest_run(conn)
    assert run["status"] == "failed"
    assert "chunk 5" in run["error"] and "expected 9 features" in run["error"]
    assert run["chunks_done"] == 5 and run["finished_at"] is not None
    # Nothing is published until the run succeeds, and the lock was released.
    assert predictions(conn, version) == {}
    holder = conn.execute(
        "SELECT skyclass.scoring_job_holder(%s, %s)",
        (version, run["catalog_id"]),
    ).fetchone()
    assert holder == (None,)

    conn.execute(
        sql.SQL("UPDATE {} SET x = x || 'NaN'::real WHERE object_id = %s").format(table), (bad,)
    )
    conn.execute("CALL skyclass.rescore(%s, %s, chunk_size => 500)", (str(version), CATALOG))
    resumed = _latest_run(conn)
    assert resumed["run_id"] == run["run_id"] and resumed["attempts"] == 2
    assert resumed["status"] == "succeeded" and resumed["error"] is None
    assert (resumed["chunks_done"], resumed["rows_scored"]) == (8, 4000)
    chunk_runs = conn.execute(
        "SELECT count(*) FROM skyclass.scoring_chunk WHERE run_id = %s AND done_at IS NOT NULL",
        (run["run_id"],),
    ).fetchone()
    assert chunk_runs == (8,)
    assert sorted(predictions(conn, version)) == ids.tolist()


def test_concurrent_starts_one_runs_the_others_fail_at_once(jobs_url: str) -> None:
    with psycopg.connect(jobs_url, autocommit=True) as setup:
        version = register(setup)
        add_objects(setup, version, object_features(2000, seed=7))
        setup.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
    barrier = threading.Barrier(4)
    results: list[tuple[str, Any, float]] = []
    winners: list[psycopg.Connection[Any]] = []
    lock = threading.Lock()

    def start() -> None:
        conn = psycopg.connect(jobs_url, autocommit=True)
        barrier.wait()
        began = time.monotonic()
        try:
            row = conn.execute(
                "SELECT skyclass.start_scoring_run('sgq_current', %s, chunk_size => 100), "
                "pg_backend_pid()",
                (CATALOG,),
            ).fetchone()
            outcome: tuple[str, Any, float] = ("started", row, time.monotonic() - began)
            with lock:
                winners.append(conn)
        except psycopg.errors.LockNotAvailable as exc:
            outcome = ("refused", exc.diag.message_primary, time.monotonic() - began)
            conn.close()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [r for r in results if r[0] == "started"]
    refused = [r for r in results if r[0] == "refused"]
    assert len(started) == 1 and len(refused) == 3
    run_id, pid = started[0][1]
    for _, message, seconds in refused:
        match = ALREADY_RUNNING.search(message)
        assert match, message
        assert int(match["run"]) == run_id and int(match["pid"]) == pid
        assert seconds < 2.0  # at once, not queued behind the running job

    # The Python API refuses too, while the job is held.
    with pytest.raises(AlreadyRunningError, match="already running"):
        score_catalog("sgq_current", CATALOG, url=jobs_url, workers=1)

    # The winner's session ends without finishing: the next start marks the run interrupted
    # and resumes it.
    winners[0].close()
    info = score_catalog("sgq_current", CATALOG, url=jobs_url, workers=2)
    assert info.run_id == run_id and info.attempts == 2 and info.status == "succeeded"
    assert info.rows_scored == 2000 and info.triggered_by == "cli"


def _call_in_thread(
    url: str, query: str, params: tuple[Any, ...]
) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []
    pid: list[int] = []

    def run() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            pid.append(conn.info.backend_pid)
            try:
                conn.execute(query, params)
                outcome.append(None)
            except psycopg.Error as exc:
                outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    while not pid:
        time.sleep(0.01)
    return thread, [pid[0], outcome]


def _wait_for_chunks(conn: psycopg.Connection[Any], n: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT run_id FROM skyclass.scoring_run "
            "WHERE status = 'running' AND chunks_done >= %s",
            (n,),
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError(f"no running run reached {n} chunks")


@pytest.mark.parametrize("how", ["cancel", "terminate"])
def test_interrupted_call_resumes(jobs_url: str, conn: psycopg.Connection[Any], how: str) -> None:
    version = register(conn)
    ids = add_objects(conn, version, object_features(6000, seed=8))
    thread, (pid, outcome) = _call_in_thread(
        jobs_url, "CALL skyclass.rescore(%s, %s, chunk_size => 50)", (str(version), CATALOG)
    )
    run_id = _wait_for_chunks(conn, 3)
    if how == "cancel":
        conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
    else:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    thread.join()
    assert isinstance(outcome[0], psycopg.Error)
    run = get_run(conn, run_id)
    if how == "cancel" and run.status == "interrupted":
        # The procedure caught the cancel inside a chunk: marked interrupted, lock released.
        assert "canceling statement" in (run.error or "")
    else:
        # The backend died (or the cancel came between two chunks, outside the procedure's
        # error handler, and the session then ended): the row still says running, and
        # listings know better.
        assert run.status == "running" and run.backend_gone
        assert run.effective_status == "interrupted"
        assert [r.run_id for r in list_runs(conn) if r.backend_gone] == [run_id]
    done_before = run.chunks_done
    assert 3 <= done_before < run.chunks_total

    conn.execute("CALL skyclass.rescore(%s, %s, chunk_size => 50)", (str(version), CATALOG))
    resumed = get_run(conn, run_id)
    assert resumed.status == "succeeded" and resumed.attempts == 2
    assert resumed.chunks_done == resumed.chunks_total and resumed.rows_scored == len(ids)
    assert sorted(predictions(conn, version)) == ids.tolist()
    assert len(list_runs(conn)) == 1


def test_migration_0004_downgrades_with_predictions_and_upgrades_again(
    jobs_url: str, conn: psycopg.Connection[Any]
) -> None:
    from skyclass.db.migrate import current_revision, downgrade, head_revision, upgrade

    version = register(conn)
    add_objects(conn, version, object_features(300, seed=9))
    conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
    conn.execute("CALL skyclass.rescore('sgq_current', %s, chunk_size => 100)", (CATALOG,))
    # An unfinished run leaves an unpublished partition behind; downgrade removes it too.
    run = conn.execute(
        "SELECT skyclass.start_scoring_run('sgq_current', %s, chunk_size => 100)", (CATALOG,)
    ).fetchone()
    assert run is not None
    conn.execute("SELECT skyclass.plan_scoring_run(%s)", (run[0],))
    conn.close()
    downgrade(jobs_url, "0003")
    with psycopg.connect(jobs_url, autocommit=True) as after:
        assert current_revision(jobs_url) == "0003"
        left = after.execute(
            "SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('skyclass', 'predictions') AND c.relname ~ "
            "'^(prediction|scoring_|deployment|mv_)'"
        ).fetchone()
        assert left == (0,)
        assert after.execute("SELECT to_regnamespace('predictions')").fetchone() == (None,)
        assert after.execute("SELECT count(*) FROM skyclass.model_version").fetchone() == (1,)
    upgrade(jobs_url)
    assert current_revision(jobs_url) == head_revision()


def _index_kinds(conn: psycopg.Connection[Any], version: int) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT a.amname FROM skyclass.prediction_table AS p, "
        "pg_partition_tree(p.table_name::regclass) AS t "
        "JOIN pg_index AS i ON i.indrelid = t.relid JOIN pg_class AS c ON c.oid = i.indexrelid "
        "JOIN pg_am AS a ON a.oid = c.relam WHERE p.model_version_id = %s",
        (version,),
    ).fetchall()
    return {str(r[0]) for r in rows}


def test_prediction_index_setting(conn: psycopg.Connection[Any]) -> None:
    version = register(conn)
    ids = add_objects(conn, version, object_features(1200, seed=9))
    conn.execute("CALL skyclass.rescore(%s, %s, chunk_size => 500)", (str(version), CATALOG))
    assert _index_kinds(conn, version) == {"btree"}
    conn.execute("SET skyclass.prediction_index = 'brin'")
    conn.execute("CALL skyclass.rescore(%s, %s, chunk_size => 500)", (str(version), CATALOG))
    assert _index_kinds(conn, version) == {"brin"}
    # The same rows, found by object either way.
    some = ids[::97].tolist()
    found = conn.execute(
        "SELECT count(*) FROM skyclass.prediction WHERE model_version_id = %s "
        "AND object_id = ANY(%s)",
        (version, some),
    ).fetchone()
    assert found == (len(some),)
    conn.execute("SET skyclass.prediction_index = 'hash'")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="btree or brin"):
        conn.execute("CALL skyclass.rescore(%s, %s, chunk_size => 500)", (str(version), CATALOG))
