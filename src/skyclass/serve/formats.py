"""Result tables and how they are written: JSON, CSV and VOTable (TABLEDATA).

The VOTable writer is small and explicit on purpose: Simple Cone Search needs
UCD1 words (``ID_MAIN``...) on exactly one field each, ``INFO`` elements in
fixed places and empty cells for NULL, and it is on the hot path of the load
benchmark.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

VOTABLE_TYPE = "application/x-votable+xml"
# PostgreSQL type oids -> VOTable datatype (anything else is written as text)
OID_DATATYPE = {
    16: "boolean",
    20: "long",
    21: "short",
    23: "int",
    700: "float",
    701: "double",
    1700: "double",
}


@dataclass(frozen=True)
class Column:
    """One output column: its name, VOTable datatype and optional UCD, unit and description."""

    name: str
    datatype: str = "char"
    ucd: str = ""
    unit: str = ""
    description: str = ""


@dataclass
class Table:
    """Rows with their columns, plus INFO notes (name -> value) for VOTable output."""

    columns: list[Column]
    rows: list[Sequence[Any]]
    infos: list[tuple[str, str]] = field(default_factory=list)
    next_url: str | None = None


def _plain(value: Any) -> Any:
    """A JSON-safe value: non-finite floats become null, times ISO text, arrays lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return _plain(float(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes | memoryview):
        return None
    return value


def to_json(document: Any) -> bytes:
    """``document`` as compact JSON (NaN and infinities as null)."""
    return json.dumps(_plain(document), allow_nan=False, separators=(",", ":")).encode()


def table_json(table: Table) -> dict[str, Any]:
    """A table as ``{"columns": [...], "rows": [{name: value}], "next": url}``."""
    names = [c.name for c in table.columns]
    return {
        "columns": [
            {k: v for k, v in vars(c).items() if v != "" or k == "name"} for c in table.columns
        ],
        "rows": [dict(zip(names, row, strict=True)) for row in table.rows],
        "next": table.next_url,
        **{name: value for name, value in table.infos if name in ("truncated",)},
    }


def table_csv(table: Table) -> bytes:
    """A table as CSV with a header line; NULL is an empty cell, arrays as JSON text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.name for c in table.columns])
    for row in table.rows:
        writer.writerow(
            [
                ""
                if v is None
                else json.dumps(_plain(v))
                if isinstance(v, list | dict)
                else _cell(v)
                for v in row
            ]
        )
    return out.getvalue().encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, float | decimal.Decimal):
        x = float(value)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "+Inf" if x > 0 else "-Inf"
        return repr(x)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return " ".join(_cell(v) for v in value)
    return str(value)


def _field(column: Column) -> str:
    attrs = f"name={quoteattr(column.name)} datatype={quoteattr(column.datatype)}"
    if column.datatype == "char":
        attrs += ' arraysize="*"'
    if column.ucd:
        attrs += f" ucd={quoteattr(column.ucd)}"
    if column.unit:
        attrs += f" unit={quoteattr(column.unit)}"
    if column.description:
        return f"<FIELD {attrs}><DESCRIPTION>{escape(column.description)}</DESCRIPTION></FIELD>"
    return f"<FIELD {attrs}/>"


def _info(name: str, value: str, text: str = "") -> str:
    body = escape(text) if text else ""
    return f"<INFO name={quoteattr(name)} value={quoteattr(value)}>{body}</INFO>"


_XML_BAD = {i: None for i in range(32) if i not in (9, 10, 13)}


def _td(value: Any) -> str:
    if value is None:
        return "<TD/>"
    return f"<TD>{escape(_cell(value).translate(_XML_BAD))}</TD>"


def table_votable(table: Table, *, description: str = "") -> bytes:
    """A table as a VOTable 1.4 document with one RESOURCE (type results) and one TABLE."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n',
        '<RESOURCE type="results">\n',
    ]
    if description:
        parts.append(f"<DESCRIPTION>{escape(description)}</DESCRIPTION>\n")
    parts.extend(_info(n, v) + "\n" for n, v in table.infos)
    parts.append("<TABLE>\n")
    parts.extend(_field(c) + "\n" for c in table.columns)
    parts.append("<DATA><TABLEDATA>\n")
    for row in table.rows:
        parts.append("<TR>" + "".join(_td(v) for v in row) + "</TR>\n")
    parts.append("</TABLEDATA></DATA>\n</TABLE>\n</RESOURCE>\n</VOTABLE>\n")
    return "".join(parts).encode()


def error_votable(message: str) -> bytes:
    """An error VOTable: ``INFO name="Error"`` (SCS 1.03) and ``QUERY_STATUS`` ERROR (DALI)."""
    text = message.translate(_XML_BAD)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        f"<DESCRIPTION>{escape(text)}</DESCRIPTION>\n"
        f"{_info('Error', text)}\n"
        '<RESOURCE type="results">\n'
        f"{_info('QUERY_STATUS', 'ERROR', text)}\n"
        "</RESOURCE>\n</VOTABLE>\n"
    ).encode()
