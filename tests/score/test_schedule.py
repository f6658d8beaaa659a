"""Schedules: pg_cron really runs CALL skyclass.rescore; failures show and resume.

pg_cron only runs in the database named by ``cron.database_name`` (here, as in
the embedded cluster, ``skyclass``), and the session's test databases are
clones with other names, so this test starts a cluster of its own: its
``skyclass`` database (pg_cron's, jobs created with ``cron.schedule``) and a
second database ``portal`` (jobs created there with
``cron.schedule_in_database``). pg_cron 1.4 has no seconds syntax, so the
schedules are ``* * * * *`` and the test waits for the next minute.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from skyclass.cli import main
from skyclass.db.migrate import upgrade
from skyclass.score.errors import ScoringError
from skyclass.score.jobs import score_catalog
from skyclass.score.schedule import add_schedule, list_schedules, remove_schedule
from tests.score.jobs_support import add_objects, object_features, own_cluster, register
from tests.support.registry import feature_table

CATALOG = "test_catalog"


def _with_dbname(url: str, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def _prepare(url: str, n: int) -> tuple[int, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        version = register(conn)
        ids = add_objects(conn, version, object_features(n, seed=51))
        conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
    return version, ids


def _cron_results(url: str, jobids: list[int], timeout: float) -> dict[int, tuple[str, str]]:
    """Wait until every job ran once; jobid -> (status, return_message)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT DISTINCT ON (jobid) jobid, status, return_message "
                "FROM cron.job_run_details WHERE jobid = ANY(%s) "
                "AND status IN ('succeeded', 'failed') ORDER BY jobid, runid",
                (jobids,),
            ).fetchall()
            if len(rows) == len(jobids):
                return {int(r[0]): (str(r[1]), str(r[2] or "")) for r in rows}
            if time.monotonic() > deadline:
                raise AssertionError(f"pg_cron did not run the jobs within {timeout} s: {rows}")
            time.sleep(0.5)


@pytest.mark.slow
def test_scheduled_rescoring_runs_and_a_failed_run_resumes(skyclass_extension: None) -> None:
    with own_cluster("cron") as cluster:
        url = cluster.url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE portal")
        portal = _with_dbname(url, "portal")
        upgrade(portal)
        version, ids = _prepare(url, 3000)
        portal_version, portal_ids = _prepare(portal, 2000)

        # The skyclass database's first scheduled run will fail on a broken feature row.
        bad = int(ids[1500])
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {} SET x = x[1:8] WHERE object_id = %s").format(
                    feature_table(conn, version)
                ),
                (bad,),
            )

        with pytest.raises(ScoringError, match=r"invalid schedule|refused the schedule"):
            add_schedule("broken", "sgq_current", CATALOG, "every now and then", url=url)
        with pytest.raises(ScoringError, match="no deployment named"):
            add_schedule("nothing", "no_such", CATALOG, "* * * * *", url=url)
        nightly = add_schedule(
            "nightly", "sgq_current", CATALOG, "* * * * *", chunk_size=1000, url=url
        )
        remote = add_schedule("hourly", "sgq_current", CATALOG, "* * * * *", url=portal)
        assert nightly.cron_database == remote.cron_database == "skyclass"
        assert nightly.command == (
            "CALL skyclass.rescore_with_ood('sgq_current', 'test_catalog', only_new => false, "
            "chunk_size => 1000, schedule_name => 'nightly')"
        )
        with psycopg.connect(url, autocommit=True) as conn:
            jobs = conn.execute("SELECT jobid, database FROM cron.job ORDER BY jobid").fetchall()
        assert jobs == [(nightly.cron_jobid, "skyclass"), (remote.cron_jobid, "portal")]

        results = _cron_results(url, [nightly.cron_jobid, remote.cron_jobid], timeout=130)
        # Remove the failing schedule before it fires again; we resume by hand below.
        remove_schedule("nightly", url=url)

        assert results[remote.cron_jobid][0] == "succeeded", results
        with psycopg.connect(portal, autocommit=True) as conn:
            run = conn.execute(
                "SELECT status, triggered_by, schedule_name, rows_scored "
                "FROM skyclass.scoring_run ORDER BY run_id DESC LIMIT 1"
            ).fetchone()
            assert run == ("succeeded", "schedule", "hourly", len(portal_ids))
            count = conn.execute(
                "SELECT count(*) FROM skyclass.prediction WHERE model_version_id = %s",
                (portal_version,),
            ).fetchone()
            assert count == (len(portal_ids),)

        status, message = results[nightly.cron_jobid]
        assert status == "failed" and "expected 9 features" in message, results
        # The failure shows in `skyclass schedule list` of the portal database too.
        shown = list_schedules(portal)
        assert [s.schedule.name for s in shown] == ["hourly"]
        assert shown[0].cron_runs and shown[0].cron_runs[0].status in ("succeeded", "running")
        assert shown[0].runs[0].status in ("succeeded", "running")

        with psycopg.connect(url, autocommit=True) as conn:
            failed = conn.execute(
                "SELECT run_id, status, triggered_by, schedule_name, error, chunks_done "
                "FROM skyclass.scoring_run ORDER BY run_id DESC LIMIT 1"
            ).fetchone()
            assert failed is not None
            assert failed[1:4] == ("failed", "schedule", "nightly")
            assert "expected 9 features" in failed[4] and failed[5] == 1
            conn.execute(
                sql.SQL("UPDATE {} SET x = x || 'NaN'::real WHERE object_id = %s").format(
                    feature_table(conn, version)
                ),
                (bad,),
            )
        # The failed scheduled run is resumed (not restarted) by the next start.
        resumed = score_catalog("sgq_current", CATALOG, url=url, workers=2)
        assert resumed.run_id == failed[0] and resumed.attempts == 2
        assert resumed.status == "succeeded" and resumed.rows_scored == len(ids)

        runner = CliRunner()
        env = {"SKYCLASS_DATABASE_URL": portal}
        listed = runner.invoke(main, ["schedule", "list"], env=env)
        assert listed.exit_code == 0, listed.output
        assert "hourly: '* * * * *' sgq_current on test_catalog" in listed.output
        assert "succeeded" in listed.output
        removed = runner.invoke(main, ["schedule", "remove", "hourly"], env=env)
        assert removed.exit_code == 0, removed.output
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM cron.job").fetchone() == (0,)
        listed = runner.invoke(main, ["schedule", "list"], env=env)
        assert "no schedules" in listed.output
