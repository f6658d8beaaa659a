"""ADQL 2.0/2.1 to PostgreSQL with Q3C: parse, check against an allow-list, translate.

The parser is sqlglot's (its T-SQL reader accepts ADQL's ``SELECT TOP n``);
nothing of the query text reaches PostgreSQL except what is regenerated from
the checked syntax tree, with every identifier quoted.

What is accepted (everything else is refused with an :class:`AdqlError` that
says what and why):

- one ``SELECT`` (``TOP``, ``DISTINCT``, ``WHERE``, ``JOIN ... ON/USING``,
  ``GROUP BY``, ``HAVING``, ``ORDER BY``, ``OFFSET``), subqueries in ``FROM``,
  ``WHERE`` and ``IN``/``EXISTS``, and ``UNION``/``EXCEPT``/``INTERSECT``;
- tables: only those of the published set (``TAP_SCHEMA``, the published
  views and catalogs), schema-qualified or unqualified when the name is
  unique; unquoted identifiers are case-insensitive, quoted ones exact;
- operators and predicates of ADQL (comparison, ``BETWEEN``, ``LIKE``,
  ``ILIKE``, ``IN``, ``IS NULL``, ``EXISTS``, ``CASE``, ``||``, arithmetic);
- the mathematical, trigonometric, string (``LOWER``, ``UPPER``), aggregate
  (``COUNT``, ``SUM``, ``AVG``, ``MIN``, ``MAX``), ``COALESCE`` and ``CAST``
  functions of ADQL;
- geometry, translated to Q3C (positions in ICRS degrees):
  ``CONTAINS(POINT(ra, dec), CIRCLE(ra0, dec0, r)) = 1`` (or ``= 0``, or
  ``1 =`` ...) becomes ``q3c_radial_query(ra, dec, ra0, dec0, r)`` when the
  centre is constant and ``q3c_join(ra0, dec0, ra, dec, r)`` when it comes
  from a table (a positional cross-match), both using the Q3C index of the
  point's table; ``DISTANCE(POINT, POINT)`` (or its four-number ADQL 2.1
  form) becomes ``q3c_dist``. The coordinate system may be omitted, empty or
  ICRS.

Refused: other geometry (``BOX``, ``POLYGON``, ``REGION``, ``INTERSECTS``,
``AREA``, ``CENTROID``, ``COORD1``/``COORD2``/``COORDSYS``, geometry values in
the select list), ``WITH``, ``IN_UNIT``, user-defined functions, window
functions, anything but a query (``INSERT``, ``UPDATE``, ``CREATE`` ...), and
circles wider than :data:`MAX_RADIUS_DEG`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

MAX_QUERY_CHARS = 100_000
MAX_RADIUS_DEG = 10.0
"""Largest constant CIRCLE radius accepted, the bound of skyclass.cone_search."""


class AdqlError(ValueError):
    """An ADQL query that cannot be run: a syntax error or a refused feature."""


@dataclass(frozen=True)
class PublishedTable:
    """A table TAP serves: its ADQL schema and name, and the relation it reads."""

    schema: str  # as in TAP_SCHEMA.schemas, e.g. "TAP_SCHEMA", "catalogs"
    name: str  # unqualified, e.g. "tables", "sdss17"
    pg_schema: str
    pg_name: str


# Node types that are checked structure, not calls: always allowed.
_STRUCTURE: tuple[type[exp.Expression], ...] = (
    exp.Select,
    exp.Union,
    exp.Except,
    exp.Intersect,
    exp.From,
    exp.Join,
    exp.Where,
    exp.Group,
    exp.Having,
    exp.Order,
    exp.Ordered,
    exp.Limit,
    exp.Offset,
    exp.Column,
    exp.Identifier,
    exp.Table,
    exp.TableAlias,
    exp.Alias,
    exp.Star,
    exp.Literal,
    exp.Null,
    exp.Boolean,
    exp.Paren,
    exp.Tuple,
    exp.Neg,
    exp.Not,
    exp.And,
    exp.Or,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Mod,
    exp.DPipe,
    exp.Case,
    exp.If,
    exp.Distinct,
    exp.Subquery,
    exp.Exists,
    exp.Cast,
    exp.DataType,
    exp.DataTypeParam,
)

# ADQL functions (as sqlglot names them) that PostgreSQL runs as they are.
_FUNCTIONS: tuple[type[exp.Expression], ...] = (
    exp.Count,
    exp.Sum,
    exp.Avg,
    exp.Min,
    exp.Max,
    exp.Abs,
    exp.Ceil,
    exp.Floor,
    exp.Exp,
    exp.Ln,
    exp.Log,
    exp.Pow,
    exp.Sqrt,
    exp.Pi,
    exp.Degrees,
    exp.Radians,
    exp.Sin,
    exp.Cos,
    exp.Tan,
    exp.Asin,
    exp.Acos,
    exp.Atan,
    exp.Atan2,
    exp.Cot,
    exp.Sign,
    exp.Lower,
    exp.Upper,
    exp.Coalesce,
    exp.Round,
    exp.Trunc,
    exp.Rand,
)

_CAST_TYPES = {
    exp.DataType.Type.SMALLINT,
    exp.DataType.Type.INT,
    exp.DataType.Type.BIGINT,
    exp.DataType.Type.FLOAT,
    exp.DataType.Type.DOUBLE,
    exp.DataType.Type.CHAR,
    exp.DataType.Type.VARCHAR,
    exp.DataType.Type.TIMESTAMP,
    exp.DataType.Type.ROWVERSION,  # T-SQL's reading of the ADQL type TIMESTAMP
}

_GEOMETRY_REFUSED = {
    "BOX",
    "POLYGON",
    "REGION",
    "INTERSECTS",
    "AREA",
    "CENTROID",
    "COORD1",
    "COORD2",
    "COORDSYS",
}


_WRITES = {
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "CREATE",
    "DROP",
    "ALTER",
    "GRANT",
    "REVOKE",
    "TRUNCATE",
    "COPY",
    "CALL",
    "DO",
    "SET",
    "VACUUM",
    "EXECUTE",
    "EXEC",
    "LOCK",
}


def _function_name(node: exp.Expression) -> str:
    return node.name.upper() if isinstance(node, exp.Anonymous) else ""


def _check_coordsys(node: exp.Expression, where: str) -> None:
    if not (isinstance(node, exp.Literal) and node.is_string):
        raise AdqlError(f"the coordinate system of {where} must be a string literal")
    system = node.this.strip().upper()
    if system and not system.startswith("ICRS"):
        raise AdqlError(
            f"coordinate system {node.this!r} in {where} is not supported: positions are ICRS "
            "degrees (use '' or 'ICRS')"
        )


def _point(node: exp.Expression, where: str) -> tuple[exp.Expression, exp.Expression]:
    """The (ra, dec) expressions of an ADQL POINT."""
    if _function_name(node) != "POINT":
        raise AdqlError(f"{where} needs a POINT(ra, dec) here")
    args = list(node.expressions)
    if len(args) == 3:
        _check_coordsys(args[0], "POINT")
        args = args[1:]
    if len(args) != 2:
        raise AdqlError("POINT takes (ra, dec) or (coordsys, ra, dec)")
    return args[0], args[1]


def _circle(
    node: exp.Expression,
) -> tuple[exp.Expression, exp.Expression, exp.Expression]:
    """The (ra, dec, radius) expressions of an ADQL CIRCLE."""
    name = _function_name(node)
    if name in _GEOMETRY_REFUSED | {"POLYGON", "BOX"}:
        raise AdqlError(
            f"CONTAINS with a {name} is not supported: only CONTAINS(POINT, CIRCLE) is (Q3C)"
        )
    if name != "CIRCLE":
        raise AdqlError("CONTAINS needs a CIRCLE as its second argument")
    args = list(node.expressions)
    if len(args) == 2:
        ra, dec = _point(args[0], "CIRCLE")
        radius = args[1]
    else:
        if len(args) == 4:
            _check_coordsys(args[0], "CIRCLE")
            args = args[1:]
        if len(args) != 3:
            raise AdqlError(
                "CIRCLE takes (ra, dec, radius), (coordsys, ra, dec, radius) or (POINT, radius)"
            )
        ra, dec, radius = args
    value = _constant(radius)
    if value is not None and not 0 <= value <= MAX_RADIUS_DEG:
        raise AdqlError(
            f"CIRCLE radius {value:g} deg is out of range: it must be between 0 and "
            f"{MAX_RADIUS_DEG:g} degrees"
        )
    return ra, dec, radius


def _constant(node: exp.Expression) -> float | None:
    """The value of a numeric literal (or its negation), else None."""
    if isinstance(node, exp.Paren):
        return _constant(node.this)
    if isinstance(node, exp.Neg):
        inner = _constant(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    return None


def _q3c(q3c_schema: str, name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Dot(
        this=exp.to_identifier(q3c_schema, quoted=True),
        expression=exp.Anonymous(this=name, expressions=[a.copy() for a in args]),
    )


def _contains(node: exp.Expression, q3c_schema: str) -> exp.Expression:
    point_ra, point_dec = _point(node.this, "CONTAINS")
    ra, dec, radius = _circle(node.expression)
    if any(True for _ in ra.find_all(exp.Column)) or any(True for _ in dec.find_all(exp.Column)):
        return _q3c(q3c_schema, "q3c_join", ra, dec, point_ra, point_dec, radius)
    return _q3c(q3c_schema, "q3c_radial_query", point_ra, point_dec, ra, dec, radius)


def _distance_args(node: exp.Expression) -> list[exp.Expression]:
    args = list(node.expressions)
    if len(args) == 2:
        return [*_point(args[0], "DISTANCE"), *_point(args[1], "DISTANCE")]
    if len(args) == 4:
        return args
    raise AdqlError("DISTANCE takes (POINT, POINT) or (ra1, dec1, ra2, dec2)")


def _distance_within(node: exp.LT | exp.LTE, q3c_schema: str) -> exp.Expression | None:
    """``DISTANCE(p1, p2) < r`` (constant r) as an indexed cone or cross-match.

    With one constant point the cone is ``q3c_radial_query`` on the other
    point's columns; with two column points, ``q3c_join`` (the second point's
    table index). Either is ANDed with the exact comparison, so the rows are
    those of the comparison alone; only the plan changes.
    """
    radius = _constant(node.expression)
    if radius is None or not 0 <= radius <= MAX_RADIUS_DEG:
        return None
    ra1, dec1, ra2, dec2 = _distance_args(node.this)

    def constant(*parts: exp.Expression) -> bool:
        return all(not any(True for _ in p.find_all(exp.Column)) for p in parts)

    if constant(ra2, dec2) and not constant(ra1, dec1):
        cone = _q3c(q3c_schema, "q3c_radial_query", ra1, dec1, ra2, dec2, node.expression)
    elif constant(ra1, dec1) and not constant(ra2, dec2):
        cone = _q3c(q3c_schema, "q3c_radial_query", ra2, dec2, ra1, dec1, node.expression)
    elif not constant(ra1, dec1, ra2, dec2):  # a cross-match: the second point's index
        cone = _q3c(q3c_schema, "q3c_join", ra1, dec1, ra2, dec2, node.expression)
    else:
        return None
    exact = node.__class__(
        this=_q3c(q3c_schema, "q3c_dist", ra1, dec1, ra2, dec2), expression=node.expression.copy()
    )
    return exp.paren(exp.and_(cone, exact))


def _is_flag(node: exp.Expression) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string and node.this in ("0", "1"):
        return int(node.this)
    return None


def _rewrite_geometry(tree: exp.Expression, q3c_schema: str) -> exp.Expression:
    """Replace ``CONTAINS(...) = 1|0`` and ``DISTANCE(...)`` by Q3C calls."""

    def visit(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.LT | exp.LTE) and _function_name(node.this) == "DISTANCE":
            indexed = _distance_within(node, q3c_schema)
            if indexed is not None:
                return indexed
        if isinstance(node, exp.EQ | exp.NEQ):
            left, right = node.this, node.expression
            if isinstance(right, exp.Contains) and _is_flag(left) is not None:
                left, right = right, left
            if isinstance(left, exp.Contains):
                flag = _is_flag(right)
                if flag is None:
                    raise AdqlError("CONTAINS(...) must be compared with 1 or 0")
                test = _contains(left, q3c_schema)
                inside = (flag == 1) == isinstance(node, exp.EQ)
                return exp.paren(test) if inside else exp.not_(exp.paren(test))
        if isinstance(node, exp.Contains):
            raise AdqlError("CONTAINS(...) must be compared with 1 or 0 (e.g. in WHERE)")
        name = _function_name(node)
        if name == "DISTANCE":
            return _q3c(q3c_schema, "q3c_dist", *_distance_args(node))
        return node

    return tree.transform(visit, copy=False)


def _check_nodes(tree: exp.Expression, *, geometry_allowed: bool) -> None:
    for node in tree.walk():
        if isinstance(node, exp.Anonymous):
            name = node.name.upper()
            if name in ("POINT", "CIRCLE", "DISTANCE") and geometry_allowed:
                continue
            if name in ("POINT", "CIRCLE"):
                raise AdqlError(
                    f"{name} is only supported inside CONTAINS or DISTANCE: select the "
                    "coordinate columns instead of a geometry value"
                )
            if name in _GEOMETRY_REFUSED:
                raise AdqlError(f"the ADQL geometry function {name} is not supported (Q3C only)")
            if name == "IN_UNIT":
                raise AdqlError("IN_UNIT is not supported: convert units in the expression")
            raise AdqlError(f"function {node.name} is not available (not an ADQL function)")
        if isinstance(node, exp.With):
            raise AdqlError("WITH (common table expressions) is not supported")
        if isinstance(node, exp.Window):
            raise AdqlError("window functions (OVER) are not ADQL")
        if isinstance(node, exp.Rand) and node.this is not None:
            raise AdqlError("RAND with a seed is not supported: use RAND()")
        if isinstance(node, exp.DataType) and node.this not in _CAST_TYPES:
            raise AdqlError(f"CAST to {node.sql()} is not supported")
        if isinstance(node, exp.Limit) and not isinstance(node.expression, exp.Literal):
            raise AdqlError("TOP needs a number")
        if isinstance(node, exp.Contains) and geometry_allowed:
            continue
        if not isinstance(node, _STRUCTURE + _FUNCTIONS):
            raise AdqlError(f"{_describe(node)} is not supported in ADQL here")


def _describe(node: Any) -> str:
    text = node.sql(dialect="tsql")
    return f"'{text[:60]}'" if text else type(node).__name__


def _resolve_tables(tree: exp.Expression, tables: Mapping[tuple[str, str], PublishedTable]) -> None:
    by_name: dict[str, list[PublishedTable]] = {}
    for table in tables.values():
        by_name.setdefault(table.name.lower(), []).append(table)
    for node in list(tree.find_all(exp.Table)):
        if not isinstance(node.this, exp.Identifier):
            raise AdqlError(f"{_describe(node)} is not a table name")
        if node.args.get("catalog") is not None:
            raise AdqlError(f"table {node.sql(dialect='tsql')}: use schema.table, not three parts")
        name = _ident(node.this)
        schema_ident = node.args.get("db")
        if schema_ident is not None:
            key = (_ident(schema_ident).lower(), name.lower())
            found = tables.get(key)
            if found is None or (node.this.quoted and found.name != name):
                raise AdqlError(
                    f"table {_ident(schema_ident)}.{name} is not published here; "
                    "TAP_SCHEMA.tables lists the tables"
                )
        else:
            candidates = by_name.get(name.lower(), [])
            if len(candidates) != 1:
                raise AdqlError(
                    f"table {name} is "
                    + ("ambiguous: qualify it with its schema" if candidates else "not published")
                    + "; TAP_SCHEMA.tables lists the tables"
                )
            found = candidates[0]
        if node.this.quoted and found.name != name:
            raise AdqlError(f'table "{name}" is not published (quoted names are exact)')
        node.set("db", exp.to_identifier(found.pg_schema, quoted=True))
        node.set("this", exp.to_identifier(found.pg_name, quoted=True))


def _ident(node: exp.Expression) -> str:
    return str(node.this) if isinstance(node, exp.Identifier) else node.name


def _fold_identifiers(tree: exp.Expression) -> None:
    """ADQL regular identifiers are case-insensitive: lower-case the unquoted ones."""
    for node in tree.find_all(exp.Identifier):
        if not node.quoted:
            node.set("this", str(node.this).lower())
        node.set("quoted", True)


def _postgres_fixes(tree: exp.Expression) -> None:
    """ADQL semantics PostgreSQL spells differently."""
    for rounding in list(tree.find_all(exp.Round, exp.Trunc)):
        if rounding.args.get("decimals") is not None:  # round(double, int) does not exist
            rounding.set("this", exp.cast(rounding.this, exp.DataType.build("numeric")))
    for ordered in tree.find_all(exp.Ordered):
        # PostgreSQL's own order of NULLs (last ascending, first descending), not T-SQL's
        ordered.set("nulls_first", bool(ordered.args.get("desc")))
    for datatype in tree.find_all(exp.DataType):
        if datatype.this == exp.DataType.Type.ROWVERSION:
            datatype.set("this", exp.DataType.Type.TIMESTAMP)


def _limit(tree: exp.Expression, row_limit: int) -> None:
    """At most ``row_limit`` rows: the outermost LIMIT (TOP), lowered or added."""
    current = tree.args.get("limit")
    limit = row_limit
    if isinstance(current, exp.Limit):
        value = _constant(current.expression)
        if value is None or value != int(value) or value < 0:
            raise AdqlError("TOP needs a whole number")
        limit = min(int(value), row_limit)
    tree.set("limit", exp.Limit(expression=exp.Literal.number(limit)))


def parse(adql: str) -> exp.Expression:
    """The syntax tree of one ADQL query; :class:`AdqlError` on a syntax error."""
    if not adql or not adql.strip():
        raise AdqlError("QUERY is empty")
    if len(adql) > MAX_QUERY_CHARS:
        raise AdqlError(f"QUERY is longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in adql:
        raise AdqlError("QUERY contains a NUL character")
    try:
        statements = [s for s in sqlglot.parse(adql, read="tsql") if s is not None]
    except ParseError as exc:
        raise AdqlError(_syntax_error(exc)) from None
    except TokenError as exc:
        raise AdqlError(f"ADQL syntax error: {_first_line(str(exc))}") from None
    except RecursionError:
        raise AdqlError("QUERY is nested too deeply") from None
    if len(statements) != 1:
        raise AdqlError(f"QUERY must be one SELECT statement, not {len(statements)} statements")
    tree = statements[0]
    if isinstance(tree, exp.Command) and tree.name.upper() not in _WRITES:
        raise AdqlError(f"ADQL syntax error: a query starts with SELECT, not {tree.name!r}")
    if not isinstance(tree, exp.Select | exp.Union | exp.Except | exp.Intersect):
        raise AdqlError("only SELECT queries are allowed (TAP is read-only)")
    return tree


def _syntax_error(exc: ParseError) -> str:
    """The first parse error as "ADQL syntax error at line L, column C: ... near 'X'"."""
    if not exc.errors:
        return f"ADQL syntax error: {_first_line(str(exc))}"
    first = exc.errors[0]
    where = f" at line {first.get('line')}, column {first.get('col')}" if first.get("line") else ""
    near = f" near {first.get('highlight')!r}" if first.get("highlight") else ""
    return f"ADQL syntax error{where}: {first.get('description')}{near}"


def _first_line(text: str) -> str:
    return " ".join(text.split())[:300]


def translate(
    adql: str,
    tables: Mapping[tuple[str, str], PublishedTable],
    q3c_schema: str,
    *,
    row_limit: int | None = None,
) -> str:
    """PostgreSQL text for ``adql``, reading only ``tables``.

    ``tables`` maps (lower-case ADQL schema, lower-case table name) to the
    published tables; ``q3c_schema`` is the schema of the q3c extension's
    functions. ``row_limit`` (MAXREC + 1) becomes the outermost ``LIMIT``, or
    lowers the query's own ``TOP``, so the planner knows how few rows are read.
    Raises :class:`AdqlError` naming what is wrong or refused.
    """
    try:
        return _translate(adql, tables, q3c_schema, row_limit)
    except RecursionError:
        raise AdqlError("QUERY is nested too deeply") from None


def _translate(
    adql: str,
    tables: Mapping[tuple[str, str], PublishedTable],
    q3c_schema: str,
    row_limit: int | None,
) -> str:
    tree = parse(adql)
    for limit in tree.find_all(exp.Limit):
        if limit.args.get("percent") or limit.args.get("with_ties"):
            raise AdqlError("TOP ... PERCENT / WITH TIES is not ADQL")
    _check_nodes_before_geometry(tree)
    _check_nodes(tree, geometry_allowed=True)
    tree = _rewrite_geometry(tree, q3c_schema)
    for node in tree.find_all(exp.Anonymous):
        if node.name.upper() in ("POINT", "CIRCLE"):
            raise AdqlError(
                f"{node.name.upper()} is only supported inside CONTAINS or DISTANCE: select "
                "the coordinate columns instead of a geometry value"
            )
    _resolve_tables(tree, tables)
    _fold_identifiers(tree)
    _postgres_fixes(tree)
    if row_limit is not None:
        _limit(tree, row_limit)
    return tree.sql(dialect="postgres", comments=False)  # no user text survives in comments


def _check_nodes_before_geometry(tree: exp.Expression) -> None:
    """Refuse what the geometry rewrite must not see: statements within statements."""
    for node in tree.walk():
        if isinstance(node, exp.DML | exp.DDL | exp.Command | exp.Into):
            raise AdqlError("only SELECT queries are allowed (TAP is read-only)")
