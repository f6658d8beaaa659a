"""Render query results (astropy Tables) as a text table, CSV, JSON or VOTable.

``table`` is for people (fixed decimals, units under the names, a row count);
the other formats keep every value exactly: floats are written with the
shortest text that reads back to the same double, NULLs become empty CSV
cells, JSON ``null`` and VOTable nulls. Units travel in the JSON column list
and the VOTable ``unit`` attributes; CSV has the names only (the distance
column says ``_arcsec``; RA and Dec are degrees).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyclass.errors import QueryError

if TYPE_CHECKING:
    from astropy.table import Table

FORMATS = ("table", "csv", "json", "votable")
# Decimals shown by the text table (about 1 mas in RA/Dec, 0.1 mas in distance).
_DISPLAY = {"ra": "{:.7f}", "dec": "{:.7f}", "distance_arcsec": "{:.4f}"}


def _cell(value: Any) -> Any:
    """A table cell as a plain Python value; masked and NaN become None."""
    import numpy as np

    if value is np.ma.masked or value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rows(table: Table) -> list[list[Any]]:
    columns = [table[name] for name in table.colnames]
    cells = []
    for i in range(len(table)):
        row = []
        for column in columns:
            masked = getattr(column, "mask", None)
            row.append(None if masked is not None and masked[i] else _cell(column[i]))
        cells.append(row)
    return cells


def _unit(table: Table, name: str) -> str | None:
    unit = table[name].unit
    return None if unit is None else unit.to_string()


def render_text(table: Table) -> str:
    """The human-readable form: aligned columns, units under the names, a row count."""
    shown = table.copy(copy_data=False)
    for name, fmt in _DISPLAY.items():
        if name in shown.colnames:
            shown[name].info.format = fmt
    lines = shown.pformat(max_lines=-1, max_width=-1) if len(shown) else [" ".join(shown.colnames)]
    count = len(table)
    lines.append(f"({count} row{'' if count == 1 else 's'})")
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """CSV with a header row; NULL is an empty cell, floats round-trip exactly."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.colnames)
    for row in _rows(table):
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def render_json(table: Table) -> str:
    """JSON: ``{"meta": ..., "columns": [{name, unit}], "rows": [{name: value}]}``."""
    names = list(table.colnames)
    document = {
        "meta": {key: _cell(value) for key, value in table.meta.items()},
        "columns": [{"name": name, "unit": _unit(table, name)} for name in names],
        "rows": [dict(zip(names, row, strict=True)) for row in _rows(table)],
    }
    return json.dumps(document, indent=1, allow_nan=False) + "\n"


def render_votable(table: Table) -> bytes:
    """A VOTable 1.4 document; units on the fields, the query parameters as INFO elements."""
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    votable = from_table(table)
    resource = votable.resources[0]
    for key, value in table.meta.items():
        resource.infos.append(Info(name=str(key), value=str(value)))
    buffer = io.BytesIO()
    votable.to_xml(buffer)
    return buffer.getvalue()


def render(table: Table, fmt: str) -> bytes:
    """``table`` in format ``fmt`` (one of :data:`FORMATS`) as UTF-8 bytes."""
    if fmt == "table":
        return render_text(table).encode()
    if fmt == "csv":
        return render_csv(table).encode()
    if fmt == "json":
        return render_json(table).encode()
    if fmt == "votable":
        return render_votable(table)
    raise QueryError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")


def write_table(table: Table, fmt: str, output: str | Path | None = None) -> None:
    """Write ``table`` in format ``fmt`` to the file ``output``, or to standard output."""
    import sys

    data = render(table, fmt)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        Path(output).write_bytes(data)
