"""Physical order of ingested catalogs: Q3C order without CLUSTER, and the numpy Q3C port.

The ingest computes Q3C pixel numbers on the client (:mod:`skyclass.ingest.q3c`)
and sends the rows sorted by them; these tests check the port against SQL
``q3c_ang2ipix`` on a million random points and on the places where a last-bit
difference would show (poles, RA 0/360, cube-face edges, cell edges), and that
an ingested table ends up in Q3C order, marked clustered, on both the in-memory
path and the streaming fallback, with duplicate ids still mapped to file rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from skyclass.errors import IngestError
from skyclass.ingest import ingest_file
from skyclass.ingest import sources as ingest_sources
from skyclass.ingest.copy_binary import COPY_SIGNATURE, COPY_TRAILER, DOUBLE, encode_rows
from skyclass.ingest.copy_binary import fixed_field as field
from skyclass.ingest.q3c import DEGRA, NSIDE, ang2ipix, ang2ipix_one
from tests.ingest.corpus import write_csv, write_fits


def _sql_ipix(
    conn: psycopg.Connection, ra: npt.NDArray[np.float64], dec: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """SQL ``q3c_ang2ipix`` of every point, through binary COPY both ways."""
    conn.execute("CREATE TEMPORARY TABLE pts (ra double precision, dec double precision)")
    with conn.cursor() as cur, cur.copy("COPY pts FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(COPY_SIGNATURE)
        copy.write(encode_rows([field(ra, DOUBLE), field(dec, DOUBLE)], len(ra)).data)
        copy.write(COPY_TRAILER)
    out = bytearray()
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY (SELECT q3c_ang2ipix(ra, dec) FROM pts ORDER BY ctid) TO STDOUT (FORMAT BINARY)"
        ) as copy,
    ):
        for block in copy:
            out += block
    conn.execute("DROP TABLE pts")
    rows = np.frombuffer(
        bytes(out[19:-2]), dtype=np.dtype([("n", ">i2"), ("len", ">i4"), ("v", ">i8")])
    )
    assert len(rows) == len(ra) and (rows["len"] == 8).all()
    return rows["v"].astype(np.int64)


def _edge_points() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Points on and one or two ulps beside poles, RA 0/360, face edges and cell edges."""
    rng = np.random.default_rng(11)

    def around(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        down = np.nextafter(values, -np.inf)
        up = np.nextafter(values, np.inf)
        return np.concatenate(
            [values, down, up, np.nextafter(down, -np.inf), np.nextafter(up, np.inf)]
        )

    ras: list[npt.NDArray[np.float64]] = []
    decs: list[npt.NDArray[np.float64]] = []
    # a grid over RA multiples of 45 deg (face edges), 0 and 360, and special Dec values
    grid_ra = around(np.arange(0.0, 360.0001, 45.0))
    corner = 35.26438968275465  # where three cube faces meet
    grid_dec = around(np.array([-90.0, 90.0, 0.0, -45.0, 45.0, corner, -corner]))
    gra, gdec = np.meshgrid(grid_ra, grid_dec)
    ras.append(gra.ravel())
    decs.append(gdec.ravel())
    # the equatorial/polar face edge: tan(dec) = cos(ra - 90 * face)
    ra = rng.uniform(0, 360, 20_000)
    face = np.fmod((ra + 45) / 90, 4).astype(int)
    edge = np.degrees(np.arctan(np.cos(DEGRA * (ra - 90.0 * face))))
    for sign in (1.0, -1.0):
        ras.append(np.tile(ra, 5))
        decs.append(around(sign * edge))
    # cell edges in x on the equatorial faces: tan(ra1) = 2k / nside - 1
    k = rng.integers(0, NSIDE, 20_000)
    face = rng.integers(0, 4, 20_000)
    ra = np.degrees(np.arctan(2.0 * k / NSIDE - 1.0)) + 90.0 * face
    ra = np.where(ra < 0, ra + 360.0, ra)
    dec = rng.uniform(-30, 30, 20_000)
    ras.append(around(ra))
    decs.append(np.tile(dec, 5))
    ra_all = np.concatenate(ras)
    dec_all = np.concatenate(decs)
    keep = (ra_all >= 0) & (ra_all < 360) & (dec_all >= -90) & (dec_all <= 90)
    return ra_all[keep], dec_all[keep]


def test_numpy_ang2ipix_equals_sql_on_random_and_edge_points(conn: psycopg.Connection) -> None:
    rng = np.random.default_rng(20261122)
    n = 1_000_000
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    edge_ra, edge_dec = _edge_points()
    ra = np.concatenate([ra, edge_ra, [0.0, np.nextafter(360.0, 0)]])
    dec = np.concatenate([dec, edge_dec, [90.0, -90.0]])
    mine = ang2ipix(ra, dec)
    theirs = _sql_ipix(conn, ra, dec)
    bad = np.flatnonzero(mine != theirs)
    assert len(bad) == 0, [(ra[i], dec[i], mine[i], theirs[i]) for i in bad[:5]]
    # the one-point version (the fallback for points near edges) agrees too
    sample = rng.choice(len(ra), 2000, replace=False)
    assert [ang2ipix_one(ra[i], dec[i]) for i in sample] == [int(theirs[i]) for i in sample]
    # all six faces were exercised
    assert set(np.unique(theirs >> 60)) == {0, 1, 2, 3, 4, 5}


def test_ang2ipix_wraps_and_clamps_like_q3c(conn: psycopg.Connection) -> None:
    ra = np.array([-10.0, 370.0, 720.5, 10.0, 10.0])
    dec = np.array([5.0, 5.0, -5.0, 95.0, -100.0])
    assert ang2ipix(ra, dec).tolist() == _sql_ipix(conn, ra, dec).tolist()


# -- ingested tables -------------------------------------------------------------------------
def _sky_columns(n: int, seed: int = 3) -> dict[str, list[Any]]:
    """Rows spread over the whole sky in random order (ids in file order)."""
    rng = np.random.default_rng(seed)
    return {
        "id": list(range(1, n + 1)),
        "ra": [float(v) for v in rng.uniform(0, 360, n)],
        "dec": [float(v) for v in np.degrees(np.arcsin(rng.uniform(-1, 1, n)))],
        "mag": [float(np.float32(v)) for v in rng.uniform(14, 24, n)],
    }


def _physical(conn: psycopg.Connection, table: str) -> list[tuple[int, int]]:
    return [
        (int(r[0]), int(r[1]))
        for r in conn.execute(
            f"SELECT object_id, q3c_ang2ipix(ra, dec) FROM catalogs.{table} ORDER BY ctid"
        )
    ]


def _clustered_on(conn: psycopg.Connection, table: str) -> list[str]:
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT i.indexrelid::regclass::text FROM pg_index i "
            "WHERE i.indrelid = %s::regclass AND i.indisclustered",
            (f"catalogs.{table}",),
        )
    ]


def _physical_order(conn: psycopg.Connection, catalog: str) -> str:
    row = conn.execute(
        "SELECT l.options FROM skyclass.catalog_load l JOIN skyclass.catalog c USING (catalog_id) "
        "WHERE c.name = %s ORDER BY l.load_id DESC LIMIT 1",
        (catalog,),
    ).fetchone()
    assert row is not None
    options = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return str(options["physical_order"])


def _assert_q3c_clustered(conn: psycopg.Connection, table: str, n: int) -> None:
    physical = _physical(conn, table)
    assert len(physical) == n
    pixels = [p for _, p in physical]
    assert pixels == sorted(pixels)
    assert _clustered_on(conn, table) == [f"catalogs._{table}_q3c"]
    correlation = conn.execute(
        "SELECT correlation FROM pg_stats WHERE schemaname = 'catalogs' AND tablename = %s",
        (f"_{table}_q3c",),
    ).fetchone()
    assert correlation is not None and correlation[0] > 0.999


@pytest.mark.parametrize("fmt", ["fits", "csv"])
def test_ingest_writes_rows_in_q3c_order_without_cluster(
    fmt: str, db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    n = 3000
    cols = _sky_columns(n)
    writer = write_fits if fmt == "fits" else write_csv
    path = writer(tmp_path / f"sky.{fmt}", cols)
    # the file order is far from Q3C order, so the order below comes from the ingest
    assert np.corrcoef(np.arange(n), np.argsort(ang2ipix(cols["ra"], cols["dec"])))[0, 1] < 0.1
    report = ingest_file(path, "sky")
    assert report.rows_accepted == n
    _assert_q3c_clustered(conn, "sky", n)
    assert _physical_order(conn, "sky") == "sorted before COPY"
    # the values arrived intact, whatever their order
    stored = conn.execute(
        "SELECT object_id, ra, dec, mag::float8 FROM catalogs.sky ORDER BY 1"
    ).fetchall()
    assert [r[1] for r in stored] == cols["ra"] and [r[2] for r in stored] == cols["dec"]
    assert [r[3] for r in stored] == cols["mag"]

    # --replace too, and the renamed Q3C index stays the clustering index
    ingest_file(writer(tmp_path / f"sky2.{fmt}", _sky_columns(n, seed=4)), "sky", mode="replace")
    _assert_q3c_clustered(conn, "sky", n)


def test_big_files_fall_back_to_streaming_and_cluster(
    db_url: str, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_sources, "CHUNK_BYTES", 2000)  # about 60 rows per chunk
    n = 1000
    path = write_fits(tmp_path / "sky.fits", _sky_columns(n))
    ingest_file(path, "big", sort_memory=20_000)  # holds about 500 rows: too few
    _assert_q3c_clustered(conn, "big", n)
    assert _physical_order(conn, "big") == "CLUSTER"
    ingest_file(path, "small", sort_memory=200_000)
    _assert_q3c_clustered(conn, "small", n)
    assert _physical_order(conn, "small") == "sorted before COPY"
    assert conn.execute(
        "SELECT md5(string_agg(b::text, '|' ORDER BY b.object_id)) = "
        "md5(string_agg(s::text, '|' ORDER BY s.object_id)) "
        "FROM catalogs.big b JOIN catalogs.small s USING (object_id)"
    ).fetchone() == (True,)


def test_csv_types_changing_late_fall_back_to_streaming(
    db_url: str, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_sources, "CHUNK_BYTES", 2000)
    n = 400
    cols = _sky_columns(n)
    cols["count"] = list(range(n))
    cols["count"][300] = 2.5  # bigint in the first chunks, double precision later
    ingest_file(write_csv(tmp_path / "late.csv", cols), "late")
    _assert_q3c_clustered(conn, "late", n)
    assert _physical_order(conn, "late") == "CLUSTER"
    counts = [r[0] for r in conn.execute("SELECT count FROM catalogs.late ORDER BY object_id")]
    assert counts == [float(v) for v in cols["count"]]


@pytest.mark.parametrize("sort_memory", [1 << 30, 10_000], ids=["sorted", "streamed"])
def test_duplicate_ids_are_reported_with_file_rows(
    sort_memory: int,
    db_url: str,
    conn: psycopg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_sources, "CHUNK_BYTES", 2000)
    n = 600
    cols = _sky_columns(n)
    # id 500 appears at rows 500, 20 and 333 (first: 20); id 7 at rows 7 and 598
    cols["id"][19] = 500
    cols["id"][332] = 500
    cols["id"][597] = 7
    path = write_fits(tmp_path / "dup.fits", cols)
    with pytest.raises(IngestError) as info:
        ingest_file(path, "dup", sort_memory=sort_memory)
    assert (info.value.row, info.value.column) == (333, "id")
    assert "duplicate id 500: rows 20 and 333 have the same id" in str(info.value)
    assert conn.execute("SELECT count(*) FROM skyclass.catalog").fetchone() == (0,)

    report = ingest_file(path, "dup", on_invalid="skip", sort_memory=sort_memory)
    assert report.rows_accepted == n - 3 and report.rows_rejected == 3
    rejects = conn.execute(
        "SELECT row_number, reason, value FROM skyclass.ingest_reject ORDER BY row_number"
    ).fetchall()
    assert rejects == [
        (333, "duplicate id (first in row 20)", "500"),
        (500, "duplicate id (first in row 20)", "500"),
        (598, "duplicate id (first in row 7)", "7"),
    ]
    # the rows kept are the first of each id
    kept = dict(conn.execute("SELECT object_id, ra FROM catalogs.dup").fetchall())
    assert kept[500] == cols["ra"][19] and kept[7] == cols["ra"][6]
    _assert_q3c_clustered(conn, "dup", n - 3)


def test_catalog_without_positions_is_written_in_id_order(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    ids = rng.permutation(np.arange(1, 401) * 7)
    cols = {"id": [int(v) for v in ids], "mag": [float(v) for v in rng.uniform(14, 24, 400)]}
    ingest_file(write_fits(tmp_path / "nopos.fits", cols), "nopos", positions=False)
    physical = [r[0] for r in conn.execute("SELECT object_id FROM catalogs.nopos ORDER BY ctid")]
    assert physical == sorted(cols["id"])
    assert _clustered_on(conn, "nopos") == ["catalogs._nopos_pkey"]
    assert _physical_order(conn, "nopos") == "sorted before COPY"


def test_append_adds_rows_in_q3c_order_after_the_old_ones(
    db_url: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    n = 500
    ingest_file(write_fits(tmp_path / "a.fits", _sky_columns(n)), "app")
    more = _sky_columns(n, seed=9)
    more["id"] = [v + n for v in more["id"]]
    report = ingest_file(write_fits(tmp_path / "b.fits", more), "app", mode="append")
    assert any("not re-clustered" in note for note in report.notes)
    physical = _physical(conn, "app")
    assert [i for i, _ in physical[:n]] != [i for i, _ in physical[n:]]
    for part in (physical[:n], physical[n:]):
        assert [p for _, p in part] == sorted(p for _, p in part)
    assert sorted(i for i, _ in physical[n:]) == list(range(n + 1, 2 * n + 1))
    assert _clustered_on(conn, "app") == ["catalogs._app_q3c"]
    assert _physical_order(conn, "app") == "appended in index order"
