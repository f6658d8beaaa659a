"""The SQL pieces of drift: HEALPix regions, PSI, Wasserstein, alert levels.

``skyclass.healpix_ring`` is checked against astropy-healpix on random
positions (exact pixel boundaries aside, where either side is right), PSI
against its formula computed in numpy, and the Wasserstein distance of two
histograms against cases whose answer is known.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import astropy.units as u
import numpy as np
import psycopg
import pytest
from astropy_healpix import HEALPix

from tests.conftest import drop_database, new_database


@pytest.fixture(scope="module")
def conn(server_url: str, template_url: str) -> Iterator[psycopg.Connection]:
    """One migrated database for the module: these functions touch no table."""
    url = new_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as c:
            yield c
    finally:
        drop_database(server_url, url)


@pytest.mark.parametrize("nside", [1, 2, 4, 16, 256, 8192])
def test_healpix_ring_matches_astropy_healpix(conn: psycopg.Connection, nside: int) -> None:
    rng = np.random.default_rng(nside)
    ra = rng.uniform(0, 360, 20_000)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 20_000)))
    # the polar caps and the belt edges (|z| = 2/3 is dec = 41.81 deg), RA beyond [0, 360)
    ra = np.r_[ra, 10.0, 100.0, 200.0, 300.0, 45.0, 45.0, 370.5, -10.5]
    dec = np.r_[dec, 89.9, -89.9, 41.9, -41.9, 41.7, -41.7, 12.3, -12.3]
    got = np.array(
        conn.execute(
            "SELECT skyclass.healpix_ring(%s, r, d) FROM unnest(%s::float8[], %s::float8[]) "
            "WITH ORDINALITY AS t(r, d, k) ORDER BY k",
            (nside, ra.tolist(), dec.tolist()),
        ).fetchall()
    )[:, 0]
    want = HEALPix(nside=nside, order="ring").lonlat_to_healpix((ra % 360) * u.deg, dec * u.deg)
    assert got.min() >= 0 and got.max() < 12 * nside * nside
    assert (got == want).all(), np.nonzero(got != want)


def test_healpix_regions_have_equal_area(conn: psycopg.Connection) -> None:
    """Uniform points on the sphere fill the 192 pixels of nside 4 evenly (chi-square)."""
    rng = np.random.default_rng(4)
    n = 192_000
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    rows = conn.execute(
        "SELECT count(*) FROM unnest(%s::float8[], %s::float8[]) AS t(r, d) "
        "GROUP BY skyclass.healpix_ring(4, r, d)",
        (ra.tolist(), dec.tolist()),
    ).fetchall()
    counts = np.array([r[0] for r in rows], dtype=float)
    assert len(counts) == 192
    chi2 = float(((counts - 1000) ** 2 / 1000).sum())
    assert chi2 < 191 + 5 * math.sqrt(2 * 191), chi2  # 191 dof, 5 sigma


@pytest.mark.parametrize(
    ("nside", "ra", "dec"),
    [(4, None, 1.0), (4, 1.0, None), (4, float("nan"), 1.0), (4, 1.0, 91.0), (4, math.inf, 0.0)],
)
def test_healpix_ring_gives_null_for_no_position(
    conn: psycopg.Connection, nside: int, ra: float | None, dec: float | None
) -> None:
    row = conn.execute("SELECT skyclass.healpix_ring(%s, %s, %s)", (nside, ra, dec)).fetchone()
    assert row == (None,)


@pytest.mark.parametrize("nside", [0, 3, -4, 16384, None])
def test_healpix_ring_refuses_a_bad_nside(conn: psycopg.Connection, nside: int | None) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="power of 2"):
        conn.execute("SELECT skyclass.healpix_ring(%s::integer, 10, 10)", (nside,))


def _psi(c: np.ndarray, r: np.ndarray) -> float:
    p = np.maximum(c / c.sum(), 1e-4)
    q = np.maximum(r / r.sum(), 1e-4)
    return float(((p - q) * np.log(p / q)).sum())


def test_psi_is_the_population_stability_index(conn: psycopg.Connection) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        c = rng.integers(0, 500, 11)
        r = rng.integers(1, 500, 11)
        row = conn.execute(
            "SELECT skyclass.drift_psi(%s::bigint[], %s::bigint[])", (c.tolist(), r.tolist())
        ).fetchone()
        assert row is not None and row[0] == pytest.approx(_psi(c, r), rel=1e-9)
    same = conn.execute("SELECT skyclass.drift_psi('{3,4,5}', '{30,40,50}')").fetchone()
    assert same == (0.0,)
    # a 2-D histogram row (feature_counts[j:j][...]) counts in element order
    sliced = conn.execute(
        "SELECT skyclass.drift_psi(('{{1,2,3},{4,5,6}}'::bigint[])[2:2][1:3], '{4,5,6}')"
    ).fetchone()
    assert sliced == (0.0,)


@pytest.mark.parametrize(
    ("current", "reference"),
    [("{0,0}", "{1,1}"), (None, "{1,1}"), ("{1,-1}", "{1,1}"), ("{1,NULL}", "{1,1}")],
)
def test_psi_of_an_empty_or_broken_histogram_is_null(
    conn: psycopg.Connection, current: str | None, reference: str
) -> None:
    row = conn.execute(
        "SELECT skyclass.drift_psi(%s::bigint[], %s::bigint[])", (current, reference)
    ).fetchone()
    assert row == (None,)


def test_psi_refuses_histograms_of_other_bins(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="same number of bins"):
        conn.execute("SELECT skyclass.drift_psi('{1,2}', '{1,2,3}')")


def test_wasserstein_of_known_histograms(conn: psycopg.Connection) -> None:
    def w(c: str, r: str, e: str) -> float:
        row = conn.execute(
            "SELECT skyclass.drift_wasserstein(%s::bigint[], %s::bigint[], %s::float8[])",
            (c, r, e),
        ).fetchone()
        assert row is not None
        return float(row[0])

    # everything moved by one bin of width 2: the distance is 2
    assert w("{10,0,0}", "{0,10,0}", "{0,2,4,6}") == pytest.approx(2.0)
    # the same histogram: 0, whatever the counts' scale
    assert w("{1,2,3}", "{10,20,30}", "{0,1,2,3}") == 0.0
    # half the mass moved from bin 1 to bin 3 (two widths of 1): 1
    assert w("{5,5,0}", "{10,0,0}", "{0,1,2,3}") == pytest.approx(0.5)
    assert w("{0,5,5}", "{10,0,0}", "{0,1,2,3}") == pytest.approx(1.5)
    # symmetric
    assert w("{3,1,4}", "{1,5,9}", "{0,1,3,4}") == pytest.approx(
        w("{1,5,9}", "{3,1,4}", "{0,1,3,4}")
    )


@pytest.mark.parametrize(
    ("c", "r", "e"),
    [("{1,2}", "{1,2}", "{0,1}"), ("{1,2}", "{1,2,3}", "{0,1,2}"), ("{1,2}", "{1,2}", "{0,2,1}")],
)
def test_wasserstein_refuses_bad_shapes_or_edges(
    conn: psycopg.Connection, c: str, r: str, e: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute(
            "SELECT skyclass.drift_wasserstein(%s::bigint[], %s::bigint[], %s::float8[])",
            (c, r, e),
        )


@pytest.mark.parametrize(
    ("metric", "value", "n", "level"),
    [
        ("psi", 0.09, 1000, "ok"),
        ("psi", 0.1, 1000, "warn"),
        ("psi", 0.25, 1000, "alert"),
        ("wasserstein_sigma", 0.12, 1000, "warn"),
        ("wasserstein_sigma", 0.3, 1000, "alert"),
        ("abs_change", 0.06, 1000, "warn"),
        ("abs_change", 0.1, 1000, "alert"),
        ("relative_change", 0.2, 1000, "warn"),
        ("psi", 5.0, 499, "low_count"),
        ("psi", None, 1000, "ok"),
    ],
)
def test_alert_levels(
    conn: psycopg.Connection, metric: str, value: float | None, n: int, level: str
) -> None:
    row = conn.execute(
        "SELECT skyclass.drift_level(%s, %s, %s, 10000)", (metric, value, n)
    ).fetchone()
    assert row == (level,)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="metric must be"):
        conn.execute("SELECT skyclass.drift_level('ks', 0.5, 1000, 1000)")
