"""Exact text ingest: the cases a hostile test found on the first version of the CSV reader.

Each file is either refused, naming its line, with the database unchanged, or
loaded with every value equal to what the file says.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.errors import IngestError
from skyclass.ingest import ingest_file
from skyclass.ingest import sources as ingest_sources
from tests.ingest.corpus import snapshot

HEADER = b"id,ra,dec,name\n"


def _refused(path: Path, url: str, *words: str) -> str:
    """Ingest ``path``: it must be refused with ``words`` in the message, changing nothing."""
    before = snapshot(url)
    with pytest.raises(IngestError) as info:
        ingest_file(path, "hostile", url=url)
    message = str(info.value)
    assert path.name in message
    for word in words:
        assert word in message, message
    assert snapshot(url) == before
    return message


def _rows(url: str, catalog: str, columns: str = "object_id, ra, dec, name") -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT {columns} FROM catalogs.{catalog} ORDER BY object_id"
        ).fetchall()


def test_nul_byte_in_a_cell_is_refused_naming_its_line(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_bytes(HEADER + b"1,10,10,a\n2,11,11,b\0c\n3,12,12,d\n4,13,13,e\n")
    _refused(path, db_url, "line 3", "NUL")


def test_unmatched_quote_is_refused_naming_the_line_it_opens(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes(HEADER + b'1,10,10,a\n2,11,11,"b\n3,12,12,c\n4,13,13,d\n')
    _refused(path, db_url, "line 3", "quote")


def test_quote_closed_in_a_later_row_is_refused(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "q2.csv"
    path.write_bytes(HEADER + b'1,10,10,a\n2,11,11,"b\n3,12,12,"c"\n4,13,13,d\n')
    _refused(path, db_url, "line 3", "quote")


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (b"1,10,10,a\n2,11,11,b\n3,12", "line 4"),  # truncated last row, no newline
        (b"1,10,10,a\n2,11,11\n3,12,12,c\n", "line 3"),  # a row with too few cells
        (b"1,10,10,a\n2,11,11,b,x\n3,12,12,c\n", "line 3"),  # a row with an extra cell
    ],
    ids=["truncated-last-row", "too-few-cells", "extra-cell"],
)
def test_row_with_the_wrong_number_of_cells_is_refused(
    body: bytes, line: str, db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "cells.csv"
    path.write_bytes(HEADER + body)
    _refused(path, db_url, line, "the header has 4")


@pytest.mark.parametrize("ra", ["0x1p3", "0x10", "1_0", "inf0", "\uff18"])
def test_ra_outside_the_decimal_grammar_is_refused(ra: str, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "hex.csv"
    path.write_text(f"id,ra,dec\n1,10,10\n2,{ra},11\n3,12,12\n", encoding="utf-8")
    with pytest.raises(IngestError) as info:
        ingest_file(path, "hex", url=db_url)
    assert "not a number" in str(info.value) and info.value.column == "ra"
    assert info.value.row == 2


def test_bom_and_non_ascii_column_names_load_exactly(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    text = "id,ra,dec,größe,名前\n1,10.5,-3.25,1.5,\u03b1 Cen\n2,11,11,2,Ünïcode\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    report = ingest_file(path, "bom", url=db_url)
    assert report.rows_accepted == 2
    with psycopg.connect(db_url) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'catalogs' AND table_name = 'bom' ORDER BY ordinal_position"
            )
        ]
        assert names[:3] == ["object_id", "ra", "dec"]
        sources = [
            r[0]
            for r in conn.execute(
                "SELECT source_name FROM skyclass.catalog_column c JOIN skyclass.catalog USING "
                "(catalog_id) WHERE c.source_name IS NOT NULL ORDER BY position"
            )
        ]
        assert "größe" in sources and "名前" in sources
        rows = conn.execute(
            f'SELECT object_id, ra, dec, "{names[3]}", "{names[4]}" FROM catalogs.bom '
            "ORDER BY object_id"
        ).fetchall()
    assert rows == [(1, 10.5, -3.25, 1.5, "\u03b1 Cen"), (2, 11.0, 11.0, 2.0, "Ünïcode")]


def test_a_huge_cell_is_refused_quickly(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_bytes(HEADER + b"1,10,10,a\n2,11,11," + b"x" * 10_000_000 + b"\n3,12,12,c\n")
    started = time.monotonic()
    _refused(path, db_url, "line 3", "longer than")
    assert time.monotonic() - started < 10


def test_cli_error_is_one_line_saying_what_to_do(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_bytes(HEADER + b"1,10,10,a\n2,11,11,b\0c\n")
    result = CliRunner().invoke(main, ["ingest", str(path), "--catalog", "n"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "n.csv" in lines[0] and "line 3" in lines[0] and "remove" in lines[0]
    assert "Traceback" not in result.output


def test_rows_lost_between_reader_and_copy_refuse_the_load(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: a reader that drops its last chunk after counting its rows. The
    # load compares the rows counted with the rows prepared and copied, so it refuses.
    path = tmp_path / "lost.csv"
    path.write_bytes(HEADER + b"".join(b"%d,%d,1,n\n" % (i, i) for i in range(1, 201)))
    monkeypatch.setattr(ingest_sources, "CHUNK_BYTES", 300)
    real_chunks = ingest_sources.CsvSource.chunks

    def losing_chunks(self: ingest_sources.CsvSource) -> Iterator[ingest_sources.Chunk]:
        chunks = list(real_chunks(self))
        yield from chunks[:-1]

    monkeypatch.setattr(ingest_sources.CsvSource, "chunks", losing_chunks)
    _refused(path, db_url, "counted 200 data rows", "nothing was loaded")
