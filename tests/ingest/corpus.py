"""Small catalog files written by the tests (fixed seed): clean ones and broken variants.

Every writer takes the same column dict (``id``, ``ra``, ``dec``, ``mag``,
``name``) so one change (a bad value in a given row) can be written as CSV,
ECSV, FITS and VOTable alike. Values are given as Python objects; a ``str`` in a
numeric column is written verbatim where the format allows it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from astropy.io import fits

N_ROWS = 50


def clean_columns(seed: int = 7, n: int = N_ROWS, first_id: int = 1) -> dict[str, list[Any]]:
    """A valid small catalog: integer ids, coordinates, a float32 magnitude and a name."""
    rng = np.random.default_rng(seed)
    return {
        "id": list(range(first_id, first_id + n)),
        "ra": [float(v) for v in rng.uniform(0, 360, n)],
        "dec": [float(v) for v in rng.uniform(-90, 90, n)],
        "mag": [float(np.float32(v)) for v in rng.uniform(14, 24, n)],
        "name": [f"src{i:04d}" for i in range(first_id, first_id + n)],
    }


def with_value(
    columns: dict[str, list[Any]], column: str, row: int, value: Any
) -> dict[str, list[Any]]:
    """A copy of ``columns`` with the 1-based data ``row`` of ``column`` set to ``value``."""
    out = {k: list(v) for k, v in columns.items()}
    out[column][row - 1] = value
    return out


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv(path: Path, columns: dict[str, list[Any]]) -> Path:
    """Write ``columns`` as CSV with a header row (values verbatim)."""
    names = list(columns)
    lines = [",".join(names)]
    for i in range(len(columns[names[0]])):
        lines.append(",".join(_csv_cell(columns[n][i]) for n in names))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_fits(path: Path, columns: dict[str, list[Any]]) -> Path:
    """Write ``columns`` as a FITS binary table (int64 ids, float64 ra/dec, float32 mag).

    A ``str`` anywhere in a column turns that column into text (FITS has no other
    way to hold one).
    """
    cols = []
    for name, values in columns.items():
        if any(isinstance(v, str) for v in values):
            width = max(len(str(v)) for v in values)
            cols.append(
                fits.Column(name=name, format=f"{width}A", array=np.array(values, dtype=str))
            )
        elif name == "id":
            cols.append(fits.Column(name=name, format="K", array=np.array(values, dtype=np.int64)))
        elif name == "mag":
            cols.append(
                fits.Column(name=name, format="E", array=np.array(values, dtype=np.float32))
            )
        else:
            cols.append(
                fits.Column(name=name, format="D", array=np.array(values, dtype=np.float64))
            )
    fits.BinTableHDU.from_columns(cols).writeto(path)
    return path


_VOT_TYPES = {"id": "long", "ra": "double", "dec": "double", "mag": "float", "name": "char"}


def write_votable(
    path: Path, columns: dict[str, list[Any]], *, unclosed_row: int | None = None
) -> Path:
    """Write ``columns`` as a VOTable 1.4 TABLEDATA file (values verbatim).

    ``unclosed_row`` leaves one ``<TD>`` of that 1-based row without its end tag.
    """
    names = list(columns)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">',
        "<RESOURCE><TABLE>",
    ]
    for name in names:
        extra = ' arraysize="*"' if _VOT_TYPES[name] == "char" else ""
        unit = ' unit="deg"' if name in ("ra", "dec") else (' unit="mag"' if name == "mag" else "")
        lines.append(f'<FIELD name="{name}" datatype="{_VOT_TYPES[name]}"{extra}{unit}/>')
    lines.append("<DATA><TABLEDATA>")
    for i in range(len(columns[names[0]])):
        cells = []
        for j, name in enumerate(names):
            value = columns[name][i]
            text = (
                "" if value is None else (repr(value) if isinstance(value, float) else str(value))
            )
            close = "" if (unclosed_row == i + 1 and j == 1) else "</TD>"
            cells.append(f"<TD>{text}{close}")
        lines.append("<TR>" + "".join(cells) + "</TR>")
    lines += ["</TABLEDATA></DATA>", "</TABLE></RESOURCE>", "</VOTABLE>"]
    path.write_text("\n".join(lines) + "\n")
    return path


_ECSV_TYPES = {"id": "int64", "ra": "float64", "dec": "float64", "mag": "float32", "name": "string"}


def _ecsv_cell(value: Any) -> str:
    if value is None:
        return '""'
    text = repr(value) if isinstance(value, float) else str(value)
    if text == "" or any(c in text for c in ' "\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_ecsv(path: Path, columns: dict[str, list[Any]]) -> Path:
    """Write ``columns`` as ECSV 1.0, space-delimited (values verbatim, quoted where needed)."""
    names = list(columns)
    lines = ["# %ECSV 1.0", "# ---", "# datatype:"]
    lines += [f"# - {{name: {n}, datatype: {_ECSV_TYPES.get(n, 'string')}}}" for n in names]
    lines += ["# schema: astropy-2.0", " ".join(names)]
    for i in range(len(columns[names[0]])):
        lines.append(" ".join(_ecsv_cell(columns[n][i]) for n in names))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


WRITERS: dict[str, tuple[str, Callable[[Path, dict[str, list[Any]]], Path]]] = {
    "csv": (".csv", write_csv),
    "fits": (".fits", write_fits),
    "votable": (".vot", write_votable),
    "ecsv": (".ecsv", write_ecsv),
}


def write(directory: Path, stem: str, fmt: str, columns: dict[str, list[Any]]) -> Path:
    """Write ``columns`` in format ``fmt`` (csv, fits, votable, ecsv) to ``directory/stem.ext``."""
    ext, writer = WRITERS[fmt]
    return writer(directory / f"{stem}{ext}", columns)


def snapshot(url: str) -> dict[str, Any]:
    """Everything an ingest may touch: registry rows, catalog tables and their relations."""
    out: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        for table, order in (
            ("catalog", "catalog_id"),
            ("catalog_column", "catalog_id, position"),
            ("catalog_load", "load_id"),
            ("ingest_reject", "load_id, row_number"),
        ):
            out[table] = conn.execute(f"SELECT * FROM skyclass.{table} ORDER BY {order}").fetchall()
        relations = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'catalogs' ORDER BY 1"
        ).fetchall()
        out["relations"] = relations
        for name, kind in relations:
            if kind == "r":
                out[f"table {name}"] = conn.execute(
                    f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY object_id)) "
                    f'FROM catalogs."{name}" t'
                ).fetchone()
    return out


def edit_line(path: Path, line: int, edit: Callable[[bytes], bytes]) -> Path:
    """Replace 1-based ``line`` of ``path`` (without its line end) by ``edit(line)``."""
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = edit(lines[line - 1])
    path.write_bytes(b"\n".join(lines))
    return path
