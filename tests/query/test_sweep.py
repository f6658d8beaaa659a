"""The zone sweep: ``skyclass.crossmatch_sweep`` (C extension 0.2.0) and method ``sweep``.

The equality with astropy and with the other methods on real and edge-case
catalogs is in test_spatial.py; here the C function is called directly on
plain tables (bad input, NULL and out-of-range rows, duplicate ids, other
column types, privileges, cancellation) and compared bit for bit with a brute
force over every pair in SQL with ``skyclass.angular_distance``; then how
``skyclass.crossmatch`` chooses and refuses the method, the extension's
upgrade script, and migration 0006 up and down.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors, sql

from skyclass.cli import main
from skyclass.db.migrate import downgrade, upgrade
from skyclass.errors import QueryError
from skyclass.query import crossmatch
from tests.conftest import drop_database, new_database
from tests.query.conftest import SpatialData, _edge_positions, load, require_sweep

SWEEP = "skyclass.crossmatch_sweep"
FUNCTION = "skyclass.crossmatch(text, text, double precision, boolean, text)"


@pytest.fixture
def db(spatial: SpatialData) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the shared spatial database, with the sweep."""
    require_sweep(spatial, "sweep")
    with psycopg.connect(spatial.url, autocommit=True) as conn:
        yield conn


def _temp_table(conn: psycopg.Connection, name: str, rows: list[tuple[object, ...]]) -> None:
    """A temporary (object_id bigint, ra float8, dec float8) table with ``rows``."""
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (object_id bigint, ra float8, dec float8)").format(
            sql.Identifier(name)
        )
    )
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(sql.Identifier(name)), rows
        )


def _random_rows(seed: int, count: int) -> list[tuple[object, ...]]:
    """Clustered positions (poles, RA 0/360, one small patch) plus awkward rows."""
    rng = np.random.default_rng(seed)
    centres = [(0.0, 89.9995), (180.0, -89.9995), (0.0, 10.0), (359.9995, -40.0), (150.0, 2.0)]
    rows: list[tuple[object, ...]] = []
    for n in range(count):
        ra0, dec0 = centres[n % len(centres)]
        dec = float(np.clip(dec0 + rng.normal(0, 0.0005), -90, 90))
        ra = float((ra0 + rng.normal(0, 0.0005) / max(np.cos(np.radians(dec)), 1e-3)) % 360)
        rows.append((int(rng.integers(1, count // 2)), ra, dec))  # duplicate ids on purpose
    rows += [(10**12, 0.0, 90.0), (10**12 + 1, 77.0, 90.0), (10**12 + 2, 359.9999999, 10.0)]
    # Left out like the cells method leaves them out: NULLs and impossible positions.
    rows += [(None, 1.0, 1.0), (5, None, 1.0), (6, 1.0, None), (7, 360.0, 0.0), (8, -1.0, 0.0)]
    rows += [(9, 10.0, 90.5), (10, float("nan"), 0.0), (11, 10.0, float("inf"))]
    return rows


def _brute_force(
    conn: psycopg.Connection, a: str, b: str, radius: float, best_only: bool
) -> list[tuple[object, ...]]:
    """Every pair in SQL, same distance expression, ranked like the cross-match."""
    valid = (
        "{t}.ra >= 0 AND {t}.ra < 360 AND {t}.dec BETWEEN -90 AND 90 AND {t}.object_id IS NOT NULL"
    )
    query = (
        "SELECT id_a, id_b, d, rank FROM ("
        " SELECT id_a, id_b, d, row_number() OVER (PARTITION BY id_a ORDER BY d, id_b)::int AS rank"
        " FROM (SELECT x.object_id AS id_a, y.object_id AS id_b,"
        "        skyclass.angular_distance(x.ra, x.dec, y.ra, y.dec) * 3600 AS d"
        "       FROM {a} AS x CROSS JOIN {b} AS y"
        "       WHERE " + valid.format(t="x") + " AND " + valid.format(t="y") + "{self}) AS p"
        " WHERE d <= %s) AS r {best} ORDER BY id_a, rank"
    ).format(
        a=a,
        b=b,
        self=" AND x.object_id <> y.object_id" if a == b else "",
        best="WHERE rank = 1" if best_only else "",
    )
    return conn.execute(query, (radius,)).fetchall()  # type: ignore[arg-type]


def _sweep(
    conn: psycopg.Connection, a: str, b: str, radius: float, best_only: bool
) -> list[tuple[object, ...]]:
    return conn.execute(
        f"SELECT * FROM {SWEEP}(%s::regclass, %s::regclass, %s, %s)", (a, b, radius, best_only)
    ).fetchall()


@pytest.mark.parametrize("radius", [0.5, 2.0, 7.5, 3600.0])
@pytest.mark.parametrize("best_only", [True, False])
def test_sweep_equals_brute_force_bit_for_bit(
    db: psycopg.Connection, radius: float, best_only: bool
) -> None:
    _temp_table(db, "xa", _random_rows(1, 600))
    _temp_table(db, "xb", _random_rows(2, 700))
    for a, b in [("xa", "xb"), ("xb", "xa"), ("xa", "xa")]:
        expected = _brute_force(db, a, b, radius, best_only)
        assert len(expected) > 100  # not vacuous: poles, RA wrap, duplicates all match
        assert _sweep(db, a, b, radius, best_only) == expected


def test_null_arguments_give_no_rows(db: psycopg.Connection) -> None:
    _temp_table(db, "xa", [(1, 10.0, 10.0)])
    args: list[tuple[object, ...]] = [
        (None, "xa", 1.0, True),
        ("xa", None, 1.0, True),
        ("xa", "xa", None, True),
        ("xa", "xa", 1.0, None),
    ]
    for arg in args:
        rows = db.execute(
            f"SELECT * FROM {SWEEP}(%s::regclass, %s::regclass, %s, %s)", arg
        ).fetchall()
        assert rows == []


def test_bad_tables_and_columns(db: psycopg.Connection) -> None:
    _temp_table(db, "xa", [(1, 10.0, 10.0)])
    with pytest.raises(errors.UndefinedTable):
        db.execute(f"SELECT * FROM {SWEEP}('no_such_table', 'xa', 1)")
    with pytest.raises(errors.UndefinedTable, match="OID 1 does not exist"):
        db.execute(f"SELECT * FROM {SWEEP}(1::oid::regclass, 'xa', 1)")
    db.execute("CREATE TEMP TABLE no_dec (object_id bigint, ra float8)")
    with pytest.raises(errors.UndefinedColumn, match='has no column "dec"') as caught:
        db.execute(f"SELECT * FROM {SWEEP}('xa', 'no_dec', 1)")
    assert caught.value.diag.message_hint and "object_id, ra" in caught.value.diag.message_hint
    db.execute("CREATE TEMP TABLE text_ra (object_id bigint, ra text, dec float8)")
    with pytest.raises(errors.DatatypeMismatch, match=r'"ra" .* must be double precision'):
        db.execute(f"SELECT * FROM {SWEEP}('text_ra', 'xa', 1)")
    db.execute("CREATE TEMP TABLE numeric_id (object_id numeric, ra float8, dec float8)")
    with pytest.raises(errors.DatatypeMismatch, match="must be bigint, integer or smallint"):
        db.execute(f"SELECT * FROM {SWEEP}('xa', 'numeric_id', 1)")


@pytest.mark.parametrize("radius", [0.0, -1.0, 3600.0001, float("nan"), float("inf")])
def test_bad_radius(db: psycopg.Connection, radius: float) -> None:
    with pytest.raises(errors.InvalidParameterValue, match=r"radius_arcsec must be in \(0, 3600\]"):
        db.execute(f"SELECT * FROM {SWEEP}('catalogs.polar', 'catalogs.polar', %s)", (radius,))


def test_other_numeric_column_types(db: psycopg.Connection) -> None:
    db.execute("CREATE TEMP TABLE small (object_id integer, ra real, dec real)")
    db.execute("INSERT INTO small VALUES (1, 10, 20), (2, 10, 20.0001), (3, 50, 20)")
    rows = _sweep(db, "small", "small", 1.0, False)
    assert [(r[0], r[1], r[3]) for r in rows] == [(1, 2, 1), (2, 1, 1)]
    assert rows[0][2] == pytest.approx(0.36, abs=0.01)  # 20.0001 as real


def test_a_view_and_the_callers_privileges(db: psycopg.Connection) -> None:
    db.execute(
        "CREATE TEMP VIEW near_pole AS SELECT object_id, ra, dec FROM catalogs.polar WHERE dec > 0"
    )
    via_view = _sweep(db, "near_pole", "catalogs.polar_shift", 5.0, True)
    full = db.execute(
        f"SELECT * FROM {SWEEP}('catalogs.polar', 'catalogs.polar_shift', 5.0)"
    ).fetchall()
    assert via_view and via_view == [r for r in full if r[0] in {v[0] for v in via_view}]
    role = f"sweep_reader_{uuid.uuid4().hex[:8]}"
    db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        db.execute(
            sql.SQL("GRANT USAGE ON SCHEMA skyclass, catalogs TO {}").format(sql.Identifier(role))
        )
        db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        with pytest.raises(errors.InsufficientPrivilege):
            db.execute(f"SELECT * FROM {SWEEP}('catalogs.polar', 'catalogs.polar_shift', 5.0)")
    finally:
        db.execute("RESET ROLE")
        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_long_sweep_can_be_cancelled(db: psycopg.Connection) -> None:
    # 40,000 objects within 0.3 deg and a 1 deg radius: 1.6e9 candidate pairs, minutes of work.
    db.execute(
        "CREATE TEMP TABLE dense AS SELECT g AS object_id, 100 + random() * 0.3 AS ra,"
        " 20 + random() * 0.3 AS dec FROM generate_series(1, 40000) AS g"
    )
    db.execute("SET statement_timeout = '1s'")
    started = time.monotonic()
    with pytest.raises(errors.QueryCanceled):
        db.execute(f"SELECT count(*) FROM {SWEEP}('dense', 'dense', 3600)")
    assert time.monotonic() - started < 10
    db.execute("RESET statement_timeout")
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_declared_properties(db: psycopg.Connection) -> None:
    row = db.execute(
        "SELECT p.provolatile, p.proparallel, p.proisstrict, p.proretset,"
        " obj_description(p.oid, 'pg_proc') IS NOT NULL, e.extname"
        " FROM pg_proc AS p JOIN pg_depend AS d ON d.objid = p.oid AND d.deptype = 'e'"
        " JOIN pg_extension AS e ON e.oid = d.refobjid"
        " WHERE p.oid = 'skyclass.crossmatch_sweep(regclass, regclass, double precision,"
        " boolean)'::regprocedure"
    ).fetchone()
    assert row == ("s", "s", True, True, True, "skyclass")


# -- method choice and refusal -------------------------------------------------------------------
def _chosen_method(conn: psycopg.Connection, query: str) -> str:
    """The method skyclass.crossmatch reports (RAISE DEBUG) for ``query``."""
    messages: list[str] = []
    conn.add_notice_handler(lambda diag: messages.append(diag.message_primary or ""))
    conn.execute("SET client_min_messages = debug1")
    try:
        conn.execute(query).fetchall()  # type: ignore[arg-type]  # constant test text
    finally:
        conn.execute("RESET client_min_messages")
    chosen = [m.rsplit(" ", 1)[1] for m in messages if m.startswith("skyclass.crossmatch(")]
    assert len(chosen) == 1, messages
    return chosen[0]


def test_auto_picks_sweep_index_or_cells(db: psycopg.Connection) -> None:
    xmatch = "SELECT * FROM skyclass.crossmatch('{}', '{}', 1)"
    assert _chosen_method(db, xmatch.format("sdss17", "sdss17_shift")) == "sweep"
    assert _chosen_method(db, xmatch.format("sdss17", "sdss17")) == "sweep"
    # A small first catalog against a big one: index probes, as before.
    assert _chosen_method(db, xmatch.format("polar", "sdss17")) == "index"
    # Beyond 20M rows together the sweep would need too much memory: cells.
    db.execute("BEGIN")
    try:
        db.execute("UPDATE pg_class SET reltuples = 2e7 WHERE oid = 'catalogs.sdss17'::regclass")
        assert _chosen_method(db, xmatch.format("sdss17", "sdss17_shift")) == "cells"
        # Never analyzed (reltuples -1): bounded by the table's size, small here.
        db.execute("UPDATE pg_class SET reltuples = 1e5 WHERE oid = 'catalogs.sdss17'::regclass")
        db.execute(
            "UPDATE pg_class SET reltuples = -1 WHERE oid = 'catalogs.sdss17_shift'::regclass"
        )
        assert _chosen_method(db, xmatch.format("sdss17", "sdss17_shift")) == "sweep"
    finally:
        db.execute("ROLLBACK")


@pytest.fixture(scope="module")
def no_extension_url(
    spatial: SpatialData, server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database without the skyclass extension, holding polar and polar_shift."""
    url = new_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP EXTENSION IF EXISTS skyclass")
        edges = _edge_positions()
        directory = tmp_path_factory.mktemp("no-extension")
        for name in ("polar", "polar_shift"):
            load(url, Path(directory), name, edges[name])
        yield url
    finally:
        drop_database(server_url, url)


def test_sweep_without_the_extension_is_refused_with_a_hint(
    no_extension_url: str, spatial: SpatialData
) -> None:
    with psycopg.connect(no_extension_url, autocommit=True) as conn:
        with pytest.raises(errors.FeatureNotSupported) as caught:
            conn.execute(
                "SELECT * FROM skyclass.crossmatch('polar', 'polar_shift', 5, true, 'sweep')"
            )
        assert caught.value.sqlstate == "0A000"
        assert "skyclass extension 0.2.0" in (caught.value.diag.message_primary or "")
        assert "make extension" in (caught.value.diag.message_hint or "")
        # auto never picks it here, and gives the cells result.
        assert (
            _chosen_method(conn, "SELECT * FROM skyclass.crossmatch('polar', 'polar_shift', 5)")
            == "cells"
        )
    with pytest.raises(QueryError, match=r"sweep needs the skyclass extension.*make extension"):
        crossmatch("polar", "polar_shift", "5arcsec", method="sweep", url=no_extension_url)
    auto = crossmatch("polar", "polar_shift", "5arcsec", best_only=False, url=no_extension_url)
    with_sweep = crossmatch(
        "polar", "polar_shift", "5arcsec", best_only=False, method="sweep", url=spatial.url
    )
    assert len(auto) > 0
    assert auto.as_array().tolist() == with_sweep.as_array().tolist()


# -- the extension's upgrade script and migration 0006 ------------------------------------------
def _extension_functions(url: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT pg_get_functiondef(p.oid), obj_description(p.oid, 'pg_proc')"
            " FROM pg_proc AS p JOIN pg_depend AS d ON d.objid = p.oid AND d.deptype = 'e'"
            " JOIN pg_extension AS e ON e.oid = d.refobjid AND e.extname = 'skyclass'"
            " ORDER BY p.proname"
        ).fetchall()


def test_upgrade_script_gives_the_same_functions_as_a_fresh_install(
    spatial: SpatialData, server_url: str
) -> None:
    require_sweep(spatial, "sweep")
    urls = [new_database(server_url, template="template0") for _ in range(2)]
    try:
        for url, statements in zip(
            urls,
            [
                ["CREATE EXTENSION skyclass VERSION '0.1.0'", "ALTER EXTENSION skyclass UPDATE"],
                ["CREATE EXTENSION skyclass"],
            ],
            strict=True,
        ):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE SCHEMA skyclass")
                for statement in statements:
                    conn.execute(statement)  # type: ignore[arg-type]  # constant test text
                version = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'skyclass'"
                ).fetchone()
                assert version == ("0.4.0",)  # 0.4.0 (revision 0024) is the default
        updated, fresh = (_extension_functions(url) for url in urls)
        assert updated == fresh
        assert any("skyclass_crossmatch_sweep" in definition for definition, _ in fresh)
    finally:
        for url in urls:
            drop_database(server_url, url)


def _crossmatch_state(url: str) -> tuple[object, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pg_get_functiondef(%s::regprocedure),"
            " obj_description(%s::regprocedure, 'pg_proc'),"
            " (SELECT extversion FROM pg_extension WHERE extname = 'skyclass')",
            (FUNCTION, FUNCTION),
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_migration_0006_updates_the_extension_and_downgrades_exactly(
    spatial: SpatialData, server_url: str
) -> None:
    require_sweep(spatial, "sweep")
    url = new_database(server_url, template="template0")
    try:
        upgrade(url, "0005")
        with psycopg.connect(url, autocommit=True) as conn:
            # A database whose extension was created before 0.2.0 existed.
            conn.execute("DROP EXTENSION skyclass")
            conn.execute("CREATE EXTENSION skyclass VERSION '0.1.0'")
        before = _crossmatch_state(url)
        assert "'sweep'" not in str(before[0]) and before[2] == "0.1.0"

        upgrade(url)
        after = _crossmatch_state(url)
        # head updates it on to 0.4.0 (revision 0013: 0.3.0, OOD scores; 0024: 0.4.0, the
        # scoring job's bulk writer)
        assert "'sweep'" in str(after[0]) and after[2] == "0.4.0"
        assert "sweep" in str(after[1])

        downgrade(url, "0005")
        restored = _crossmatch_state(url)
        assert restored[:2] == before[:2]  # 0002's function, text and comment, exactly
        assert restored[2] == "0.4.0"  # the extension is left as it is (see 0006, 0013, 0024)

        upgrade(url)
        assert _crossmatch_state(url) == after
    finally:
        drop_database(server_url, url)


def test_cli_method_sweep(spatial: SpatialData) -> None:
    require_sweep(spatial, "sweep")
    args = ["xmatch", "sky", "sky_shift", "--radius", "10arcmin", "--all", "--format", "csv"]
    env = {"SKYCLASS_DATABASE_URL": spatial.url}
    outputs = []
    for method in ("sweep", "cells"):
        result = CliRunner().invoke(main, [*args, "--method", method], env=env)
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0].count("\n") > 1000
