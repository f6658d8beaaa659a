"""Query results as VOTable (TABLEDATA), CSV or JSON, and DALI error documents.

A result is a list of :class:`Field` and rows of Python values as psycopg
returns them. VOTable output follows DALI: one ``RESOURCE type="results"``
with ``INFO name="QUERY_STATUS"`` (``OK``) before the ``TABLE`` and, when
MAXREC cut the rows, a second one (``OVERFLOW``) after it; an error is a
``RESOURCE type="results"`` whose only ``QUERY_STATUS`` is ``ERROR`` with the
message. Nulls are empty cells (VOTable 1.3+), float NaN/infinities ``NaN``,
``+Inf``, ``-Inf``, timestamps ISO 8601 in UTC (DALI ``timestamp``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape, quoteattr

VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"
VOTABLE_MIME = "application/x-votable+xml"
FORMATS = {"votable": VOTABLE_MIME, "csv": "text/csv", "json": "application/json"}
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

# PostgreSQL type OIDs -> (VOTable datatype, array element?); same rule as skyclass.tap_column.
_SCALARS = {
    16: "boolean",
    20: "long",
    21: "short",
    23: "int",
    26: "long",
    700: "float",
    701: "double",
    1700: "double",
}
_ARRAYS = {1000: "boolean", 1005: "short", 1007: "int", 1016: "long", 1021: "float", 1022: "double"}
_ARRAYS.update({1231: "double"})
_TIMESTAMPS = {1082, 1114, 1184}


@dataclass(frozen=True)
class Field:
    """One result column with its VOTable description."""

    name: str
    datatype: str
    arraysize: str | None = None
    xtype: str | None = None
    unit: str | None = None
    ucd: str | None = None
    description: str | None = None
    float32: bool = False


def field_for(name: str, type_oid: int, meta: dict[str, str | None] | None = None) -> Field:
    """The :class:`Field` of a column of PostgreSQL type ``type_oid``.

    ``meta`` (unit, ucd, description from TAP_SCHEMA) is added when the
    column is a plain column of a published table.
    """
    meta = meta or {}
    if type_oid in _SCALARS:
        datatype, arraysize, xtype = _SCALARS[type_oid], None, None
    elif type_oid in _ARRAYS:
        datatype, arraysize, xtype = _ARRAYS[type_oid], "*", None
    elif type_oid in _TIMESTAMPS:
        datatype, arraysize, xtype = "char", "*", "timestamp"
    else:
        datatype, arraysize, xtype = "char", "*", None
    return Field(
        name=name,
        datatype=datatype,
        arraysize=arraysize,
        xtype=xtype,
        unit=meta.get("unit"),
        ucd=meta.get("ucd"),
        description=meta.get("description"),
        float32=type_oid in (700, 1021),
    )


def _number(value: float, float32: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return format(value, ".9g") if float32 else repr(value)


def _text(value: Any, field: Field) -> str:
    """The TABLEDATA/CSV text of one non-null value."""
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, float):
        return _number(value, field.float32)
    if isinstance(value, Decimal):
        return _number(float(value), False)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return str(value.isoformat(timespec="milliseconds"))
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return " ".join(
            ("NaN" if field.datatype in ("float", "double") else "")
            if v is None
            else _text(v, field)
            for v in value
        )
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _xml_text(text: str) -> str:
    return escape(_INVALID_XML.sub("\ufffd", text))


def _xml_attr(text: str) -> str:
    return quoteattr(_INVALID_XML.sub("\ufffd", text))


def _field_xml(field: Field) -> str:
    attrs = [f"name={_xml_attr(field.name)}", f'datatype="{field.datatype}"']
    if field.arraysize:
        attrs.append(f'arraysize="{field.arraysize}"')
    if field.xtype:
        attrs.append(f'xtype="{field.xtype}"')
    if field.unit:
        attrs.append(f"unit={_xml_attr(field.unit)}")
    if field.ucd:
        attrs.append(f"ucd={_xml_attr(field.ucd)}")
    inner = (
        f"<DESCRIPTION>{_xml_text(field.description)}</DESCRIPTION>" if field.description else ""
    )
    return f"<FIELD {' '.join(attrs)}>{inner}</FIELD>" if inner else f"<FIELD {' '.join(attrs)}/>"


def _header(infos: Sequence[tuple[str, str]]) -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<VOTABLE version="1.4" xmlns="{VOTABLE_NS}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">',
        '<RESOURCE type="results">',
    ]
    lines += [f"<INFO name={_xml_attr(n)} value={_xml_attr(v)}/>" for n, v in infos]
    return "\n".join(lines) + "\n"


def votable(
    fields: Sequence[Field],
    rows: Sequence[Sequence[Any]],
    *,
    overflow: bool,
    infos: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A DALI result VOTable of ``rows``; ``overflow`` adds the trailing OVERFLOW status."""
    out = io.StringIO()
    out.write(_header([("QUERY_STATUS", "OK"), *infos]))
    out.write("<TABLE>\n")
    for field in fields:
        out.write(_field_xml(field) + "\n")
    out.write("<DATA><TABLEDATA>\n")
    for row in rows:
        out.write("<TR>")
        for value, field in zip(row, fields, strict=True):
            out.write("<TD/>" if value is None else f"<TD>{_xml_text(_text(value, field))}</TD>")
        out.write("</TR>\n")
    out.write("</TABLEDATA></DATA>\n</TABLE>\n")
    if overflow:
        out.write('<INFO name="QUERY_STATUS" value="OVERFLOW"/>\n')
    out.write("</RESOURCE>\n</VOTABLE>\n")
    return out.getvalue().encode("utf-8")


def error_votable(message: str) -> bytes:
    """A DALI error document: ``QUERY_STATUS`` ``ERROR`` with ``message``."""
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<VOTABLE version="1.4" xmlns="{VOTABLE_NS}">\n'
        '<RESOURCE type="results">\n'
        f'<INFO name="QUERY_STATUS" value="ERROR">{_xml_text(message)}</INFO>\n'
        "</RESOURCE>\n</VOTABLE>\n"
    )
    return text.encode("utf-8")


def csv_bytes(fields: Sequence[Field], rows: Sequence[Sequence[Any]]) -> bytes:
    """RFC 4180 CSV with a header line of the column names."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([f.name for f in fields])
    for row in rows:
        writer.writerow(
            ["" if v is None else _text(v, f) for v, f in zip(row, fields, strict=True)]
        )
    return out.getvalue().encode("utf-8")


def _json_value(value: Any, field: Field) -> Any:
    if value is None:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return _json_value(float(value), field)
    if isinstance(value, dt.date):
        return _text(value, field)
    if isinstance(value, list | tuple):
        return [_json_value(v, field) for v in value]
    if isinstance(value, bool | int | str | dict):
        return value
    return str(value)


def json_bytes(fields: Sequence[Field], rows: Sequence[Sequence[Any]], *, overflow: bool) -> bytes:
    """``{"metadata": [...], "data": [[...]], "status": ...}``; NaN and infinities are null."""
    doc = {
        "metadata": [
            {k: v for k, v in vars(f).items() if v is not None and k != "float32"} for f in fields
        ],
        "data": [[_json_value(v, f) for v, f in zip(row, fields, strict=True)] for row in rows],
        "status": "OVERFLOW" if overflow else "OK",
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def render(
    fmt: str, fields: Sequence[Field], rows: Sequence[Sequence[Any]], *, overflow: bool
) -> bytes:
    """The result in format ``fmt`` (a key of :data:`FORMATS`)."""
    if fmt == "csv":
        return csv_bytes(fields, rows)
    if fmt == "json":
        return json_bytes(fields, rows, overflow=overflow)
    return votable(fields, rows, overflow=overflow)
