"""Single flight that only scoring roles can hold (issue 9, item 4).

Until revision 0008 a job was kept single by a session advisory lock on
``hashtextextended('skyclass.rescore:V:C', 0)``, a key any role can take:
a role with no grants at all blocked the job forever, and starters blamed
the stranger's pid. Now the job's row of ``skyclass.scoring_lease`` is the
lock, and only roles that may update that table can take it.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from skyclass.score.errors import AlreadyRunningError
from skyclass.score.jobs import score_catalog
from tests.conftest import drop_database
from tests.score.jobs_support import add_objects, jobs_database, object_features, register

CATALOG = "test_catalog"


@pytest.fixture
def stranger(
    skyclass_extension: None, server_url: str, template_url: str
) -> Iterator[tuple[str, str, int]]:
    """A database with a deployed version and objects, and a role without any grant."""
    url = jobs_database(server_url)
    role = f"stranger_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            version = register(conn)
            add_objects(conn, version, object_features(1500, seed=3))
            conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        yield url, role, version
    finally:
        drop_database(server_url, url)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _as(url: str, role: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return conn


def test_a_role_without_grants_cannot_block_a_job(stranger: tuple[str, str, int]) -> None:
    url, role, version = stranger
    with psycopg.connect(url, autocommit=True) as conn:
        catalog_id = conn.execute(
            "SELECT catalog_id FROM skyclass.catalog WHERE name = %s", (CATALOG,)
        ).fetchone()
        assert catalog_id is not None
    with _as(url, role) as attacker:
        # The keys the jobs used to lock on are still free for anyone to take...
        for key in (f"skyclass.rescore:{version}:{catalog_id[0]}", "skyclass.prediction_partition"):
            taken = attacker.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
            ).fetchone()
            assert taken == (True,)
        # ...but the lease is not.
        for statement in (
            "UPDATE skyclass.scoring_lease SET holder_pid = pg_backend_pid()",
            "SELECT * FROM skyclass.scoring_lease FOR UPDATE",
            "INSERT INTO skyclass.scoring_lease (model_version_id, catalog_id) VALUES (1, 1)",
            "SELECT skyclass.start_scoring_run('sgq_current', 'test_catalog')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                attacker.execute(statement)
        # The job runs to the end while the stranger holds both keys, in both forms.
        run = score_catalog("sgq_current", CATALOG, url=url, workers=2, chunk_size=400)
        assert run.status == "succeeded" and run.rows_scored == 1500
        with psycopg.connect(url, autocommit=True) as conn:
            notices: list[str] = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            conn.execute("CALL skyclass.rescore('sgq_current', %s, chunk_size => 400)", (CATALOG,))
            assert any("succeeded: 1500 rows" in n for n in notices), notices
        still_held = attacker.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        assert still_held == (2,)


def test_the_refusal_names_the_run_and_its_real_holder(stranger: tuple[str, str, int]) -> None:
    url, role, _ = stranger
    with psycopg.connect(url, autocommit=True) as holder, _as(url, role) as attacker:
        run_id = holder.execute(
            "SELECT skyclass.start_scoring_run('sgq_current', %s, chunk_size => 400)", (CATALOG,)
        ).fetchone()
        assert run_id is not None
        attacker.execute("SELECT pg_advisory_lock(hashtextextended('skyclass.rescore:1:1', 0))")
        pid = holder.info.backend_pid
        with pytest.raises(
            AlreadyRunningError,
            match=rf"already running \(run {run_id[0]}, started .*, pid {pid}\)",
        ):
            score_catalog("sgq_current", CATALOG, url=url, workers=1)
        row = holder.execute(
            "SELECT skyclass.scoring_job_holder(model_version_id, catalog_id) "
            "FROM skyclass.scoring_run WHERE run_id = %s",
            run_id,
        ).fetchone()
        assert row == (holder.info.backend_pid,)
    # The holder's session is gone: the lease is stale and the next start resumes the run.
    run = score_catalog("sgq_current", CATALOG, url=url, workers=1)
    assert (run.run_id, run.attempts, run.status) == (run_id[0], 2, "succeeded")


def test_a_chunk_an_orphan_still_holds_is_scored_once_it_lets_go(
    stranger: tuple[str, str, int],
) -> None:
    """A restart within the second a killed client's backends take to stop finds one of
    them still holding a chunk: the workers skip it, then score it once it is released."""
    url = stranger[0]
    with psycopg.connect(url, autocommit=True) as conn:
        run_id = conn.execute(
            "SELECT skyclass.start_scoring_run('sgq_current', %s, chunk_size => 400)", (CATALOG,)
        ).fetchone()
        assert run_id is not None
        conn.execute("SELECT skyclass.plan_scoring_run(%s)", run_id)
    with psycopg.connect(url) as orphan:
        orphan.execute(
            "SELECT 1 FROM skyclass.scoring_chunk WHERE run_id = %s AND chunk_no = 1 FOR UPDATE",
            run_id,
        )
        timer = threading.Timer(1.5, orphan.rollback)
        timer.start()
        try:
            run = score_catalog("sgq_current", CATALOG, url=url, workers=2)
        finally:
            timer.join()
    assert (run.run_id, run.status, run.rows_scored) == (run_id[0], "succeeded", 1500)
    assert run.chunks_done == run.chunks_total == 4
