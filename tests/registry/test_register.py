"""``skyclass catalog register``: partitioned tables, the checks and their counts, refusals."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from skyclass.errors import IngestError, RegistryError
from skyclass.registry.drop import drop_catalog
from skyclass.registry.locks import lock_catalog
from skyclass.registry.register import register_catalog
from tests.ingest.corpus import clean_columns, write_csv
from tests.query.conftest import enable_sweep
from tests.registry.conftest import relations, run, survey_rows

COLUMNS = ("src_id", "ra_j2000", "de_j2000", "f_g", "f_r", "f_z")


def _make_table(url: str, table: str, rows: int, *, key: str = "PRIMARY KEY") -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS survey")
        conn.execute(
            f"CREATE TABLE {table} (src_id bigint {key}, ra_j2000 float8, de_j2000 float8, "
            "f_g real, f_r real, f_z real)"
        )
        conn.execute(survey_rows(table, "100", 0, rows, columns=COLUMNS))


def _registered(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [
            (r[0], r[1])
            for r in conn.execute("SELECT name, kind FROM skyclass.catalog ORDER BY name")
        ]


def test_a_partitioned_table_gets_an_index_per_partition_and_serves_cone_searches(
    db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA survey")
        conn.execute(
            "CREATE TABLE survey.parted (src_id bigint NOT NULL, ra_j2000 float8, "
            "de_j2000 float8, f_g real, f_r real, f_z real) PARTITION BY RANGE (src_id)"
        )
        for k in range(4):
            conn.execute(
                f"CREATE TABLE survey.parted_{k} PARTITION OF survey.parted "
                f"FOR VALUES FROM ({100 + k * 25_000}) TO ({100 + (k + 1) * 25_000})"
            )
        conn.execute(survey_rows("survey.parted", "100", 0, 100_000, columns=COLUMNS))
        conn.execute("ANALYZE survey.parted")
        # one partition already has its own index: only the other three get one
        conn.execute(
            "CREATE INDEX parted_0_q3c ON survey.parted_0 (q3c_ang2ipix(ra_j2000, de_j2000))"
        )
    before = relations(db_url)

    args = ("--name", "parted", "--id", "src_id", "--ra", "ra_j2000", "--dec", "de_j2000")
    code, out = run(db_url, "catalog", "register", "survey.parted", *args, "--no-progress")
    assert code == 1
    assert "survey.parted_1, survey.parted_2, survey.parted_3" in out
    assert "parted_0" not in out.split("--create-index")[0].split("of ")[1]
    assert _registered(db_url) == []

    code, out = run(
        db_url, "catalog", "register", "survey.parted", *args, "--create-index", "--progress"
    )
    assert code == 0, out
    assert "registered partitioned table survey.parted as catalog parted (100,000 rows" in out
    # no unique index on the id of a partitioned table here: checked by one scan
    assert "check id unique: 0 offending rows (one-time scan)" in out
    assert "building Q3C index survey.parted_q3c_skyclass" not in out  # per leaf, not parent
    assert "register: building Q3C index survey.parted_1_q3c_skyclass (1/3)" in out
    with psycopg.connect(db_url) as conn:
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT * FROM skyclass.cone_search('parted', 10.0, 20.0, 1.0)"
            )
        )
        inner = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT object_id FROM catalogs.parted "
                "WHERE q3c_radial_query(ra, dec, 10.0, 20.0, 1.0)"
            )
        )
        cone = {
            r[0]
            for r in conn.execute("SELECT object_id FROM skyclass.cone_search('parted', 10, 20, 1)")
        }
        truth = {
            r[0]
            for r in conn.execute(
                "SELECT src_id FROM survey.parted WHERE q3c_dist(ra_j2000, de_j2000, 10, 20) <= 1"
            )
        }
    assert plan
    assert "Seq Scan" not in inner and inner.count("Index Scan") >= 4
    assert len(truth) > 5 and cone == truth

    # Cross-match reads the view like a table, the C sweep through SPI included.
    # One leaf partition registered on its own: the index built on it is found, not rebuilt.
    part = register_catalog(
        "survey.parted_2", name="part2", id_column="src_id", ra_column="ra_j2000",
        dec_column="de_j2000", url=db_url,
    )  # fmt: skip
    assert not part.index_created and part.q3c_index == "survey.parted_2_q3c_skyclass"
    assert enable_sweep(db_url)
    with psycopg.connect(db_url) as conn:
        matches = {
            method: conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE object_id_a = object_id_b), "
                "max(distance_arcsec) FROM skyclass.crossmatch('part2', 'parted', 1.0, "
                "method => %s)",
                (method,),
            ).fetchone()
            for method in ("cells", "index", "sweep")
        }
    assert set(matches.values()) == {(25_000, 25_000, 0.0)}, matches
    assert run(db_url, "catalog", "drop", "part2", "--yes")[0] == 0

    code, out = run(db_url, "catalog", "list")
    assert code == 0 and "registered (survey.parted)" in out and "100,000" in out
    code, out = run(db_url, "catalog", "show", "parted")
    assert code == 0 and "a view over survey.parted (nothing copied)" in out
    assert "partitioned table, 100,000 rows then; Q3C index survey.parted_0_q3c" in out
    assert "(built by skyclass)" in out and "check dec in [-90, 90]: 0 offending rows" in out
    assert "object_id" in out and "src_id" in out

    # Ingest never writes into a registered catalog.
    write_csv(tmp_path / "a.csv", clean_columns())
    for mode in ("--append", "--replace"):
        code, out = run(db_url, "ingest", str(tmp_path / "a.csv"), "-c", "parted", mode)
        assert code == 1 and "registered in place: skyclass does not write to it" in out

    code, out = run(db_url, "catalog", "drop", "parted")
    assert code == 1 and "--yes" in out and "not the registered table" in out
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE VIEW public.mine AS SELECT object_id FROM catalogs.parted")
    code, out = run(db_url, "catalog", "drop", "parted", "--yes")
    assert code == 1 and "other objects depend on view catalogs.parted" in out
    assert "view mine depends on view catalogs.parted" in out
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP VIEW public.mine")
    code, out = run(db_url, "catalog", "drop", "parted", "--yes")
    assert code == 0 and "table survey.parted kept" in out
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM survey.parted").fetchone() == (100_000,)
    assert relations(db_url) == before
    assert _registered(db_url) == []


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ("UPDATE survey.t SET ra_j2000 = 360 WHERE src_id IN (105, 107)",
         "column 'ra_j2000' is NULL, NaN or outside [0, 360) in 2 rows (ids 105, 107)"),
        ("UPDATE survey.t SET ra_j2000 = -0.5 WHERE src_id = 150",
         "outside [0, 360) in 1 row (ids 150)"),
        ("UPDATE survey.t SET de_j2000 = 'NaN' WHERE src_id = 111",
         "column 'de_j2000' is NULL, NaN or outside [-90, 90] in 1 row (ids 111)"),
        ("UPDATE survey.t SET de_j2000 = NULL WHERE src_id = 112", "in 1 row (ids 112)"),
        ("UPDATE survey.t SET de_j2000 = 90.0001 WHERE src_id = 113", "in 1 row (ids 113)"),
        ("UPDATE survey.t SET src_id = NULL WHERE src_id IN (120, 121, 122)",
         "column 'src_id' is NULL in 3 rows"),
        ("UPDATE survey.t SET src_id = 101 WHERE src_id IN (102, 103)",
         "column 'src_id' is not unique: 3 rows share an id (e.g. 101)"),
    ],
)  # fmt: skip
def test_offending_rows_are_counted_and_nothing_is_registered(
    db_url: str, update: str, message: str
) -> None:
    _make_table(db_url, "survey.t", 2000, key="")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(update)
    before = relations(db_url)
    code, out = run(
        db_url, "catalog", "register", "survey.t", "--name", "t", "--id", "src_id",
        "--ra", "ra_j2000", "--dec", "de_j2000", "--create-index", "--no-progress",
    )  # fmt: skip
    assert code == 1
    assert message in out and "survey.t" in out
    assert len(out.strip().splitlines()) == 1
    assert relations(db_url) == before and _registered(db_url) == []


def test_refusals_name_the_problem(db_url: str) -> None:
    _make_table(db_url, "survey.t", 100)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE VIEW survey.v AS SELECT * FROM survey.t")
        conn.execute("ALTER TABLE survey.t ADD COLUMN name text, ADD COLUMN ra_num numeric")
        conn.execute("CREATE TABLE catalogs.squatter (object_id bigint)")
    ok = {"name": "t", "id_column": "src_id", "ra_column": "ra_j2000", "dec_column": "de_j2000"}
    cases = [
        ("survey.nope", ok, "table 'survey.nope' does not exist"),
        ('survey."t; DROP TABLE survey.t"', ok, "does not exist"),
        ("a.b.c.d", ok, "table 'a.b.c.d' does not exist"),
        ("survey.v", ok, "survey.v is a view: register a table or a partitioned table"),
        ("skyclass.catalog", ok, "which skyclass manages"),
        ("survey.t", {**ok, "id_column": "name"}, "--id name: column 'name' of survey.t is text"),
        ("survey.t", {**ok, "ra_column": "ra_num"}, "it must be double precision or real"),
        ("survey.t", {**ok, "dec_column": "decl"}, "survey.t has no column 'decl' (its columns:"),
        (
            "survey.t",
            {**ok, "name": "squatter"},
            "catalogs.squatter exists but is not a registered",
        ),
        ("survey.t", {**ok, "name": "Bad;Name"}, "not allowed"),
        ("survey.t", {**ok, "ra_column": None}, "give --ra COL and --dec COL"),
        ("survey.t", ok, "no Q3C index on q3c_ang2ipix(ra_j2000, de_j2000) of survey.t"),
    ]
    before = relations(db_url)
    for table, kwargs, message in cases:
        with pytest.raises((RegistryError, ValueError)) as info:
            register_catalog(table, url=db_url, **kwargs)  # type: ignore[arg-type]
        assert message in str(info.value), (table, kwargs)
    assert relations(db_url) == before and _registered(db_url) == []

    # While another session holds the name (an ingest, registration or drop of it), a
    # registration and a drop are refused at once, naming that session's pid.
    with psycopg.connect(db_url) as holder:
        lock_catalog(holder, "t")
        for attempt in (
            lambda: register_catalog(
                "survey.t", name="t", id_column="src_id", positions=False, url=db_url
            ),
            lambda: drop_catalog("t", url=db_url),
        ):
            with pytest.raises(IngestError, match=f"backend pid {holder.info.backend_pid}"):
                attempt()
    assert _registered(db_url) == []

    # Without positions: no index needed; then the name is taken.
    reg = register_catalog("survey.t", name="t", id_column="src_id", positions=False, url=db_url)
    assert reg.q3c_index is None and reg.row_estimate == 100
    with pytest.raises(RegistryError, match="catalog 't' already exists"):
        register_catalog("survey.t", name="t", id_column="src_id", positions=False, url=db_url)
    code, out = run(db_url, "cone", "t", "10", "20", "1deg")
    assert code == 1 and "has no sky positions" in out
    with psycopg.connect(db_url) as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM skyclass.catalog_column c JOIN skyclass.catalog k "
            "USING (catalog_id) WHERE k.name = 't' ORDER BY position"
        )]  # fmt: skip
        # the reader role reads the view without any right on the archive table
        conn.execute("SET ROLE skyclass_reader")
        n = conn.execute("SELECT count(*) FROM catalogs.t").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM survey.t")
    assert columns[:2] == ["object_id", "ra_j2000"] and "src_id" not in columns
    assert n == (100,)
