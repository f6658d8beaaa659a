"""Cone search and cross-match of registered catalogs.

Both run in the database (``skyclass.cone_search`` and ``skyclass.crossmatch``,
migration 0002) and come back as an :class:`astropy.table.Table` whose columns
carry units, so results print, convert and save (VOTable, FITS, ECSV) with
astropy directly.

Units: a radius given as a number is in **degrees**; a string must say its
unit (``10arcsec``, ``10"``, ``1.5arcmin``, ``2'``, ``0.1deg``), and so must
every radius on the command line, because a bare ``1`` meaning a degree where
an arcsecond was meant is a 3600-fold mistake. Coordinates are degrees, or
sexagesimal strings (RA in hours: ``12:30:00``, ``12h30m00s``; Dec in degrees:
``+10:00:00``, ``-5d30m``).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors, sql

from skyclass.db.connect import connect
from skyclass.db.schema import NAME_PATTERN
from skyclass.errors import CatalogNotFoundError, QueryError
from skyclass.registry.catalogs import find_catalog

if TYPE_CHECKING:
    from astropy.table import Table
    from astropy.units import Quantity

METHODS = ("auto", "cells", "index", "sweep")
_NAME = re.compile(NAME_PATTERN)
# Shorthands astropy's unit parser does not know.
_SYMBOLS = {'"': "arcsec", "''": "arcsec", "'": "arcmin", "\u2033": "arcsec", "\u2032": "arcmin"}
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_INTEGER_TYPES = ("bigint", "integer", "smallint")
_FLOAT_TYPES = ("double precision", "real", "numeric")


def check_catalog_name(name: object) -> str:
    """Return ``name`` if it is a valid catalog name, else raise :class:`QueryError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise QueryError(
            f"catalog name {name!r} is not allowed: catalog names are 1 to 63 characters "
            "a-z, 0-9 and _, starting with a letter (see `skyclass catalog list`)"
        )
    return name


def parse_radius(value: object) -> Quantity:
    """Parse a radius into an astropy angle :class:`~astropy.units.Quantity`.

    A number (int or float) is in degrees; a string needs a unit (``10arcsec``,
    ``10"``, ``1.5arcmin``, ``2'``, ``0.1deg``); an angle Quantity is used as is.
    Negative, NaN, infinite or non-angle values raise :class:`QueryError`.
    """
    import astropy.units as u

    if isinstance(value, u.Quantity):
        quantity = value
    elif isinstance(value, bool):
        raise QueryError(f"radius must be a number or a string with a unit, not {value!r}")
    elif isinstance(value, int | float):
        quantity = float(value) * u.deg
    elif isinstance(value, str):
        quantity = _parse_radius_text(value)
    else:
        raise QueryError(f"radius must be a number or a string with a unit, not {value!r}")
    if quantity.unit is None or quantity.unit.physical_type != "angle":
        raise QueryError(f"radius {value!r} is not an angle (use arcsec, arcmin or deg)")
    if not quantity.isscalar:
        raise QueryError(f"radius must be a single value, not {value!r}")
    degrees = float(quantity.to_value(u.deg))
    if not math.isfinite(degrees) or degrees < 0:
        raise QueryError(f"radius must be a finite angle >= 0, not {value!r}")
    return quantity


def _parse_radius_text(text: str) -> Quantity:
    import astropy.units as u

    stripped = text.strip()
    if _NUMBER.match(stripped):
        raise QueryError(
            f"radius {text!r} has no unit: write it as e.g. {stripped}arcsec, "
            f"{stripped}arcmin or {stripped}deg"
        )
    match = re.fullmatch(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.+)", stripped)
    if match is None:
        raise QueryError(
            f"cannot read radius {text!r}: expected a number and a unit, e.g. 10arcsec"
        )
    number, unit_text = match.groups()
    unit_text = _SYMBOLS.get(unit_text.strip(), unit_text.strip())
    try:
        unit = u.Unit(unit_text, parse_strict="raise")
    except ValueError:
        raise QueryError(
            f"cannot read the unit of radius {text!r}: use arcsec (or \"), arcmin (or ') or deg"
        ) from None
    if unit.physical_type != "angle":
        raise QueryError(
            f"the unit of radius {text!r} is not an angle: use arcsec (or \"), arcmin (or ') or deg"
        )
    return float(number) * unit


def parse_coordinates(ra: object, dec: object) -> tuple[float, float]:
    """Turn RA and Dec into degrees; numbers are degrees, strings may be sexagesimal.

    A string RA that is not a plain number is read in hours (``12:30:00``,
    ``12h30m00s``) unless it names its unit (``187.5d``); a string Dec is read
    in degrees (``+10:00:00``, ``-5d30m``). The result is not range-checked
    here: the database function reports values outside [0, 360) and [-90, 90].
    """
    return _angle(ra, "ra", hours=True), _angle(dec, "dec", hours=False)


def _angle(value: object, what: str, *, hours: bool) -> float:
    import astropy.units as u

    if isinstance(value, bool):
        raise QueryError(f"{what} must be a number of degrees or a string, not {value!r}")
    if isinstance(value, u.Quantity):
        if value.unit is None or value.unit.physical_type != "angle" or not value.isscalar:
            raise QueryError(f"{what} must be a single angle, not {value!r}")
        degrees = float(value.to_value(u.deg))
    elif isinstance(value, int | float):
        degrees = float(value)
    elif isinstance(value, str):
        if _NUMBER.match(value):
            degrees = float(value)
        else:
            from astropy.coordinates import Angle

            try:
                degrees = float(Angle(value, unit=u.hourangle if hours else u.deg).deg)
            except (ValueError, u.UnitsError):
                example = "12:30:00 or 187.5" if hours else "+10:00:00 or -5.25"
                raise QueryError(f"cannot read {what} {value!r}: use e.g. {example}") from None
    else:
        raise QueryError(f"{what} must be a number of degrees or a string, not {value!r}")
    if not math.isfinite(degrees):
        raise QueryError(f"{what} must be finite, not {value!r}")
    return degrees


# -- the catalog's columns ---------------------------------------------------------------
@dataclass(frozen=True)
class CatalogColumn:
    """A column of a catalog table: name, PostgreSQL type and unit (if registered)."""

    name: str
    pg_type: str
    unit: str | None


@dataclass(frozen=True)
class _Catalog:
    name: str
    schema: str
    table: str
    columns: dict[str, CatalogColumn]


def _catalog(conn: psycopg.Connection[Any], name: str) -> _Catalog:
    """The registered catalog ``name``, refused unless it has sky positions."""
    found = find_catalog(conn, name)
    catalog_id, schema, table, ra_column = (
        found.catalog_id,
        found.schema,
        found.table,
        found.ra_column,
    )
    if ra_column is None:
        # A catalog loaded without sky positions: let the SQL function refuse it
        # now (SQLSTATE 22023, turned into a QueryError by _database_errors), so
        # the message is the database's own and a column list is not judged
        # against a catalog that cannot be queried.
        conn.execute("SELECT skyclass._catalog_table(%s)", (name,))
        # Reached only if the database's function does not check (an older schema).
        raise QueryError(f"catalog {name} has no sky positions")
    # The table itself is the truth for column names and types; the registry
    # adds the units.
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), cc.unit "
        "FROM pg_attribute AS a "
        "LEFT JOIN skyclass.catalog_column AS cc "
        "  ON cc.catalog_id = %s AND cc.column_name = a.attname "
        "WHERE a.attrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass "
        "  AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (catalog_id, schema, table),
    ).fetchall()
    columns = {r[0]: CatalogColumn(r[0], r[1], r[2]) for r in rows}
    return _Catalog(name, schema, table, columns)


def _extra_columns(catalog: _Catalog, columns: Sequence[str] | str | None) -> list[CatalogColumn]:
    if columns is None:
        return []
    names = columns.split(",") if isinstance(columns, str) else list(columns)
    chosen: list[CatalogColumn] = []
    for raw in names:
        if not isinstance(raw, str):
            raise QueryError(f"column names must be strings, not {raw!r}")
        name = raw.strip()
        if not name:
            continue
        if name not in catalog.columns:
            available = ", ".join(c for c in catalog.columns if c not in ("object_id", "ra", "dec"))
            raise QueryError(
                f"catalog {catalog.name!r} has no column {name!r}; its columns are: {available}"
            )
        if name in ("object_id", "ra", "dec") or any(c.name == name for c in chosen):
            continue  # always returned, or already asked for
        chosen.append(catalog.columns[name])
    return chosen


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    """Turn the SQL functions' errors into skyclass errors with the server's message."""
    try:
        yield
    except errors.UndefinedTable as exc:
        raise CatalogNotFoundError(_message(exc)) from None
    except psycopg.DataError as exc:  # SQLSTATE class 22: bad argument values
        raise QueryError(_message(exc)) from None
    except errors.FeatureNotSupported as exc:  # 0A000: method sweep without the extension
        raise QueryError(_message(exc)) from None


def _message(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary or str(exc)
    if diag.message_hint:
        text += f" ({diag.message_hint})"
    return text


# -- building the result -------------------------------------------------------------------
def _column(name: str, values: list[Any], pg_type: str, unit: str | None) -> Any:
    import astropy.units as u
    import numpy as np
    from astropy.table import Column, MaskedColumn

    missing = [v is None for v in values]
    if pg_type in _INTEGER_TYPES:
        data: Any = np.array([0 if v is None else v for v in values], dtype=np.int64)
    elif pg_type in _FLOAT_TYPES:
        data = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    elif pg_type == "boolean":
        data = np.array([bool(v) for v in values], dtype=bool)
    else:
        data = np.array(["" if v is None else str(v) for v in values], dtype=str)
    parsed = u.Unit(unit, parse_strict="silent") if unit else None
    if any(missing):
        return MaskedColumn(data, name=name, mask=missing, unit=parsed)
    return Column(data, name=name, unit=parsed)


def _table(
    names: Sequence[str],
    pg_types: Sequence[str],
    units: Sequence[str | None],
    rows: Sequence[tuple[Any, ...]],
    meta: dict[str, Any],
) -> Table:
    from astropy.table import Table

    columns = [
        _column(name, [row[i] for row in rows], pg_type, unit)
        for i, (name, pg_type, unit) in enumerate(zip(names, pg_types, units, strict=True))
    ]
    return Table(columns, meta=meta)


# -- the queries ---------------------------------------------------------------------------
def cone_search(
    catalog: str,
    ra: float | str | Quantity,
    dec: float | str | Quantity,
    radius: float | str | Quantity,
    *,
    columns: Sequence[str] | str | None = None,
    limit: int | None = None,
    url: str | None = None,
) -> Table:
    """Objects of ``catalog`` within ``radius`` of (``ra``, ``dec``), nearest first.

    Returns an astropy Table with ``object_id``, ``ra`` and ``dec`` (deg),
    ``distance_arcsec`` (arcsec) and the extra catalog ``columns`` asked for (a
    list or a comma-separated string), at most ``limit`` rows, ordered by
    distance then object id. A numeric radius is in degrees, a string needs a
    unit (``10arcsec``, ``1.5arcmin``, ``0.1deg``); the radius may be 0 (exact
    position) to 10 degrees. Raises :class:`QueryError` for bad arguments or a
    catalog without sky positions, and :class:`CatalogNotFoundError` for an
    unknown catalog.
    """
    import astropy.units as u

    name = check_catalog_name(catalog)
    ra_deg, dec_deg = parse_coordinates(ra, dec)
    radius_deg = float(parse_radius(radius).to_value(u.deg))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise QueryError(f"limit must be a positive integer, not {limit!r}")
    with connect(url) as conn, _database_errors():
        info = _catalog(conn, name)
        extra = _extra_columns(info, columns)
        select = [
            sql.SQL("s.object_id, s.ra, s.dec, s.distance_arcsec"),
            *(sql.SQL("c.{}").format(sql.Identifier(col.name)) for col in extra),
        ]
        join = (
            sql.SQL(" JOIN {}.{} AS c ON c.object_id = s.object_id").format(
                sql.Identifier(info.schema), sql.Identifier(info.table)
            )
            if extra
            else sql.SQL("")
        )
        query = sql.SQL(
            "SELECT {} FROM skyclass.cone_search(%s, %s, %s, %s) AS s{} "
            "ORDER BY s.distance_arcsec, s.object_id{}"
        ).format(sql.SQL(", ").join(select), join, sql.SQL(" LIMIT %s") if limit else sql.SQL(""))
        params: list[Any] = [name, ra_deg, dec_deg, radius_deg]
        if limit:
            params.append(limit)
        rows = conn.execute(query, params).fetchall()
    names = ["object_id", "ra", "dec", "distance_arcsec", *(c.name for c in extra)]
    types = ["bigint", "double precision", "double precision", "double precision"]
    types += [c.pg_type for c in extra]
    units = [None, "deg", "deg", "arcsec", *(c.unit for c in extra)]
    meta = {
        "query": "cone_search",
        "catalog": name,
        "ra_deg": ra_deg,
        "dec_deg": dec_deg,
        "radius_deg": radius_deg,
    }
    return _table(names, types, units, rows, meta)


def crossmatch(
    catalog_a: str,
    catalog_b: str,
    radius: float | str | Quantity,
    *,
    best_only: bool = True,
    method: str = "auto",
    url: str | None = None,
) -> Table:
    """Match the objects of ``catalog_a`` with those of ``catalog_b`` within ``radius``.

    Returns an astropy Table with ``object_id_a``, ``object_id_b``,
    ``distance_arcsec`` (arcsec) and ``match_rank``, ordered by
    ``object_id_a`` then rank: with ``best_only`` the nearest match of each
    object of ``catalog_a`` (ties go to the smaller ``object_id_b``), otherwise
    every match ranked by distance. A numeric radius is in degrees, a string
    needs a unit (``1arcsec``); it must be above 0 and at most 1 degree.
    Matching a catalog with itself pairs distinct objects only. ``method``
    (``auto``, ``cells``, ``index``, ``sweep``) only changes how the database
    finds the pairs, never the result; ``sweep`` needs the skyclass extension
    0.2.0 in the database. Raises :class:`QueryError` (bad arguments, a
    catalog without sky positions, ``sweep`` without the extension) or
    :class:`CatalogNotFoundError`.
    """
    import astropy.units as u

    name_a = check_catalog_name(catalog_a)
    name_b = check_catalog_name(catalog_b)
    radius_arcsec = float(parse_radius(radius).to_value(u.arcsec))
    if method not in METHODS:
        raise QueryError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    with connect(url) as conn, _database_errors():
        _catalog(conn, name_a)
        if name_b != name_a:
            _catalog(conn, name_b)
        rows = conn.execute(
            "SELECT object_id_a, object_id_b, distance_arcsec, match_rank "
            "FROM skyclass.crossmatch(%s, %s, %s, %s, %s)",
            (name_a, name_b, radius_arcsec, bool(best_only), method),
        ).fetchall()
    names = ["object_id_a", "object_id_b", "distance_arcsec", "match_rank"]
    types = ["bigint", "bigint", "double precision", "integer"]
    units = [None, None, "arcsec", None]
    meta = {
        "query": "crossmatch",
        "catalog_a": name_a,
        "catalog_b": name_b,
        "radius_arcsec": radius_arcsec,
        "best_only": bool(best_only),
    }
    return _table(names, types, units, rows, meta)
