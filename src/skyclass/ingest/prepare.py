"""Per-chunk validation and cleaning, from file values to encodable fields.

For each chunk: values are converted to the catalog column types (CSV types
are reconciled across chunks), ids and coordinates are checked (invalid rows
raise or, with ``skip``, are dropped and recorded), and NaN, infinities,
sentinels, masked and empty cells become NULL and are counted by reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from skyclass.errors import IngestError
from skyclass.ingest.columns import ColumnPlan, TablePlan
from skyclass.ingest.copy_binary import (
    BOOLEAN,
    DOUBLE,
    NUMERIC20,
    REAL,
    TEXT,
    Field,
    PgType,
    TextValueError,
    array_field,
    fixed_field,
    numeric_field,
    slow_array_field,
    text_field,
)
from skyclass.ingest.csvtext import decimal_value, integer_value
from skyclass.ingest.sources import Chunk, Source

DEFAULT_NULL_VALUES = (-9999.0, 99.0, -99.0)
INT64_MAX = 2**63 - 1
# A CSV text column whose non-NULL values are at least this share numbers is a numeric
# column with bad cells (an error), not a text column.
NUMERIC_SHARE = 0.9
_FLOAT_KINDS = {REAL.sql, DOUBLE.sql}
_INT_KINDS = {"smallint", "integer", "bigint"}


@dataclass(frozen=True)
class Reject:
    """A row left out by ``on_invalid="skip"``: 1-based file row, column, reason, value."""

    row: int
    column: str
    reason: str
    value: str | None


@dataclass(frozen=True)
class Widening:
    """A column whose type had to grow while reading a CSV file."""

    column: ColumnPlan
    old: PgType
    new: PgType


@dataclass
class PreparedChunk:
    """The encodable fields of one chunk, and type changes to apply before sending them.

    ``sort_key`` is set by a loader that sorts rows before sending them (their
    physical order in the catalog table).
    """

    fields: list[Field]
    n_rows: int
    widenings: list[Widening]
    sort_key: npt.NDArray[np.int64] | None = None


class ChunkPreparer:
    """Validate and convert chunks for one ingest; keeps the counts across chunks.

    Parameters
    ----------
    plan
        The catalog table's columns.
    source
        The file (for error messages and whether it infers types).
    null_values
        Float sentinels that become NULL in float data columns.
    skip_invalid
        Drop rows with invalid ids or coordinates instead of raising.
    id_offset
        Added to the file row number to make generated ids.
    """

    def __init__(
        self,
        plan: TablePlan,
        source: Source,
        *,
        null_values: Sequence[float],
        skip_invalid: bool,
        id_offset: int = 0,
    ) -> None:
        self.plan = plan
        self.source = source
        self.null_values = np.asarray(list(null_values), dtype=np.float64)
        self.skip_invalid = skip_invalid
        self.id_offset = id_offset
        self.null_counts: dict[str, dict[str, int]] = {}
        self.rejects: list[Reject] = []
        self.rows_read = 0
        self.rows_accepted = 0
        self._numeric_rows: dict[str, int] = {}

    # -- public -----------------------------------------------------------------
    def prepare(self, chunk: Chunk) -> PreparedChunk:
        """Convert, validate and clean ``chunk`` (raises :class:`IngestError`)."""
        n = chunk.length
        widenings: list[Widening] = []
        values: dict[str, npt.NDArray[Any]] = {}
        masks: dict[str, npt.NDArray[np.bool_] | None] = {}
        for col in self.plan.from_file():
            assert col.source is not None
            raw = chunk.data[col.source]
            mask = chunk.masks.get(col.source)
            if col.role == "id":
                values[col.name], masks[col.name] = self._ids(col, raw, mask, chunk)
            elif col.role in ("ra", "dec"):
                values[col.name], masks[col.name] = self._coordinates(col, raw, mask, chunk)
            else:
                converted, widened = self._data(col, raw, mask, chunk)
                values[col.name], masks[col.name] = converted, mask
                if widened is not None:
                    widenings.append(widened)

        keep = self._validate(values, masks, chunk)
        rows = chunk.start + 1 + np.arange(n, dtype=np.int64)
        if keep is not None:
            rows = rows[keep]
            values = {k: v[keep] for k, v in values.items()}
            masks = {k: (None if m is None else m[keep]) for k, m in masks.items()}
        kept = len(rows)
        if self.plan.generated_ids:
            values["object_id"] = rows + self.id_offset
            masks["object_id"] = None

        fields: list[Field] = []
        for col in self.plan.columns:
            reason = chunk.mask_reasons.get(col.source or "", "masked")
            fields.append(self._field(col, values[col.name], masks[col.name], reason, rows))
        self.rows_read += n
        self.rows_accepted += kept
        return PreparedChunk(fields, kept, widenings)

    # -- conversion ---------------------------------------------------------------
    def _error(self, col: ColumnPlan, message: str, chunk: Chunk, index: int) -> IngestError:
        return self.source.error(message, column=col.source, row=chunk.start + index + 1)

    def _ids(
        self,
        col: ColumnPlan,
        raw: npt.NDArray[Any],
        mask: npt.NDArray[np.bool_] | None,
        chunk: Chunk,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_] | None]:
        live = np.ones(len(raw), dtype=bool) if mask is None else ~mask
        kind = raw.dtype.kind
        if kind == "u" and raw.dtype.itemsize == 8:
            too_big = (raw > np.uint64(INT64_MAX)) & live
            if too_big.any():
                i = int(np.argmax(too_big))
                raise self._error(
                    col,
                    f"id {int(raw[i])} is above 2^63-1, the largest bigint; such ids cannot be "
                    "stored as object_id",
                    chunk,
                    i,
                )
            return raw.astype(np.int64), mask
        if kind in "iu":
            return raw.astype(np.int64), mask
        if kind == "f":
            frac = (raw != np.floor(raw)) & live
            i = int(np.argmax(frac)) if frac.any() else int(np.argmax(live))
            raise self._error(
                col,
                f"the id column holds floating point values from here on ({raw[i]!r}); ids must "
                "be integers and 64-bit ids would lose digits in floating point",
                chunk,
                i,
            )
        if kind in "US":
            out = np.zeros(len(raw), dtype=np.int64)
            uniques, inverse = np.unique(raw, return_inverse=True)
            parsed: list[int | None] = []
            for text in uniques:
                s = text.decode() if isinstance(text, bytes) else str(text)
                parsed.append(integer_value(s))
            for index in np.flatnonzero(live):
                i = int(index)
                value = parsed[int(inverse[i])]
                if value is None:
                    raise self._error(col, f"id {_text(raw[i])!r} is not an integer", chunk, i)
                if not -(2**63) <= value <= INT64_MAX:
                    raise self._error(
                        col,
                        f"id {value} is outside the bigint range (above 2^63-1); such ids "
                        "cannot be stored as object_id",
                        chunk,
                        int(i),
                    )
                out[i] = value
            return out, mask
        raise self._error(col, f"ids must be integers, not {raw.dtype}", chunk, 0)

    def _coordinates(
        self,
        col: ColumnPlan,
        raw: npt.NDArray[Any],
        mask: npt.NDArray[np.bool_] | None,
        chunk: Chunk,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_] | None]:
        if raw.dtype.kind in "iuf":
            return raw.astype(np.float64), mask
        if raw.dtype.kind in "USO":
            numbers, ok = _parse_numbers(raw)
            bad = ~ok if mask is None else (~ok & ~mask)
            if bad.any():
                i = int(np.argmax(bad))
                raise self._error(
                    col,
                    f"not a number: {_text(raw[i])!r} (coordinates must be decimal degrees; "
                    "name such a column with --ra/--dec)",
                    chunk,
                    i,
                )
            return numbers, mask
        raise self._error(col, f"coordinates must be numbers, not {raw.dtype}", chunk, 0)

    def _data(
        self,
        col: ColumnPlan,
        raw: npt.NDArray[Any],
        mask: npt.NDArray[np.bool_] | None,
        chunk: Chunk,
    ) -> tuple[npt.NDArray[Any], Widening | None]:
        kind = raw.dtype.kind
        target = col.pgtype
        if not self.source.infers_types:
            return raw, None
        # CSV: astropy guesses int, float or text per chunk; reconcile with the column.
        widened: Widening | None = None
        if kind in "USO":
            if target is not TEXT:
                self._check_text_in_numbers(
                    col, raw, mask, chunk, self._numeric_rows.get(col.name, 0)
                )
                widened = Widening(col, target, TEXT)
                col.pgtype = TEXT
            else:
                self._check_text_in_numbers(col, raw, mask, chunk, 0)
            return raw, widened
        live = len(raw) if mask is None else int((~mask).sum())
        self._numeric_rows[col.name] = self._numeric_rows.get(col.name, 0) + live
        if target is TEXT:
            return raw.astype(str), None
        if kind == "f" and target.sql in _INT_KINDS:
            widened = Widening(col, target, DOUBLE)
            col.pgtype = DOUBLE
        return raw, widened

    def _check_text_in_numbers(
        self,
        col: ColumnPlan,
        raw: npt.NDArray[Any],
        mask: npt.NDArray[np.bool_] | None,
        chunk: Chunk,
        earlier_numbers: int,
    ) -> None:
        """Raise when nearly all values of a text column are numbers (a numeric column's bad cells).

        "Nearly all" is :data:`NUMERIC_SHARE` of the non-NULL values read so far
        (``earlier_numbers`` counts the rows of earlier chunks, which were numbers):
        a float column with a stray "abc" is refused, while a column mixing
        numbers and names (ZTF's ``ssnamenr``: "124428", "2014WQ412") stays text.
        """
        live = np.ones(len(raw), dtype=bool) if mask is None else ~mask
        idx = np.flatnonzero(live)
        if len(idx) == 0:
            return
        # A cheap look at the first values settles ordinary text columns.
        sample = idx[:200]
        _, sample_ok = _parse_numbers(raw[sample])
        if earlier_numbers == 0 and sample_ok.mean() < 0.5:
            return
        _, ok = _parse_numbers(raw[idx])
        numbers = int(ok.sum()) + earlier_numbers
        if not ok.all() and numbers >= NUMERIC_SHARE * (len(idx) + earlier_numbers):
            i = int(idx[int(np.argmin(ok))])
            raise self._error(
                col,
                f"not a number: {_text(raw[i])!r} in a column of numbers (NULL markers are "
                f"empty, {', '.join(m for m in ('NA', 'N/A', 'null', 'nan', '--'))})",
                chunk,
                i,
            )

    # -- validation -----------------------------------------------------------------
    def _validate(
        self,
        values: dict[str, npt.NDArray[Any]],
        masks: dict[str, npt.NDArray[np.bool_] | None],
        chunk: Chunk,
    ) -> npt.NDArray[np.bool_] | None:
        """Check ids and coordinates; return the rows to keep (None: all)."""
        n = chunk.length
        problems: list[tuple[ColumnPlan, npt.NDArray[np.bool_], npt.NDArray[Any]]] = []
        for col in (self.plan.id, self.plan.ra, self.plan.dec):
            if col is None or col.source is None:
                continue
            v = values[col.name]
            m = masks[col.name]
            masked = np.zeros(n, dtype=bool) if m is None else m
            if col.role == "id":
                if m is not None and m.any():  # an object array per chunk costs: only if needed
                    problems.append((col, masked, np.full(n, "empty", dtype=object)))
                continue
            nan = np.isnan(v) & ~masked
            inf = np.isinf(v) & ~masked
            if col.role == "ra":
                out = ~masked & ~nan & ~inf & ((v < 0) | (v >= 360))
                range_text = "outside [0, 360)"
            else:
                out = ~masked & ~nan & ~inf & ((v < -90) | (v > 90))
                range_text = "outside [-90, 90]"
            bad = masked | nan | inf | out
            if not bad.any():
                continue
            reason = np.full(n, "", dtype=object)
            reason[masked] = "empty"
            reason[nan] = "NaN"
            reason[inf] = "infinite"
            reason[out] = range_text
            problems.append((col, bad, reason))
        problems = [p for p in problems if p[1].any()]
        if not problems:
            return None
        invalid = np.zeros(n, dtype=bool)
        for _, bad, _ in problems:
            invalid |= bad
        if not self.skip_invalid:
            first = int(np.argmax(invalid))
            for col, bad, reason in problems:
                if bad[first]:
                    raise self._error(
                        col, self._describe(col, values, masks, reason, first), chunk, first
                    )
        for i in np.flatnonzero(invalid):
            for col, bad, reason in problems:
                if bad[i]:
                    m = masks[col.name]
                    value = None if (m is not None and m[i]) else _text(values[col.name][i])
                    label = "id" if col.role == "id" else ("RA" if col.role == "ra" else "Dec")
                    self.rejects.append(
                        Reject(
                            chunk.start + int(i) + 1,
                            col.source or col.name,
                            f"{label} {reason[i]}",
                            value,
                        )
                    )
                    break
        return ~invalid

    def _describe(
        self,
        col: ColumnPlan,
        values: dict[str, npt.NDArray[Any]],
        masks: dict[str, npt.NDArray[np.bool_] | None],
        reason: npt.NDArray[Any],
        i: int,
    ) -> str:
        label = {"id": "id", "ra": "RA", "dec": "Dec"}[col.role]
        m = masks[col.name]
        if m is not None and m[i]:
            needed = "an id, RA and Dec" if self.plan.positions else "an id"
            return f"{label} is empty; every row needs {needed} (or use --on-invalid skip)"
        value = _text(values[col.name][i])
        what = (
            f"{label} is {reason[i]}"
            if reason[i] in ("NaN", "infinite")
            else (f"{label} {value} is {reason[i]}")
        )
        return f"{what} (use --on-invalid skip to leave such rows out)"

    # -- NULLs and encoding -------------------------------------------------------------
    def _count(self, col: ColumnPlan, reason: str, hits: npt.NDArray[np.bool_]) -> None:
        count = int(hits.sum())
        if count:
            per = self.null_counts.setdefault(col.name, {})
            per[reason] = per.get(reason, 0) + count

    def _field(
        self,
        col: ColumnPlan,
        values: npt.NDArray[Any],
        mask: npt.NDArray[np.bool_] | None,
        mask_reason: str,
        rows: npt.NDArray[np.int64],
    ) -> Field:
        pgtype = col.pgtype
        if pgtype.is_array:
            return self._array_field(col, values, mask, mask_reason)
        nulls = np.zeros(len(values), dtype=bool) if mask is None else mask.copy()
        self._count(col, mask_reason, nulls)
        if pgtype is TEXT:
            if values.dtype.kind == "O":
                values = np.array(
                    ["" if skip else str(v) for v, skip in zip(values, nulls, strict=True)]
                )
            empty = (np.strings.str_len(values) == 0) & ~nulls
            self._count(col, "empty", empty)
            nulls |= empty
            try:
                return text_field(values, nulls)
            except TextValueError as exc:
                raise self.source.error(
                    str(exc), column=col.source, row=int(rows[exc.row])
                ) from None
        if pgtype.sql in _FLOAT_KINDS and col.role == "data":
            values = values.astype(np.dtype(pgtype.wire).newbyteorder("="), copy=False)
            for reason, hits in (
                ("nan", np.isnan(values)),
                ("inf", np.isinf(values)),
                ("sentinel", np.isin(values, self.null_values.astype(values.dtype))),
            ):
                hits &= ~nulls
                self._count(col, reason, hits)
                nulls |= hits
        if pgtype is NUMERIC20:
            return numeric_field(values, nulls)
        if pgtype is BOOLEAN:
            values = values.astype(bool)
        return fixed_field(values, pgtype, nulls)

    def _array_field(
        self,
        col: ColumnPlan,
        values: npt.NDArray[Any],
        mask: npt.NDArray[np.bool_] | None,
        mask_reason: str,
    ) -> Field:
        element = col.pgtype.element
        assert element is not None
        values = values.reshape(len(values), -1)
        if mask is None or not mask.any():
            return array_field(values, element, None)
        mask = mask.reshape(len(values), -1)
        row_null: npt.NDArray[np.bool_] = np.asarray(mask.all(axis=1), dtype=bool)
        self._count(col, mask_reason, row_null)
        partial = mask & ~row_null[:, None]
        if not partial.any():
            return array_field(values, element, row_null)
        return slow_array_field(values, element, partial, row_null)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _parse_numbers(raw: npt.NDArray[Any]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Parse text values as floats; returns the numbers and which values parsed."""
    if len(raw) == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    uniques, inverse = np.unique(
        raw.astype(str) if raw.dtype.kind == "O" else raw, return_inverse=True
    )
    numbers = np.zeros(len(uniques))
    ok = np.zeros(len(uniques), dtype=bool)
    for i, text in enumerate(uniques):
        s = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        value = decimal_value(s)
        if value is not None:
            numbers[i] = value
            ok[i] = True
    return numbers[inverse], ok[inverse]
