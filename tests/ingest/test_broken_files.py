"""A corpus of broken files: each is refused, naming file, column and row, and changes nothing."""

from __future__ import annotations

import csv
import gzip
import os
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
from skyclass.ingest import sources as ingest_sources
from tests.conftest import SHARED_DATA, drop_database, new_database
from tests.ingest.corpus import (
    clean_columns,
    edit_line,
    snapshot,
    with_value,
    write,
    write_csv,
    write_ecsv,
    write_fits,
    write_votable,
)

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
    for fmt in ("csv", "ecsv", "fits", "votable"):
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
    return cases + _text_cases() + _container_cases()


def _csv_edit(stem: str, line: int, edit: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    """A clean CSV file whose 1-based ``line`` (the header is line 1) is ``edit``-ed."""
    return lambda d: edit_line(write_csv(d / f"{stem}.csv", clean_columns()), line, edit)


def _ecsv_edit(stem: str, line: int, edit: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    """A clean ECSV file whose data row ``line`` (1-based, after the names row) is edited."""
    return lambda d: edit_line(write_ecsv(d / f"{stem}.ecsv", clean_columns()), 10 + line, edit)


def _text_cases() -> list[Case]:
    """CSV and ECSV files whose text is damaged: each refused naming its line (issue 9)."""
    nul = lambda b: b.replace(b"src", b"s\0rc")  # noqa: E731
    return [
        Case("csv-nul-in-cell", _csv_edit("nul", 8, nul), None, None, ("line 8", "NUL")),
        Case(
            "csv-nul-in-header", _csv_edit("nulh", 1, lambda b: b + b"\0"), None, None, ("line 1",)
        ),
        Case(
            "csv-unmatched-quote",
            _csv_edit("quote", 11, lambda b: b.replace(b"src", b'"src')),
            None,
            10,
            ("line 11", "quote"),
        ),
        Case("csv-quote-closed-later", _quote_closed_later, None, 10, ("line 11", "quote")),
        Case(
            "csv-text-after-closing-quote",
            _csv_edit("after", 6, lambda b: b.replace(b"src0005", b'"src"0005')),
            None,
            5,
            ("line 6", "quote"),
        ),
        Case("csv-truncated-last-row", _truncated_csv, None, 50, ("line 51", "has 5")),
        Case(
            "csv-too-few-cells",
            _csv_edit("few", 21, lambda b: b.rsplit(b",", 1)[0]),
            None,
            20,
            ("line 21 has 4 cells",),
        ),
        Case("csv-ra-hex-float", _bad_value("csv", "ra", 3, "0x1p3"), "ra", 3, ("not a number",)),
        Case("csv-ra-hex", _bad_value("csv", "ra", 4, "0x10"), "ra", 4, ("not a number",)),
        Case(
            "csv-mag-underscore",
            _bad_value("csv", "mag", 5, "1_000"),
            "mag",
            5,
            ("not a number: '1_000'",),
        ),
        Case(
            "csv-ra-fullwidth-digit",
            _bad_value("csv", "ra", 6, "\uff18"),
            "ra",
            6,
            ("not a number",),
        ),
        Case("csv-mag-1e400", _bad_value("csv", "mag", 7, "1e400"), "mag", 7, ("1e400 is beyond",)),
        Case("csv-dec-minus-1e400", _bad_value("csv", "dec", 8, "-1e400"), "dec", 8, ("beyond",)),
        Case("csv-ra-inner-space", _bad_value("csv", "ra", 9, "1 2"), "ra", 9, ("not a number",)),
        Case("csv-ra-quoted-empty", _bad_value("csv", "ra", 3, '""'), "ra", 3, ("RA is empty",)),
        Case(
            "csv-invalid-utf8",
            _csv_edit("latin1", 12, lambda b: b + b"\xe9"),
            None,
            None,
            ("line 12", "not UTF-8"),
        ),
        Case("csv-utf16", _utf16, None, None, ("line 1",)),
        Case(
            "csv-line-over-1mib",
            _csv_edit("long", 4, lambda b: b + b"x" * (2 << 20)),
            None,
            None,
            ("line 4 is longer than",),
        ),
        Case("csv-quoted-cell-over-limit", _huge_quoted_cell, None, 3, ("line 4", "131,072")),
        Case(
            "csv-unquoted-cell-over-limit",
            _csv_edit("widecell", 5, lambda b: b.replace(b"src0004", b"w" * 200_000)),
            None,
            4,
            ("line 5", "131,072"),
        ),
        Case(
            "csv-empty-column-name",
            _csv_edit("noname", 1, lambda b: b.replace(b"mag", b" ")),
            None,
            None,
            ("column 4", "no name"),
        ),
        Case(
            "csv-duplicate-column-name",
            _csv_edit("dup", 1, lambda b: b.replace(b"mag", b"ra")),
            None,
            None,
            ("columns 2 and 4", "'ra'"),
        ),
        Case("csv-lone-carriage-returns", _mac_line_ends, None, None, ("carriage return",)),
        Case("csv-gzip-truncated", _truncated_gzip, None, None, ("cannot be read to its end",)),
        Case("csv-blank-lines-only", _blank_only, None, None, ("no header",)),
        Case("csv-id-20-digits", _bad_value("csv", "id", 6, 10**20), "id", 6, ("2^63-1",)),
        Case(
            "csv-id-underscore",
            _bad_value("csv", "id", 4, "1_0"),
            "id",
            4,
            ("not a number: '1_0'",),
        ),
        Case("ecsv-nul-in-cell", _ecsv_edit("nul", 8, nul), None, None, ("line 18", "NUL")),
        Case(
            "ecsv-unmatched-quote",
            _ecsv_edit("quote", 3, lambda b: b.replace(b"src", b'"src')),
            None,
            3,
            ("line 13", "quote"),
        ),
        Case(
            "ecsv-too-few-cells",
            _ecsv_edit("few", 4, lambda b: b.rsplit(b" ", 1)[0]),
            None,
            4,
            ("line 14 has 4 cells",),
        ),
        Case(
            "ecsv-extra-cell",
            _ecsv_edit("extra", 5, lambda b: b + b" surplus"),
            None,
            5,
            ("line 15 has 6 cells",),
        ),
        Case("ecsv-truncated", _truncated_ecsv, None, 50, ("line 60",)),
        Case("ecsv-mag-1e400", _bad_value("ecsv", "mag", 7, "1e400"), "mag", 7, ("beyond",)),
        Case("ecsv-ra-underscore", _bad_value("ecsv", "ra", 5, "1_0"), "ra", 5, ("not a number",)),
        Case("ecsv-ra-hex", _bad_value("ecsv", "ra", 5, "0x10"), None, None, ("'ra'", "0x10")),
        Case(
            "ecsv-invalid-utf8",
            _ecsv_edit("latin1", 2, lambda b: b + b"\xff"),
            None,
            None,
            ("line 12", "not UTF-8"),
        ),
        Case("ecsv-empty", lambda d: _empty(d / "empty.ecsv"), None, None, ("empty",)),
    ]


def _container_cases() -> list[Case]:
    """FITS and VOTable files cut or malformed at other places than the base corpus."""
    return [
        Case("fits-cut-in-header", _cut_fits(1000), None, None, ("truncated",)),
        Case("fits-cut-at-data", _cut_fits(5760), None, None, ("truncated",)),
        Case("fits-cut-in-last-row", _cut_fits(5760 + 50 * 37 - 5), None, None, ("truncated",)),
        Case("votable-missing-tr-close", _votable_edit(b"</TR>", b"", 1), None, None, ("VOTable",)),
        Case(
            "votable-extra-td",
            _votable_edit(b"</TR>", b"<TD>9</TD></TR>", 1),
            None,
            None,
            ("line 10", "more columns"),
        ),
        Case(
            "votable-missing-td",
            _votable_edit(b"<TD>src0003</TD>", b"", 1),
            None,
            None,
            ("line 12", "fewer columns"),
        ),
        Case(
            "votable-invalid-utf8",
            _votable_edit(b"src0004", b"src\xff", 1),
            None,
            None,
            ("VOTable",),
        ),
        Case("votable-no-table", _votable_without_table, None, None, ("no TABLE",)),
    ]


def _quote_closed_later(d: Path) -> Path:
    path = write_csv(d / "later.csv", clean_columns())
    edit_line(path, 11, lambda b: b.replace(b"src", b'"src'))
    return edit_line(path, 13, lambda b: b.replace(b"src", b'x"y'))


def _truncated_csv(d: Path) -> Path:
    path = write_csv(d / "truncated.csv", clean_columns())
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b",", 0, len(data) - 12)])
    return path


def _truncated_ecsv(d: Path) -> Path:
    path = write_ecsv(d / "truncated.ecsv", clean_columns())
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b" ", 0, len(data) - 12)])
    return path


def _utf16(d: Path) -> Path:
    path = d / "utf16.csv"
    path.write_bytes(write_csv(d / "utf8.csv", clean_columns()).read_text().encode("utf-16"))
    return path


def _huge_quoted_cell(d: Path) -> Path:
    cell = b'"' + (b"x" * 999 + b"\n") * 200 + b'"'
    return _csv_edit("hugecell", 4, lambda b: b.replace(b"src0003", cell))(d)


def _mac_line_ends(d: Path) -> Path:
    path = write_csv(d / "mac.csv", clean_columns())
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    return path


def _truncated_gzip(d: Path) -> Path:
    data = gzip.compress(write_csv(d / "plain.csv", clean_columns()).read_bytes())
    path = d / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _blank_only(d: Path) -> Path:
    path = d / "blank.csv"
    path.write_bytes(b"\n\r\n\n")
    return path


def _cut_fits(size: int) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        path = write_fits(d / f"cut{size}.fits", clean_columns())
        path.write_bytes(path.read_bytes()[:size])
        return path

    return make


def _votable_edit(old: bytes, new: bytes, count: int) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        path = write_votable(d / "edited.vot", clean_columns())
        path.write_bytes(path.read_bytes().replace(old, new, count))
        return path

    return make


def _votable_without_table(d: Path) -> Path:
    path = d / "notable.vot"
    path.write_text(
        '<?xml version="1.0"?>\n<VOTABLE version="1.4" '
        'xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE/></VOTABLE>\n'
    )
    return path


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


# Under SKYCLASS_RELIABILITY=full every file is also read in chunks of this many bytes
# (about 16 rows each), so rows, quotes and refusals cross chunk boundaries.
FULL = os.environ.get("SKYCLASS_RELIABILITY") == "full"
SMALL_CHUNKS = 1024
CHUNKINGS = [None, SMALL_CHUNKS] if FULL else [None]


@pytest.mark.reliability
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c.name)
def test_broken_file_is_refused_and_changes_nothing(
    case: Case, corpus_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = case.make(tmp_path)
    before = snapshot(corpus_db)
    attempts = [("broken", "create", None), ("base", "replace", None)]
    attempts += [("broken", "create", size) for size in CHUNKINGS if size is not None]
    for catalog, mode, chunk_bytes in attempts:
        if chunk_bytes is not None:
            monkeypatch.setattr(ingest_sources, "CHUNK_BYTES", chunk_bytes)
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
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert path.name in lines[0] and "Traceback" not in result.output
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


# -- legal files: loaded exactly ---------------------------------------------------------
Columns = dict[str, list[Any]]


@dataclass(frozen=True)
class Legal:
    """A legal but unusual file: how to write it and the values it holds (None: NULL)."""

    name: str
    make: Callable[[Path], tuple[Path, Columns]]
    chunk_bytes: int | None = None


def _clean_csv_as(stem: str, transform: Callable[[bytes], bytes]) -> Callable[[Path], Any]:
    def make(d: Path) -> tuple[Path, Columns]:
        cols = clean_columns()
        path = write_csv(d / f"{stem}.csv", cols)
        path.write_bytes(transform(path.read_bytes()))
        return path, cols

    return make


def _clean_ecsv_as(stem: str, transform: Callable[[bytes], bytes]) -> Callable[[Path], Any]:
    def make(d: Path) -> tuple[Path, Columns]:
        cols = clean_columns()
        path = write_ecsv(d / f"{stem}.ecsv", cols)
        path.write_bytes(transform(path.read_bytes()))
        return path, cols

    return make


def _csv_cells(stem: str, cols: Columns, cells: dict[str, dict[int, str]]) -> Callable[[Path], Any]:
    """CSV of ``cols`` written with the csv module, some cells (1-based row) written as given."""

    def make(d: Path) -> tuple[Path, Columns]:
        path = d / f"{stem}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(list(cols))
            for i in range(len(cols["id"])):
                writer.writerow([cells.get(n, {}).get(i + 1, _text(cols[n][i])) for n in cols])
        return path, cols

    return make


def _text(value: Any) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _with(column: str, values: dict[int, Any]) -> Columns:
    cols = clean_columns()
    for row, value in values.items():
        cols[column][row - 1] = value
    return cols


def _quoted_text() -> Callable[[Path], Any]:
    names = {1: "a,b", 2: "line one\nline two", 3: 'say "hi"', 4: "  padded  ", 5: "cr\r\nlf"}
    names |= {6: '"', 7: ",", 8: "é,ü\n€"}
    return _csv_cells("quoted", _with("name", names), {})


def _numbers_in_text() -> Callable[[Path], Any]:
    names = {1: "123", 2: "0x10", 3: "1_000", 4: "\uff18", 5: "1e400", 6: " 7 "}
    return _csv_cells("textnum", _with("name", names), {})


def _decimal_forms() -> Callable[[Path], Any]:
    mags = {1: 0.5, 2: -0.25, 3: 1.0, 4: 100.0, 5: 7.0, 6: 12.5, 7: 10.25}
    forms = {1: "+.5", 2: "-.25", 3: "1.", 4: "1E2", 5: "+7", 6: " 12.5 ", 7: "\t10.25"}
    return _csv_cells("forms", _with("mag", mags), {"mag": forms})


def _extreme_floats() -> Callable[[Path], Any]:
    values = {1: 1e-300, 2: 1.7976931348623157e308, 3: 5e-324, 4: -0.0, 5: 2.2250738585072014e-308}
    return _csv_cells("extreme", _with("mag", values), {})


def _null_markers() -> Callable[[Path], Any]:
    markers = ["", "NA", "N/A", "null", "NULL", "nan", "NaN", "--", "inf", "-inf"]
    cells = {i + 1: m for i, m in enumerate(markers)}
    return _csv_cells("markers", _with("mag", dict.fromkeys(cells)), {"mag": cells})


def _quoted_numbers() -> Callable[[Path], Any]:
    cols = clean_columns()
    cells = {"id": {1: '"1"'}, "mag": {2: f'"{cols["mag"][1]!r}"'}}

    def make(d: Path) -> tuple[Path, Columns]:
        path = write_csv(d / "qnum.csv", cols)
        lines = path.read_bytes().split(b"\n")
        for column, rows in cells.items():
            j = list(cols).index(column)
            for row, text in rows.items():
                parts = lines[row].split(b",")
                parts[j] = text.encode()
                lines[row] = b",".join(parts)
        path.write_bytes(b"\n".join(lines))
        return path, cols

    return make


def _big_ids() -> Callable[[Path], Any]:
    ids = [2**53 + 1, 2**62 + 3, 2**63 - 1, -(2**63) + 1, *range(1, 47)]
    cols = clean_columns()
    cols["id"] = ids
    return lambda d: (write_csv(d / "bigids.csv", cols), cols)


def _long_cell() -> Callable[[Path], Any]:
    return _csv_cells("longcell", _with("name", {3: "y" * 100_000}), {})


def _many_chunks() -> Callable[[Path], Any]:
    cols = clean_columns(n=400)
    for i in range(0, 400, 7):
        cols["name"][i] = f'row {i}\nsecond line, with a comma and a quote "'
    return _csv_cells("chunks", cols, {})


def _gzip_csv(d: Path) -> tuple[Path, Columns]:
    cols = clean_columns()
    path = d / "clean.csv.gz"
    path.write_bytes(gzip.compress(write_csv(d / "plain.csv", cols).read_bytes()))
    return path, cols


def _unicode_names(fmt: str) -> Callable[[Path], Any]:
    def make(d: Path) -> tuple[Path, Columns]:
        cols = _with("name", {1: "\u03b1 Cen", 2: "\u540d\u524d", 3: "\U0001f52d"})
        cols["gr\u00f6\u00dfe"] = cols.pop("mag")
        if fmt == "csv":
            return write_csv(d / "unicode.csv", cols), cols
        path = write_ecsv(d / "unicode.ecsv", cols)
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace(
                "datatype: string}\n# - {name: name", "datatype: float32}\n# - {name: name"
            ),
            encoding="utf-8",
        )
        return path, cols

    return make


def _fmt(fmt: str) -> Callable[[Path], tuple[Path, Columns]]:
    def make(d: Path) -> tuple[Path, Columns]:
        cols = _with("name", {1: "two words", 2: 'a "quote"'})
        return write(d, "clean", fmt, cols), cols

    return make


BOM = b"\xef\xbb\xbf"
LEGAL = [
    Legal("csv-crlf", _clean_csv_as("crlf", lambda b: b.replace(b"\n", b"\r\n"))),
    Legal("csv-bom", _clean_csv_as("bom", lambda b: BOM + b)),
    Legal("csv-bom-crlf", _clean_csv_as("bomcrlf", lambda b: BOM + b.replace(b"\n", b"\r\n"))),
    Legal("csv-no-final-newline", _clean_csv_as("nofinal", lambda b: b.rstrip(b"\n"))),
    Legal(
        "csv-blank-lines",
        _clean_csv_as(
            "blank",
            lambda b: b"\n" + b.replace(b"\n1,", b"\n\n1,").replace(b"\n3,", b"\n\r\n3,") + b"\n\n",
        ),
    ),
    Legal(
        "csv-header-spaces",
        _clean_csv_as("hspace", lambda b: b.replace(b"id,ra,dec", b"id , ra,\tdec", 1)),
    ),
    Legal("csv-quoted-delimiters-newlines-quotes", _quoted_text()),
    Legal("csv-numbers-in-a-text-column", _numbers_in_text()),
    Legal("csv-decimal-forms", _decimal_forms()),
    Legal("csv-extreme-floats", _extreme_floats()),
    Legal("csv-null-markers", _null_markers()),
    Legal("csv-quoted-numbers", _quoted_numbers()),
    Legal("csv-ids-beyond-2-53", _big_ids()),
    Legal("csv-100k-character-cell", _long_cell()),
    Legal("csv-quoted-newlines-across-chunks", _many_chunks(), chunk_bytes=500),
    Legal("csv-gzip", _gzip_csv),
    Legal("csv-non-ascii-names-and-text", _unicode_names("csv")),
    Legal("ecsv-non-ascii-names-and-text", _unicode_names("ecsv")),
    Legal("ecsv-bom", _clean_ecsv_as("bom", lambda b: BOM + b)),
    Legal("ecsv-crlf", _clean_ecsv_as("crlf", lambda b: b.replace(b"\n", b"\r\n"))),
    Legal("ecsv-quoted-text", _fmt("ecsv")),
    Legal("fits-clean", _fmt("fits")),
    Legal("votable-clean", _fmt("votable")),
]


def _loaded(url: str, catalog: str, names: list[str]) -> Columns:
    """The values of the catalog's columns, by source column name, in object_id order."""
    with psycopg.connect(url) as conn:
        mapping = dict(
            conn.execute(
                "SELECT c.source_name, c.column_name FROM skyclass.catalog_column c "
                "JOIN skyclass.catalog USING (catalog_id) WHERE catalog.name = %s",
                (catalog,),
            ).fetchall()
        )
        columns = ", ".join(f'"{mapping[n]}"' for n in names)
        rows = conn.execute(f"SELECT {columns} FROM catalogs.{catalog} ORDER BY object_id")
        return {n: list(v) for n, v in zip(names, zip(*rows.fetchall(), strict=True), strict=True)}


@pytest.mark.reliability
@pytest.mark.parametrize("chunk_bytes", CHUNKINGS, ids=lambda size: f"chunks-{size or 'default'}")
@pytest.mark.parametrize("case", LEGAL, ids=lambda c: c.name)
def test_legal_file_loads_exactly(
    case: Legal,
    chunk_bytes: int | None,
    corpus_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    size = chunk_bytes or case.chunk_bytes
    if size is not None:
        monkeypatch.setattr(ingest_sources, "CHUNK_BYTES", size)
    path, expected = case.make(tmp_path)
    catalog = f"legal_{case.name.replace('-', '_')}_{chunk_bytes or 0}"
    report = ingest_file(path, catalog, url=corpus_db)
    n = len(expected["id"])
    assert report.rows_accepted == n and report.rows_rejected == 0
    order = sorted(range(n), key=lambda i: expected["id"][i])
    want = {k: [v[i] for i in order] for k, v in expected.items()}
    got = _loaded(corpus_db, catalog, list(expected))
    for name in expected:
        if not case.name.startswith("csv") and (name == "mag" or name.startswith("gr")):
            # A float32 (real) column of FITS/VOTable/ECSV is compared as float32 (psycopg
            # reads real through its shortest decimal text).
            got[name] = [None if v is None else np.float32(v) for v in got[name]]
            want[name] = [None if v is None else np.float32(v) for v in want[name]]
        assert got[name] == want[name], name
