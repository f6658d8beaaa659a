"""Strict reading of delimited text: checked lines, exact rows and one number grammar.

Nothing here touches the database. :class:`CheckedLines` reads a UTF-8 file
line by line and :class:`CsvRows` reads it in blocks of whole lines, both in
bounded pieces (a byte-order mark is dropped; a NUL byte, invalid UTF-8 or a
line longer than :data:`MAX_LINE_BYTES` is refused with its line number).
Rows must have the header's cell count, quotes must close where CSV allows and
a cell holds at most ``csv.field_size_limit()`` characters. :func:`typed_column`
turns one column of cells into an int64, float64 or text array under the
number grammar of :func:`is_decimal_text`; :func:`ecsv_records` splits the
data lines of an ECSV file the same strict way.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

# Cells that mean "no value" in CSV files; they become NULL, never text.
CSV_NULL_MARKERS = ("", "NA", "N/A", "null", "NULL", "nan", "NaN", "--")
_NULL_SET = frozenset(CSV_NULL_MARKERS)
_NULL_NEEDLES = tuple(f"\0{marker}\0" for marker in CSV_NULL_MARKERS)

# The longest line read: bounds the memory one row can take (a cell is bounded
# further by csv.field_size_limit(), 131,072 characters unless changed).
MAX_LINE_BYTES = 1 << 20

_BOM = b"\xef\xbb\xbf"
# Blanks allowed around a number; any other white space makes the cell text.
_OTHER_SPACE = ("\n", "\r", "\x0b", "\x0c")
_INFINITY_WORDS = frozenset(("inf", "infinity"))


class ByteLines(Protocol):
    """A binary file: what :class:`CheckedLines` needs of it."""

    def readline(self, size: int = ..., /) -> bytes:
        """At most ``size`` bytes, up to and including the next line end."""
        ...

    def read(self, size: int = ..., /) -> bytes:
        """At most ``size`` bytes."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...


Refuse = Callable[[str, int | None], Exception]
"""Builds the error to raise: (message, 1-based data row or None)."""


def is_decimal_text(text: str) -> bool:
    """Whether ``text`` may be a number: ASCII, no ``_``, no white space but blanks around.

    Together with Python's ``float()``/``int()`` this is the strict decimal
    grammar: an optional sign, digits with an optional point and exponent (or
    ``inf``/``infinity``/``nan`` in any case), optional spaces or tabs around.
    Hexadecimal (``0x10``, ``0x1p3``), digit separators (``1_000``) and
    non-ASCII digits, all of which ``float()`` or C's ``strtod`` accept, are
    not numbers. ``text`` may be many cells joined by NUL characters.
    """
    return text.isascii() and "_" not in text and not any(c in text for c in _OTHER_SPACE)


def decimal_value(text: str) -> float | None:
    """The float ``text`` holds under :func:`is_decimal_text`'s grammar, or ``None``."""
    if not is_decimal_text(text):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def integer_value(text: str) -> int | None:
    """The integer ``text`` holds (optional sign, ASCII digits, blanks around), or ``None``."""
    if not is_decimal_text(text):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def infinite_word(text: str) -> bool:
    """Whether ``text`` says infinity (``inf``, ``-Infinity``...), not a too-large number."""
    return text.strip(" \t").lstrip("+-").lower() in _INFINITY_WORDS


class NumberRangeError(ValueError):
    """A cell is a number outside the float64 range (``1e400``): ``index`` in its column."""

    def __init__(self, text: str, index: int) -> None:
        super().__init__(text)
        self.text = text
        self.index = index


def typed_column(
    cells: Sequence[str],
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]:
    """One column of cells as int64, float64 or text (unicode), with its NULL mask.

    A cell equal to one of :data:`CSV_NULL_MARKERS` is NULL. The column is
    int64 when every other cell is an integer that fits, float64 when every
    other cell is a number, text otherwise (integers beyond int64 stay text, so
    no digit is lost). Raises :class:`NumberRangeError` for a number too large
    for float64.
    """
    n = len(cells)
    # One string of the column, NUL-separated (a cell never holds NUL), answers "any
    # NULL marker?" and "all numbers?" at C speed; most columns need nothing else.
    joined = "\0" + "\0".join(cells) + "\0"
    if not any(marker in joined for marker in _NULL_NEEDLES):
        numbers = _numbers(cells, joined)
        return (np.array(cells, dtype=str) if numbers is None else numbers), None
    nulls = np.fromiter(map(_NULL_SET.__contains__, cells), dtype=bool, count=n)
    live = [c for c, m in zip(cells, nulls, strict=True) if not m]
    if not live:
        return np.zeros(n, dtype=np.int64), nulls
    numbers = _numbers(live, "\0".join(live))
    if numbers is None:
        return np.array(cells, dtype=str), nulls
    out = np.zeros(n, dtype=numbers.dtype)
    out[~nulls] = numbers
    return out, nulls


def _numbers(live: Sequence[str], joined: str) -> npt.NDArray[Any] | None:
    """``live`` (joined by NUL in ``joined``) as int64 or float64, or None if not all numbers."""
    if not is_decimal_text(joined):
        return None
    try:
        return np.fromiter(map(int, live), dtype=np.int64, count=len(live))
    except OverflowError:
        return None  # an integer beyond int64: text, exact
    except ValueError:
        pass
    try:
        values = np.fromiter(map(float, live), dtype=np.float64, count=len(live))
    except ValueError:
        return None
    infinite = np.flatnonzero(np.isinf(values))
    for index in infinite:
        i = int(index)
        if not infinite_word(live[i]):
            raise NumberRangeError(live[i], i)
    return values


class CheckedLines:
    """The lines of a UTF-8 text file, read one by one in bounded pieces and checked.

    Iterating yields each line as ``str`` (with its line ending, as ``csv``
    wants); :attr:`line` is the number of the last line read. Used for the
    header and for rows that continue past a block (see :class:`CsvRows`).
    """

    def __init__(self, fh: ByteLines, refuse: Refuse, *, line: int = 0) -> None:
        self._fh = fh
        self._refuse = refuse
        self.line = line

    def __iter__(self) -> Iterator[str]:
        while raw := self._fh.readline(MAX_LINE_BYTES + 1):
            self.line += 1
            if self.line == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            yield check_text(raw, self.line, self._refuse)[0]


def check_text(data: bytes, first_line: int, refuse: Refuse) -> tuple[str, int]:
    """``data`` (whole lines from ``first_line`` on) decoded, and its longest line in bytes.

    Raises the error ``refuse`` builds, naming the line, for a NUL byte,
    invalid UTF-8 or a line longer than :data:`MAX_LINE_BYTES`.
    """
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    lengths = np.diff(ends, prepend=-1)
    if not data.endswith(b"\n"):
        lengths = np.append(lengths, len(data) - 1 - (ends[-1] if len(ends) else -1))
    widest = int(lengths.max()) if len(lengths) else 0
    if widest > MAX_LINE_BYTES:
        line = first_line + int(np.argmax(lengths))
        raise refuse(
            f"line {line} is longer than {MAX_LINE_BYTES:,} bytes; a CSV row must fit in "
            f"1 MiB and a cell in {csv.field_size_limit():,} characters (split the values, "
            "or use FITS)",
            None,
        )
    at = data.find(b"\0")
    if at >= 0:
        line = first_line + data.count(b"\n", 0, at)
        raise refuse(
            f"line {line} holds a NUL byte; text files cannot hold NUL: remove it, or check "
            "that the file really is CSV text",
            None,
        )
    try:
        return data.decode(), widest
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise refuse(
            f"line {line} is not UTF-8 text ({exc.reason} at byte {column}); convert the "
            "file to UTF-8",
            None,
        ) from None


class CsvRows:
    """The rows of a CSV file, each with exactly the header's number of cells, in blocks.

    The file is read in blocks of whole lines, each checked at once
    (:func:`check_text`). A block without quotes, carriage returns other than
    CRLF line ends, or blank lines is split with ``str.split``; any other
    block goes through Python's ``csv`` module in strict mode, which may read
    on past the block to finish a quoted cell. Blank lines are skipped.
    :attr:`rows` counts the data rows read and :attr:`line` the lines; every
    refusal names the line its row starts on.
    """

    def __init__(self, fh: ByteLines, refuse: Refuse) -> None:
        self._fh = fh
        self._refuse = refuse
        self.line = 0
        self.rows = 0
        self.width = 0

    def header(self) -> list[str] | None:
        """The first non-blank row (the column names), or ``None`` for an empty file."""
        lines = CheckedLines(self._fh, self._refuse)
        reader = csv.reader(lines, strict=True)
        for record in self._records(reader, 0):
            self.line = lines.line
            self.width = len(record)
            return record
        return None

    def _records(self, reader: Any, first_line: int) -> Iterator[list[str]]:
        end = first_line
        while True:
            start = end + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self._quote_error(str(exc), start) from None
            end = first_line + reader.line_num
            if not record:
                continue
            if self.width and len(record) != self.width:
                raise self._cell_count(len(record), start, self.rows + 1)
            yield record

    def _cell_count(self, cells: int, line: int, row: int) -> Exception:
        return self._refuse(cell_count_message(cells, self.width, line), row)

    def _quote_error(self, reason: str, line: int) -> Exception:
        return self._refuse(quote_message(reason, line), self.rows + 1 if self.width else None)

    def block(self, size: int) -> tuple[list[Sequence[str]], int, int]:
        """The columns of the rows in the next ``size`` bytes or so of whole lines.

        Returns the columns (one sequence of cells per column), the number of
        rows (0 at the end of the file) and the longest line in bytes.
        """
        data = self._fh.read(max(1, size))
        if data and not data.endswith(b"\n"):
            data += self._fh.readline(MAX_LINE_BYTES + 1)
        if not data:
            return [], 0, 0
        first = self.line + 1
        text, widest = check_text(data, first, self._refuse)
        lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        crlf = "\r" in text
        if '"' in text or (crlf and text.count("\r") != text.count("\r\n")):
            return self._slow_block(text, first, lines, widest)
        body = text.replace("\r\n", "\n") if crlf else text
        body = body[:-1] if body.endswith("\n") else body
        if "\n\n" in body or body.startswith("\n"):
            return self._slow_block(text, first, lines, widest)
        per_line = _commas_per_line(data)
        wrong = np.flatnonzero(per_line != self.width - 1)
        if len(wrong):
            bad = int(wrong[0])
            raise self._cell_count(int(per_line[bad]) + 1, first + bad, self.rows + bad + 1)
        width = self.width
        cells = body.replace("\n", ",").split(",")
        limit = csv.field_size_limit()
        if widest > limit:  # only then can a cell be longer than a quoted one may be
            lengths = np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))
            if (lengths > limit).any():
                row = int(np.argmax(lengths > limit)) // width
                raise self._refuse(
                    f"a cell on line {first + row} is longer than {limit:,} characters; "
                    "shorten the cell",
                    self.rows + row + 1,
                )
        self.line += lines
        self.rows += lines
        return [cells[j::width] for j in range(width)], lines, widest

    def _slow_block(
        self, text: str, first: int, lines: int, widest: int
    ) -> tuple[list[Sequence[str]], int, int]:
        parts = text.split("\n")
        block_lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
        more = CheckedLines(self._fh, self._refuse, line=first - 1 + lines)
        reader = csv.reader(itertools.chain(block_lines, more), strict=True)
        rows: list[list[str]] = []
        for record in self._records(reader, first - 1):
            rows.append(record)
            self.rows += 1
            if reader.line_num >= lines:
                break
        self.line = max(first - 1 + reader.line_num, first - 1 + lines)
        if not rows:
            return [[] for _ in range(self.width)], 0, widest
        return [list(c) for c in zip(*rows, strict=True)], len(rows), widest


def _commas_per_line(data: bytes) -> npt.NDArray[np.intp]:
    """The number of commas on each line of ``data`` (which holds no quote)."""
    codes = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(codes == 10)
    if not data.endswith(b"\n"):
        ends = np.append(ends, len(codes))
    return np.diff(np.searchsorted(np.flatnonzero(codes == 44), ends), prepend=0)


def cell_count_message(cells: int, width: int, line: int) -> str:
    """The refusal of a row of ``cells`` cells starting on ``line`` under a header of ``width``."""
    return (
        f"line {line} has {cells} cells but the header has {width}; every row needs exactly "
        "one cell per column (quote cells that hold the delimiter; an empty cell is NULL)"
    )


def quote_message(reason: str, line: int) -> str:
    """The refusal of a row starting on ``line`` that ``csv`` could not split (``reason``)."""
    if "new-line character" in reason:
        return (
            f"line {line} holds a carriage return that does not end a line (old Mac line "
            "ends?); convert the file to \\n or \\r\\n line ends"
        )
    if "field larger than field limit" in reason:
        return (
            f"a cell of the row starting on line {line} is longer than "
            f"{csv.field_size_limit():,} characters (is a quote left open?); close the quote "
            "or shorten the cell"
        )
    return (
        f"line {line}: a quote opened in this row does not close where CSV allows ({reason}); "
        "a quoted cell must end with a quote followed by the delimiter or the line end, and a "
        'quote inside it is written twice ("")'
    )


_ECSV_DELIMITER = re.compile(r"#\s*delimiter:\s*(['\"]?)(.)\1\s*$")


def ecsv_records(lines: Sequence[str], refuse: Refuse) -> list[tuple[int, list[str]]]:
    """The rows after an ECSV file's ``#`` header as (line number, cells), the names row first.

    Split with ``csv`` in strict mode with the delimiter the header declares
    (a space unless it says ``delimiter: ','``); blank and ``#`` lines are
    skipped; every row must have as many cells as the names row.
    """
    delimiter = " "
    for line in lines:
        if not line.startswith("#"):
            break
        match = _ECSV_DELIMITER.match(line.rstrip("\r\n"))
        if match:
            delimiter = match.group(2)
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if not line.startswith("#")]
    reader = csv.reader(
        (line for _, line in numbered),
        delimiter=delimiter,
        strict=True,
        skipinitialspace=delimiter == " ",
    )
    out: list[tuple[int, list[str]]] = []
    used = 0
    while True:
        start = numbered[used][0] if used < len(numbered) else len(lines)
        try:
            record = next(reader)
        except StopIteration:
            return out
        except csv.Error as exc:
            raise refuse(quote_message(str(exc), start), len(out) or None) from None
        used = reader.line_num
        if not record:
            continue
        if out and len(record) != len(out[0][1]):
            raise refuse(cell_count_message(len(record), len(out[0][1]), start), len(out))
        out.append((start, record))
