"""A corpus of broken files: each is refused, naming file, column and row, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from astropy.io import fits
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.errors import IngestError
from skyclass.ingest import ingest_file
from tests.conftest import SHARED_DATA, drop_database, new_database
from tests.ingest.corpus import clean_columns, snapshot, with_value, write, write_csv, write_votable

NAIR = "fits_votable_samples/nair_abraham_2010_sdss_galaxies.fits"


@pytest.fixture(scope="module")
def corpus_db(
    server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database for the corpus, with a clean catalog ``base`` (failures change nothing)."""
    url = new_database(server_url)
    base = write_csv(tmp_path_factory.mktemp("base") / "base.csv", clean_columns())
    ingest_file(base, "base", url=url)
    yield url
    drop_database(server_url, url)


@dataclass(frozen=True)
class Case:
    """A broken file: how to write it and what the error must name."""

    name: str
    make: Callable[[Path], Path]
    column: str | None
    row: int | None
    words: tuple[str, ...] = ()


def _bad_value(fmt: str, column: str, row: int, value: Any) -> Callable[[Path], Path]:
    return lambda d: write(
        d, f"bad_{column}_{row}", fmt, with_value(clean_columns(), column, row, value)
    )


def _cases() -> list[Case]:
    cases: list[Case] = []
    for fmt in ("csv", "fits", "votable"):
        cases += [
            Case(
                f"{fmt}-ra-minus-1",
                _bad_value(fmt, "ra", 7, -1.0),
                "ra",
                7,
                ("RA -1.0", "[0, 360)"),
            ),
            Case(f"{fmt}-ra-360", _bad_value(fmt, "ra", 8, 360.0), "ra", 8, ("RA 360.0",)),
            Case(f"{fmt}-ra-720", _bad_value(fmt, "ra", 9, 720.0), "ra", 9, ("RA 720.0",)),
            Case(
                f"{fmt}-dec-90.0001",
                _bad_value(fmt, "dec", 10, 90.0001),
                "dec",
                10,
                ("Dec 90.0001", "[-90, 90]"),
            ),
            Case(
                f"{fmt}-dec--90.0001",
                _bad_value(fmt, "dec", 11, -90.0001),
                "dec",
                11,
                ("Dec -90.0001",),
            ),
            Case(f"{fmt}-dec-99", _bad_value(fmt, "dec", 12, 99.0), "dec", 12, ("Dec 99.0",)),
            Case(
                f"{fmt}-dec-inf", _bad_value(fmt, "dec", 4, float("inf")), "dec", 4, ("infinite",)
            ),
            Case(
                f"{fmt}-duplicate-id",
                _bad_value(fmt, "id", 20, 5),
                "id",
                20,
                ("duplicate id 5", "rows 5 and 20"),
            ),
        ]
    cases += [
        Case("fits-ra-nan", _bad_value("fits", "ra", 3, float("nan")), "ra", 3, ("NaN",)),
        Case("csv-ra-nan", _bad_value("csv", "ra", 3, "nan"), "ra", 3, ("empty",)),
        Case("votable-ra-nan", _bad_value("votable", "ra", 3, "NaN"), "ra", 3, ("empty",)),
        Case("csv-id-empty", _bad_value("csv", "id", 3, None), "id", 3, ("id is empty",)),
        Case("votable-id-empty", _bad_value("votable", "id", 3, None), "id", 3, ("id is empty",)),
        Case(
            "csv-id-19-digits-too-big",
            _bad_value("csv", "id", 6, 9223372036854775808),
            "id",
            6,
            ("2^63-1",),
        ),
        Case("fits-uint64-id-too-big", _uint64_ids, "id", 2, ("2^63-1",)),
        Case(
            "votable-id-out-of-range",
            _bad_value("votable", "id", 6, 9223372036854775808),
            "id",
            6,
            ("out of range",),
        ),
        Case("csv-float-id", _bad_value("csv", "id", 9, 9.5), "id", None, ("floating point",)),
        Case("fits-float-id", _float_ids, "ID", None, ("floating point",)),
        Case(
            "csv-string-in-float",
            _bad_value("csv", "mag", 12, "abc"),
            "mag",
            12,
            ("not a number: 'abc'",),
        ),
        Case(
            "votable-string-in-float",
            _bad_value("votable", "mag", 12, "abc"),
            "mag",
            12,
            ("not a number",),
        ),
        Case(
            "fits-string-in-ra",
            _bad_value("fits", "ra", 12, "abc"),
            "ra",
            12,
            ("not a number: 'abc'",),
        ),
        Case("csv-extra-cell", _extra_cell, None, 5, ("line 6", "the header has 5")),
        Case("fits-truncated", _truncated_fits, None, None, ("truncated",)),
        Case("fits-no-table", _image_only, None, None, ("no table HDU",)),
        Case(
            "votable-unclosed-tag",
            _unclosed_votable,
            None,
            None,
            ("not a well-formed VOTable", "line 10"),
        ),
        Case("votable-cut", _cut_votable, None, None, ("not a well-formed VOTable",)),
        Case("csv-empty", lambda d: _empty(d / "empty.csv"), None, None, ("empty",)),
        Case("fits-empty", lambda d: _empty(d / "empty.fits"), None, None, ("empty",)),
        Case("votable-empty", lambda d: _empty(d / "empty.vot"), None, None, ("empty",)),
        Case("csv-header-only", _header_only, None, None, ("no data rows",)),
        Case(
            "unknown-extension",
            _unknown_extension,
            None,
            None,
            ("unknown file extension", "VOTable"),
        ),
        Case(
            "csv-no-coordinates", _no_coordinates, None, None, ("no RA column", "available columns")
        ),
        Case("csv-column-clash", _column_clash, "RA", None, ("would be named 'ra'",)),
    ]
    return cases


def _uint64_ids(d: Path) -> Path:
    cols = clean_columns(n=5)
    ids = np.array([1, 2**63, 3, 4, 5], dtype=np.uint64)
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="id", format="K", bzero=2**63, array=ids),
            fits.Column(name="ra", format="D", array=np.array(cols["ra"])),
            fits.Column(name="dec", format="D", array=np.array(cols["dec"])),
        ]
    )
    path = d / "uint64_ids.fits"
    hdu.writeto(path)
    return path


def _float_ids(d: Path) -> Path:
    cols = clean_columns(n=5)
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="ID", format="D", array=np.array(cols["id"], dtype=float)),
            fits.Column(name="ra", format="D", array=np.array(cols["ra"])),
            fits.Column(name="dec", format="D", array=np.array(cols["dec"])),
        ]
    )
    path = d / "float_ids.fits"
    hdu.writeto(path)
    return path


def _extra_cell(d: Path) -> Path:
    path = write_csv(d / "extra_cell.csv", clean_columns())
    lines = path.read_text().splitlines()
    lines[5] += ",surplus"
    path.write_text("\n".join(lines) + "\n")
    return path


def _truncated_fits(d: Path) -> Path:
    data = (SHARED_DATA / NAIR).read_bytes()
    path = d / "nair_truncated.fits"
    path.write_bytes(data[: len(data) // 2])
    return path


def _image_only(d: Path) -> Path:
    path = d / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4), dtype=np.float32)).writeto(path)
    return path


def _unclosed_votable(d: Path) -> Path:
    return write_votable(d / "unclosed.vot", clean_columns(), unclosed_row=1)


def _cut_votable(d: Path) -> Path:
    path = write_votable(d / "cut.vot", clean_columns())
    text = path.read_text()
    path.write_text(text[: len(text) * 2 // 3])
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _header_only(d: Path) -> Path:
    path = d / "header_only.csv"
    path.write_text("id,ra,dec,mag,name\n")
    return path


def _unknown_extension(d: Path) -> Path:
    path = d / "catalog.txt"
    path.write_text("id,ra,dec\n1,2,3\n")
    return path


def _no_coordinates(d: Path) -> Path:
    cols = clean_columns()
    return write_csv(d / "no_coords.csv", {"id": cols["id"], "mag": cols["mag"]})


def _column_clash(d: Path) -> Path:
    cols = clean_columns()
    cols["RA"] = cols["ra"]
    cols["alpha"] = cols.pop("ra")
    return write_csv(d / "clash.csv", cols)


_OPTIONS = {
    "csv-column-clash": {"ra_column": "alpha"},
    "csv-float-id": {"id_column": "id"},
    "fits-float-id": {"id_column": "ID"},
}
_FLAGS = {"ra_column": "--ra", "id_column": "--id"}


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c.name)
def test_broken_file_is_refused_and_changes_nothing(
    case: Case, corpus_db: str, tmp_path: Path
) -> None:
    path = case.make(tmp_path)
    before = snapshot(corpus_db)
    for catalog, mode in (("broken", "create"), ("base", "replace")):
        with pytest.raises(IngestError) as info:
            ingest_file(path, catalog, mode=mode, url=corpus_db, **_OPTIONS.get(case.name, {}))  # type: ignore[arg-type]
        message = str(info.value)
        assert path.name in message
        if case.column is not None:
            assert f"column {case.column!r}" in message
            assert info.value.column == case.column
        if case.row is not None:
            assert f"row {case.row}" in message
            assert info.value.row == case.row
        for word in case.words:
            assert word in message
        assert snapshot(corpus_db) == before

    args = ["ingest", str(path), "--catalog", "broken"]
    for option, value in _OPTIONS.get(case.name, {}).items():
        args += [_FLAGS[option], value]
    result = CliRunner().invoke(main, args, env={"SKYCLASS_DATABASE_URL": corpus_db})
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and path.name in result.output
    assert snapshot(corpus_db) == before


@pytest.mark.parametrize("fmt", ["csv", "fits", "votable"])
def test_19_digit_ids_load_exactly(fmt: str, db_url: str, tmp_path: Path) -> None:
    ids = [9223372036854775807, 1234567890123456789, -9223372036854775807, 1]
    cols = clean_columns(n=4)
    cols["id"] = ids
    path = write(tmp_path, "big_ids", fmt, cols)
    report = ingest_file(path, "big")
    assert report.rows_accepted == 4
    with psycopg.connect(db_url) as conn:
        got = [r[0] for r in conn.execute("SELECT object_id FROM catalogs.big ORDER BY ra")]
    expected = [i for _, i in sorted(zip(cols["ra"], ids, strict=True))]
    assert got == expected
