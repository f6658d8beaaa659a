"""Spatial queries refuse a catalog loaded without sky positions, clearly and with a SQLSTATE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors

from skyclass.cli import main
from skyclass.errors import QueryError
from skyclass.ingest import ingest_file
from skyclass.query import spatial
from tests.ingest.corpus import clean_columns, write_csv

BOSS_FITS = "fits_votable_samples/boss_dr10_0.fits.gz"
MESSAGE = "catalog boss has no sky positions"


@pytest.fixture
def boss(shared_data: Path, db_url: str, tmp_path: Path) -> Iterator[psycopg.Connection]:
    """A database with ``boss`` (BOSS DR10, no positions) and ``pos`` (50 objects with RA/Dec)."""
    ingest_file(shared_data / BOSS_FITS, "boss", positions=False)
    ingest_file(write_csv(tmp_path / "pos.csv", clean_columns()), "pos")
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize(
    "call",
    [
        "SELECT skyclass._catalog_table('boss')",
        "SELECT * FROM skyclass.cone_search('boss', 10, 10, 1)",
        "SELECT * FROM skyclass.crossmatch('boss', 'boss', 1)",
        "SELECT * FROM skyclass.crossmatch('boss', 'pos', 1)",
        "SELECT * FROM skyclass.crossmatch('pos', 'boss', 1, false, 'index')",
        "SELECT * FROM skyclass.crossmatch('pos', 'boss', 1, true, 'cells')",
    ],
)
def test_sql_functions_refuse_a_catalog_without_positions(
    boss: psycopg.Connection, call: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue) as caught:
        boss.execute(call)
    assert caught.value.sqlstate == "22023"
    assert caught.value.diag.message_primary == MESSAGE
    assert "--no-positions" in (caught.value.diag.message_hint or "")


def test_python_api_surfaces_the_message(boss: psycopg.Connection, db_url: str) -> None:
    for columns in (None, ["mag_r", "z"], ["ra"]):
        with pytest.raises(QueryError) as info:
            spatial.cone_search("boss", 10, 10, "1deg", columns=columns, url=db_url)
        assert str(info.value).startswith(MESSAGE)
    for a, b in (("boss", "pos"), ("pos", "boss"), ("boss", "boss")):
        with pytest.raises(QueryError) as info:
            spatial.crossmatch(a, b, "1arcsec", url=db_url)
        assert str(info.value).startswith(MESSAGE)
    # a catalog with positions in the same database still answers
    table = spatial.cone_search("pos", 0, 0, "10deg", url=db_url)
    assert table.colnames[:3] == ["object_id", "ra", "dec"]


def test_cli_reports_the_message(boss: psycopg.Connection) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["cone", "boss", "10", "10", "1deg"])
    assert result.exit_code == 1 and f"error: {MESSAGE}" in result.output
    result = runner.invoke(main, ["xmatch", "pos", "boss", "--radius", "1arcsec"])
    assert result.exit_code == 1 and f"error: {MESSAGE}" in result.output
