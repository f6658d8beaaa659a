"""The read-only portal role: published views yes; predictions, artifacts and models no."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from skyclass.score.jobs import score_catalog
from tests.conftest import drop_database
from tests.score.jobs_support import add_objects, jobs_database, object_features, register

CATALOG = "test_catalog"


@pytest.fixture(scope="module")
def portal(
    skyclass_extension: None, server_url: str, template_url: str
) -> Iterator[tuple[str, str, int]]:
    """A scored database and a role that is a member of skyclass_reader (and nothing else)."""
    url = jobs_database(server_url)
    role = f"portal_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            version = register(conn)
            add_objects(conn, version, object_features(500, seed=31))
            conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
            conn.execute(
                sql.SQL("CREATE ROLE {} IN ROLE skyclass_reader").format(sql.Identifier(role))
            )
        score_catalog("sgq_current", CATALOG, url=url, workers=1)
        yield url, role, version
    finally:
        drop_database(server_url, url)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _as(url: str, role: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return conn


def test_reader_reads_the_published_views(portal: tuple[str, str, int]) -> None:
    url, role, version = portal
    with _as(url, role) as conn:
        row = conn.execute(
            "SELECT count(*) FROM skyclass.current_classification AS cc "
            "JOIN catalogs.test_catalog AS c USING (object_id) "
            "WHERE cc.deployment = 'sgq_current' AND cc.catalog = %s",
            (CATALOG,),
        ).fetchone()
        assert row == (500,)
        assert conn.execute("SELECT count(*) FROM skyclass.prediction_long").fetchone() == (1500,)
        assert conn.execute(
            "SELECT count(*) FROM skyclass.class_changes(%s, %s)", (version, version)
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM skyclass.prediction").fetchone() == (500,)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO skyclass.prediction (model_version_id, object_id, run_id, catalog_id, "
        "top_probability, top_label, probabilities) VALUES ({v}, 1, 1, 1, 1, 'x', '{{1}}')",
        "UPDATE skyclass.prediction SET top_label = 'STAR'",
        "DELETE FROM skyclass.prediction",
        "INSERT INTO skyclass.model_artifact (model_version_id, sha256, library, n_features, "
        "n_outputs, output_transform, treelite_version, tl2cgen_version, compiler, "
        "compiler_flags) VALUES ({v}, sha256('x'), 'x', 9, 3, 'identity', '', '', '', '')",
        "SELECT library FROM skyclass.model_artifact",
        "SELECT sha256 FROM skyclass.model_artifact",
        "SELECT checkpoint FROM skyclass.model_version",
        "SELECT skyclass.predict({v}, array_fill(1::real, ARRAY[9]))",
        "SELECT skyclass.score_chunk_into({v}, 'catalogs.test_catalog', 0, 10, 'skyclass.catalog')",
        "SELECT skyclass.deploy('sgq_current', {v})",
        "UPDATE skyclass.deployment SET description = 'mine'",
        "INSERT INTO skyclass.scoring_run (model_version_id, catalog_id, feature_set_id, mode, "
        "write_kind, scorer, chunk_size, feature_table, target_table, triggered_by) "
        "VALUES ({v}, 1, 1, 'full', 'partition', 'database', 1, '', '', 'cli')",
        "SELECT * FROM skyclass.scoring_run",
        "CALL skyclass.rescore('sgq_current', 'test_catalog')",
        "SELECT count(*) FROM predictions.mv_{v}",
        "CREATE TABLE predictions.mine (x int)",
        "INSERT INTO catalogs.test_catalog (object_id, ra, dec) VALUES (99999999, 1, 1)",
    ],
)
def test_reader_cannot_write_or_touch_models(portal: tuple[str, str, int], statement: str) -> None:
    url, role, version = portal
    # skyclass.prediction is a view nobody can write (revision 0017): PostgreSQL says so
    # before it checks privileges.
    refused: Any = psycopg.errors.InsufficientPrivilege
    if "skyclass.prediction " in statement and not statement.startswith("SELECT"):
        refused = (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported)
    with _as(url, role) as conn, pytest.raises(refused):
        conn.execute(statement.format(v=version))
