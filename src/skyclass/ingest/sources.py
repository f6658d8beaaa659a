"""Catalog file readers: FITS, VOTable, CSV and ECSV through astropy, in chunks.

Every reader yields :class:`Chunk` objects (plain numpy arrays plus NULL masks)
so the rest of the ingest does not care where the rows came from. Memory:

- FITS tables are memory-mapped and sliced, so only one chunk is converted at
  a time. With ``memmap=True`` astropy applies neither TNULL nor NaN masking,
  so TNULL is applied here from the column definitions (NaN is handled with
  the other float sentinels). A gzip-compressed FITS file cannot be mapped:
  astropy decompresses it into memory.
- CSV is read by skyclass's own strict reader (:mod:`skyclass.ingest.csvtext`)
  in chunks bounded by :data:`CHUNK_BYTES`: every row has the header's cell
  count, NUL bytes, open quotes, invalid UTF-8 and over-long lines are refused
  with their line, and numbers follow one strict decimal grammar. Column
  types are inferred per chunk; the loader reconciles them (see
  :mod:`skyclass.ingest.prepare`).
- VOTable and ECSV have no streaming reader in astropy: they are read whole
  and then cut into chunks.

Warnings astropy raises while reading are sorted: those that mean the file is
damaged (truncated FITS, unparsable VOTable values) become :class:`IngestError`,
the others are kept in :attr:`Source.notes`.
"""

from __future__ import annotations

import gzip
import re
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from skyclass.errors import IngestError
from skyclass.ingest.csvtext import (
    ByteLines,
    CheckedLines,
    CsvRows,
    NumberRangeError,
    decimal_value,
    ecsv_records,
    integer_value,
    typed_column,
)
from skyclass.ingest.csvtext import (
    infinite_word as _infinite_word,
)

FORMATS: dict[str, tuple[str, ...]] = {
    "fits": (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz"),
    "votable": (".vot", ".xml", ".votable"),
    "csv": (".csv", ".csv.gz"),
    "ecsv": (".ecsv",),
}

# Target size of one chunk: big enough that per-chunk overheads vanish, small
# enough that several chunks (being read, encoded and sent) fit in memory.
CHUNK_BYTES = 16 * 1024 * 1024


def supported_formats_text() -> str:
    """The supported formats and their extensions, for error messages."""
    names = {"fits": "FITS", "votable": "VOTable", "csv": "CSV", "ecsv": "ECSV"}
    return "; ".join(f"{names[name]} ({', '.join(exts)})" for name, exts in FORMATS.items())


def detect_format(path: Path) -> str:
    """The format of ``path`` from its extension (case-insensitive).

    A ``.csv`` file that starts with an ECSV header is read as ECSV.
    """
    lower = path.name.lower()
    for name, extensions in FORMATS.items():
        if lower.endswith(extensions):
            if name == "csv" and not lower.endswith(".gz") and _looks_like_ecsv(path):
                return "ecsv"
            return name
    raise IngestError(
        f"unknown file extension; supported formats: {supported_formats_text()}", path=str(path)
    )


def _looks_like_ecsv(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(32).removeprefix(b"\xef\xbb\xbf").startswith(b"# %ECSV")
    except OSError:
        return False


@dataclass(frozen=True)
class SourceColumn:
    """A column of the file as astropy reads it, with its metadata."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...] = ()
    unit: str | None = None
    ucd: str | None = None
    description: str | None = None


@dataclass
class Chunk:
    """Consecutive rows of the file.

    ``start`` is the 0-based index of the first row, so the 1-based data-row
    number of row ``i`` of the chunk is ``start + i + 1``. ``masks`` hold the
    NULL cells the reader knows about (astropy masks, TNULL, empty cells), with
    the reason to report in ``mask_reasons`` (default ``"masked"``).
    """

    start: int
    length: int
    data: dict[str, npt.NDArray[Any]]
    masks: dict[str, npt.NDArray[np.bool_] | None]
    mask_reasons: dict[str, str] = field(default_factory=dict)


class Source(ABC):
    """An open catalog file: its columns and an iterator over its chunks."""

    format: str = ""
    infers_types: bool = False  # True when column types are guessed per chunk (CSV)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[SourceColumn] = []
        self.n_rows: int | None = None
        self.notes: list[str] = []

    @abstractmethod
    def chunks(self) -> Iterator[Chunk]:
        """Yield the rows of the file in order, one chunk at a time."""

    def close(self) -> None:  # noqa: B027 - most readers hold nothing open
        """Release the file."""

    def preview(self, name: str) -> npt.NDArray[Any] | None:
        """Values of column ``name`` in the first rows, for readers that guess types (CSV)."""
        return None

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def error(
        self, message: str, *, column: str | None = None, row: int | None = None
    ) -> IngestError:
        """An :class:`IngestError` about this file, its message on one line."""
        return IngestError(" ".join(message.split()), path=str(self.path), column=column, row=row)

    def _rows_per_chunk(self, row_bytes: int) -> int:
        return max(1, CHUNK_BYTES // max(row_bytes, 1))


def open_source(path: Path, fmt: str) -> Source:
    """Open ``path`` as format ``fmt`` (see :data:`FORMATS`) and read its header."""
    readers: dict[str, type[Source]] = {
        "fits": FitsSource,
        "votable": VOTableSource,
        "csv": CsvSource,
        "ecsv": EcsvSource,
    }
    return readers[fmt](path)


def _plain(values: Any) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]:
    """Split an astropy column (or slice of one) into data and mask arrays."""
    data = np.asarray(np.ma.getdata(values))
    mask = np.ma.getmask(values)
    if mask is np.ma.nomask:
        return data, None
    mask = np.asarray(mask, dtype=bool)
    return data, (mask if mask.any() else None)


def _unit_text(unit: Any) -> str | None:
    if unit is None:
        return None
    text = unit if isinstance(unit, str) else unit.to_string()
    return text or None


# -- FITS -------------------------------------------------------------------------
class FitsSource(Source):
    """The first table HDU of a FITS file, memory-mapped and read in chunks."""

    format = "fits"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from astropy.io import fits

        self._hdul: Any = None
        self._data: Any = None
        self._nulls: dict[str, Any] = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self._hdul = fits.open(path, memmap=True, mode="readonly", lazy_load_hdus=False)
            except Exception as exc:
                self._raise_truncated(caught)
                raise self.error(f"not a readable FITS file ({exc})") from None
        try:
            self._raise_truncated(caught)
            self.notes.extend(f"astropy: {w.message}" for w in caught)
            self._open_table()
        except BaseException:
            self.close()
            raise

    def _open_table(self) -> None:
        from astropy.io import fits

        tables = [
            (i, h)
            for i, h in enumerate(self._hdul)
            if isinstance(h, fits.BinTableHDU | fits.TableHDU)
        ]
        if not tables:
            kinds = ", ".join(f"HDU {i} {type(h).__name__}" for i, h in enumerate(self._hdul))
            raise self.error(f"no table HDU in this FITS file (it holds: {kinds})")
        index, self._hdu = tables[0]
        if len(tables) > 1:
            self.notes.append(f"read the first table HDU ({index}); {len(tables) - 1} more ignored")
        header = self._hdu.header
        self.n_rows = int(header.get("NAXIS2", 0))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                data = self._hdu.data
                sample = data[:1] if data is not None else None
        except Exception as exc:
            raise self.error(
                f"the table data cannot be read, the file looks truncated ({exc})"
            ) from None
        self._raise_truncated(caught)
        self._data = data
        for i, col in enumerate(self._hdu.columns, start=1):
            dtype = sample.field(col.name).dtype if sample is not None else np.dtype("f8")
            shape = sample.field(col.name).shape[1:] if sample is not None else ()
            self.columns.append(
                SourceColumn(
                    name=col.name,
                    dtype=np.dtype(dtype),
                    shape=tuple(shape),
                    unit=col.unit or None,
                    ucd=_header_text(header, f"TUCD{i}"),
                    description=_header_text(header, f"TCOMM{i}"),
                )
            )
            null = self._tnull(col, dtype)
            if null is not None:
                self._nulls[col.name] = null

    def _raise_truncated(self, caught: list[warnings.WarningMessage]) -> None:
        for w in caught:
            text = str(w.message)
            if "truncated" in text or "Header size is not multiple" in text:
                raise self.error(f"the file is damaged or truncated: {text.splitlines()[0]}")

    @staticmethod
    def _tnull(col: Any, dtype: np.dtype[Any]) -> Any:
        """TNULL of an integer column, in the scaled space astropy returns values in."""
        if col.null is None or dtype.kind not in "iu" or isinstance(col.null, str):
            return None
        raw = int(col.null)
        value = raw * (col.bscale if col.bscale is not None else 1) + (col.bzero or 0)
        if value != int(value):
            return None
        value = int(value)
        info = np.iinfo(dtype)
        return value if info.min <= value <= info.max else None

    def chunks(self) -> Iterator[Chunk]:
        n = self.n_rows or 0
        step = self._rows_per_chunk(int(self._hdu.header.get("NAXIS1", 1)))
        for start in range(0, n, step):
            stop = min(n, start + step)
            try:
                rows = self._data[start:stop]
                data: dict[str, npt.NDArray[Any]] = {}
                masks: dict[str, npt.NDArray[np.bool_] | None] = {}
                reasons: dict[str, str] = {}
                for col in self.columns:
                    values = np.asarray(rows.field(col.name))
                    if values.dtype.kind == "S":
                        # FITS pads strings with spaces; they are not part of the value.
                        values = np.strings.rstrip(values, b" ")
                    mask = None
                    null = self._nulls.get(col.name)
                    if null is not None:
                        hit = values == null  # per element for array columns
                        if hit.any():
                            mask = hit
                            reasons[col.name] = "tnull"
                    data[col.name] = values
                    masks[col.name] = mask
            except IngestError:
                raise
            except Exception as exc:
                raise self.error(
                    f"rows {start + 1}..{stop} cannot be read, the file looks truncated ({exc})"
                ) from None
            yield Chunk(start, stop - start, data, masks, reasons)

    def close(self) -> None:
        if self._hdul is not None:
            self._data = None
            self._hdul.close()
            self._hdul = None


def _header_text(header: Any, key: str) -> str | None:
    value = header.get(key)
    return str(value).strip() or None if value is not None else None


# -- astropy Table based (VOTable, ECSV) ----------------------------------------------
class _TableSource(Source):
    """A file read whole into an astropy Table, then cut into chunks."""

    def _set_table(self, table: Any, meta: dict[str, tuple[str | None, str | None]]) -> None:
        from astropy.table import Column

        if len(table.colnames) == 0:
            raise self.error("the table has no columns")
        self._columns_data: dict[str, Any] = {}
        for name in table.colnames:
            col = table[name]
            if not isinstance(col, Column):
                raise self.error(
                    f"column type {type(col).__name__} is not supported (only plain columns)",
                    column=name,
                )
            ucd, description = meta.get(name, (None, None))
            self.columns.append(
                SourceColumn(
                    name=name,
                    dtype=np.dtype(col.dtype),
                    shape=tuple(col.shape[1:]),
                    unit=_unit_text(col.unit),
                    ucd=ucd or (col.meta.get("ucd") if col.meta else None),
                    description=description or col.description or None,
                )
            )
            self._columns_data[name] = col
        self.n_rows = len(table)

    def chunks(self) -> Iterator[Chunk]:
        n = self.n_rows or 0
        row_bytes = sum(
            max(1, c.dtype.itemsize) * int(np.prod(c.shape, dtype=np.int64)) for c in self.columns
        )
        step = self._rows_per_chunk(row_bytes)
        for start in range(0, n, step):
            stop = min(n, start + step)
            data: dict[str, npt.NDArray[Any]] = {}
            masks: dict[str, npt.NDArray[np.bool_] | None] = {}
            for name, col in self._columns_data.items():
                data[name], masks[name] = _plain(col[start:stop])
            yield Chunk(start, stop - start, data, masks)


# VOTable warnings that mean values were lost or the file is incomplete.
_VOTABLE_FATAL = {
    "W18": "the file looks truncated",
    "W31": "NaN in an integer field",
    "W36": "a null value does not match its field's datatype",
    "W39": "bit values cannot be masked",
    "W46": "a value is longer than its field allows",
    "W51": "an integer is out of range for its field",
    "E02": "an array has the wrong number of elements",
    "E03": "a complex value cannot be parsed",
    "E04": "a bit value cannot be parsed",
    "E05": "a boolean value cannot be parsed",
    "E20": "a row has more cells than there are fields",
    "E21": "a row has fewer cells than there are fields",
}
_POSITION = re.compile(r":(\d+):(\d+): ([WE]\d\d): (.*)$", re.S)


class VOTableSource(_TableSource):
    """The first table of a VOTable, parsed whole by astropy.

    astropy's strict mode refuses real VizieR files for deprecations (COOSYS in
    VOTable 1.2) and unit strings, so the file is parsed leniently and each
    warning judged: damaging ones (see ``_VOTABLE_FATAL``, plus W30 "invalid
    number", which names the cell) raise; W49 (empty integer cell, which astropy
    turns into 0) masks that cell; the rest are kept as notes.
    """

    format = "votable"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from astropy.io import votable

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                parsed = votable.parse(str(path), verify="warn")
                table_element = parsed.get_first_table()
                table = table_element.to_table(use_names_over_ids=True)
            except IndexError:
                raise self.error("the VOTable holds no TABLE") from None
            except Exception as exc:
                raise self.error(
                    f"not a well-formed VOTable ({_position_text(str(exc))})"
                ) from None
        fields = list(table_element.fields)
        names = list(table.colnames)
        empty_int_cells: list[tuple[int, int]] = []
        for w in caught:
            text = str(w.message)
            match = _POSITION.search(text)
            code = match.group(3) if match else type(w.message).__name__
            line = int(match.group(1)) if match else None
            if code == "W30" or code in _VOTABLE_FATAL:
                column, row = self._cell(path, names, match)
                where = f" (line {line})" if line else ""
                if code == "W30":
                    literal = re.search(r"'(.*)'", _message(text))
                    value = f": {literal.group(1)!r}" if literal else ""
                    raise self.error(f"not a number{value}{where}", column=column, row=row)
                raise self.error(
                    f"{_VOTABLE_FATAL[code]}{where} ({code}: {_message(text)})",
                    column=column,
                    row=row,
                )
            if code == "W49" and match:
                row, field_index = _votable_cell(path, line or 0, int(match.group(2)))
                if row is not None:
                    empty_int_cells.append((row, field_index))
                continue
            self.notes.append(f"astropy {code}: {_message(text)}")
        if empty_int_cells:
            self._mask_cells(table, names, empty_int_cells)
        meta = {
            name: (f.ucd or None, f.description or None)
            for name, f in zip(names, fields, strict=False)
        }
        self._set_table(table, meta)

    @staticmethod
    def _cell(
        path: Path, names: list[str], match: re.Match[str] | None
    ) -> tuple[str | None, int | None]:
        """The column name and 1-based row of a warning's position, when it is a cell."""
        if match is None:
            return None, None
        row, field_index = _votable_cell(path, int(match.group(1)), int(match.group(2)))
        if row is None or not 0 <= field_index < len(names):
            return None, None
        return names[field_index], row + 1

    def _mask_cells(self, table: Any, names: list[str], cells: list[tuple[int, int]]) -> None:
        from astropy.table import MaskedColumn

        for row, field_index in cells:
            name = names[field_index]
            if not isinstance(table[name], MaskedColumn):
                table[name] = MaskedColumn(table[name])
            table[name].mask[row] = True
        self.notes.append(f"{len(cells)} empty integer cells read as NULL")


def _message(text: str) -> str:
    match = _POSITION.search(text)
    return (match.group(4) if match else text).strip()


def _position_text(text: str) -> str:
    match = re.match(r"(?:.*?:)?(\d+):(\d+): (.*)", text, re.S)
    if match:
        return f"line {match.group(1)}, column {match.group(2)}: {match.group(3).strip()}"
    return text


_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(TR|TD)[\s>/]")


def _votable_cell(path: Path, line: int, column: int) -> tuple[int | None, int]:
    """The (0-based row, field index) of the TABLEDATA cell at ``line``:``column``.

    astropy reports positions, not cells; counting ``<TR>`` and ``<TD>`` tags
    before the position recovers the cell. Used only when reporting a problem.
    """
    try:
        text = path.read_bytes()
    except OSError:
        return None, -1
    offset = 0
    for _ in range(line - 1):
        offset = text.find(b"\n", offset) + 1
        if offset == 0:
            return None, -1
    offset += column
    rows = -1
    cells = -1
    for match in _TAG.finditer(text, 0, offset + 1):
        if match.start() > offset:
            break
        if match.group(1) == b"TR":
            rows += 1
            cells = -1
        else:
            cells += 1
    return (rows if rows >= 0 else None), cells


class EcsvSource(_TableSource):
    """An ECSV file (typed CSV with a YAML header), checked, then read whole by astropy.

    The lines are checked as a CSV file's are (:class:`CheckedLines`: NUL,
    UTF-8, length; a byte-order mark is dropped) and split by
    :func:`ecsv_records`, so a row with the wrong cell count or an open quote
    is refused with its line; the number of rows astropy parses must equal the
    number of rows split, and numeric cells must follow the strict number
    grammar of :func:`is_decimal_text` (astropy's ``float()`` takes ``1_0``
    and non-ASCII digits) and fit a float64.
    """

    format = "ecsv"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from astropy.table import Table

        def refuse(message: str, row: int | None) -> IngestError:
            return self.error(message, row=row)

        try:
            with path.open("rb") as fh:
                lines = list(CheckedLines(fh, refuse))
        except OSError as exc:
            raise self.error(f"cannot read the file ({exc.strerror or exc})") from None
        if not lines:
            raise self.error("the file is empty")
        records = ecsv_records(lines, refuse)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                table = Table.read("".join(lines), format="ascii.ecsv")
            except Exception as exc:
                text = " ".join(str(exc).split())
                raise self.error(f"not a readable ECSV file ({text})") from None
        self.notes.extend(f"astropy: {w.message}" for w in caught)
        if len(table) != max(0, len(records) - 1):
            raise self.error(
                f"astropy parsed {len(table)} rows but the file holds {len(records) - 1}; "
                "check the quotes and delimiters of the data lines"
            )
        self._check_numbers(table, records)
        self._set_table(table, {})

    def _check_numbers(self, table: Any, records: list[tuple[int, list[str]]]) -> None:
        for j, name in enumerate(table.colnames):
            kind = table[name].dtype.kind
            if kind not in "iuf" or len(table[name].shape) > 1:
                continue
            parse = integer_value if kind in "iu" else decimal_value
            for row, (_, cells) in enumerate(records[1:], start=1):
                text = cells[j]
                if text == "":
                    continue
                value = parse(text)
                if value is None:
                    raise self.error(f"not a number: {text!r}", column=name, row=row)
                if isinstance(value, float) and np.isinf(value) and not _infinite_word(text):
                    raise self.error(
                        f"{text.strip()} is beyond the range of a 64-bit float; write it as inf "
                        "if that is meant, or leave the cell empty",
                        column=name,
                        row=row,
                    )


# -- CSV --------------------------------------------------------------------------
class CsvSource(Source):
    """A comma-separated file with a header row, read strictly in chunks.

    :class:`CsvRows` reads the file in blocks of about :data:`CHUNK_BYTES`
    of whole lines, checked (NUL, UTF-8, line length) and split into rows of
    exactly the header's cell count; :func:`typed_column` types each chunk's
    columns int, float or text under the strict number grammar. A chunk holds
    at most ``2 * CHUNK_BYTES`` bytes of rows counted at its widest line, so a
    few wide rows make short chunks and memory stays bounded. Types are
    inferred per chunk, so a later chunk may disagree with the first;
    :attr:`columns` describes the first chunk. :attr:`n_rows` is the number
    of data rows read, counted line by line.
    """

    format = "csv"
    infers_types = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._file: ByteLines = (
                gzip.GzipFile(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")
            )
        except OSError as exc:
            raise self.error(f"cannot open the file ({exc.strerror or exc})") from None
        self._queue: list[Chunk] = []
        try:
            self._rows = CsvRows(self._file, self._refuse)
            header = self._read(self._rows.header)
            if header is None:
                raise self.error("the file holds no header and no rows")
            self._names = self._column_names(header)
            self._first = self._next_chunk()
        except BaseException:
            self.close()
            raise
        if self._first is None:
            self.n_rows = 0
        for name in self._names:
            dtype = self._first.data[name].dtype if self._first else np.dtype(np.int64)
            self.columns.append(SourceColumn(name=name, dtype=dtype, shape=()))

    def _refuse(self, message: str, row: int | None) -> IngestError:
        return self.error(message, row=row)

    def _read(self, step: Any, *args: Any) -> Any:
        try:
            return step(*args)
        except (OSError, EOFError, zlib.error) as exc:
            raise self.error(f"the file cannot be read to its end ({exc})") from None

    def _column_names(self, header: list[str]) -> list[str]:
        names = [name.strip() for name in header]
        seen: dict[str, int] = {}
        for position, name in enumerate(names, start=1):
            if not name:
                raise self.error(
                    f"column {position} of the header (line {self._rows.line}) has no name; "
                    "give every column a name"
                )
            if name in seen:
                raise self.error(
                    f"columns {seen[name]} and {position} of the header are both named "
                    f"{name!r}; column names must be unique"
                )
            seen[name] = position
        return names

    def _next_chunk(self) -> Chunk | None:
        while not self._queue:
            start = self._rows.rows
            columns, n, widest = self._read(self._rows.block, CHUNK_BYTES)
            if n == 0:
                if self._rows.line == 0 or not columns:
                    return None
                continue  # a block of blank lines
            # Rows times the widest line bounds the unicode arrays of the text columns.
            parts = -(-n * widest // (2 * CHUNK_BYTES))
            step = -(-n // parts)
            for first in range(0, n, step):
                cells = [c[first : first + step] for c in columns]
                self._queue.append(self._chunk(start + first, cells))
        return self._queue.pop(0)

    def _chunk(self, start: int, columns: list[Sequence[str]]) -> Chunk:
        data: dict[str, npt.NDArray[Any]] = {}
        masks: dict[str, npt.NDArray[np.bool_] | None] = {}
        for name, cells in zip(self._names, columns, strict=True):
            try:
                data[name], masks[name] = typed_column(cells)
            except NumberRangeError as exc:
                raise self.error(
                    f"{exc.text.strip()} is beyond the range of a 64-bit float; write it "
                    "as inf if that is meant, or leave the cell empty",
                    column=name,
                    row=start + exc.index + 1,
                ) from None
        return Chunk(start, len(columns[0]), data, masks)

    def preview(self, name: str) -> npt.NDArray[Any] | None:
        if self._first is None or name not in self._first.data:
            return None
        data, mask = self._first.data[name], self._first.masks[name]
        return data if mask is None else data[~mask]

    def chunks(self) -> Iterator[Chunk]:
        chunk = self._first
        self._first = None
        while chunk is not None:
            yield chunk
            chunk = self._next_chunk()
        self.n_rows = self._rows.rows

    def close(self) -> None:
        self._file.close()
