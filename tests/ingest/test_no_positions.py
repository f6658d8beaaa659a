"""Catalogs without sky positions (``--no-positions``): training sets such as BOSS DR10 photo-z."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from astropy.io import fits
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.errors import IngestError
from skyclass.ingest import describe_catalog, ingest_file, list_catalogs
from tests.ingest.corpus import clean_columns, snapshot, write_csv

BOSS_CSV = "photoz_boss_dr10_annz/boss_dr10_photoz_35762.csv"
BOSS_FITS = "fits_votable_samples/boss_dr10_0.fits.gz"
BOSS_COLUMNS = [
    "mag_u",
    "magerr_u",
    "mag_g",
    "magerr_g",
    "mag_r",
    "magerr_r",
    "mag_i",
    "magerr_i",
    "mag_z",
    "magerr_z",
]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _structure(conn: psycopg.Connection, table: str) -> dict[str, Any]:
    """Columns, indexes (with clustering) and CHECK constraints of ``catalogs.<table>``."""
    columns = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'catalogs' AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT ci.relname, i.indisprimary, i.indisclustered, pg_get_indexdef(i.indexrelid) "
        "FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid "
        "WHERE i.indrelid = ('catalogs.' || quote_ident(%s))::regclass ORDER BY ci.relname",
        (table,),
    ).fetchall()
    checks = conn.execute(
        "SELECT conname FROM pg_constraint WHERE contype = 'c' "
        "AND conrelid = ('catalogs.' || quote_ident(%s))::regclass",
        (table,),
    ).fetchall()
    registry = conn.execute(
        "SELECT id_column, ra_column, dec_column FROM skyclass.catalog WHERE name = %s", (table,)
    ).fetchone()
    return {"columns": columns, "indexes": indexes, "checks": checks, "registry": registry}


def test_boss_csv_loads_without_positions_exactly(
    shared_data: Path, conn: psycopg.Connection, db_url: str
) -> None:
    path = shared_data / BOSS_CSV
    code, out = _run("ingest", str(path), "--catalog", "boss", "--no-positions")
    assert code == 0, out
    assert "loaded 35,762 rows into catalog boss" in out
    assert "NULLs: none" in out

    # Independent reference: Python's csv module and correctly rounded float().
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        lines = list(reader)
    assert header == [*BOSS_COLUMNS, "z_spec", "annz_source_files"]
    expected = [
        (i, *(float(v) for v in line[:11]), line[11]) for i, line in enumerate(lines, start=1)
    ]
    rows = conn.execute(
        f"SELECT object_id, {', '.join(header)} FROM catalogs.boss ORDER BY object_id"
    ).fetchall()
    assert len(rows) == 35_762
    assert rows == expected  # float64 bit for bit, text exact, ids the row numbers

    # The u band's huge errors are effective non-detections, not sentinels: kept as numbers.
    magerr_u = np.array([r[2] for r in rows])
    assert magerr_u.max() == max(float(line[1]) for line in lines) == 35242.484375
    assert int((magerr_u > 10).sum()) == 2_738 and int((magerr_u > 1).sum()) == 26_059
    nulls = conn.execute(
        "SELECT " + ", ".join(f"count(*) - count({c})" for c in header) + " FROM catalogs.boss"
    ).fetchone()
    assert nulls == (0,) * len(header)

    structure = _structure(conn, "boss")
    assert [c[0] for c in structure["columns"]] == ["object_id", *header]
    assert {c[1] for c in structure["columns"][1:12]} == {"double precision"}
    assert structure["columns"][0] == ("object_id", "bigint", "NO")
    # no ra/dec, no coordinate CHECK, no Q3C index; the primary key is the clustering index
    assert structure["checks"] == []
    assert [(i[0], i[1], i[2]) for i in structure["indexes"]] == [("_boss_pkey", True, True)]
    assert structure["registry"] == (None, None, None)
    load = conn.execute(
        "SELECT rows_accepted, nulls_per_column, options->'positions', options->'ra_column' "
        "FROM skyclass.catalog_load"
    ).fetchone()
    assert load == (35_762, {}, False, None)

    code, out = _run("catalog", "show", "boss")
    assert code == 0, out
    assert "catalogs.boss, 35,762 rows" in out
    assert "no sky positions" in out
    code, out = _run("catalog", "list")
    assert code == 0 and "boss" in out and "(none)" in out
    (summary,) = list_catalogs()
    assert summary.ra_column is None and summary.dec_column is None and not summary.positions
    assert not describe_catalog("boss").summary.positions


def test_boss_fits_gz_loads_without_positions(
    shared_data: Path, conn: psycopg.Connection, db_url: str
) -> None:
    path = shared_data / BOSS_FITS
    report = ingest_file(path, "boss_fits", positions=False)
    raw = fits.getdata(path, 1)
    assert report.rows_accepted == len(raw) == 4_999
    assert report.file_format == "fits"
    assert report.nulls_per_column == {}
    names = [n.lower() for n in raw.names]
    rows = conn.execute(
        f"SELECT object_id, {', '.join(names)} FROM catalogs.boss_fits ORDER BY object_id"
    ).fetchall()
    columns = list(zip(*rows, strict=True))
    assert list(columns[0]) == list(range(1, 4_999 + 1))
    for i, name in enumerate(raw.names, start=1):
        want = np.asarray(raw[name])
        got = np.array(columns[i], dtype=want.dtype.newbyteorder("="))
        # float32 stays float32 bit for bit, the float64 redshift too
        assert np.array_equal(got.view(np.uint8), want.astype(got.dtype).view(np.uint8)), name
    # MAGERR_U up to 3.5e4: a number like any other, not a sentinel
    assert np.float32(max(columns[2])) == np.float32(35242.484375) == raw["MAGERR_U"].max()
    structure = _structure(conn, "boss_fits")
    types = {c[0]: c[1] for c in structure["columns"]}
    assert types["magerr_u"] == "real" and types["z"] == "double precision"
    assert "ra" not in types and "dec" not in types
    assert [(i[0], i[2]) for i in structure["indexes"]] == [("_boss_fits_pkey", True)]
    assert structure["registry"] == (None, None, None)


def test_no_positions_refuses_ra_and_dec_options(
    shared_data: Path, db_url: str, tmp_path: Path
) -> None:
    before = snapshot(db_url)
    path = write_csv(tmp_path / "pos.csv", clean_columns())
    with pytest.raises(IngestError) as info:
        ingest_file(path, "pos", ra_column="ra", positions=False)
    assert "--no-positions" in str(info.value) and "--ra" in str(info.value)
    code, out = _run(
        "ingest", str(shared_data / BOSS_CSV), "-c", "boss", "--no-positions", "--ra", "mag_u"
    )
    assert code == 1 and "error:" in out and "--ra" in out and "--no-positions" in out
    code, out = _run(
        "ingest",
        str(shared_data / BOSS_CSV),
        "-c",
        "boss",
        "--no-positions",
        "--ra",
        "mag_u",
        "--dec",
        "mag_g",
    )
    assert code == 1 and "--ra and --dec" in out
    # A file column that would be named ra or dec is not stored under that name.
    with pytest.raises(IngestError) as info:
        ingest_file(path, "pos", positions=False)
    message = str(info.value)
    assert "'ra'" in message and "reserved for sky positions" in message and "pos.csv" in message
    assert snapshot(db_url) == before


def _no_positions_columns(first_id: int = 1) -> dict[str, list[Any]]:
    cols = clean_columns(first_id=first_id)
    del cols["ra"], cols["dec"]
    return cols


def test_append_must_match_the_catalog_kind(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    with_positions = write_csv(tmp_path / "pos.csv", clean_columns(first_id=1000))
    without = write_csv(tmp_path / "nopos.csv", _no_positions_columns())
    more = write_csv(tmp_path / "more.csv", _no_positions_columns(first_id=51))
    ingest_file(with_positions, "pos")
    ingest_file(without, "nopos", positions=False)
    before = snapshot(db_url)

    with pytest.raises(IngestError) as info:
        ingest_file(without, "pos", mode="append", positions=False)
    assert "catalog 'pos' has sky positions" in str(info.value)
    with pytest.raises(IngestError) as info:
        ingest_file(with_positions, "nopos", mode="append")
    assert "catalog 'nopos' has no sky positions" in str(info.value)
    assert "--no-positions" in str(info.value)
    # Without --no-positions a file lacking RA/Dec is refused before any catalog is read,
    # and the message says how to load it.
    code, out = _run("ingest", str(more), "-c", "nopos", "--append")
    assert code == 1 and "no RA column" in out and "--no-positions" in out
    assert snapshot(db_url) == before

    code, out = _run("ingest", str(more), "-c", "nopos", "--append", "--no-positions")
    assert code == 0, out
    assert "appended 50 rows" in out and "re-clustered on its primary key" in out
    ids = [r[0] for r in conn.execute("SELECT object_id FROM catalogs.nopos ORDER BY object_id")]
    assert ids == list(range(1, 101))
    assert _structure(conn, "nopos")["registry"] == ("id", None, None)


def test_replace_switches_between_kinds(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    with_positions = write_csv(tmp_path / "pos.csv", clean_columns())
    without = write_csv(tmp_path / "nopos.csv", _no_positions_columns())
    ingest_file(with_positions, "cat")
    report = ingest_file(without, "cat", mode="replace", positions=False)
    assert any("had sky positions and now has none" in note for note in report.notes)
    structure = _structure(conn, "cat")
    assert structure["registry"] == ("id", None, None)
    assert [c[0] for c in structure["columns"]] == ["object_id", "mag", "name"]
    assert [(i[0], i[2]) for i in structure["indexes"]] == [("_cat_pkey", True)]
    assert structure["checks"] == []

    report = ingest_file(with_positions, "cat", mode="replace")
    assert any("had no sky positions and now has them" in note for note in report.notes)
    structure = _structure(conn, "cat")
    assert structure["registry"] == ("id", "ra", "dec")
    assert [(i[0], i[2]) for i in structure["indexes"]] == [
        ("_cat_pkey", False),
        ("_cat_q3c", True),
    ]
    assert structure["checks"] == [("coordinates_valid",)]


def test_file_ids_are_clustered_in_id_order(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    cols = _no_positions_columns()
    cols = {k: v[::-1] for k, v in cols.items()}  # ids 50, 49, ..., 1 in the file
    ingest_file(write_csv(tmp_path / "rev.csv", cols), "rev", positions=False)
    physical = [r[0] for r in conn.execute("SELECT object_id FROM catalogs.rev ORDER BY ctid")]
    assert physical == list(range(1, 51))


def test_registry_positions_are_both_or_neither(conn: psycopg.Connection) -> None:
    for ra, dec in (("ra", None), (None, "dec")):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO skyclass.catalog (name, table_name, ra_column, dec_column) "
                "VALUES ('half', 'half', %s, %s)",
                (ra, dec),
            )
    conn.execute(
        "INSERT INTO skyclass.catalog (name, table_name, ra_column, dec_column) "
        "VALUES ('neither', 'neither', NULL, NULL)"
    )
