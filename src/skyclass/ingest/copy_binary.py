"""PostgreSQL binary ``COPY`` encoding, vectorised with numpy.

A binary ``COPY`` stream is a signature, then per row an int16 field count and
per field an int32 length (-1 for NULL) followed by that many big-endian bytes,
then an int16 -1 trailer. Rows here are built all at once: every field gets a
fixed-width slot in a packed numpy record (so whole columns are copied with one
strided assignment), and when some slots are shorter than their width (NULLs,
text) one boolean mask over the bytes squeezes the padding out. No Python code
runs per row, except for array columns whose elements contain NULLs, which are
rare and go through :func:`slow_array_field`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)


@dataclass(frozen=True)
class PgType:
    """A PostgreSQL type skyclass can encode, with its binary wire form.

    ``sql`` is the type as written in DDL, ``oid`` the type's OID (arrays carry
    their element OID on the wire), ``wire`` the big-endian numpy dtype of one
    value (None for variable-width text), ``element`` the element type of an
    array type.
    """

    sql: str
    oid: int
    wire: str | None
    element: PgType | None = None

    @property
    def is_array(self) -> bool:
        return self.element is not None

    def array(self) -> PgType:
        """The one-dimensional array type of this element type."""
        return PgType(f"{self.sql}[]", 0, None, element=self)


BOOLEAN = PgType("boolean", 16, "|b1")
SMALLINT = PgType("smallint", 21, ">i2")
INTEGER = PgType("integer", 23, ">i4")
BIGINT = PgType("bigint", 20, ">i8")
REAL = PgType("real", 700, ">f4")
DOUBLE = PgType("double precision", 701, ">f8")
NUMERIC20 = PgType("numeric(20,0)", 1700, None)
TEXT = PgType("text", 25, None)

SCALAR_TYPES = {
    t.sql: t for t in (BOOLEAN, SMALLINT, INTEGER, BIGINT, REAL, DOUBLE, NUMERIC20, TEXT)
}

# numpy dtype (kind, itemsize) -> PostgreSQL type; chosen so every value fits exactly.
_NUMPY_TO_PG = {
    ("b", 1): BOOLEAN,
    ("i", 1): SMALLINT,
    ("i", 2): SMALLINT,
    ("i", 4): INTEGER,
    ("i", 8): BIGINT,
    ("u", 1): SMALLINT,
    ("u", 2): INTEGER,
    ("u", 4): BIGINT,
    ("u", 8): NUMERIC20,
    ("f", 2): REAL,
    ("f", 4): REAL,
    ("f", 8): DOUBLE,
}


def pg_type_for(dtype: np.dtype[np.generic]) -> PgType | None:
    """The PostgreSQL scalar type that holds every value of ``dtype``, or None.

    Strings (unicode, bytes, and object arrays of strings) map to text; complex,
    extended-precision and other dtypes have no mapping.
    """
    if dtype.kind in "USO":
        return TEXT
    return _NUMPY_TO_PG.get((dtype.kind, dtype.itemsize))


def type_from_sql(sql: str) -> PgType:
    """The :class:`PgType` named by ``sql`` (as stored in ``skyclass.catalog_column``)."""
    if sql.endswith("[]"):
        return type_from_sql(sql[:-2]).array()
    return SCALAR_TYPES[sql]


@dataclass(frozen=True)
class Field:
    """One column of a chunk ready to encode.

    Either fixed width: ``data`` has shape (N,) and any dtype whose itemsize is
    the value width, ``lengths`` is None; or variable width: ``data`` is an
    (N, W) uint8 array of values padded to W bytes and ``lengths`` the int32
    byte lengths. ``nulls`` marks NULL rows (None: no NULLs).
    """

    data: npt.NDArray[np.generic]
    lengths: npt.NDArray[np.int32] | None = None
    nulls: npt.NDArray[np.bool_] | None = None

    def take(self, rows: slice | npt.NDArray[np.intp]) -> Field:
        """The rows ``rows`` (a slice or an array of row indices) of this column."""
        nulls = None
        if self.nulls is not None:
            nulls = self.nulls[rows]
            if not nulls.any():
                nulls = None
        lengths = None if self.lengths is None else self.lengths[rows]
        return Field(self.data[rows], lengths, nulls)


def fixed_field(
    values: npt.NDArray[np.generic], pgtype: PgType, nulls: npt.NDArray[np.bool_] | None = None
) -> Field:
    """A :class:`Field` of a bool/integer/float column converted to ``pgtype``'s wire dtype.

    The caller guarantees that the values fit ``pgtype`` (see :func:`pg_type_for`);
    values under NULL rows are sent nowhere, so they may be anything.
    """
    if pgtype.wire is None:
        raise ValueError(f"{pgtype.sql} is not a fixed-width type")
    wire = np.dtype(pgtype.wire)
    data = values if values.dtype == wire else values.astype(wire)
    return Field(data, None, _none_if_empty(nulls))


def numeric_field(values: npt.NDArray[np.uint64], nulls: npt.NDArray[np.bool_] | None) -> Field:
    """A :class:`Field` of unsigned 64-bit integers as ``numeric(20,0)``.

    Every value is sent as five base-10000 digits with weight 4; the server
    strips the leading zero digits, so the width is fixed (18 bytes).
    """
    values = values.astype(np.uint64, copy=False)
    rec = np.empty(len(values), dtype=_NUMERIC_WIRE)
    rec["ndigits"] = 5
    rec["weight"] = 4
    rec["sign"] = 0
    rec["dscale"] = 0
    rest = values.copy()
    for i in range(4, -1, -1):
        rec["digits"][:, i] = rest % 10000
        rest //= 10000
    return Field(rec, None, _none_if_empty(nulls))


_NUMERIC_WIRE = np.dtype(
    [
        ("ndigits", ">i2"),
        ("weight", ">i2"),
        ("sign", ">i2"),
        ("dscale", ">i2"),
        ("digits", ">i2", 5),
    ]
)


class TextValueError(ValueError):
    """A text value PostgreSQL cannot store; ``row`` is its 0-based index in the chunk."""

    def __init__(self, message: str, row: int) -> None:
        super().__init__(message)
        self.row = row


def text_field(values: npt.NDArray[np.generic], nulls: npt.NDArray[np.bool_] | None) -> Field:
    """A :class:`Field` of a text column from a unicode, bytes or object array.

    Unicode is encoded to UTF-8 (ASCII rows by a plain cast, only the other
    rows through a real encoder); bytes must already be UTF-8. Values under
    NULL rows are ignored. Raises :class:`TextValueError` for a value holding a
    NUL character or invalid UTF-8, which PostgreSQL text cannot store.
    """
    n = len(values)
    if values.dtype.kind == "O":
        skip = np.zeros(n, dtype=bool) if nulls is None else nulls
        values = np.array(["" if s else str(v) for v, s in zip(values, skip, strict=True)])
    if values.dtype.kind == "U":
        padded, lengths = _utf8_from_unicode(values)
    elif values.dtype.kind == "S":
        padded, lengths = _utf8_from_bytes(values)
    else:
        raise TypeError(f"cannot encode dtype {values.dtype} as text")
    live = np.arange(padded.shape[1]) < lengths[:, None]
    if nulls is not None:
        live &= ~nulls[:, None]
    bad = ((padded == 0) & live).any(axis=1)
    if bad.any():
        raise TextValueError("text holds a NUL character", int(np.argmax(bad)))
    return Field(padded, lengths, _none_if_empty(nulls))


def _utf8_from_unicode(
    values: npt.NDArray[Any],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    n = len(values)
    chars = values.dtype.itemsize // 4
    lengths = np.strings.str_len(values).astype(np.int32)
    if chars == 0:
        return np.zeros((n, 0), dtype=np.uint8), lengths
    codes = np.ascontiguousarray(values).view(np.uint32).reshape(n, chars)
    wide = (codes >= 0x80).any(axis=1)
    if not wide.any():
        # numpy's own encoder costs about 1 us per value; a cast of the code points
        # is exact for ASCII, which most catalog text is.
        return codes.astype(np.uint8), lengths
    encoded = np.strings.encode(values[wide], "utf-8")
    width = max(chars, encoded.dtype.itemsize)
    padded = np.zeros((n, width), dtype=np.uint8)
    padded[~wide, :chars] = codes[~wide].astype(np.uint8)
    padded[wide, : encoded.dtype.itemsize] = encoded.view(np.uint8).reshape(
        -1, encoded.dtype.itemsize
    )
    lengths[wide] = np.strings.str_len(encoded)
    return padded, lengths


def _utf8_from_bytes(
    values: npt.NDArray[Any],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    n = len(values)
    width = values.dtype.itemsize
    lengths = np.strings.str_len(values).astype(np.int32)
    if width == 0:
        return np.zeros((n, 0), dtype=np.uint8), lengths
    padded = np.ascontiguousarray(values).view(np.uint8).reshape(n, width)
    high = (padded >= 0x80).any(axis=1)
    for row in np.flatnonzero(high):
        try:
            bytes(values[row]).decode("utf-8")
        except UnicodeDecodeError:
            raise TextValueError("text is not valid UTF-8", int(row)) from None
    return padded, lengths


def array_field(
    values: npt.NDArray[np.generic],
    element: PgType,
    nulls: npt.NDArray[np.bool_] | None,
) -> Field:
    """A :class:`Field` of a 1-D array column with no NULL elements (shape (N, k)).

    Each value is a complete PostgreSQL array: one dimension of k elements
    with lower bound 1, every element of fixed width.
    """
    if element.wire is None:
        raise ValueError(f"arrays of {element.sql} are not supported")
    n, k = values.shape
    wire = np.dtype(element.wire)
    if k == 0:
        rec = np.zeros(n, dtype=np.dtype([("hdr", ">i4", (3,))]))
        rec["hdr"] = (0, 0, element.oid)
        return Field(rec, None, _none_if_empty(nulls))
    dtype = np.dtype([("hdr", ">i4", (5,)), ("el", [("len", ">i4"), ("v", wire)], (k,))])
    rec = np.empty(n, dtype=dtype)
    rec["hdr"] = (1, 0, element.oid, k, 1)
    rec["el"]["len"] = wire.itemsize
    rec["el"]["v"] = values
    return Field(rec, None, _none_if_empty(nulls))


def slow_array_field(
    values: npt.NDArray[np.generic],
    element: PgType,
    element_nulls: npt.NDArray[np.bool_],
    nulls: npt.NDArray[np.bool_] | None,
) -> Field:
    """A :class:`Field` of a 1-D array column whose elements may be NULL (per-row Python).

    Used only for array columns with masked elements; ``element_nulls`` has
    the shape of ``values``.
    """
    if element.wire is None:
        raise ValueError(f"arrays of {element.sql} are not supported")
    wire = np.dtype(element.wire)
    n, k = values.shape
    as_wire = values.astype(wire)
    rows: list[bytes] = []
    width = wire.itemsize
    for r in range(n):
        has_null = bool(element_nulls[r].any())
        parts = [struct.pack(">iiiii", 1, int(has_null), element.oid, k, 1)]
        # Slice the row's bytes: a numpy scalar would come out in native byte order.
        row = as_wire[r].tobytes()
        for j in range(k):
            if element_nulls[r, j]:
                parts.append(b"\xff\xff\xff\xff")
            else:
                parts.append(struct.pack(">i", width) + row[j * width : (j + 1) * width])
        rows.append(b"".join(parts))
    longest = max((len(b) for b in rows), default=0)
    padded = np.zeros((n, longest), dtype=np.uint8)
    lengths = np.zeros(n, dtype=np.int32)
    for r, blob in enumerate(rows):
        padded[r, : len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        lengths[r] = len(blob)
    return Field(padded, lengths, _none_if_empty(nulls))


def _none_if_empty(nulls: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.bool_] | None:
    if nulls is None or not nulls.any():
        return None
    return nulls


def encode_rows(fields: Sequence[Field], n_rows: int) -> npt.NDArray[np.uint8]:
    """Encode ``n_rows`` rows of ``fields`` as binary COPY tuples (no signature, no trailer).

    Returns a flat uint8 array; prepend :data:`COPY_SIGNATURE` to the first
    chunk of a COPY and append :data:`COPY_TRAILER` after the last.
    """
    layout: list[tuple[str, np.dtype[np.generic]]] = [("n", np.dtype(">i2"))]
    for i, field in enumerate(fields):
        if len(field.data) != n_rows:
            raise ValueError(f"field {i} has {len(field.data)} rows, expected {n_rows}")
        layout.append((f"l{i}", np.dtype(">i4")))
        if field.lengths is None:
            layout.append((f"v{i}", field.data.dtype))
        else:
            layout.append((f"v{i}", np.dtype((np.uint8, (field.data.shape[1],)))))
    record = np.dtype(layout)  # packed: no alignment padding between fields
    rec = np.empty(n_rows, dtype=record)
    rec["n"] = len(fields)
    keep: npt.NDArray[np.bool_] | None = None
    for i, field in enumerate(fields):
        offset = record.fields[f"v{i}"][1]  # type: ignore[index]
        rec[f"v{i}"] = field.data
        if field.lengths is None:
            width = field.data.dtype.itemsize
            if field.nulls is None:
                rec[f"l{i}"] = width
                continue
            rec[f"l{i}"] = np.where(field.nulls, -1, width)
            if keep is None:
                keep = np.ones((n_rows, record.itemsize), dtype=bool)
            keep[field.nulls, offset : offset + width] = False
        else:
            width = field.data.shape[1]
            lengths = field.lengths
            if field.nulls is not None:
                lengths = np.where(field.nulls, -1, lengths)
            rec[f"l{i}"] = lengths
            if keep is None:
                keep = np.ones((n_rows, record.itemsize), dtype=bool)
            keep[:, offset : offset + width] = np.arange(width) < lengths[:, None]
    raw = rec.view(np.uint8)
    if keep is None:
        return raw.reshape(-1)
    return raw.reshape(n_rows, record.itemsize)[keep]
