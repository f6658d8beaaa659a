"""Strict reading of delimited text: checked lines, exact rows and one number grammar.

Nothing here touches the database. :class:`CheckedLines` reads a UTF-8 file
line by line in bounded pieces (a byte-order mark is dropped; a NUL byte,
invalid UTF-8 or a line longer than :data:`MAX_LINE_BYTES` is refused with its
line number); :class:`Records` splits those lines into rows with Python's
``csv`` module in strict mode, refusing a row whose cell count differs from the
header's and a quote that does not close where CSV allows; :func:`typed_column`
turns one column of cells into an int64, float64 or text array under the
number grammar of :func:`is_decimal_text`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

# Cells that mean "no value" in CSV files; they become NULL, never text.
CSV_NULL_MARKERS = ("", "NA", "N/A", "null", "NULL", "nan", "NaN", "--")
_NULL_SET = frozenset(CSV_NULL_MARKERS)

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
    nulls = np.fromiter(map(_NULL_SET.__contains__, cells), dtype=bool, count=n)
    mask = nulls if nulls.any() else None
    live: Sequence[str] = (
        cells if mask is None else [c for c, m in zip(cells, nulls, strict=True) if not m]
    )
    if not live:
        return np.zeros(n, dtype=np.int64), mask
    numbers = _numbers(live)
    if numbers is None:
        return np.array(cells, dtype=str), mask
    if mask is None:
        return numbers, None
    out = np.zeros(n, dtype=numbers.dtype)
    out[~nulls] = numbers
    return out, mask


def _numbers(live: Sequence[str]) -> npt.NDArray[Any] | None:
    if not is_decimal_text("\0".join(live)):
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
        word = live[i].strip(" \t").lstrip("+-").lower()
        if word not in _INFINITY_WORDS:
            raise NumberRangeError(live[i], i)
    return values


class CheckedLines:
    """The lines of a UTF-8 text file, read in bounded pieces and checked one by one.

    Iterating yields each line as ``str`` (with its line ending, as ``csv``
    wants). :attr:`line` is the number of the last line read and
    :attr:`widest` the longest line in bytes since :meth:`reset_widest`.
    """

    def __init__(self, fh: ByteLines, refuse: Refuse) -> None:
        self._fh = fh
        self._refuse = refuse
        self.line = 0
        self.widest = 1

    def reset_widest(self) -> None:
        """Start measuring the widest line anew (at each chunk)."""
        self.widest = 1

    def __iter__(self) -> Iterator[str]:
        readline = self._fh.readline
        while raw := readline(MAX_LINE_BYTES + 1):
            self.line += 1
            if len(raw) > MAX_LINE_BYTES:
                raise self._refuse(
                    f"line {self.line} is longer than {MAX_LINE_BYTES:,} bytes; a CSV row must "
                    "fit in 1 MiB and a cell in "
                    f"{csv.field_size_limit():,} characters (split the values or use FITS)",
                    None,
                )
            if self.line == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if b"\0" in raw:
                at = raw.index(b"\0") + 1
                raise self._refuse(
                    f"line {self.line} holds a NUL byte (at byte {at}); text "
                    "files cannot hold NUL: remove it, or check the file is really CSV text",
                    None,
                )
            try:
                text = raw.decode()
            except UnicodeDecodeError as exc:
                raise self._refuse(
                    f"line {self.line} is not UTF-8 text (byte {exc.start + 1}: {exc.reason}); "
                    "convert the file to UTF-8",
                    None,
                ) from None
            self.widest = max(self.widest, len(raw))
            yield text


class Records:
    """The rows of delimited text, each with exactly the header's number of cells.

    Blank lines are skipped. :attr:`rows` counts the data rows read; every
    refusal names the line the faulty row starts on and its data row.
    """

    def __init__(
        self, lines: CheckedLines, refuse: Refuse, *, delimiter: str = ",", **dialect: Any
    ) -> None:
        self.lines = lines
        self._refuse = refuse
        self._reader = csv.reader(lines, delimiter=delimiter, strict=True, **dialect)
        self._end = 0  # the line the last row ended on
        self.start = 0  # the line the last row started on
        self.rows = 0
        self.width = 0

    def header(self) -> list[str] | None:
        """The first non-blank row (the column names), or ``None`` for an empty file."""
        for record in self._rows():
            self.width = len(record)
            return record
        return None

    def _rows(self) -> Iterator[list[str]]:
        reader = self._reader
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self._quote_error(str(exc)) from None
            self.start = self._end + 1
            self._end = reader.line_num
            if record:
                yield record

    def _quote_error(self, reason: str) -> Exception:
        start = self._end + 1
        row = self.rows + 1 if self.width else None
        if "field larger than field limit" in reason:
            return self._refuse(
                f"a cell of the row starting on line {start} is longer than "
                f"{csv.field_size_limit():,} characters (is a quote left open?); "
                "close the quote or shorten the cell",
                row,
            )
        return self._refuse(
            f"line {start}: a quote opened in this row does not close where CSV allows "
            f"({reason}); a quoted cell must end with a quote followed by the delimiter or "
            'the line end, and a quote inside it is written twice ("")',
            row,
        )

    def data(self, stop: Callable[[int], bool]) -> list[list[str]]:
        """The next data rows, until ``stop(number of rows so far)`` or the end of the file."""
        out: list[list[str]] = []
        width = self.width
        for record in self._rows():
            if len(record) != width:
                raise self._refuse(
                    f"line {self.start} has {len(record)} cells but the header has {width}; every "
                    "row needs exactly one cell per column (quote cells that hold the "
                    "delimiter; an empty cell is NULL)",
                    self.rows + 1,
                )
            out.append(record)
            self.rows += 1
            if stop(len(out)):
                break
        return out
