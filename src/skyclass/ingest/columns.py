"""From the file's columns to the catalog table's columns.

Names are lowercased and reduced to ``[a-z0-9_]``; the id, RA and Dec columns
(named or detected) become ``object_id``, ``ra`` and ``dec``; every column
gets the PostgreSQL type that holds its values exactly. A catalog without sky
positions (a training set of magnitudes and redshifts, say) has ``object_id``
and the file's columns only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from skyclass.errors import IngestError
from skyclass.ingest.copy_binary import BIGINT, DOUBLE, TEXT, PgType, pg_type_for
from skyclass.ingest.csvtext import integer_value
from skyclass.ingest.sources import Source, SourceColumn

RA_NAMES = ("ra", "raj2000", "ra_icrs", "alpha", "radeg")
DEC_NAMES = ("dec", "dej2000", "decj2000", "de_icrs", "delta", "dedeg")
ID_NAMES = ("object_id", "objid", "source_id", "id", "objectid")
RESERVED = ("object_id", "ra", "dec")
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes

Role = Literal["id", "ra", "dec", "data"]


@dataclass
class ColumnPlan:
    """One column of the catalog table and where its values come from.

    ``source`` is the file column (None for generated ids); ``pgtype`` may be
    widened while a CSV file is read (int to float, number to text).
    """

    name: str
    source: str | None
    role: Role
    pgtype: PgType
    unit: str | None = None
    ucd: str | None = None
    description: str | None = None

    def comment(self) -> str:
        """The ``COMMENT ON COLUMN`` text: unit; description; source column."""
        parts = [self.unit, self.description]
        if self.source is None:
            parts.append("generated: the 1-based row number in the first file loaded")
        else:
            parts.append(f"source column {self.source}")
        return "; ".join(p for p in parts if p)


@dataclass
class TablePlan:
    """All columns of a catalog table: ``object_id``, then ``ra`` and ``dec`` if it has them.

    ``positions`` is False for a catalog without sky positions; ``ra`` and
    ``dec`` are None then.
    """

    columns: list[ColumnPlan]
    notes: list[str]
    positions: bool = True

    @property
    def id(self) -> ColumnPlan:
        return self.columns[0]

    @property
    def ra(self) -> ColumnPlan | None:
        return self.columns[1] if self.positions else None

    @property
    def dec(self) -> ColumnPlan | None:
        return self.columns[2] if self.positions else None

    @property
    def generated_ids(self) -> bool:
        return self.columns[0].source is None

    def from_file(self) -> list[ColumnPlan]:
        """The columns whose values come from the file, in table order."""
        return [c for c in self.columns if c.source is not None]


def sanitize(name: str) -> str:
    """A column name reduced to lowercase ``[a-z0-9_]``, not starting with a digit."""
    text = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_") or "column"
    if text[0].isdigit():
        text = f"c_{text}"
    return text[:MAX_IDENTIFIER]


def _find(columns: Sequence[SourceColumn], candidates: Sequence[str]) -> SourceColumn | None:
    by_lower: dict[str, SourceColumn] = {}
    for col in columns:
        by_lower.setdefault(col.name.lower(), col)
    for candidate in candidates:
        if candidate in by_lower:
            return by_lower[candidate]
    return None


def _named(source: Source, name: str, option: str) -> SourceColumn:
    for col in source.columns:
        if col.name == name:
            return col
    matches = [c for c in source.columns if c.name.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    raise source.error(
        f"{option} names column {name!r}, which is not in the file; "
        f"available columns: {', '.join(c.name for c in source.columns)}"
    )


def plan_table(
    source: Source,
    *,
    id_column: str | None,
    ra_column: str | None,
    dec_column: str | None,
    positions: bool = True,
) -> TablePlan:
    """Choose the id/RA/Dec columns and the name and type of every column.

    With ``positions`` False the table gets no ``ra`` and ``dec`` (naming
    ``ra_column`` or ``dec_column`` is then an error). Raises
    :class:`IngestError` when RA or Dec cannot be found (listing the available
    columns), when a column type has no PostgreSQL equivalent, or when a file
    column would take the name of ``object_id``, ``ra`` or ``dec``.
    """
    available = ", ".join(c.name for c in source.columns)
    ra: SourceColumn | None = None
    dec: SourceColumn | None = None
    if not positions:
        named = [o for o, v in (("--ra", ra_column), ("--dec", dec_column)) if v]
        if named:
            raise source.error(
                f"--no-positions (positions=False) loads a catalog without sky positions, so "
                f"{' and '.join(named)} cannot be given with it; drop "
                f"{'them' if len(named) > 1 else 'it'}, or drop --no-positions"
            )
    else:
        ra = _named(source, ra_column, "--ra") if ra_column else _find(source.columns, RA_NAMES)
        dec = (
            _named(source, dec_column, "--dec") if dec_column else _find(source.columns, DEC_NAMES)
        )
        missing = [
            f"no {what} column (looked for {', '.join(names)}; name it with {option})"
            for what, col, names, option in (
                ("RA", ra, RA_NAMES, "--ra"),
                ("Dec", dec, DEC_NAMES, "--dec"),
            )
            if col is None
        ]
        if missing:
            raise source.error(
                f"{'; '.join(missing)}; available columns: {available} "
                "(for a catalog without sky positions, use --no-positions)"
            )
    notes: list[str] = []
    if id_column:
        ident: SourceColumn | None = _named(source, id_column, "--id")
    else:
        ident = _find(source.columns, ID_NAMES)
        if ident is not None and not _integer_like(source, ident):
            notes.append(
                f"column {ident.name!r} looks like an id but does not hold integers "
                f"({'text' if ident.dtype.kind in 'USO' else ident.dtype.name}): "
                "kept as a data column"
            )
            ident = None
    if ident is None:
        notes.append("no id column: object_id is generated from the row number in the file")
    chosen = [c for c in (ident, ra, dec) if c is not None]
    if len({c.name for c in chosen}) != len(chosen):
        raise source.error(
            "the same column is chosen for two of id, RA and Dec: "
            f"id={ident.name if ident else None}, RA={ra.name if ra else None}, "
            f"Dec={dec.name if dec else None}"
        )
    for role, col in (("RA", ra), ("Dec", dec)):
        if col is None:
            continue
        if col.shape or col.dtype.kind not in "iufUSO":
            raise source.error(
                f"the {role} column must hold numbers, not {col.dtype}{list(col.shape) or ''}",
                column=col.name,
            )
    if ident is not None:
        _check_id_type(source, ident)

    plans = [
        ColumnPlan(
            "object_id",
            ident.name if ident else None,
            "id",
            BIGINT,
            ident.unit if ident else None,
            ident.ucd if ident else "meta.id;meta.main",
            ident.description if ident else "object id generated by skyclass (file row number)",
        ),
    ]
    if ra is not None and dec is not None:
        plans.append(
            ColumnPlan("ra", ra.name, "ra", DOUBLE, ra.unit or "deg", ra.ucd, ra.description)
        )
        plans.append(
            ColumnPlan("dec", dec.name, "dec", DOUBLE, dec.unit or "deg", dec.ucd, dec.description)
        )
    taken = {p.name: p for p in plans}
    for col in source.columns:
        if any(col is c for c in chosen):
            continue
        name = sanitize(col.name)
        if name in RESERVED and name not in taken:
            # Only a catalog without positions gets here (ra or dec). Such a column
            # is refused rather than stored under a name that every spatial query
            # and reader takes for a sky position.
            raise source.error(
                f"this column would be named {name!r}, which is reserved for sky positions, "
                "but the catalog is loaded without them (--no-positions); load it with "
                "positions (--ra/--dec) or rename the column in the file",
                column=col.name,
            )
        if name in RESERVED:
            owner = taken[name]
            origin = f"the file's {owner.source!r}" if owner.source else "generated ids"
            raise source.error(
                f"this column would be named {name!r}, which holds the {owner.role} "
                f"column ({origin}); choose it with --{_option(owner.role)} {col.name} "
                "or rename it in the file",
                column=col.name,
            )
        base, n = name, 2
        while name in taken:
            suffix = f"_{n}"
            name = base[: MAX_IDENTIFIER - len(suffix)] + suffix
            n += 1
        plan = ColumnPlan(
            name, col.name, "data", _data_type(source, col), col.unit, col.ucd, col.description
        )
        taken[name] = plan
        plans.append(plan)
    return TablePlan(plans, notes, positions=positions)


def _integer_like(source: Source, col: SourceColumn) -> bool:
    if col.shape:
        return False
    if col.dtype.kind in "iu":
        return True
    if not (source.infers_types and col.dtype.kind in "US"):
        return False
    # CSV reads integers beyond int64 as text: such a column is still an id column
    # (and is refused value by value), while names like "SN2020abc" are not.
    values = source.preview(col.name)
    return values is not None and all(integer_value(str(v)) is not None for v in values[:1000])


def _option(role: str) -> str:
    return {"id": "id", "ra": "ra", "dec": "dec"}.get(role, role)


def _check_id_type(source: Source, col: SourceColumn) -> None:
    if col.shape:
        raise source.error("the id column must hold one integer per row", column=col.name)
    if col.dtype.kind == "f":
        raise source.error(
            f"the id column is floating point ({col.dtype.name}); ids must be integers, and "
            "64-bit ids would lose digits in floating point. Omit --id to generate ids",
            column=col.name,
        )
    if col.dtype.kind in "US" and source.infers_types:
        return  # CSV: checked value by value (e.g. ids above 2^63-1 arrive as text)
    if col.dtype.kind not in "iu":
        raise source.error(
            f"the id column must hold integers, not {col.dtype}; omit --id to generate ids",
            column=col.name,
        )


def _data_type(source: Source, col: SourceColumn) -> PgType:
    scalar = pg_type_for(col.dtype)
    if scalar is None:
        raise source.error(
            f"type {col.dtype} has no PostgreSQL equivalent in skyclass", column=col.name
        )
    if not col.shape:
        return scalar
    if len(col.shape) > 1:
        raise source.error(
            f"only 1-D array columns are supported, this one has shape {list(col.shape)}",
            column=col.name,
        )
    if scalar is TEXT or scalar.wire is None:
        raise source.error(f"arrays of {col.dtype} are not supported", column=col.name)
    return scalar.array()


def check_name(catalog: str) -> None:
    """Raise :class:`IngestError` unless ``catalog`` is a valid catalog name."""
    if not isinstance(catalog, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", catalog):
        raise IngestError(
            f"catalog name {catalog!r} is not allowed: use 1 to 63 characters "
            "a-z, 0-9 and _, starting with a letter"
        )
