"""``skyclass cone`` and ``skyclass xmatch``: every format reads back to the API's rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pytest
from astropy.io.votable import parse_single_table
from astropy.table import Column, MaskedColumn, Table
from click.testing import CliRunner, Result

from skyclass.cli import main
from skyclass.query import cone_search, crossmatch, render
from tests.query.conftest import SpatialData

CONE = ["cone", "sdss17", "185.0", "0.5", "5deg", "--columns", "u,class,mjd", "--limit", "40"]
XMATCH = ["xmatch", "sky", "sky_shift", "--radius", "10arcmin", "--all"]


def _run(spatial: SpatialData, args: list[str]) -> Result:
    result = CliRunner().invoke(main, args, env={"SKYCLASS_DATABASE_URL": spatial.url})
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result


def _api_rows(table: Table) -> list[list[Any]]:
    return [[v.item() if hasattr(v, "item") else v for v in row] for row in table.iterrows()]


def _typed(table: Table, rows: list[list[str]]) -> list[list[Any]]:
    """CSV cells converted with the API table's column types."""
    kinds = [table[name].dtype.kind for name in table.colnames]
    convert = {"i": int, "f": float}
    return [[convert.get(k, str)(cell) for k, cell in zip(kinds, row, strict=True)] for row in rows]


def _parse(fmt: str, data: bytes, table: Table) -> tuple[list[str], list[list[Any]]]:
    if fmt == "csv":
        reader = list(csv.reader(io.StringIO(data.decode())))
        return reader[0], _typed(table, reader[1:])
    if fmt == "json":
        document = json.loads(data)
        names = [c["name"] for c in document["columns"]]
        units = {c["name"]: c["unit"] for c in document["columns"]}
        for name in names:
            expected = table[name].unit
            assert units[name] == (None if expected is None else expected.to_string())
        return names, [[row[n] for n in names] for row in document["rows"]]
    parsed = parse_single_table(io.BytesIO(data)).to_table()
    for name in parsed.colnames:
        assert parsed[name].unit == table[name].unit
    return parsed.colnames, _api_rows(parsed)


@pytest.mark.parametrize("fmt", ["csv", "json", "votable"])
def test_cone_formats_read_back(spatial: SpatialData, fmt: str) -> None:
    table = cone_search("sdss17", 185.0, 0.5, 5.0, columns="u,class,mjd", limit=40, url=spatial.url)
    assert len(table) == 40
    result = _run(spatial, [*CONE, "--format", fmt])
    names, rows = _parse(fmt, result.stdout_bytes, table)
    assert names == table.colnames
    assert rows == _api_rows(table)


@pytest.mark.parametrize("fmt", ["csv", "json", "votable"])
def test_xmatch_formats_read_back(spatial: SpatialData, fmt: str, tmp_path: Path) -> None:
    table = crossmatch("sky", "sky_shift", "10arcmin", best_only=False, url=spatial.url)
    assert len(table) > 3000
    output = tmp_path / f"pairs.{fmt}"
    result = _run(spatial, [*XMATCH, "--format", fmt, "--output", str(output)])
    assert f"wrote {len(table)} rows to {output}" in result.stderr
    names, rows = _parse(fmt, output.read_bytes(), table)
    assert names == table.colnames
    assert rows == _api_rows(table)


def test_text_table_is_readable(spatial: SpatialData) -> None:
    out = _run(spatial, ["xmatch", "sdss17", "sdss17", "--radius", '1"']).output
    lines = out.splitlines()
    assert lines[0].split() == ["object_id_a", "object_id_b", "distance_arcsec", "match_rank"]
    assert lines[1].split() == ["arcsec"]
    assert lines[3].split() == ["62669", "62670", "0.0000", "1"]
    assert lines[-1] == "(2 rows)"


def test_cone_accepts_sexagesimal_and_negative_dec(spatial: SpatialData) -> None:
    sdss = spatial.catalogs["sdss17"]
    south = int(np.argmin(np.abs(sdss.dec + 5)))
    ra, dec = float(sdss.ra[south]), float(sdss.dec[south])
    out = _run(spatial, ["cone", "sdss17", repr(ra), repr(dec), "0arcsec", "--format", "csv"])
    assert out.output.splitlines()[1].split(",")[0] == str(sdss.ids[south])
    text = _run(spatial, ["cone", "sdss17", "12:30:00", "+10:00:00", "2arcmin", "--format", "csv"])
    degrees = _run(spatial, ["cone", "sdss17", "187.5", "10", "120arcsec", "--format", "csv"])
    assert text.output == degrees.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cone", "nosuch", "1", "1", "1arcsec"], "catalog 'nosuch' is not registered"),
        (["cone", "sdss17", "1", "1", "1"], "has no unit"),
        (["cone", "sdss17", "400", "1", "1arcsec"], "center_ra must be in [0, 360)"),
        (["cone", "sdss17", "1", "-91", "1arcsec"], "center_dec must be in [-90, 90]"),
        (["cone", "sdss17", "1", "1", "11deg"], "radius_deg must be in [0, 10]"),
        (["cone", "sdss17", "1", "1", "1arcsec", "-c", "nope"], "has no column 'nope'"),
        (["cone", "x'; DROP TABLE y; --", "1", "1", "1arcsec"], "is not allowed"),
        (["xmatch", "sdss17", "sdss17", "--radius", "0arcsec"], "radius_arcsec must be in"),
        (["xmatch", "sdss17", "sdss17", "--radius", "1.5"], "has no unit"),
        (["xmatch", "sdss17", "$$", "--radius", "1arcsec"], "is not allowed"),
    ],
)
def test_errors_are_one_line_and_exit_1(
    spatial: SpatialData, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(main, args, env={"SKYCLASS_DATABASE_URL": spatial.url})
    assert result.exit_code == 1
    assert f"error: {message}" in result.stderr or message in result.stderr
    assert "Traceback" not in result.output


def test_help_has_examples() -> None:
    for command in ("cone", "xmatch"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        assert "Examples:" in result.output and f"skyclass {command} sdss17" in result.output


def test_render_nulls_and_units() -> None:
    table = Table(
        [
            Column(np.array([1, 2], dtype=np.int64), name="object_id"),
            Column([0.1, 2.0 / 3.0], name="distance_arcsec", unit=u.arcsec),
            MaskedColumn([1.5, np.nan], mask=[False, True], name="mag", unit=u.mag),
            MaskedColumn(np.array([7, 0], dtype=np.int64), mask=[False, True], name="mjd"),
            MaskedColumn(np.array(["STAR", ""]), mask=[False, True], name="class"),
        ],
        meta={"query": "test"},
    )
    assert render(table, "csv").decode().splitlines() == [
        "object_id,distance_arcsec,mag,mjd,class",
        "1,0.1,1.5,7,STAR",
        "2,0.6666666666666666,,,",
    ]
    document = json.loads(render(table, "json"))
    assert document["rows"][1] == {
        "object_id": 2,
        "distance_arcsec": 2.0 / 3.0,
        "mag": None,
        "mjd": None,
        "class": None,
    }
    assert document["meta"] == {"query": "test"}
    parsed = parse_single_table(io.BytesIO(render(table, "votable"))).to_table()
    assert parsed["distance_arcsec"][1] == 2.0 / 3.0
    assert parsed["mag"].unit == u.mag
    assert parsed["mjd"].mask.tolist() == [False, True]
    assert render(table, "table").decode().endswith("(2 rows)\n")
