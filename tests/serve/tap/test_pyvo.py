"""pyvo, the VO client portals and notebooks use, gets the same rows as SQL.

``TAPService.run_sync``, ``run_async`` and ``tables`` against the service
running in uvicorn (connected as ``skyclass_portal``); each ADQL query is
compared with the SQL a user would write against the database directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
import pyvo
import requests
from pyvo.dal.exceptions import DALOverflowWarning, DALQueryError

from tests.serve.tap.conftest import MAX_ROWS, Tap

# pyvo (requests) keeps its HTTP connections alive and leaves them to the garbage collector,
# which may close one during a later test: not a leak of ours.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def sql_rows(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchall()


def table_rows(table: Any, columns: list[str]) -> list[tuple[Any, ...]]:
    out = []
    for row in table:
        values = []
        for name in columns:
            value = row[name]
            if np.ma.is_masked(value):
                value = None
            elif isinstance(value, np.generic):
                value = value.item()
            values.append(value)
        out.append(tuple(values))
    return out


@pytest.fixture(scope="module")
def service(tap: Tap) -> Iterator[pyvo.dal.TAPService]:
    with requests.Session() as session:
        yield pyvo.dal.TAPService(tap.url, session=session)


def test_a_cone_with_contains_returns_the_rows_of_q3c_cone_search(
    service: pyvo.dal.TAPService, tap: Tap
) -> None:
    adql = (
        "SELECT object_id, jname, ra, dec FROM catalogs.pulsars "
        "WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 280.0, -5.0, 10.0)) = 1 "
        "ORDER BY object_id"
    )
    got = table_rows(service.run_sync(adql).to_table(), ["object_id", "jname", "ra", "dec"])
    expected = sql_rows(
        tap.admin_url,
        "SELECT p.object_id, p.jname, p.ra, p.dec FROM skyclass.cone_search('pulsars', "
        "280.0, -5.0, 10.0) AS s JOIN catalogs.pulsars AS p USING (object_id) "
        "ORDER BY object_id",
    )
    assert len(expected) > 20
    assert got == expected


def test_distance_orders_like_q3c_dist(service: pyvo.dal.TAPService, tap: Tap) -> None:
    adql = (
        "SELECT TOP 7 object_id, DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', 83.6, 22.0)) "
        "AS d FROM catalogs.pulsars ORDER BY d"
    )
    got = table_rows(service.run_sync(adql).to_table(), ["object_id", "d"])
    expected = sql_rows(
        tap.admin_url,
        "SELECT object_id, q3c_dist(ra, dec, 83.6, 22.0) AS d FROM catalogs.pulsars "
        "ORDER BY d LIMIT 7",
    )
    assert [r[0] for r in got] == [r[0] for r in expected]
    assert np.allclose([r[1] for r in got], [r[1] for r in expected], rtol=1e-12)


def test_a_join_with_the_current_classifications(service: pyvo.dal.TAPService, tap: Tap) -> None:
    adql = (
        "SELECT TOP 50 c.object_id, c.ra, k.top_label, k.top_probability "
        "FROM catalogs.sdss17 AS c JOIN skyclass.current_classification AS k "
        "ON k.object_id = c.object_id AND k.\"catalog\" = 'sdss17' "
        "WHERE k.deployment = 'sgq_current' AND k.top_probability > 0.6 "
        "ORDER BY k.top_probability DESC, c.object_id"
    )
    got = table_rows(
        service.run_sync(adql).to_table(), ["object_id", "ra", "top_label", "top_probability"]
    )
    expected = sql_rows(
        tap.admin_url,
        "SELECT c.object_id, c.ra, k.top_label, k.top_probability "
        "FROM catalogs.sdss17 AS c JOIN skyclass.current_classification AS k "
        "ON k.object_id = c.object_id AND k.catalog = 'sdss17' "
        "WHERE k.deployment = 'sgq_current' AND k.top_probability > 0.6 "
        "ORDER BY k.top_probability DESC, c.object_id LIMIT 50",
    )
    assert len(expected) == 50
    assert [r[:3] for r in got] == [r[:3] for r in expected]
    assert np.allclose([r[3] for r in got], [r[3] for r in expected], rtol=1e-6)


def test_a_positional_crossmatch_runs_as_q3c_join(service: pyvo.dal.TAPService, tap: Tap) -> None:
    adql = (
        "SELECT a.object_id AS a_id, b.object_id AS b_id FROM catalogs.sdss17 AS a "
        "JOIN catalogs.sdss17 AS b "
        "ON 1 = CONTAINS(POINT(b.ra, b.dec), CIRCLE(a.ra, a.dec, 0.02)) "
        "WHERE a.object_id < 200 ORDER BY a_id, b_id"
    )
    got = table_rows(service.run_sync(adql).to_table(), ["a_id", "b_id"])
    expected = sql_rows(
        tap.admin_url,
        "SELECT a.object_id, b.object_id FROM catalogs.sdss17 AS a "
        "JOIN catalogs.sdss17 AS b ON q3c_join(a.ra, a.dec, b.ra, b.dec, 0.02) "
        "WHERE a.object_id < 200 ORDER BY 1, 2",
    )
    assert len(expected) > 200  # every object matches itself, and neighbours near the pole
    assert got == expected


def test_run_async_returns_the_rows_of_run_sync(service: pyvo.dal.TAPService, tap: Tap) -> None:
    adql = "SELECT object_id, bname, p, age FROM catalogs.pulsars WHERE p > 1 ORDER BY object_id"
    columns = ["object_id", "bname", "p", "age"]
    sync_rows = table_rows(service.run_sync(adql).to_table(), columns)
    async_rows = table_rows(service.run_async(adql).to_table(), columns)
    expected = sql_rows(
        tap.admin_url,
        "SELECT object_id, bname, p, age FROM catalogs.pulsars WHERE p > 1 ORDER BY object_id",
    )
    assert async_rows == sync_rows
    assert [r[0] for r in sync_rows] == [r[0] for r in expected]
    assert [r[2] for r in sync_rows] == [r[2] for r in expected]


def test_maxrec_cuts_the_rows_and_says_overflow(service: pyvo.dal.TAPService) -> None:
    result = service.run_sync("SELECT object_id FROM catalogs.pulsars", maxrec=10)
    assert len(result) == 10
    assert result.query_status == "OVERFLOW"
    exact = service.run_sync("SELECT TOP 10 object_id FROM catalogs.pulsars", maxrec=10)
    assert len(exact) == 10
    assert exact.query_status == "OK"


def test_the_service_row_limit_caps_maxrec(service: pyvo.dal.TAPService) -> None:
    query = "SELECT a.object_id FROM catalogs.sdss17 AS a, catalogs.pulsars AS b"
    with pytest.warns(DALOverflowWarning, match=f"truncated at {MAX_ROWS} records"):
        capped = service.run_sync(query, maxrec=10**9)
    assert len(capped) == MAX_ROWS
    assert capped.query_status == "OVERFLOW"


def test_tables_lists_catalog_columns_with_units_ucds_and_descriptions(
    service: pyvo.dal.TAPService,
) -> None:
    tables = service.tables
    names = set(tables.keys())
    assert {
        "TAP_SCHEMA.tables",
        "TAP_SCHEMA.columns",
        "catalogs.pulsars",
        "catalogs.sdss17",
        "skyclass.current_classification",
        "skyclass.prediction_long",
    } <= names
    columns = {c.name: c for c in tables["catalogs.pulsars"].columns}
    assert columns["p"].unit == "s"
    assert columns["p"].ucd == "time.period"
    assert columns["p"].description == "Barycentric period in seconds"
    assert columns["ra"].ucd == "pos.eq.ra;meta.main"
    assert "indexed" in columns["ra"].flags
    view = {c.name: c for c in tables["skyclass.current_classification"].columns}
    assert view["top_probability"].ucd == "stat.probability"
    assert '"catalog"' in view  # an ADQL reserved word, published delimited


def test_tap_schema_matches_the_database(service: pyvo.dal.TAPService, tap: Tap) -> None:
    rows = service.run_sync(
        "SELECT column_name, datatype, unit FROM TAP_SCHEMA.columns "
        "WHERE table_name = 'catalogs.pulsars' ORDER BY column_index"
    ).to_table()
    expected = sql_rows(
        tap.admin_url,
        "SELECT attname FROM pg_attribute WHERE attrelid = 'catalogs.pulsars'::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    assert [str(r["column_name"]) for r in rows] == [r[0] for r in expected]


@pytest.mark.parametrize(
    ("adql", "message"),
    [
        ("SELECT * FROM skyclass.model_artifact", "not published"),
        ("SELECT * FROM pg_catalog.pg_authid", "not published"),
        ("SELECT pg_sleep(1) FROM catalogs.pulsars", "not available"),
        ("DELETE FROM catalogs.pulsars", "only SELECT"),
        ("SELECT 1 FROM catalogs.pulsars; DROP TABLE catalogs.pulsars", "one SELECT"),
        (
            "SELECT * FROM catalogs.pulsars WHERE "
            "CONTAINS(POINT('ICRS', ra, dec), POLYGON('ICRS', 1, 2, 3, 4, 5, 6)) = 1",
            "POLYGON",
        ),
        ("SELECT POINT('ICRS', ra, dec) FROM catalogs.pulsars", "POINT is only supported"),
        ("SELECT nosuchcolumn FROM catalogs.pulsars", "does not exist"),
        ("SELEKT 1", "syntax error"),
    ],
)
def test_refused_queries_give_an_error_votable(
    service: pyvo.dal.TAPService, adql: str, message: str
) -> None:
    with pytest.raises(DALQueryError, match=message):
        service.run_sync(adql)


def test_nothing_was_written(tap: Tap) -> None:
    rows = sql_rows(tap.admin_url, "SELECT count(*) FROM catalogs.pulsars")
    assert rows == [(706,)]


def test_distance_below_a_radius_returns_the_cone(service: pyvo.dal.TAPService, tap: Tap) -> None:
    adql = (
        "SELECT object_id FROM catalogs.pulsars "
        "WHERE DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', 280.0, -5.0)) < 10 "
        "ORDER BY object_id"
    )
    got = [r[0] for r in table_rows(service.run_sync(adql).to_table(), ["object_id"])]
    expected = sql_rows(
        tap.admin_url,
        "SELECT object_id FROM skyclass.cone_search('pulsars', 280.0, -5.0, 10.0) "
        "ORDER BY object_id",
    )
    assert got == [r[0] for r in expected]
