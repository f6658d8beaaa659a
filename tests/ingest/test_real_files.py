"""Ingest of the real files in ../shared/data: exact values, exact NULL counts, clear refusals."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import psycopg
import pytest
from astropy.io import fits
from astropy.table import Table

from skyclass.errors import IngestError
from skyclass.ingest import ingest_file
from tests.ingest.corpus import snapshot

SDSS = "sdss17_stellar_classification/sdss17_star_classification_99999.csv.gz"
NAIR = "fits_votable_samples/nair_abraham_2010_sdss_galaxies.fits"
PULSARS = "fits_votable_samples/catalog_of_pulsars_vizier_VII_189.vot"
BOSS_FITS = "fits_votable_samples/boss_dr10_0.fits.gz"
BOSS_CSV = "photoz_boss_dr10_annz/boss_dr10_photoz_35762.csv"
SENTINELS = (-9999.0, 99.0, -99.0)


def _db_nulls(conn: psycopg.Connection, table: str, column: str) -> int:
    row = conn.execute(f'SELECT count(*) - count("{column}") FROM catalogs.{table}').fetchone()
    assert row is not None
    return int(row[0])


def test_sdss17_csv_gz_exact(shared_data: Path, conn: psycopg.Connection, db_url: str) -> None:
    report = ingest_file(
        shared_data / SDSS, "sdss17", id_column="orig_row", ra_column="alpha", dec_column="delta"
    )
    assert report.rows_accepted == 99_999
    assert report.rows_rejected == 0
    assert report.nulls_per_column == {}
    assert report.file_format == "csv"
    assert report.file_sha256 == "7b40b2856f6437d695d88281bfb222d784190a285d7c7e5dda653f6453be2c7e"

    # Independent reference: Python's csv module and correctly rounded float().
    with gzip.open(shared_data / SDSS, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        lines = sorted(reader, key=lambda r: int(r[0]))
    assert header == [
        "orig_row",
        "alpha",
        "delta",
        "u",
        "g",
        "r",
        "i",
        "z",
        "class",
        "redshift",
        "MJD",
    ]
    expected = [
        (int(r[0]), *(float(v) for v in r[1:8]), r[8], float(r[9]), int(r[10])) for r in lines
    ]
    rows = conn.execute(
        "SELECT object_id, ra, dec, u, g, r, i, z, class, redshift, mjd "
        "FROM catalogs.sdss17 ORDER BY object_id"
    ).fetchall()
    # ids exact, float64 values bit for bit, text and integers exact
    assert rows == expected
    types = dict(
        conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'catalogs' AND table_name = 'sdss17'"
        ).fetchall()
    )
    assert types["object_id"] == "bigint"
    assert types["ra"] == types["dec"] == types["u"] == "double precision"
    assert types["class"] == "text"
    # registry, Q3C index, clustering, comments
    registry = conn.execute(
        "SELECT id_column, ra_column, dec_column FROM skyclass.catalog WHERE name = 'sdss17'"
    ).fetchone()
    assert registry == ("orig_row", "alpha", "delta")
    indexes = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'sdss17'"
        ).fetchall()
    }
    assert 'q3c_ang2ipix(ra, "dec")' in indexes["_sdss17_q3c"]
    assert "_sdss17_pkey" in indexes
    clustered = conn.execute(
        "SELECT i.indisclustered FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = '_sdss17_q3c'"
    ).fetchone()
    assert clustered == (True,)
    comment = conn.execute("SELECT col_description('catalogs.sdss17'::regclass, 2)").fetchone()
    assert comment == ("deg; source column alpha",)
    load = conn.execute(
        "SELECT mode, file_size, file_format, rows_accepted, nulls_per_column, null_values, "
        "os_user <> '' FROM skyclass.catalog_load"
    ).fetchone()
    assert load == (
        "create",
        (shared_data / SDSS).stat().st_size,
        "csv",
        99_999,
        {},
        [-9999, 99, -99],
        True,
    )


def test_nair_fits_nulls_and_float32_bits(
    shared_data: Path, conn: psycopg.Connection, db_url: str
) -> None:
    report = ingest_file(shared_data / NAIR, "nair")
    raw = fits.getdata(shared_data / NAIR, 1)
    n = len(raw)
    assert report.rows_accepted == n == 13_895
    assert any("generated" in note for note in report.notes)

    expected: dict[str, dict[str, int]] = {}
    for name in raw.names:
        values = np.asarray(raw[name])
        if values.dtype.kind != "f" or name in ("RA", "DEC"):
            continue
        nan = np.isnan(values)
        inf = np.isinf(values)
        sentinel = np.isin(values, np.array(SENTINELS, dtype=values.dtype))
        counts = {"nan": int(nan.sum()), "inf": int(inf.sum()), "sentinel": int(sentinel.sum())}
        counts = {k: v for k, v in counts.items() if v}
        if counts:
            expected[name.lower()] = counts
    assert report.nulls_per_column == expected
    assert expected["age"] == {"nan": 3646}
    assert expected["abs_g"] == {"inf": 8}
    assert expected["rmag"] == {"sentinel": 6}
    assert expected["sigma"] == {"nan": 5, "sentinel": 2}
    for column, counts in expected.items():
        assert _db_nulls(conn, "nair", column) == sum(counts.values()), column
    stored = conn.execute("SELECT nulls_per_column FROM skyclass.catalog_load").fetchone()
    assert stored == (expected,)

    rows = conn.execute(
        "SELECT object_id, ra, dec, age, rmag, t_type, sdss FROM catalogs.nair ORDER BY object_id"
    ).fetchall()
    ids, ra, dec, age, rmag, t_type, sdss = (list(c) for c in zip(*rows, strict=True))
    assert ids == list(range(1, n + 1))
    # float32 coordinates widen exactly to double; float32 data columns stay float32 bit for bit
    assert np.array_equal(np.array(ra), raw["RA"].astype(np.float64))
    assert np.array_equal(np.array(dec, dtype=np.float32), raw["DEC"])
    age_db = np.array([np.nan if v is None else v for v in age], dtype=np.float32)
    assert np.array_equal(age_db, raw["AGE"], equal_nan=True)
    assert np.array_equal(
        age_db.view(np.uint32)[~np.isnan(age_db)],
        raw["AGE"][~np.isnan(raw["AGE"])].astype(np.float32).view(np.uint32),
    )
    assert sum(v is None for v in rmag) == 6
    # integers get no float sentinels and there is no TNULL: -32768 stays a number
    assert sum(v == -32768 for v in t_type) == int((raw["T_TYPE"] == -32768).sum()) == 335
    assert sdss[0] == raw["SDSS"][0].strip()
    types = dict(
        conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'catalogs' AND table_name = 'nair'"
        ).fetchall()
    )
    assert types["age"] == "real" and types["fiberid"] == "smallint" and types["mjd"] == "integer"


def test_pulsar_votable_empty_cells(
    shared_data: Path, conn: psycopg.Connection, db_url: str
) -> None:
    report = ingest_file(shared_data / PULSARS, "pulsars")
    table = Table.read(shared_data / PULSARS, format="votable")
    assert report.rows_accepted == len(table) == 706
    expected: dict[str, dict[str, int]] = {}
    for name in table.colnames:
        col = table[name]
        if name in ("RAJ2000", "DEJ2000"):
            continue
        mask = np.ma.getmaskarray(col)
        data = np.ma.getdata(col)
        counts = {"masked": int(mask.sum())}
        if data.dtype.kind in "US":
            counts["empty"] = int(((np.strings.str_len(data) == 0) & ~mask).sum())
        if data.dtype.kind == "f":
            counts["sentinel"] = int(
                (np.isin(data, np.array(SENTINELS, dtype=data.dtype)) & ~mask).sum()
            )
        counts = {k: v for k, v in counts.items() if v}
        if counts:
            expected[name.lower()] = counts
    assert report.nulls_per_column == expected
    assert expected["bname"] == {"empty": 178}
    assert expected["age"] == {"masked": 166}
    assert sum(sum(c.get(k, 0) for k in ("empty", "masked")) for c in expected.values()) == 478
    assert _db_nulls(conn, "pulsars", "bname") == 178
    units = dict(
        conn.execute(
            "SELECT column_name, unit FROM skyclass.catalog_column c JOIN skyclass.catalog k "
            "USING (catalog_id) WHERE k.name = 'pulsars'"
        ).fetchall()
    )
    assert units["ra"] == "deg" and units["dm"] is not None and units["b"] == "[10-4T]"
    ra = [r[0] for r in conn.execute("SELECT ra FROM catalogs.pulsars ORDER BY object_id")]
    assert np.array_equal(np.array(ra), np.asarray(table["RAJ2000"]))


@pytest.mark.parametrize("relative", [BOSS_FITS, BOSS_CSV])
def test_files_without_coordinates_are_refused(
    shared_data: Path, db_url: str, relative: str
) -> None:
    path = shared_data / relative
    before = snapshot(db_url)
    with pytest.raises(IngestError) as info:
        ingest_file(path, "boss")
    message = str(info.value)
    assert path.name in message
    assert "no RA column" in message and "no Dec column" in message
    assert "MAG_U" in message.upper() and "--ra" in message
    assert "--no-positions" in message  # how to load a catalog without sky positions
    with pytest.raises(IngestError) as info:
        ingest_file(path, "boss", ra_column="RA", dec_column="DEC")
    assert "--ra names column 'RA', which is not in the file" in str(info.value)
    assert "available columns" in str(info.value)
    assert snapshot(db_url) == before


def test_ztf_detections_mixed_text_and_big_ids(
    shared_data: Path, conn: psycopg.Connection, db_url: str
) -> None:
    path = shared_data / "ztf_alerce_lightcurves/30_sne_detections_corr.csv"
    report = ingest_file(path, "ztf")
    with path.open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert report.rows_accepted == len(lines) == 784
    # objectId holds names (ZTF18...), so ids are generated and the report says so
    assert any("'objectId'" in note for note in report.notes)
    rows = conn.execute(
        "SELECT candid, ssnamenr, objectid FROM catalogs.ztf ORDER BY object_id"
    ).fetchall()
    # 19-digit alert ids arrive exactly
    assert [r[0] for r in rows] == [int(line["candid"]) for line in lines]
    # asteroid names mixed with numbers stay text; "null" and empty cells are NULL
    expected = [None if line["ssnamenr"] in ("", "null") else line["ssnamenr"] for line in lines]
    assert [r[1] for r in rows] == expected
    assert report.nulls_per_column["ssnamenr"] == {"masked": 781}
    assert [r[2] for r in rows] == [line["objectId"] for line in lines]
