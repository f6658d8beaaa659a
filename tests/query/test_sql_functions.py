"""The SQL functions called directly: validation, SQLSTATEs, hostile names, plans."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from psycopg import errors, sql

from tests.query.conftest import SpatialData


@pytest.fixture
def db(spatial: SpatialData) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the shared spatial database."""
    with psycopg.connect(spatial.url, autocommit=True) as conn:
        yield conn


def _plans(conn: psycopg.Connection, query: str, params: tuple[object, ...]) -> str:
    """The plans of the statements ``query`` runs inside functions (auto_explain)."""
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    conn.execute("SET auto_explain.log_min_duration = 0")
    conn.execute("SET auto_explain.log_nested_statements = on")
    conn.execute("SET auto_explain.log_level = notice")
    conn.execute(query, params).fetchall()
    conn.execute("SET auto_explain.log_min_duration = -1")
    return "\n".join(notices)


def test_cone_search_uses_the_q3c_index(db: psycopg.Connection) -> None:
    plans = _plans(db, "SELECT * FROM skyclass.cone_search('sdss17', %s, %s, %s)", (185, 0.5, 0.1))
    assert "Bitmap Index Scan on _sdss17_q3c" in plans or "Index Scan using _sdss17_q3c" in plans
    assert "Seq Scan on sdss17" not in plans


def test_crossmatch_plans(db: psycopg.Connection) -> None:
    cells = _plans(
        db,
        "SELECT * FROM skyclass.crossmatch('sdss17', 'sdss17_shift', %s, true, 'cells')",
        (1.0,),
    )
    assert "Hash Join" in cells
    index = _plans(
        db,
        "SELECT * FROM skyclass.crossmatch('polar', 'sdss17_shift', %s, true, 'index')",
        (1.0,),
    )
    assert "_sdss17_shift_q3c" in index
    # auto picks index probes for a small catalog against a big one.
    auto = _plans(db, "SELECT * FROM skyclass.crossmatch('polar', 'sdss17', 1)", ())
    assert "_sdss17_q3c" in auto


def test_angular_distance(db: psycopg.Connection) -> None:
    row = db.execute(
        "SELECT skyclass.angular_distance(10, 20, 10, 20),"
        " skyclass.angular_distance(0, 0, 180, 0),"
        " skyclass.angular_distance(359.9999, 0, 0.0001, 0) * 3600,"
        " skyclass.angular_distance(0, 89, 180, 89),"
        " skyclass.angular_distance(NULL, 0, 0, 0)"
    ).fetchone()
    assert row is not None
    assert row[0] == 0.0
    assert row[1] == pytest.approx(180.0, abs=1e-12)
    assert row[2] == pytest.approx(0.72, abs=1e-9)
    assert row[3] == pytest.approx(2.0, abs=1e-12)
    assert row[4] is None


@pytest.mark.parametrize(
    ("ra", "dec", "radius"),
    [
        (360.0, 0.0, 1.0),
        (-1.0, 0.0, 1.0),
        (720.0, 0.0, 1.0),
        (float("nan"), 0.0, 1.0),
        (float("inf"), 0.0, 1.0),
        (0.0, 90.0001, 1.0),
        (0.0, -99.0, 1.0),
        (0.0, float("nan"), 1.0),
        (0.0, 0.0, -0.001),
        (0.0, 0.0, 10.000001),
        (0.0, 0.0, float("nan")),
        (0.0, 0.0, float("inf")),
    ],
)
def test_cone_search_invalid_arguments(
    db: psycopg.Connection, ra: float, dec: float, radius: float
) -> None:
    # psycopg.DataError is the DB-API class of every SQLSTATE of class 22.
    with pytest.raises(psycopg.DataError) as caught:
        db.execute("SELECT * FROM skyclass.cone_search('sdss17', %s, %s, %s)", (ra, dec, radius))
    assert caught.value.sqlstate == "22023"
    assert "must be in" in str(caught.value)


def test_cone_search_limits_and_nulls(db: psycopg.Connection) -> None:
    # The largest radius is accepted; NULL arguments (STRICT) give no rows.
    row = db.execute("SELECT count(*) FROM skyclass.cone_search('sdss17', 180, 0, 10)").fetchone()
    assert row is not None and row[0] > 0
    for args in [(None, 0.0, 0.0, 1.0), ("sdss17", None, 0.0, 1.0), ("sdss17", 0.0, 0.0, None)]:
        assert (
            db.execute("SELECT * FROM skyclass.cone_search(%s, %s, %s, %s)", args).fetchall() == []
        )


@pytest.mark.parametrize("radius", [0.0, -1.0, 3600.0001, float("nan"), float("inf")])
def test_crossmatch_invalid_radius(db: psycopg.Connection, radius: float) -> None:
    with pytest.raises(errors.InvalidParameterValue, match=r"radius_arcsec must be in \(0, 3600\]"):
        db.execute("SELECT * FROM skyclass.crossmatch('polar', 'polar', %s)", (radius,))


def test_crossmatch_radius_at_the_limit(db: psycopg.Connection) -> None:
    rows = db.execute("SELECT * FROM skyclass.crossmatch('polar', 'polar_shift', 3600)").fetchall()
    assert rows and all(r[2] <= 3600 for r in rows)


def test_unknown_catalog_sqlstate_and_hint(db: psycopg.Connection) -> None:
    with pytest.raises(errors.UndefinedTable) as caught:
        db.execute("SELECT * FROM skyclass.cone_search('nosuch', 1, 1, 1)")
    assert caught.value.sqlstate == "42P01"
    assert caught.value.diag.message_hint and "skyclass catalog list" in (
        caught.value.diag.message_hint
    )
    with pytest.raises(errors.UndefinedTable):
        db.execute("SELECT * FROM skyclass.crossmatch('sdss17', 'nosuch', 1)")


HOSTILE = [
    "x'; DROP TABLE catalogs.sdss17; --",
    'sdss17"; DROP TABLE catalogs.sdss17; --',
    '"',
    "$$",
    "$$; DROP TABLE catalogs.sdss17; $$",
    "catalogs.sdss17",
    "sdss17 ",
    "SDSS17",
    "a" * 200,
    "$(touch /tmp/skyclass-pwned)",
]


def _objects(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        " ORDER BY 1, 2"
    ).fetchall()


def test_hostile_names_have_no_side_effects(db: psycopg.Connection) -> None:
    before = _objects(db)
    functions = db.execute("SELECT count(*) FROM pg_proc").fetchone()
    count = db.execute("SELECT count(*) FROM catalogs.sdss17").fetchone()
    for name in HOSTILE:
        with pytest.raises(errors.UndefinedTable):
            db.execute("SELECT * FROM skyclass.cone_search(%s, 1, 1, 1)", (name,))
        with pytest.raises(errors.UndefinedTable):
            db.execute("SELECT * FROM skyclass.crossmatch('sdss17', %s, 1)", (name,))
        with pytest.raises(errors.UndefinedTable):
            db.execute(
                "SELECT * FROM skyclass.crossmatch(%s, 'sdss17', 1, false, 'index')", (name,)
            )
    assert _objects(db) == before
    assert db.execute("SELECT count(*) FROM pg_proc").fetchone() == functions
    assert db.execute("SELECT count(*) FROM catalogs.sdss17").fetchone() == count


def test_functions_are_declared_as_documented(db: psycopg.Connection) -> None:
    rows = db.execute(
        "SELECT p.proname, p.provolatile, p.proparallel, p.proisstrict,"
        " obj_description(p.oid, 'pg_proc') IS NOT NULL"
        " FROM pg_proc p WHERE p.pronamespace = 'skyclass'::regnamespace"
        " AND p.proname IN ('cone_search', 'crossmatch', 'angular_distance')"
        " ORDER BY 1"
    ).fetchall()
    # The readers of catalog tables are VOLATILE (migration 0009): each of their statements
    # takes a new snapshot, so one that waited for an ingest --replace reads the new table.
    # cone_search PREPAREs its query once per session (migration 0018), which parallel mode
    # refuses: PARALLEL UNSAFE.
    assert rows == [
        ("angular_distance", "i", "s", True, True),
        ("cone_search", "v", "u", True, True),
        ("crossmatch", "v", "s", True, True),
    ]


@pytest.mark.parametrize("catalog", ["polar", "wrap", "sdss17"])
def test_radius_zero_finds_every_object_at_its_own_position(
    db: psycopg.Connection, catalog: str
) -> None:
    # Q3C 2.0.0 finds nothing below ~1e-6 deg by itself; the function must still work.
    query = sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS ("
        "  SELECT 1 FROM skyclass.cone_search(%s, o.ra, o.dec, 0) AS s"
        "  WHERE s.object_id = o.object_id AND s.distance_arcsec = 0))"
        " FROM (SELECT * FROM catalogs.{} ORDER BY object_id LIMIT 250) AS o"
    ).format(sql.Identifier(catalog))
    row = db.execute(query, (catalog,)).fetchone()
    assert row is not None
    assert row[0] > 0 and row[1] == 0


# -- pdf_summary -------------------------------------------------------------------------------
PDF = "SELECT (skyclass.pdf_summary(%s::real[], %s::float8[])).*"


@pytest.mark.parametrize(
    ("pdf", "edges", "message"),
    [
        # The case: decreasing edges gave z_lo68 0.84 > z_hi68 0.16.
        ([0.5, 0.5], [1.0, 0.5, 0.0], "strictly increasing"),
        ([0.5, 0.5], [0.0, 0.5, 0.5], "strictly increasing"),  # equal edges: division by zero
        ([0.5, 0.5], [0.0, float("nan"), 1.0], "finite"),
        ([0.5, 0.5], [0.0, 0.5, float("inf")], "finite"),
        ([0.5, 0.5], [-1e39, 0.5, 1.0], "finite real"),
        ([0.5, 0.5], [0.0, None, 1.0], "finite"),
        ([0.5, -0.5], [0.0, 0.5, 1.0], "non-negative"),
        ([0.5, float("nan")], [0.0, 0.5, 1.0], "non-negative"),
        ([0.5, float("inf")], [0.0, 0.5, 1.0], "non-negative"),
        ([0.5, None], [0.0, 0.5, 1.0], "non-negative"),
        ([0.5, 0.6], [0.0, 0.5, 1.0], "sum to 1"),
        ([0.0, 0.0], [0.0, 0.5, 1.0], "sum to 1"),
        ([2.0, 2.0], [0.0, 0.5, 1.0], "sum to 1"),
        ([1.0], [0.0, 1.0], "needs 2 edges"),
        ([0.5, 0.5], [0.0, 1.0], "needs 3 edges"),
        ([[0.5, 0.5]], [0.0, 0.5, 1.0], "one-dimensional"),
    ],
)
def test_pdf_summary_refuses_invalid_pdfs(
    db: psycopg.Connection, pdf: list[object], edges: list[float | None], message: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue, match=message):
        db.execute(PDF, (pdf, edges))


def test_pdf_summary_of_valid_pdfs_keeps_its_intervals_in_order(db: psycopg.Connection) -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(2, 40))
        masses = rng.dirichlet(np.full(n, rng.choice([0.05, 1.0, 20.0]))).astype(np.float32)
        masses[rng.random(n) < 0.2] = 0  # empty bins
        if masses.sum() == 0:
            masses[0] = 1
        masses = (masses / masses.sum()).astype(np.float32)
        edges = np.cumsum(rng.uniform(1e-6, 2.0, n + 1)) - rng.uniform(0, 10)
        row = db.execute(PDF, (masses.tolist(), edges.tolist())).fetchone()
        assert row is not None
        mean, median, mode, lo68, hi68, lo95, hi95 = row
        low, high = np.float32(edges[0]), np.float32(edges[-1])
        assert low <= lo95 <= lo68 <= median <= hi68 <= hi95 <= high, (masses, edges, row)
        assert low <= mean <= high and low <= mode <= high


def test_pdf_summary_any_lower_bound_and_nulls(db: psycopg.Connection) -> None:
    one_based = db.execute(PDF, ([0.25, 0.75], [0.0, 1.0, 2.0])).fetchone()
    shifted = db.execute(
        "SELECT (skyclass.pdf_summary('[0:1]={0.25,0.75}'::real[], '[5:7]={0,1,2}'::float8[])).*"
    ).fetchone()
    assert one_based == shifted
    assert one_based is not None and one_based[1] == pytest.approx(4 / 3, abs=1e-6)
    # STRICT: a NULL argument gives NULL (every output).
    assert db.execute(PDF, (None, [0.0, 1.0, 2.0])).fetchone() == (None,) * 7


# -- the job engine's functions ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "state"),
    [
        # Built "FROM  AS f" from a missing run: SQLSTATE 42601 before migration 0009.
        ("SELECT skyclass.plan_scoring_chunks(-1)", "42704"),
        ("SELECT skyclass.plan_scoring_chunks(NULL)", "22023"),
        # Built "CREATE TABLE " from a NULL chunk: 42601 before.
        ("SELECT skyclass.create_chunk_table(1, NULL)", "22023"),
        ("SELECT skyclass.create_chunk_table(-1, 0)", "42704"),
        ("SELECT skyclass.complete_scoring_chunk(1, 0, -5)", "22023"),
        ("SELECT skyclass.complete_scoring_chunk(1, 0, NULL)", "22023"),
        ("SELECT skyclass.complete_scoring_chunk(-1, 0, 5)", "42704"),
        ("SELECT skyclass.fail_scoring_run(1, 'x', NULL)", "22023"),
        ("SELECT skyclass.fail_scoring_run(1, 'x', 'succeeded')", "22023"),
        ("SELECT skyclass.deploy('d', NULL)", "22023"),
        ("SELECT skyclass.deploy(NULL, 1)", "22023"),
    ],
)
def test_job_functions_refuse_invalid_arguments(
    db: psycopg.Connection, call: str, state: str
) -> None:
    with pytest.raises(psycopg.Error) as caught:
        db.execute(call)
    assert caught.value.sqlstate == state, caught.value


def _cone(conn: psycopg.Connection, catalog: str, ra: float, dec: float, r: float) -> list:
    return conn.execute(
        "SELECT object_id, distance_arcsec FROM skyclass.cone_search(%s, %s, %s, %s)",
        (catalog, ra, dec, r),
    ).fetchall()


def test_cone_search_prepares_once_per_session_and_table_and_survives_deallocate(
    spatial: SpatialData,
) -> None:
    # The first call prepares the query (one statement per catalog table), later calls reuse
    # it with a generic plan; a DEALLOCATE by the client only makes the next call prepare it
    # again. Every call returns what a fresh session returns.
    with psycopg.connect(spatial.url, autocommit=True) as fresh:
        objects = fresh.execute(
            "SELECT ra, dec FROM catalogs.sdss17 ORDER BY object_id LIMIT 2"
        ).fetchall()
        cones = [
            ("sdss17", *objects[0], 0.5),
            ("polar", 0.0, 89.9, 1.0),
            ("sdss17", *objects[1], 1),
        ]
        expected = [_cone(fresh, *c) for c in cones]
    assert all(expected)
    with psycopg.connect(spatial.url, autocommit=True) as conn:
        for _ in range(8):  # beyond the plan cache's five custom plans
            assert [_cone(conn, *c) for c in cones] == expected
        names = conn.execute(
            "SELECT name FROM pg_prepared_statements WHERE name LIKE 'skyclass_cone_%' ORDER BY 1"
        ).fetchall()
        assert len(names) == 2  # sdss17 and polar
        conn.execute("DEALLOCATE ALL")
        assert [_cone(conn, *c) for c in cones] == expected


def test_cone_search_arguments_are_exact_whatever_extra_float_digits(
    spatial: SpatialData,
) -> None:
    # Arguments reach the prepared statement as literals: with the session's
    # extra_float_digits = -15 they would lose digits, and a cone of radius 0 at an
    # object's own position would miss it.
    with psycopg.connect(spatial.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT object_id, ra, dec FROM catalogs.sdss17 ORDER BY object_id LIMIT 1"
        ).fetchone()
        assert row is not None
        conn.execute("SET extra_float_digits = -15")
        found = _cone(conn, "sdss17", row[1], row[2], 0.0)
        assert (row[0], 0.0) in found
        assert conn.execute("SHOW extra_float_digits").fetchone() == ("-15",)
