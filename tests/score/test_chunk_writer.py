"""The bulk writer of the scoring job: ``skyclass.score_chunk_into`` (extension 0.4.0).

It must store exactly what the SQL path stores (``skyclass.prediction_codec``),
in object_id order, and refuse every argument it cannot honour with a clear
error before writing anything.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from tests.conftest import drop_database
from tests.score.jobs_support import add_objects, jobs_database, object_features, register

CATALOG = "test_catalog"
INTO = "SELECT skyclass.score_chunk_into(%s, %s::regclass, %s, %s, %s::regclass)"
COLUMNS = "object_id bigint NOT NULL, top smallint NOT NULL, p1 smallint NOT NULL, " + (
    "p2 smallint NOT NULL, p3 smallint NOT NULL"
)


@pytest.fixture
def conn(skyclass_extension: None, server_url: str, template_url: str) -> Iterator[Any]:
    url = jobs_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as connection:
            yield connection
    finally:
        drop_database(server_url, url)


def _feature_table(conn: psycopg.Connection[Any], version: int) -> str:
    row = conn.execute(
        "SELECT format('features.%%I', f.table_name) FROM skyclass.model_version "
        "JOIN skyclass.feature_set AS f USING (feature_set_id) WHERE model_version_id = %s",
        (version,),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _scored_table(conn: psycopg.Connection[Any], n: int, seed: int) -> tuple[int, str]:
    """A compiled version, ``n`` objects with features, and an empty codec-shaped table t."""
    version = register(conn)
    add_objects(conn, version, object_features(n, seed=seed))
    conn.execute(f"CREATE TABLE t ({COLUMNS})")
    return version, _feature_table(conn, version)


def _shuffle(conn: psycopg.Connection[Any], table: str) -> None:
    """Rewrite the feature table in random row order (a catalog in sky order is not id order)."""
    with conn.transaction():
        conn.execute(f"CREATE TEMP TABLE shuffled AS SELECT * FROM {table} ORDER BY random()")
        conn.execute(f"DELETE FROM {table}")
        conn.execute(f"INSERT INTO {table} SELECT * FROM shuffled")
        conn.execute("DROP TABLE shuffled")


def _run_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    row = conn.execute(
        "SELECT target_table FROM skyclass.scoring_run ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    assert row is not None
    return conn.execute(f"SELECT * FROM {row[0]} ORDER BY object_id").fetchall()


def _calls(conn: psycopg.Connection[Any]) -> int:
    conn.execute("SELECT pg_stat_force_next_flush()")
    row = conn.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
        "WHERE schemaname = 'skyclass' AND funcname = 'score_chunk_into'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_job_writes_with_it_the_same_rows_as_the_sql_path(
    conn: psycopg.Connection[Any],
) -> None:
    version = register(conn)
    add_objects(conn, version, object_features(3000, seed=7))
    features = _feature_table(conn, version)
    _shuffle(conn, features)
    conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
    conn.execute("SET track_functions = 'all'")

    conn.execute("SET skyclass.chunk_writer = 'sql'")
    conn.execute("CALL skyclass.rescore('sgq_current', %s, chunk_size => 700)", (CATALOG,))
    by_sql = _run_rows(conn)
    assert _calls(conn) == 0

    conn.execute("RESET skyclass.chunk_writer")
    conn.execute("CALL skyclass.rescore('sgq_current', %s, chunk_size => 700)", (CATALOG,))
    native = _run_rows(conn)
    assert _calls(conn) == 5  # one call per chunk

    assert len(native) == 3000
    assert native == by_sql
    # Each chunk table holds its rows in object_id order (the BRIN option relies on it),
    # though the feature table is in random order.
    chunks = conn.execute(
        "SELECT c.oid::regclass::text FROM pg_inherits AS i JOIN pg_class AS c "
        "ON c.oid = i.inhrelid WHERE i.inhparent = (SELECT to_regclass(target_table) "
        "FROM skyclass.scoring_run ORDER BY run_id DESC LIMIT 1)"
    ).fetchall()
    assert len(chunks) == 5
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
    for (chunk,) in chunks:
        ids = [r[0] for r in conn.execute(f"SELECT object_id FROM {chunk} ORDER BY ctid")]
        assert ids == sorted(ids) and ids
        # Written frozen into a table of the chunk's own transaction: every page all-frozen.
        assert conn.execute(
            "SELECT bool_and(all_visible AND all_frozen) FROM pg_visibility_map(%s::regclass)",
            (chunk,),
        ).fetchone() == (True,)
    # The published view decodes them as before.
    row = conn.execute(
        "SELECT count(*), min(top_probability) > 0, max(top_probability) <= 1 "
        "FROM skyclass.prediction WHERE model_version_id = %s",
        (version,),
    ).fetchone()
    assert row == (3000, True, True)


def test_a_bad_setting_is_refused(conn: psycopg.Connection[Any]) -> None:
    version = register(conn)
    add_objects(conn, version, object_features(10, seed=2))
    conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
    conn.execute("SET skyclass.chunk_writer = 'fast'")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="native or sql"):
        conn.execute("CALL skyclass.rescore('sgq_current', %s)", (CATALOG,))


def test_it_writes_a_range_into_any_table_of_the_codec_columns(
    conn: psycopg.Connection[Any],
) -> None:
    version = register(conn)
    ids = add_objects(conn, version, object_features(400, seed=3))
    features = _feature_table(conn, version)
    _shuffle(conn, features)
    lo, hi = int(ids[50]), int(ids[249])
    conn.execute(f"CREATE TABLE t ({COLUMNS}, CHECK (object_id BETWEEN {lo} AND {hi}))")
    conn.execute("CREATE INDEX ON t (object_id)")
    assert conn.execute(INTO, (version, features, lo, hi, "t")).fetchone() == (200,)
    # A table of an earlier transaction: ordinary rows, not frozen.
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
    assert conn.execute(
        "SELECT bool_or(all_frozen) FROM pg_visibility_map('t'::regclass)"
    ).fetchone() == (False,)
    # The index was maintained: an index-only lookup finds every row.
    conn.execute("SET enable_seqscan = off")
    assert conn.execute(
        "SELECT count(*) FROM t WHERE object_id BETWEEN %s AND %s", (lo, hi)
    ).fetchone() == (200,)
    conn.execute("RESET enable_seqscan")
    # The same values as the SQL encoding of skyclass.prediction_codec.
    codec = conn.execute("SELECT encode FROM skyclass.prediction_codec(%s)", (version,)).fetchone()
    assert codec is not None
    expected = conn.execute(
        f"SELECT {codec[0]} FROM (SELECT f.object_id, skyclass.predict(%s, f.x) AS p "
        f"FROM {features} AS f WHERE f.object_id BETWEEN %s AND %s) AS s ORDER BY 1",
        (version, lo, hi),
    ).fetchall()
    assert conn.execute("SELECT * FROM t ORDER BY object_id").fetchall() == expected
    # Rows outside the target's CHECK constraint: refused, nothing written.
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(INTO, (version, features, lo, hi + 1, "t"))
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)
    # An empty range writes nothing.
    assert conn.execute(INTO, (version, features, -5, -1, "t")).fetchone() == (0,)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ("view", psycopg.errors.WrongObjectType, "is not a table"),
        ("parted", psycopg.errors.WrongObjectType, "is not a table"),
        ("short", psycopg.errors.InvalidTableDefinition, "has 4 columns"),
        ("renamed", psycopg.errors.InvalidTableDefinition, "column 3 is q1 smallint"),
        ("wide", psycopg.errors.InvalidTableDefinition, "column 3 is p1 integer"),
        ("triggered", psycopg.errors.FeatureNotSupported, "has triggers"),
    ],
)
def test_a_target_of_another_shape_is_refused(
    conn: psycopg.Connection[Any], target: str, error: type[Exception], message: str
) -> None:
    version = register(conn)
    add_objects(conn, version, object_features(20, seed=4))
    features = _feature_table(conn, version)
    conn.execute(f"CREATE TABLE ok ({COLUMNS})")
    conn.execute("CREATE VIEW view AS SELECT * FROM ok")
    conn.execute(f"CREATE TABLE parted ({COLUMNS}) PARTITION BY RANGE (object_id)")
    conn.execute("CREATE TABLE short (object_id bigint, top smallint, p1 smallint, p2 smallint)")
    conn.execute(
        "CREATE TABLE renamed (object_id bigint, top smallint, q1 smallint, p2 smallint, "
        "p3 smallint)"
    )
    conn.execute(
        "CREATE TABLE wide (object_id bigint, top smallint, p1 integer, p2 smallint, p3 smallint)"
    )
    conn.execute(f"CREATE TABLE triggered ({COLUMNS})")
    conn.execute(
        "CREATE FUNCTION nothing() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'"
    )
    conn.execute(
        "CREATE TRIGGER t BEFORE INSERT ON triggered FOR EACH ROW EXECUTE FUNCTION nothing()"
    )
    with pytest.raises(error, match=message):
        conn.execute(INTO, (version, features, 0, 10**9, target))
    assert conn.execute("SELECT count(*) FROM ok").fetchone() == (0,)


def test_bad_arguments_are_refused(conn: psycopg.Connection[Any]) -> None:
    version, features = _scored_table(conn, 20, 5)
    good = [version, features, 0, 100, "t"]
    names = ["model_version", "features", "first_object_id", "last_object_id", "target"]
    for i, name in enumerate(names):
        args = list(good)
        args[i] = None
        with pytest.raises(psycopg.errors.NullValueNotAllowed, match=f"{name} must not be NULL"):
            conn.execute(INTO, args)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="greater than last_object_id"):
        conn.execute(INTO, (version, features, 101, 100, "t"))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="the same relation"):
        conn.execute(INTO, (version, "t", 0, 100, "t"))
    with pytest.raises(psycopg.errors.InvalidTableDefinition, match="has no column x"):
        conn.execute(INTO, (version, "catalogs.test_catalog", 0, 100, "t"))
    with pytest.raises(psycopg.errors.UndefinedObject, match="does not exist"):
        conn.execute(INTO, (version + 1000, features, 0, 100, "t"))
    with pytest.raises(psycopg.errors.UndefinedTable):
        conn.execute(INTO, (version, features, 0, 100, "no_such_table"))
    with pytest.raises(psycopg.errors.UndefinedTable, match="target: relation with OID"):
        conn.execute(
            "SELECT skyclass.score_chunk_into(%s, %s::regclass, 0, 100, 4294967295::oid::regclass)",
            (version, features),
        )
    # Features of another width than the model's: the object is named.
    conn.execute("CREATE TABLE narrow (object_id bigint PRIMARY KEY, x real[])")
    conn.execute("INSERT INTO narrow VALUES (7, '{1,2,3}')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="expected 9 features") as e:
        conn.execute(INTO, (version, "narrow", 0, 100, "t"))
    assert "object_id 7 of public.narrow" in str(e.value.diag.context)
    conn.execute("INSERT INTO narrow VALUES (8, NULL)")
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="object_id 8 are NULL"):
        conn.execute(INTO, (version, "narrow", 8, 8, "t"))
    # A chunk larger than maintenance_work_mem holds: 54000, which the job turns into the SQL path.
    conn.execute("SET maintenance_work_mem = '1MB'")
    big = np.tile(object_features(1, seed=6), (60000, 1))
    add_objects(conn, version, big)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="maintenance_work_mem"):
        conn.execute(INTO, (version, features, 0, 10**9, "t"))
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_role_needs_insert_on_the_target(conn: psycopg.Connection[Any]) -> None:
    version, features = _scored_table(conn, 20, 8)
    # Row security applies to the role (not to the owner or a superuser): refused.
    conn.execute(f"CREATE TABLE secured ({COLUMNS})")
    conn.execute("ALTER TABLE secured ENABLE ROW LEVEL SECURITY")
    role = f"writer_{secrets.token_hex(4)}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA skyclass, features TO {0}; "
                "GRANT SELECT ON skyclass.model_version, skyclass.model_artifact, {1} TO {0}"
            ).format(sql.Identifier(role), sql.SQL(features))
        )
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="table t"):
            conn.execute(INTO, (version, features, 0, 100, "t"))
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("GRANT INSERT ON t TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        assert conn.execute(INTO, (version, features, 0, 100, "t")).fetchone() == (20,)
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("GRANT INSERT ON secured TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="row level security"):
            conn.execute(INTO, (version, features, 0, 100, "secured"))
    finally:
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_library_older_than_the_sql_falls_back_to_the_sql_path(
    conn: psycopg.Connection[Any],
) -> None:
    # The extension's SQL at 0.4.0 but a skyclass.so without the symbol (installed from an
    # older build): the job writes its chunks with SQL instead of failing.
    version = register(conn)
    add_objects(conn, version, object_features(1200, seed=9))
    conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
    # (CREATE FUNCTION always checks the symbol: point the catalog row at a missing one.)
    conn.execute(
        "UPDATE pg_proc SET prosrc = 'skyclass_no_such_symbol' WHERE oid = "
        "'skyclass.score_chunk_into(bigint, regclass, bigint, bigint, regclass)'::regprocedure"
    )
    with pytest.raises(psycopg.errors.UndefinedFunction):
        conn.execute("SELECT skyclass.score_chunk_into(1, 'pg_class', 0, 1, 'pg_class')")
    conn.execute("CALL skyclass.rescore('sgq_current', %s, chunk_size => 500)", (CATALOG,))
    rows = _run_rows(conn)
    assert len(rows) == 1200
    conn.execute("SET skyclass.chunk_writer = 'sql'")
    conn.execute("CALL skyclass.rescore('sgq_current', %s, chunk_size => 500)", (CATALOG,))
    assert _run_rows(conn) == rows
