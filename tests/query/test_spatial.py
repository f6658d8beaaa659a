"""The Python API against brute-force astropy on real (SDSS17) and synthetic catalogs."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest

from skyclass.errors import CatalogNotFoundError, QueryError
from skyclass.query import cone_search, crossmatch, parse_coordinates, parse_radius
from tests.query.conftest import (
    METHODS,
    SHIFT_ID_OFFSET,
    SpatialData,
    assert_same_distances,
    brute_cone,
    brute_nearest,
    brute_pairs,
    require_sweep,
)


def _cones(data: SpatialData) -> list[tuple[float, float, float]]:
    """(ra, dec, radius_deg): exact object positions (radius 0), near objects, anywhere."""
    sdss = data.catalogs["sdss17"]
    rng = np.random.default_rng(7)
    picks = rng.choice(sdss.ids.size, 40, replace=False)
    cones = [(float(sdss.ra[i]), float(sdss.dec[i]), 0.0) for i in picks[:10]]
    # The duplicated object (rows 62669 and 62670) at radius 0 returns both.
    cones.append((float(sdss.ra[62668]), float(sdss.dec[62668]), 0.0))
    for n, i in enumerate(picks[10:]):
        radius = (10 / 3600, 1 / 60, 1.0, float(rng.uniform(0, 0.5)))[n % 4]
        offset = rng.normal(0, radius / 2 + 1e-4, 2)
        ra = float((sdss.ra[i] + offset[0]) % 360)
        dec = float(np.clip(sdss.dec[i] + offset[1], -90, 90))
        cones.append((ra, dec, radius))
    for _ in range(6):
        cones.append((float(rng.uniform(0, 360)), float(rng.uniform(-20, 80)), 3.0))
    cones.append((180.0, 0.0, 10.0))  # the largest radius allowed
    return cones


def test_cone_search_equals_brute_force_on_sdss17(spatial: SpatialData) -> None:
    sdss = spatial.catalogs["sdss17"]
    total = 0
    for ra, dec, radius in _cones(spatial):
        table = cone_search("sdss17", ra, dec, radius, url=spatial.url)
        found = dict(
            zip(table["object_id"].tolist(), table["distance_arcsec"].tolist(), strict=True)
        )
        expected = brute_cone(sdss, ra, dec, radius)
        assert_same_distances(found, expected, radius * 3600)
        if radius == 0:
            assert found and set(found.values()) == {0.0}
        # Nearest first, ties by object id.
        order = list(zip(table["distance_arcsec"], table["object_id"], strict=True))
        assert order == sorted(order)
        total += len(table)
    assert total > 1000  # the cones are not all empty


def test_cone_search_radius_zero_finds_the_duplicate_pair(spatial: SpatialData) -> None:
    sdss = spatial.catalogs["sdss17"]
    i = int(np.flatnonzero(sdss.ids == 62669)[0])
    table = cone_search("sdss17", sdss.ra[i], sdss.dec[i], 0, url=spatial.url)
    assert table["object_id"].tolist() == [62669, 62670]
    assert table["distance_arcsec"].tolist() == [0.0, 0.0]


def test_cone_search_table_has_units_columns_and_limit(spatial: SpatialData) -> None:
    sdss = spatial.catalogs["sdss17"]
    ra, dec = float(sdss.ra[100]), float(sdss.dec[100])
    table = cone_search(
        "sdss17", ra, dec, "0.5deg", columns="u, class,mjd,ra", limit=5, url=spatial.url
    )
    assert table.colnames == ["object_id", "ra", "dec", "distance_arcsec", "u", "class", "mjd"]
    assert table["ra"].unit == u.deg and table["distance_arcsec"].unit == u.arcsec
    assert len(table) == 5
    assert table["object_id"][0] == sdss.ids[100]
    full = cone_search("sdss17", ra, dec, 0.5, url=spatial.url)
    assert table["object_id"].tolist() == full["object_id"][:5].tolist()
    assert set(table["class"]) <= {"GALAXY", "STAR", "QSO"}
    assert table.meta["catalog"] == "sdss17"


def test_cone_search_string_coordinates_and_units(spatial: SpatialData) -> None:
    by_degrees = cone_search("sdss17", 187.5, 10.0, 2 / 60, url=spatial.url)
    by_text = cone_search("sdss17", "12:30:00", "+10:00:00", "2arcmin", url=spatial.url)
    by_quantity = cone_search("sdss17", 187.5 * u.deg, 10 * u.deg, 120 * u.arcsec, url=spatial.url)
    assert by_text["object_id"].tolist() == by_degrees["object_id"].tolist()
    assert by_quantity["object_id"].tolist() == by_degrees["object_id"].tolist()


def test_unknown_column_lists_the_columns(spatial: SpatialData) -> None:
    with pytest.raises(QueryError, match=r"no column 'nope'.*redshift"):
        cone_search("sdss17", 180, 0, "1arcmin", columns=["nope"], url=spatial.url)
    with pytest.raises(QueryError, match="no column"):
        cone_search("sdss17", 180, 0, "1arcmin", columns='u"; DROP TABLE x', url=spatial.url)


def test_crossmatch_equals_match_coordinates_sky(spatial: SpatialData) -> None:
    require_sweep(spatial, "sweep")
    a, b = spatial.catalogs["sdss17"], spatial.catalogs["sdss17_shift"]
    expected = brute_nearest(a, b, 1.0)
    results = []
    for method in METHODS:
        table = crossmatch("sdss17", "sdss17_shift", "1arcsec", method=method, url=spatial.url)
        results.append(table.as_array().tolist())
        assert set(table["match_rank"]) == {1}
        ids_a = table["object_id_a"].tolist()
        assert ids_a == sorted(ids_a) and len(set(ids_a)) == len(ids_a)
        found = {
            a_id: (b_id, d)
            for a_id, b_id, d in zip(
                ids_a, table["object_id_b"].tolist(), table["distance_arcsec"].tolist(), strict=True
            )
        }
        assert_same_distances(
            {k: v[1] for k, v in found.items()}, {k: v[1] for k, v in expected.items()}, 1.0
        )
        same_partner = sum(found[k][0] == expected[k][0] for k in found.keys() & expected.keys())
        # Only the duplicated object has two equally near partners; it is the only
        # place astropy (arbitrary) and skyclass (smaller id) may differ.
        assert same_partner >= len(found) - 2
    # Every method returns the same rows, distances bit for bit, in the same order.
    assert all(result == results[0] for result in results[1:])
    # Most objects find their own perturbed copy (sigma 0.3" per axis).
    own = sum(1 for k, v in found.items() if v[0] == k + SHIFT_ID_OFFSET)
    assert own > 0.99 * len(a.ids)


def test_crossmatch_all_matches_equals_search_around_sky(spatial: SpatialData) -> None:
    require_sweep(spatial, "sweep")
    a, b = spatial.catalogs["sdss17"], spatial.catalogs["sdss17_shift"]
    expected = brute_pairs(a, b, 30.0)
    results = []
    for method in METHODS:
        table = crossmatch(
            "sdss17", "sdss17_shift", 30 / 3600, best_only=False, method=method, url=spatial.url
        )
        found = {
            (int(r["object_id_a"]), int(r["object_id_b"])): float(r["distance_arcsec"])
            for r in table
        }
        assert len(found) == len(table)
        assert_same_distances(found, expected, 30.0)
        results.append(table)
        # Ranks 1..n per object, by distance then object_id_b.
        by_a: dict[int, list[tuple[float, int, int]]] = {}
        for row in table:
            by_a.setdefault(int(row["object_id_a"]), []).append(
                (float(row["distance_arcsec"]), int(row["object_id_b"]), int(row["match_rank"]))
            )
        for rows in by_a.values():
            assert [r[2] for r in sorted(rows)] == list(range(1, len(rows) + 1))
    cells, index, sweep = (r.as_array().tolist() for r in results)
    assert cells == index
    assert sweep == cells


@pytest.mark.parametrize("method", ["auto", *METHODS])
def test_self_crossmatch_finds_the_sdss17_duplicate(spatial: SpatialData, method: str) -> None:
    require_sweep(spatial, method)
    table = crossmatch("sdss17", "sdss17", "1arcsec", method=method, url=spatial.url)
    pairs = sorted(zip(table["object_id_a"].tolist(), table["object_id_b"].tolist(), strict=True))
    assert pairs == [(62669, 62670), (62670, 62669)]
    assert table["distance_arcsec"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("catalog_a", "catalog_b", "radius_arcsec"),
    [
        ("polar", "polar_shift", 5.0),
        ("wrap", "wrap_shift", 5.0),
        ("wrap", "wrap_twin", 0.003),
        ("sky", "sky_shift", 900.0),
        ("sky", "sky_shift", 3600.0),
        ("sky", "sky_close", 0.05),
        ("sky", "sky_twin", 0.002),
        ("polar", "polar", 40.0),
    ],
)
def test_crossmatch_edge_catalogs(
    spatial: SpatialData, catalog_a: str, catalog_b: str, radius_arcsec: float
) -> None:
    a, b = spatial.catalogs[catalog_a], spatial.catalogs[catalog_b]
    expected = brute_pairs(a, b, radius_arcsec)
    if catalog_a == catalog_b:
        expected = {k: v for k, v in expected.items() if k[0] != k[1]}
    require_sweep(spatial, "sweep")
    tables = []
    for method in METHODS:
        table = crossmatch(
            catalog_a,
            catalog_b,
            radius_arcsec * u.arcsec,
            best_only=False,
            method=method,
            url=spatial.url,
        )
        found = {
            (int(r["object_id_a"]), int(r["object_id_b"])): float(r["distance_arcsec"])
            for r in table
        }
        assert_same_distances(found, expected, radius_arcsec)
        tables.append(table.as_array().tolist())
    assert tables[1] == tables[0]
    assert tables[2] == tables[0]
    assert expected  # the case is not vacuous


def test_ties_go_to_the_smaller_object_id(spatial: SpatialData) -> None:
    require_sweep(spatial, "sweep")
    for method in METHODS:
        best = crossmatch("tie_a", "tie_b", "1arcsec", method=method, url=spatial.url)
        assert best["object_id_b"].tolist() == [3]
        every = crossmatch("tie_a", "tie_b", 1, best_only=False, method=method, url=spatial.url)
        assert every["object_id_b"].tolist() == [3, 7]
        assert every["match_rank"].tolist() == [1, 2]
        assert every["distance_arcsec"][0] == every["distance_arcsec"][1] == pytest.approx(0.36)
    cone = cone_search("tie_b", 10.0, 0.0, "1arcsec", url=spatial.url)
    assert cone["object_id"].tolist() == [3, 7]


def test_cone_search_near_poles_and_across_ra_zero(spatial: SpatialData) -> None:
    polar, wrap = spatial.catalogs["polar"], spatial.catalogs["wrap"]
    for ra, dec, radius in [(0.0, 90.0, 0.002), (200.0, 89.9995, 0.001), (10.0, -90.0, 0.005)]:
        table = cone_search("polar", ra, dec, radius, url=spatial.url)
        found = dict(
            zip(table["object_id"].tolist(), table["distance_arcsec"].tolist(), strict=True)
        )
        assert_same_distances(found, brute_cone(polar, ra, dec, radius), radius * 3600)
        assert found
    # A cone at RA 359.9999 finds the object at RA 0.0001 (0.72" away) and vice versa.
    east = cone_search("wrap", 359.9999, 0.0, "1arcsec", url=spatial.url)
    assert 1 in east["object_id"].tolist()
    west = cone_search("wrap", 0.0001, 0.0, "1arcsec", url=spatial.url)
    assert 2 in west["object_id"].tolist()
    assert east["distance_arcsec"][east["object_id"] == 1][0] == pytest.approx(0.72, abs=1e-6)
    for ra, dec, radius in [(359.99, 45.0, 0.05), (0.0, -60.0, 0.01), (0.005, 10.0, 5.0)]:
        table = cone_search("wrap", ra, dec, radius, url=spatial.url)
        found = dict(
            zip(table["object_id"].tolist(), table["distance_arcsec"].tolist(), strict=True)
        )
        assert_same_distances(found, brute_cone(wrap, ra, dec, radius), radius * 3600)


@pytest.mark.parametrize(
    ("text", "arcsec"),
    [
        ("10arcsec", 10.0),
        ('10"', 10.0),
        ("1.5arcmin", 90.0),
        ("2'", 120.0),
        ("0.1deg", 360.0),
        (" 3 arcsec ", 3.0),
        ("2.5e-1 arcmin", 15.0),
        (0.5, 1800.0),
        (1, 3600.0),
        (2 * u.arcmin, 120.0),
    ],
)
def test_parse_radius(text: object, arcsec: float) -> None:
    assert parse_radius(text).to_value(u.arcsec) == pytest.approx(arcsec, rel=1e-15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10", "has no unit"),
        ("1.5", "has no unit"),
        ("10m", "not an angle"),
        ("3d", "not an angle"),
        ("10 parsecs", "cannot read the unit"),
        ("-1arcsec", ">= 0"),
        ("nan arcsec", "cannot read"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (-0.1, ">= 0"),
        ("", "cannot read"),
        (True, "number or a string"),
        (None, "number or a string"),
        (5 * u.m, "not an angle"),
    ],
)
def test_parse_radius_rejects(text: object, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_radius(text)


def test_parse_coordinates() -> None:
    assert parse_coordinates("12:30:00", "+10:00:00") == pytest.approx((187.5, 10.0))
    assert parse_coordinates("12h30m00s", "-5d30m") == pytest.approx((187.5, -5.5))
    assert parse_coordinates("187.25", "-0.5") == (187.25, -0.5)
    assert parse_coordinates(10, -3.5) == (10.0, -3.5)
    for ra, dec in [("nowhere", 0), (0, "north"), (float("nan"), 0), (0, float("inf"))]:
        with pytest.raises(QueryError):
            parse_coordinates(ra, dec)


@pytest.mark.parametrize(
    ("ra", "dec", "radius", "message"),
    [
        (360.0, 0.0, 0.1, r"center_ra must be in \[0, 360\)"),
        (-0.001, 0.0, 0.1, "center_ra"),
        (10.0, 90.0001, 0.1, r"center_dec must be in \[-90, 90\]"),
        (10.0, -91.0, 0.1, "center_dec"),
        (10.0, 0.0, 10.0000001, r"radius_deg must be in \[0, 10\]"),
        (10.0, 0.0, "11deg", "radius_deg"),
    ],
)
def test_cone_search_out_of_range(
    spatial: SpatialData, ra: float, dec: float, radius: object, message: str
) -> None:
    with pytest.raises(QueryError, match=message):
        cone_search("sdss17", ra, dec, radius, url=spatial.url)


def test_crossmatch_radius_limits(spatial: SpatialData) -> None:
    assert len(crossmatch("polar", "polar_shift", 1.0, url=spatial.url)) > 0
    for radius in (0, "3600.001arcsec", "2deg"):
        with pytest.raises(QueryError, match=r"radius_arcsec must be in \(0, 3600\]"):
            crossmatch("polar", "polar_shift", radius, url=spatial.url)
    with pytest.raises(QueryError, match="method"):
        crossmatch("polar", "polar_shift", 1.0, method="zones", url=spatial.url)
    require_sweep(spatial, "sweep")
    assert len(crossmatch("polar", "polar_shift", 1.0, method="sweep", url=spatial.url)) > 0
    for radius in (0, "3600.001arcsec"):
        with pytest.raises(QueryError, match=r"radius_arcsec must be in \(0, 3600\]"):
            crossmatch("polar", "polar_shift", radius, method="sweep", url=spatial.url)


@pytest.mark.parametrize(
    "name",
    [
        "x'; DROP TABLE catalogs.sdss17; --",
        '"',
        "$$",
        "sdss17; DROP TABLE x",
        "../sdss17",
        "a" * 64,
        "Sdss17",
        "sdss17\x00",
        "sdss17\n",
        "",
    ],
)
def test_hostile_names_are_rejected_before_the_database(spatial: SpatialData, name: str) -> None:
    with pytest.raises(QueryError, match="not allowed"):
        cone_search(name, 1.0, 1.0, 0.1, url=spatial.url)
    with pytest.raises(QueryError, match="not allowed"):
        crossmatch("sdss17", name, 1.0, url=spatial.url)


def test_unknown_catalog(spatial: SpatialData) -> None:
    with pytest.raises(CatalogNotFoundError, match=r"'nosuch' is not registered.*sdss17"):
        cone_search("nosuch", 1.0, 1.0, 0.1, url=spatial.url)
    with pytest.raises(CatalogNotFoundError, match="nosuch"):
        crossmatch("sdss17", "nosuch", 1.0, url=spatial.url)
