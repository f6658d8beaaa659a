"""The command line of scoring: skyclass deploy, score, runs (and their errors)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner

from skyclass.cli import main
from tests.conftest import drop_database
from tests.score.jobs_support import add_objects, jobs_database, object_features, register

CATALOG = "test_catalog"


@pytest.fixture
def url(skyclass_extension: None, server_url: str, template_url: str) -> Iterator[str]:
    database = jobs_database(server_url)
    try:
        yield database
    finally:
        drop_database(server_url, database)


def _run(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"SKYCLASS_DATABASE_URL": url})
    return result.exit_code, result.output


def test_deploy_score_and_runs(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        v1 = register(conn, method="identity", model="sgq")
        register(conn, method="isotonic", model="sgq")
        add_objects(conn, v1, object_features(2500, seed=61))
        add_objects(conn, v1, object_features(40, seed=62), with_features=False)

    code, out = _run(url, "deploy", "set", "sgq_current", "sgq:1", "--description", "SGQ")
    assert code == 0 and "deployment sgq_current created: sgq:1" in out
    code, out = _run(url, "deploy", "set", "sgq_current", "sgq:2")
    assert code == 0 and f"switched: model version {v1} -> sgq:2" in out
    code, out = _run(url, "deploy", "list")
    assert code == 0 and re.search(r"sgq_current\s+sgq:2\s+model version \d+, classification", out)
    code, out = _run(url, "deploy", "history", "sgq_current")
    assert code == 0 and len(out.strip().splitlines()) == 2 and f"(was {v1})" in out

    code, out = _run(
        url, "score", "sgq_current", "--catalog", CATALOG, "--chunk-size", "1000", "--workers", "2"
    )
    assert code == 0, out
    assert re.search(r"run (\d+) succeeded: 2,500 objects of test_catalog scored with sgq:2", out)
    assert "2 session(s), 3 chunks" in out
    assert "warning: 40 objects of test_catalog have no features" in out

    code, out = _run(url, "score", "sgq_current", "--catalog", CATALOG, "--only-new")
    assert code == 0 and "0 objects" in out

    code, out = _run(url, "score", "sgq:1", "--catalog", CATALOG, "--scorer", "client")
    assert code == 0 and "by the client scorer" in out

    code, out = _run(url, "runs")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert len([line for line in lines if line.startswith("run ")]) == 3
    assert "succeeded" in lines[0] and "sgq:1 on test_catalog" in lines[0] and "client" in lines[0]
    assert "sgq_current = sgq:2 on test_catalog" in out

    code, out = _run(url, "deploy", "remove", "sgq_current")
    assert code == 0 and "removed" in out
    code, out = _run(url, "deploy", "history")
    assert "removed" in out.strip().splitlines()[-1]


def test_cli_errors(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        version = register(conn)
        add_objects(conn, version, object_features(500, seed=63))
        conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))

    code, out = _run(url, "score", "nope", "--catalog", CATALOG)
    assert code == 1 and "error: cannot start scoring nope on test_catalog: no deployment" in out
    code, out = _run(url, "score", "sgq_current", "--catalog", "no_such_catalog")
    assert code == 1 and "catalog 'no_such_catalog' is not registered" in out
    code, out = _run(url, "deploy", "set", "sgq_current", "no_such_model:1")
    assert code == 1 and "error:" in out

    # While a session holds the job, the CLI refuses at once and names the run.
    with psycopg.connect(url, autocommit=True) as holder:
        row = holder.execute(
            "SELECT skyclass.start_scoring_run('sgq_current', %s), pg_backend_pid()", (CATALOG,)
        ).fetchone()
        assert row is not None
        code, out = _run(url, "score", "sgq_current", "--catalog", CATALOG)
        assert code == 1
        assert f"already running (run {row[0]}, started " in out and f"pid {row[1]})" in out
    # The holder is gone: the run shows as interrupted, and --restart starts a new one.
    code, out = _run(url, "runs")
    assert "interrupted (backend gone)" in out
    code, out = _run(url, "score", "sgq_current", "--catalog", CATALOG, "--restart")
    assert code == 0 and f"run {row[0] + 1} succeeded" in out


def test_without_the_extension_the_job_runs_client_side(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        version = register(conn)
        add_objects(conn, version, object_features(800, seed=64))
        conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
        conn.execute("DROP EXTENSION skyclass")
        # Inside the database the job says what to do instead.
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="extension is not installed"):
            conn.execute("CALL skyclass.rescore('sgq_current', %s)", (CATALOG,))
    code, out = _run(url, "score", "sgq_current", "--catalog", CATALOG, "--scorer", "database")
    assert code == 1 and "extension is not installed" in out
    code, out = _run(url, "score", "sgq_current", "--catalog", CATALOG)
    assert code == 0 and "800 objects" in out and "by the client scorer" in out
    with psycopg.connect(url) as conn:
        runs = conn.execute(
            "SELECT status, scorer, attempts FROM skyclass.scoring_run ORDER BY run_id"
        ).fetchall()
        count = conn.execute("SELECT count(*) FROM skyclass.prediction").fetchone()
    # The failed in-database run was resumed by the client scorer.
    assert runs == [("succeeded", "client", 2)] and count == (800,)
