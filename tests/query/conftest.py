"""Fixtures for the spatial query tests: one database with real and synthetic catalogs.

Loading SDSS17 takes a few seconds, so the catalogs are loaded once into a
database shared by the tests of this directory (they only read it). Every
catalog goes through the real ingest path (:func:`skyclass.ingest.ingest_file`)
from an ECSV file, which stores float64 values exactly.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import psycopg
import pytest
from astropy.coordinates import SkyCoord, match_coordinates_sky, search_around_sky
from astropy.table import Table

from skyclass.db.cluster import EmbeddedCluster
from skyclass.ingest import ingest_file
from tests.conftest import drop_database, new_database
from tests.score.conftest import ensure_extension_installed

SDSS_FILE = "sdss17_stellar_classification/sdss17_star_classification_99999.csv.gz"
SHIFT_ID_OFFSET = 1_000_000  # ids of the perturbed copy: orig_row + this
SHIFT_SIGMA_ARCSEC = 0.3


@dataclass(frozen=True)
class Positions:
    """Ids and coordinates (degrees) of one catalog, as loaded."""

    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray


@dataclass(frozen=True)
class SpatialData:
    """The shared database and what each of its catalogs holds.

    ``sweep`` says whether the database has the skyclass extension 0.2.0+
    (``skyclass.crossmatch_sweep``, the ``sweep`` cross-match method).
    """

    url: str
    catalogs: dict[str, Positions]
    sweep: bool


# Every cross-match method; each must return exactly the same rows.
METHODS = ("cells", "index", "sweep")


def enable_sweep(url: str) -> bool:
    """Create or update the skyclass extension in ``url`` when the server has it.

    The session template may have been migrated before the extension's current
    files were installed (then it holds none, or 0.1.0 without the sweep).
    """
    with psycopg.connect(url, autocommit=True) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extension_versions "
            "WHERE name = 'skyclass' AND version = '0.2.0'"
        ).fetchone()
        if available is None:
            return False
        conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        # Up to the default version, unless the migrations took it further already (0024
        # updates to 0.4.0 where the files exist; there is no path back).
        behind = conn.execute(
            "SELECT 1 FROM pg_extension AS e, pg_available_extensions AS a, "
            "pg_extension_update_paths('skyclass') AS p "
            "WHERE e.extname = 'skyclass' AND a.name = 'skyclass' AND p.source = e.extversion "
            "AND p.target = a.default_version AND p.path IS NOT NULL"
        ).fetchone()
        if behind is not None:
            conn.execute("ALTER EXTENSION skyclass UPDATE")
        found = conn.execute(
            "SELECT to_regprocedure('skyclass.crossmatch_sweep(regclass, regclass, "
            "double precision, boolean)') IS NOT NULL"
        ).fetchone()
    return bool(found and found[0])


def require_sweep(data: SpatialData, method: str) -> None:
    """Fail (never skip) a sweep test when the server lacks the extension."""
    if method == "sweep" and not data.sweep:
        pytest.fail(
            "the test server has no skyclass extension 0.2.0 (crossmatch_sweep): "
            "run `make extension` there"
        )


def read_sdss(path: Path) -> Positions:
    """orig_row, alpha, delta of the SDSS17 file, parsed exactly with float()."""
    ids, ra, dec = [], [], []
    with gzip.open(path, "rt", newline="") as fh:
        for row in csv.DictReader(fh):
            ids.append(int(row["orig_row"]))
            ra.append(float(row["alpha"]))
            dec.append(float(row["delta"]))
    return Positions(np.array(ids, dtype=np.int64), np.array(ra), np.array(dec))


def perturb(positions: Positions, sigma_arcsec: float, seed: int, id_offset: int) -> Positions:
    """A copy moved by seeded Gaussian offsets of ``sigma_arcsec`` on the sky."""
    rng = np.random.default_rng(seed)
    sigma = sigma_arcsec / 3600
    dec = positions.dec + rng.normal(0, sigma, positions.dec.size)
    dec = np.clip(dec, -90, 90)
    cos_dec = np.maximum(np.cos(np.radians(positions.dec)), 1e-6)
    ra = np.mod(positions.ra + rng.normal(0, sigma, positions.ra.size) / cos_dec, 360.0)
    ra[ra >= 360] = 0.0  # np.mod can round up to 360 for tiny negatives
    return Positions(positions.ids + id_offset, ra, dec)


def load(url: str, directory: Path, name: str, positions: Positions, **extra: np.ndarray) -> None:
    """Load ``positions`` (plus ``extra`` columns) as catalog ``name`` through ingest."""
    table = Table({"object_id": positions.ids, "ra": positions.ra, "dec": positions.dec, **extra})
    path = directory / f"{name}.ecsv"
    table.write(path, format="ascii.ecsv", overwrite=True)
    ingest_file(path, name, id_column="object_id", ra_column="ra", dec_column="dec", url=url)


def _edge_positions() -> dict[str, Positions]:
    rng = np.random.default_rng(20261121)
    # Around both poles: exact poles, rings at 89.999 and within 0.01 deg.
    ring = np.arange(0.0, 360.0, 22.5)
    near = rng.uniform(0, 360, 200)
    polar_ra = np.concatenate([[0.0, 123.0], ring, ring, near, near])
    polar_dec = np.concatenate(
        [
            [90.0, -90.0],
            np.full(ring.size, 89.999),
            np.full(ring.size, -89.999),
            90 - rng.uniform(0, 0.01, 200),
            -90 + rng.uniform(0, 0.01, 200),
        ]
    )
    polar = Positions(np.arange(1, polar_ra.size + 1, dtype=np.int64), polar_ra, polar_dec)
    # Across RA 0/360 at several declinations.
    wrap_ra = np.concatenate(
        [[0.0001, 359.9999, 0.0, 359.99999, 0.00002], rng.uniform(-0.01, 0.01, 300) % 360]
    )
    wrap_dec = np.concatenate([[0.0, 0.0, 45.0, 45.0, -60.0], rng.uniform(-80, 80, 300)])
    wrap = Positions(np.arange(1, wrap_ra.size + 1, dtype=np.int64), wrap_ra, wrap_dec)
    # All sky, for cross-matches at several radii.
    count = 4000
    sky_ra = rng.uniform(0, 360, count)
    sky_dec = np.degrees(np.arcsin(rng.uniform(-1, 1, count)))
    sky = Positions(np.arange(1, count + 1, dtype=np.int64), sky_ra, sky_dec)
    return {
        "polar": polar,
        "polar_shift": perturb(polar, 2.0, 1, 10_000),
        "wrap": wrap,
        "wrap_shift": perturb(wrap, 2.0, 2, 10_000),
        "wrap_twin": perturb(wrap, 0.001, 6, 20_000),
        "sky": sky,
        "sky_shift": perturb(sky, 300.0, 3, 10_000),
        "sky_close": perturb(sky, 0.03, 4, 20_000),
        "sky_twin": perturb(sky, 0.001, 5, 30_000),
        # One object with two partners at exactly the same distance (mirror images
        # in Dec), the larger id first: ties must go to the smaller id.
        "tie_a": Positions(np.array([1]), np.array([10.0]), np.array([0.0])),
        "tie_b": Positions(np.array([7, 3]), np.array([10.0, 10.0]), np.array([1e-4, -1e-4])),
    }


@pytest.fixture(scope="session")
def sweep_extension(pg_cluster: EmbeddedCluster | None) -> None:
    """The extension's current build is installed where the test cluster loads it."""
    if pg_cluster is not None:
        ensure_extension_installed()


@pytest.fixture(scope="session")
def spatial(
    server_url: str,
    template_url: str,
    sweep_extension: None,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SpatialData]:
    """A database holding sdss17, its perturbed copy sdss17_shift and edge-case catalogs."""
    url = new_database(server_url)
    directory = tmp_path_factory.mktemp("spatial")
    try:
        sdss = read_sdss(shared_data / SDSS_FILE)
        # The real file through the real ingest, ids from orig_row.
        ingest_file(
            shared_data / SDSS_FILE,
            "sdss17",
            id_column="orig_row",
            ra_column="alpha",
            dec_column="delta",
            url=url,
        )
        catalogs = {"sdss17": sdss}
        shifted = perturb(sdss, SHIFT_SIGMA_ARCSEC, 17, SHIFT_ID_OFFSET)
        load(url, directory, "sdss17_shift", shifted, mag=np.round(sdss.ra % 7 + 15, 3))
        catalogs["sdss17_shift"] = shifted
        for name, positions in _edge_positions().items():
            load(url, directory, name, positions)
            catalogs[name] = positions
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        yield SpatialData(url, catalogs, enable_sweep(url))
    finally:
        drop_database(server_url, url)


# -- brute-force references (astropy) ---------------------------------------------------
TOLERANCE_ARCSEC = 1e-6  # distances: database vs astropy (both Vincenty; seen ~1e-10)
BOUNDARY_ARCSEC = 1e-8  # a difference in membership is only allowed this close to the radius


def sky(positions: Positions) -> SkyCoord:
    """The positions as a SkyCoord."""
    return SkyCoord(positions.ra * u.deg, positions.dec * u.deg)


def brute_cone(positions: Positions, ra: float, dec: float, radius_deg: float) -> dict[int, float]:
    """Object id -> distance (arcsec) of every object within ``radius_deg``, by astropy."""
    center = SkyCoord(ra * u.deg, dec * u.deg)
    distance = sky(positions).separation(center).to_value(u.arcsec)
    inside = distance <= radius_deg * 3600
    return dict(zip(positions.ids[inside].tolist(), distance[inside].tolist(), strict=True))


def brute_pairs(a: Positions, b: Positions, radius_arcsec: float) -> dict[tuple[int, int], float]:
    """(id_a, id_b) -> distance (arcsec) of every pair within the radius, by astropy."""
    ia, ib, sep, _ = search_around_sky(sky(a), sky(b), radius_arcsec * u.arcsec)
    return {
        (int(a.ids[i]), int(b.ids[j])): float(s)
        for i, j, s in zip(ia, ib, sep.to_value(u.arcsec), strict=True)
    }


def brute_nearest(a: Positions, b: Positions, radius_arcsec: float) -> dict[int, tuple[int, float]]:
    """id_a -> (id_b, distance) of the nearest b within the radius (match_coordinates_sky)."""
    index, sep, _ = match_coordinates_sky(sky(a), sky(b))
    arcsec = sep.to_value(u.arcsec)
    return {
        int(a.ids[i]): (int(b.ids[index[i]]), float(arcsec[i]))
        for i in np.flatnonzero(arcsec <= radius_arcsec)
    }


def assert_same_distances(
    found: dict[Any, float], expected: dict[Any, float], radius_arcsec: float
) -> None:
    """Same keys (except right at the radius) and distances within the tolerance."""
    for key in found.keys() ^ expected.keys():
        distance = found.get(key, expected.get(key))
        assert distance is not None
        assert abs(distance - radius_arcsec) < BOUNDARY_ARCSEC, (
            f"{key} at {distance} arcsec: found={key in found}, expected={key in expected}"
        )
    worst = max((abs(found[k] - expected[k]) for k in found.keys() & expected.keys()), default=0)
    assert worst <= TOLERANCE_ARCSEC, f"distance differs by {worst} arcsec"
