"""Create, append, replace, skip, locking, chunking and types of the ingest."""

from __future__ import annotations

import gzip
import hashlib
import secrets
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from astropy.io import fits
from astropy.table import Table
from psycopg import sql

from skyclass.errors import CatalogNotFoundError, IngestError
from skyclass.ingest import describe_catalog, ingest_file, list_catalogs
from skyclass.ingest import sources as ingest_sources
from skyclass.ingest.registry import lock_catalog
from tests.ingest.corpus import clean_columns, snapshot, with_value, write_csv, write_fits


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM catalogs.{table}").fetchone()
    assert row is not None
    return int(row[0])


def test_existing_catalog_needs_append_or_replace(db_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", clean_columns())
    ingest_file(path, "cat")
    before = snapshot(db_url)
    with pytest.raises(IngestError) as info:
        ingest_file(path, "cat")
    assert "already exists" in str(info.value)
    assert "--append" in str(info.value) and "--replace" in str(info.value)
    assert snapshot(db_url) == before


def test_append_adds_new_ids_and_refuses_known_ones(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    ingest_file(write_csv(tmp_path / "a.csv", clean_columns()), "cat")
    more = write_csv(tmp_path / "b.csv", clean_columns(seed=8, n=10, first_id=51))
    report = ingest_file(more, "cat", mode="append")
    assert report.rows_accepted == 10
    assert any("not re-clustered" in note for note in report.notes)
    assert _count(conn, "cat") == 60

    clash = with_value(clean_columns(seed=9, n=10, first_id=61), "id", 3, 55)
    clash_path = write_csv(tmp_path / "clash.csv", clash)
    before = snapshot(db_url)
    with pytest.raises(IngestError) as info:
        ingest_file(clash_path, "cat", mode="append")
    assert info.value.row == 3 and info.value.column == "id"
    assert "id 55 is already in catalog 'cat'" in str(info.value)
    assert snapshot(db_url) == before

    # skip mode: the known id and a duplicate within the file are left out and recorded
    clash = with_value(clash, "id", 8, 61)
    report = ingest_file(
        write_csv(tmp_path / "clash2.csv", clash), "cat", mode="append", on_invalid="skip"
    )
    assert report.rows_accepted == 8 and report.rows_rejected == 2
    rejects = conn.execute(
        "SELECT row_number, column_name, reason, value FROM skyclass.ingest_reject "
        "WHERE load_id = %s ORDER BY row_number",
        (report.load_id,),
    ).fetchall()
    assert rejects == [
        (3, "id", "id already in the catalog", "55"),
        (8, "id", "duplicate id (first in row 1)", "61"),
    ]
    assert _count(conn, "cat") == 68
    loads = conn.execute(
        "SELECT mode, rows_accepted, rows_rejected FROM skyclass.catalog_load ORDER BY load_id"
    ).fetchall()
    assert loads == [("create", 50, 0), ("append", 10, 0), ("append", 8, 2)]


def test_append_with_generated_ids_continues_after_the_largest(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    cols = clean_columns()
    del cols["id"]
    ingest_file(write_csv(tmp_path / "a.csv", cols), "noid")
    more = clean_columns(seed=3, n=5)
    del more["id"]
    report = ingest_file(write_csv(tmp_path / "b.csv", more), "noid", mode="append")
    assert any("generated from 51" in note for note in report.notes)
    ids = [r[0] for r in conn.execute("SELECT object_id FROM catalogs.noid ORDER BY 1")]
    assert ids == list(range(1, 56))
    # a file with ids does not fit a catalog with generated ids, and the reverse
    with pytest.raises(IngestError, match="generated ids"):
        ingest_file(write_csv(tmp_path / "c.csv", clean_columns()), "noid", mode="append")


def test_append_refuses_other_columns_and_narrower_types(db_url: str, tmp_path: Path) -> None:
    ingest_file(write_fits(tmp_path / "a.fits", clean_columns()), "cat")
    before = snapshot(db_url)
    cols = clean_columns(n=5, first_id=100)
    cols["extra"] = [1.0] * 5
    with pytest.raises(IngestError, match="columns not in the catalog: extra"):
        ingest_file(write_csv(tmp_path / "b.csv", cols), "cat", mode="append")
    # mag is real in the catalog (FITS float32) but double in a CSV: no silent rounding
    with pytest.raises(IngestError, match="mag is double precision in the file but real"):
        ingest_file(
            write_csv(tmp_path / "c.csv", clean_columns(n=5, first_id=100)), "cat", mode="append"
        )
    with pytest.raises(CatalogNotFoundError, match="does not exist"):
        ingest_file(tmp_path / "c.csv", "nothing", mode="append")
    assert snapshot(db_url) == before


def test_replace_swaps_content_and_keeps_history(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    ingest_file(write_csv(tmp_path / "a.csv", clean_columns()), "cat", description="first")
    catalog_id = conn.execute("SELECT catalog_id FROM skyclass.catalog").fetchone()
    cols = clean_columns(seed=11, n=20, first_id=1000)
    cols["flux"] = [2.5] * 20
    del cols["name"]
    report = ingest_file(write_fits(tmp_path / "b.fits", cols), "cat", mode="replace")
    assert report.rows_accepted == 20
    assert _count(conn, "cat") == 20
    assert conn.execute("SELECT catalog_id, description FROM skyclass.catalog").fetchone() == (
        catalog_id[0] if catalog_id else None,
        "first",
    )
    loads = conn.execute(
        "SELECT mode, rows_accepted, file_format FROM skyclass.catalog_load ORDER BY load_id"
    ).fetchall()
    assert loads == [("create", 50, "csv"), ("replace", 20, "fits")]
    columns = [
        r[0]
        for r in conn.execute("SELECT column_name FROM skyclass.catalog_column ORDER BY position")
    ]
    assert columns == ["object_id", "ra", "dec", "mag", "flux"]
    relations = sorted(
        r[0]
        for r in conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE nspname = 'catalogs'"
        )
    )
    assert relations == ["_cat_pkey", "_cat_q3c", "cat"]
    # a dependent view stops a replace, with the reason, and changes nothing
    conn.execute("CREATE VIEW public.bright AS SELECT object_id FROM catalogs.cat WHERE mag < 20")
    before = snapshot(db_url)
    with pytest.raises(IngestError, match="depend"):
        ingest_file(tmp_path / "a.csv", "cat", mode="replace")
    assert snapshot(db_url) == before


def test_skip_mode_counts_rejects_exactly(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    cols = clean_columns()
    for column, row, value in (
        ("ra", 3, -1.0),
        ("dec", 7, 99.0),
        ("ra", 9, float("nan")),
        ("dec", 12, float("inf")),
        ("id", 15, 2),
        ("ra", 40, 360.0),
    ):
        cols = with_value(cols, column, row, value)
    report = ingest_file(write_fits(tmp_path / "bad.fits", cols), "cat", on_invalid="skip")
    assert report.rows_rejected == 6
    assert report.rows_accepted == 44
    assert _count(conn, "cat") == 44
    rejects = conn.execute(
        "SELECT row_number, column_name, reason, value FROM skyclass.ingest_reject ORDER BY 1"
    ).fetchall()
    assert rejects == [
        (3, "ra", "RA outside [0, 360)", "-1.0"),
        (7, "dec", "Dec outside [-90, 90]", "99.0"),
        (9, "ra", "RA NaN", "nan"),
        (12, "dec", "Dec infinite", "inf"),
        (15, "id", "duplicate id (first in row 2)", "2"),
        (40, "ra", "RA outside [0, 360)", "360.0"),
    ]
    stored = conn.execute(
        "SELECT rows_accepted, rows_rejected FROM skyclass.catalog_load"
    ).fetchone()
    assert stored == (44, 6)
    # generated ids are file row numbers, so skipped rows leave gaps
    del cols["id"]
    ingest_file(write_fits(tmp_path / "bad2.fits", cols), "gen", on_invalid="skip")
    ids = [r[0] for r in conn.execute("SELECT object_id FROM catalogs.gen ORDER BY 1")]
    assert ids == [i for i in range(1, 51) if i not in (3, 7, 9, 12, 40)]
    # only invalid rows: refused even in skip mode
    bad = {k: v[:2] for k, v in clean_columns().items()}
    bad["ra"] = [400.0, -5.0]
    with pytest.raises(IngestError, match="all 2 rows are invalid"):
        ingest_file(write_csv(tmp_path / "all_bad.csv", bad), "none", on_invalid="skip")


def _holder(db_url: str, name: str) -> tuple[psycopg.Connection, int]:
    """A session inside a transaction holding catalog ``name``'s lock, as an ingest does."""
    other = psycopg.connect(db_url)
    lock_catalog(other, name)
    return other, other.info.backend_pid


def test_concurrent_ingest_of_one_catalog_is_refused_at_once(db_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", clean_columns())
    ingest_file(path, "cat")
    # an existing catalog (its lock row exists) and a new one (the holder is inserting it)
    for name, mode in (("cat", "append"), ("fresh", "create")):
        other, pid = _holder(db_url, name)
        with other:
            started = time.monotonic()
            with pytest.raises(IngestError) as info:
                ingest_file(path, name, mode=mode)
            assert time.monotonic() - started < 2
            assert f"backend pid {pid}" in str(info.value)
            assert "is running" in str(info.value)
            ingest_file(path, "other", mode="replace")  # other catalogs are not blocked
            other.rollback()
    ingest_file(path, "fresh")
    ingest_file(path, "cat", mode="replace")


def test_a_role_without_grants_cannot_block_an_ingest(db_url: str, tmp_path: Path) -> None:
    """The advisory key ingest used before 0011 is anyone's; the lock row is not."""
    role = f"stranger_{secrets.token_hex(4)}"
    path = write_csv(tmp_path / "a.csv", clean_columns())
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        with psycopg.connect(db_url, autocommit=True) as stranger:
            stranger.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            for name in ("cat", "new"):
                digest = hashlib.sha256(f"skyclass.catalog:{name}".encode()).digest()
                key = int.from_bytes(digest[:8], "big", signed=True)
                taken = stranger.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                assert taken == (True,)
            for statement in (
                "SELECT * FROM skyclass.operation_lock FOR UPDATE",
                "INSERT INTO skyclass.operation_lock (resource) VALUES ('catalog:new')",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    stranger.execute(statement)
            ingest_file(path, "cat")
            ingest_file(path, "cat", mode="replace")
            ingest_file(path, "new")
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_csv_chunks_reconcile_types_and_keep_row_numbers(
    db_url: str, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_sources, "CHUNK_BYTES", 400)  # a few rows per chunk
    n = 60
    cols = clean_columns(n=n)
    cols["count"] = list(range(n))
    cols["count"][45] = 2.5  # an int column that turns out float in a later chunk
    cols["label"] = [f"L{i}" for i in range(n)]
    # text in the first chunk, then only numbers: a text column, numbers kept as written
    cols["code"] = [f"c{i}" for i in range(10)] + [str(i) for i in range(10, n)]
    report = ingest_file(write_csv(tmp_path / "chunked.csv", cols), "chunked")
    assert report.rows_accepted == n
    assert any(
        "count: bigint in the first rows, double precision later" in note for note in report.notes
    )
    types = dict(
        conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'catalogs' AND table_name = 'chunked'"
        ).fetchall()
    )
    assert types["count"] == "double precision" and types["code"] == "text"
    got = conn.execute("SELECT count, code FROM catalogs.chunked ORDER BY object_id").fetchall()
    assert [r[0] for r in got] == [float(v) for v in cols["count"]]
    assert [r[1] for r in got] == cols["code"]

    # a bad value in a later chunk is reported with its row in the whole file
    bad = with_value(clean_columns(n=n), "dec", 47, -91.0)
    with pytest.raises(IngestError) as info:
        ingest_file(write_csv(tmp_path / "late.csv", bad), "late")
    assert info.value.row == 47
    bad = with_value(clean_columns(n=n), "mag", 53, "oops")
    with pytest.raises(IngestError) as info:
        ingest_file(write_csv(tmp_path / "late2.csv", bad), "late")
    assert (info.value.row, info.value.column) == (53, "mag")
    # FITS chunks too: nulls counted over all chunks, rows numbered over the file
    fits_cols = with_value(clean_columns(n=n), "mag", 58, -9999.0)
    fits_cols = with_value(fits_cols, "mag", 2, float("nan"))
    report = ingest_file(write_fits(tmp_path / "chunked.fits", fits_cols), "fchunked")
    assert report.nulls_per_column == {"mag": {"nan": 1, "sentinel": 1}}
    with pytest.raises(IngestError) as info:
        ingest_file(
            write_fits(tmp_path / "late.fits", with_value(clean_columns(n=n), "id", 59, 3)), "late"
        )
    assert info.value.row == 59 and "rows 3 and 59" in str(info.value)


def test_fits_types_arrays_and_tnull(db_url: str, conn: psycopg.Connection, tmp_path: Path) -> None:
    n = 6
    base = clean_columns(n=n)
    ivec = np.arange(2 * n, dtype=np.int32).reshape(n, 2)
    ivec[1, 1] = -1  # one TNULL element
    ivec[2, :] = -1  # a whole row of TNULL
    columns = [
        fits.Column(name="OBJID", format="K", array=np.array(base["id"])),
        fits.Column(name="RA", format="D", array=np.array(base["ra"])),
        fits.Column(name="DEC", format="E", array=np.array(base["dec"], dtype=np.float32)),
        fits.Column(name="FLAG", format="L", array=np.array([True, False] * 3)),
        fits.Column(name="SMALL", format="B", array=np.arange(n, dtype=np.uint8) + 250),
        fits.Column(
            name="I16",
            format="I",
            null=-32768,
            array=np.array([1, -32768, 3, 4, 5, 6], dtype=np.int16),
        ),
        fits.Column(
            name="U16",
            format="I",
            bzero=32768,
            array=np.array([0, 1, 65535, 4, 5, 6], dtype=np.uint16),
        ),
        fits.Column(
            name="U64",
            format="K",
            bzero=2**63,
            array=np.array([0, 1, 2**64 - 1, 2**63, 5, 6], dtype=np.uint64),
        ),
        fits.Column(
            name="VEC",
            format="3E",
            unit="mag",
            array=np.arange(3 * n, dtype=np.float32).reshape(n, 3),
        ),
        fits.Column(name="IVEC", format="2J", null=-1, array=ivec),
        fits.Column(
            name="NAME",
            format="8A",
            array=np.array(["a b", "", "ccc", "d", "e", "f"]),
        ),
    ]
    header = fits.Header()
    path = tmp_path / "types.fits"
    hdu = fits.BinTableHDU.from_columns(columns, header=header)
    hdu.header["TCOMM9"] = "a vector"
    hdu.writeto(path)
    report = ingest_file(path, "types")
    assert report.rows_accepted == n
    assert report.nulls_per_column == {
        "i16": {"tnull": 1},
        "ivec": {"tnull": 1},
        "name": {"empty": 1},
    }
    types = dict(
        conn.execute(
            "SELECT column_name, pg_type FROM skyclass.catalog_column ORDER BY position"
        ).fetchall()
    )
    assert types == {
        "object_id": "bigint",
        "ra": "double precision",
        "dec": "double precision",
        "flag": "boolean",
        "small": "smallint",
        "i16": "smallint",
        "u16": "integer",
        "u64": "numeric(20,0)",
        "vec": "real[]",
        "ivec": "integer[]",
        "name": "text",
    }
    rows = conn.execute(
        "SELECT flag, small, i16, u16, u64, vec, ivec, name FROM catalogs.types ORDER BY object_id"
    ).fetchall()
    assert [r[0] for r in rows] == [True, False] * 3
    assert [r[1] for r in rows] == [250, 251, 252, 253, 254, 255]
    assert [r[2] for r in rows] == [1, None, 3, 4, 5, 6]
    assert [r[3] for r in rows] == [0, 1, 65535, 4, 5, 6]
    assert [int(r[4]) for r in rows] == [0, 1, 2**64 - 1, 2**63, 5, 6]
    assert rows[1][5] == [3.0, 4.0, 5.0]
    assert [r[6] for r in rows[:3]] == [[0, 1], [2, None], None]
    assert [r[7] for r in rows] == ["a b", None, "ccc", "d", "e", "f"]
    unit, description = conn.execute(
        "SELECT unit, description FROM skyclass.catalog_column WHERE column_name = 'vec'"
    ).fetchone() or (None, None)
    assert (unit, description) == ("mag", "a vector")


def test_ecsv_metadata_and_catalog_views(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    cols = clean_columns(n=5)
    table = Table(
        {
            "source_id": np.array(cols["id"]),
            "ra": cols["ra"],
            "dec": cols["dec"],
            "rmag": np.array(cols["mag"], dtype=np.float32),
        }
    )
    table["rmag"].unit = "mag"
    table["rmag"].description = "SDSS r magnitude"
    table["ra"].unit = "deg"
    path = tmp_path / "meta.ecsv"
    table.write(path, format="ascii.ecsv")
    report = ingest_file(path, "meta", description="a small ECSV catalog", progress=True)
    assert report.file_format == "ecsv"
    comment = conn.execute("SELECT col_description('catalogs.meta'::regclass, 4)").fetchone()
    assert comment == ("mag; SDSS r magnitude; source column rmag",)
    assert conn.execute("SELECT obj_description('catalogs.meta'::regclass)").fetchone() == (
        "a small ECSV catalog",
    )

    (summary,) = list_catalogs()
    assert (summary.name, summary.rows, summary.loads, summary.id_column) == (
        "meta",
        5,
        1,
        "source_id",
    )
    described = describe_catalog("meta")
    assert [c.name for c in described.columns] == ["object_id", "ra", "dec", "rmag"]
    assert described.columns[3].unit == "mag"
    assert described.loads[0].file_sha256 == report.file_sha256
    assert described.loads[0].options["generated_ids"] is False


def test_compressed_files_and_text_id_columns(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    cols = clean_columns()
    for plain, name in (
        (write_fits(tmp_path / "a.fits", cols), "fz"),
        (write_csv(tmp_path / "a.csv", cols), "cz"),
    ):
        packed = plain.with_name(plain.name + ".gz")
        packed.write_bytes(gzip.compress(plain.read_bytes()))
        report = ingest_file(packed, name)
        assert report.rows_accepted == 50
    fz = conn.execute("SELECT object_id, ra, dec, name FROM catalogs.fz ORDER BY 1").fetchall()
    cz = conn.execute("SELECT object_id, ra, dec, name FROM catalogs.cz ORDER BY 1").fetchall()
    assert fz == cz == list(zip(cols["id"], cols["ra"], cols["dec"], cols["name"], strict=True))

    # an "id" column of names is not taken as the id: ids are generated, and the report says so
    named = dict(cols)
    named["id"] = [f"SN2020{i}x" for i in range(50)]
    report = ingest_file(write_csv(tmp_path / "names.csv", named), "names")
    assert any("kept as a data column" in note for note in report.notes)
    assert conn.execute("SELECT max(object_id), min(id) FROM catalogs.names").fetchone() == (
        50,
        "SN20200x",
    )
