"""Compute feature sets inside PostgreSQL and read them back.

:func:`build_feature_set` compiles a :class:`~skyclass.features.spec.FeatureSpec`
to one ``SELECT`` over the catalog table and stores its result in
``features.<name>_<hash[:12]>`` (``object_id bigint PRIMARY KEY, x real[] NOT
NULL, v vector(n)``), registering the version in ``skyclass.feature_set`` in
the same transaction. Rebuilding a registered version only adds the catalog
objects that have no features yet (after an ``--append`` ingest); after a
``--replace`` ingest of the catalog it recomputes every row, since values of
existing objects may have changed.

How values are computed (the contract with training and scoring):

- every input column is read as ``double precision`` (booleans as 0/1) and the
  whole expression is evaluated in float8; each element of ``x`` is then cast
  to ``real`` (round to nearest, like numpy's ``astype(np.float32)``);
- NULL inputs, NaN and infinite inputs, and undefined results (log or sqrt
  of a non-positive or negative number, division by zero) give NaN in ``x``;
- PostgreSQL raises an error on float overflow and underflow instead of
  returning infinity or zero, so a value whose magnitude leaves [1e-150,
  1e150] (other than 0) is treated as undefined before it can reach an
  operation, and a result beyond the float4 range becomes NaN (one below the
  smallest float4 subnormal becomes 0). Photometry is many orders of
  magnitude inside these limits;
- ``v`` holds the same values as a pgvector ``vector(n)`` for similarity
  queries, and is NULL when any element of ``x`` is NaN (pgvector has no NaN).

The query is built level by level: level 0 reads and sanitises the columns,
level k computes the operations whose operands are at most k - 1 levels deep,
each level a subquery fenced with ``OFFSET 0``. Every operand is then a plain
column reference, so the range guards around each operation (which mention
their operand several times) never duplicate a sub-expression, and the SQL
grows linearly with the spec.

The first build uses ``CREATE TABLE AS`` and adds the primary key afterwards:
on 1M SDSS17 rows it was 1.4x faster than ``CREATE TABLE`` with the key
followed by ``INSERT ... SELECT`` (``bench/bench_features.py``), since the
index is built once instead of row by row. The planner runs this query in one
backend either way: its operators are cheap by PostgreSQL's cost model, and
PostgreSQL 15 does not move subquery projections into parallel workers.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from skyclass.db.connect import connect
from skyclass.errors import (
    CatalogNotFoundError,
    DatabaseError,
    FeatureSetNotFoundError,
    MissingExtensionError,
)
from skyclass.features.spec import (
    VALUE_MAX,
    VALUE_MIN,
    BinaryOp,
    Call,
    Column,
    FeatureSpec,
    Negate,
    Node,
    Nondetection,
    Number,
    children,
    height,
    load_spec,
    spec_from_canonical,
    walk,
)
from skyclass.registry.catalogs import find_catalog
from skyclass.registry.features import find_feature_build
from skyclass.registry.locks import feature_set_resource, lock

FEATURE_SCHEMA = "features"
Action = Literal["created", "rebuilt", "appended", "recomputed", "unchanged"]
FirstBuild = Literal["create_table_as", "insert_select"]

# Catalog column types a feature may read (what ingest creates, plus other numerics).
_NUMERIC_TYPES = ("smallint", "integer", "bigint", "real", "double precision", "boolean")
FLOAT4_MAX = "3.4028234663852886e38"
# Half the smallest float4 subnormal (2^-150): anything at most this rounds to 0.
FLOAT4_ZERO = "7.006492321624085e-46"


@dataclass(frozen=True)
class BuildInfo:
    """What a :func:`build_feature_set` call did.

    ``action``: ``created`` (new version and table), ``rebuilt`` (registered
    version whose table was missing), ``appended`` (rows added for new catalog
    objects), ``recomputed`` (every row recomputed after the catalog was
    replaced) or ``unchanged``. ``rows_added`` counts the rows written.
    """

    action: Action
    rows_added: int
    seconds: float


@dataclass(frozen=True)
class FeatureSet:
    """A registered feature-set version and its table ``features.<table_name>``.

    ``feature_names`` is the order of the elements of ``x``; ``groups`` maps a
    group to its features (for ablation); ``n_objects`` counts the table's
    rows (exact from :func:`load_feature_set` and :func:`build_feature_set`,
    the planner's estimate from :func:`list_feature_sets`); ``build`` is set
    by :func:`build_feature_set` only.
    """

    feature_set_id: int
    name: str
    spec_hash: str
    catalog: str
    table: tuple[str, str]
    feature_names: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]
    n_objects: int
    created_at: datetime
    spec: FeatureSpec = field(repr=False)
    build: BuildInfo | None = None

    @property
    def n_features(self) -> int:
        """The length of ``x`` (and the dimension of ``v``)."""
        return len(self.feature_names)

    @property
    def qualified_table(self) -> str:
        """``features.<table_name>`` for messages (quote with :meth:`table_identifier`)."""
        return f"{self.table[0]}.{self.table[1]}"

    def table_identifier(self) -> sql.Identifier:
        """The table as a quoted, schema-qualified identifier for composed SQL."""
        return sql.Identifier(*self.table)

    @property
    def definition_hash(self) -> str:
        """The version of the feature definition this is a build of (same on every catalog)."""
        return self.spec.definition_hash


# -- SQL compilation ------------------------------------------------------------------------
def _sane(ref: sql.Composable) -> sql.Composable:
    """``ref`` when it is 0 or its magnitude is in [VALUE_MIN, VALUE_MAX], else NULL.

    NaN fails ``abs(ref) <= max`` (PostgreSQL sorts NaN above every number), so
    NaN and infinities become NULL too.
    """
    return sql.SQL(
        "(CASE WHEN abs({r}) <= {hi} AND ({r} = 0 OR abs({r}) >= {lo}) THEN {r} END)"
    ).format(r=ref, hi=sql.SQL(f"'{VALUE_MAX!r}'::float8"), lo=sql.SQL(f"'{VALUE_MIN!r}'::float8"))


_FLOAT4_MAX_SQL = f"'{FLOAT4_MAX}'::float8"


def _to_real(value: sql.Composable, masked: sql.Composable | None = None) -> sql.Composable:
    """A finite float8 or NULL as real: NULL, ``masked`` rows and values beyond float4 -> NaN."""
    mask = sql.SQL("") if masked is None else sql.SQL("WHEN {} THEN 'NaN'::real ").format(masked)
    return sql.SQL(
        "(CASE {m}WHEN {v} IS NULL OR abs({v}) > " + _FLOAT4_MAX_SQL + " THEN 'NaN'::real "
        "WHEN abs({v}) <= '" + FLOAT4_ZERO + "'::float8 THEN CAST(0 AS real) "
        "ELSE CAST({v} AS real) END)"
    ).format(m=mask, v=value)


def _positive(a: sql.Composable, *, zero: bool = False) -> sql.Composable:
    """``a`` where a log (``zero=False``) or a square root (``zero=True``) is defined."""
    test = ">=" if zero else ">"
    return sql.SQL("(CASE WHEN {a} " + test + " 0 THEN {a} END)").format(a=a)


class _Compiler:
    """Turns parsed feature expressions into the level-by-level ``SELECT`` (see the module)."""

    def __init__(
        self,
        spec: FeatureSpec,
        trees: Sequence[Node],
        column_types: dict[str, str],
        vector_type: sql.Composable,
    ) -> None:
        self.spec = spec
        self.trees = trees
        self.column_types = column_types
        self.vector_type = vector_type
        self.params: dict[str, float] = {}
        self.columns: dict[str, str] = {}  # catalog column -> alias c<k> (sanitised)
        self.raw: dict[str, str] = {}  # catalog column -> alias r<k> (as read)
        self.ops: dict[Node, str] = {}  # operation node -> alias n<k>
        self.levels: dict[int, list[tuple[str, sql.Composable]]] = {}

    # operands
    def param(self, value: float) -> sql.Composable:
        name = next((k for k, v in self.params.items() if v == value), None)
        if name is None:
            name = f"p{len(self.params)}"
            self.params[name] = float(value)
        return sql.SQL("CAST({} AS double precision)").format(sql.Placeholder(name))

    def column(self, name: str) -> str:
        if name not in self.columns:
            self.columns[name] = f"c{len(self.columns)}"
        return self.columns[name]

    def operand(self, node: Node) -> sql.Composable:
        """A reference to an already computed value, NULL or within the sane range."""
        if isinstance(node, Number):
            return self.param(node.value)
        if isinstance(node, Column):
            return sql.SQL("l.{}").format(sql.Identifier(self.column(node.name)))
        return _sane(sql.SQL("l.{}").format(sql.Identifier(self.ops[node])))

    def operation(self, node: Node) -> sql.Composable:
        """The SQL of one operation on sane operands; it cannot raise (see the module)."""
        args = [self.operand(c) for c in children(node)]
        if isinstance(node, Negate):
            return sql.SQL("(- {})").format(args[0])
        if isinstance(node, BinaryOp):
            if node.op == "/":
                return sql.SQL("({} / NULLIF({}, 0))").format(args[0], args[1])
            return sql.SQL("({} " + node.op + " {})").format(args[0], args[1])
        assert isinstance(node, Call)
        if node.function == "log10":
            return sql.SQL("log({})").format(_positive(args[0]))
        if node.function == "ln":
            return sql.SQL("ln({})").format(_positive(args[0]))
        if node.function == "sqrt":
            return sql.SQL("sqrt({})").format(_positive(args[0], zero=True))
        if node.function == "abs":
            return sql.SQL("abs({})").format(args[0])
        if node.function == "flux_to_mag":
            return sql.SQL("({zp} - CAST(2.5 AS double precision) * log({f}))").format(
                zp=args[1], f=_positive(args[0])
            )
        if node.function == "mag_to_flux":
            # |exponent| <= 150 keeps power() inside [1e-150, 1e150]: no overflow error.
            exponent = sql.SQL("(CAST(-0.4 AS double precision) * ({m} - {zp}))").format(
                m=args[0], zp=args[1]
            )
            return sql.SQL(
                "power(CAST(10 AS double precision), "
                "CASE WHEN abs({e}) <= CAST(150 AS double precision) THEN {e} END)"
            ).format(e=exponent)
        raise AssertionError(f"unhandled function {node.function}")

    def plan(self) -> None:
        # Operations in post-order, so operands get their aliases first; columns get a
        # sanitised alias only when an operation or a non-detection test reads them.
        for tree in self.trees:
            for node in walk(tree):
                if not isinstance(node, Column | Number) and node not in self.ops:
                    self.ops[node] = f"n{len(self.ops)}"
                    self.levels.setdefault(height(node), []).append(
                        (self.ops[node], self.operation(node))
                    )
        for feature in self.spec.features:
            nd = feature.nondetection
            if nd is not None:
                self.column(nd.column or nd.flag or "")

    def result(self, tree: Node) -> sql.Composable:
        """A feature's value before the cast to real: finite, or NULL when undefined.

        Operation results are used as computed (operands were sane, so they are
        finite); a feature that is a bare column reads the raw column, so that a
        tiny input becomes 0 and a huge one NaN, as a cast to float32 would.
        """
        if isinstance(tree, Number):
            return self.param(tree.value)
        if isinstance(tree, Column):
            self.raw.setdefault(tree.name, f"r{len(self.raw)}")
            return sql.SQL("l.{}").format(sql.Identifier(self.raw[tree.name]))
        return sql.SQL("l.{}").format(sql.Identifier(self.ops[tree]))

    def condition(self, nd: Nondetection) -> sql.Composable:
        """True where a non-detection holds (NULL, i.e. false, where its column is NULL)."""
        ref = sql.SQL("l.{}").format(sql.Identifier(self.column(nd.column or nd.flag or "")))
        if nd.flag is not None:
            return sql.SQL("{} <> 0").format(ref)
        if nd.above is not None:
            return sql.SQL("{} > {}").format(ref, self.param(nd.above))
        return sql.SQL("{} < {}").format(ref, self.param(float(nd.below or 0.0)))

    def read_column(self, name: str, *, sane: bool) -> sql.Composable:
        """Level 0: catalog column ``name`` as float8 (sanitised unless ``sane`` is False)."""
        actual = self.spec.catalog_column(name)
        pg_type = self.column_types[actual]
        ref = sql.SQL("c.{}").format(sql.Identifier(actual))
        value: sql.Composable
        if pg_type == "boolean":
            value = sql.SQL("CAST(CAST({} AS integer) AS double precision)").format(ref)
        elif pg_type.startswith("numeric"):
            # numeric can exceed the float8 range: the cast itself would raise.
            value = sql.SQL(
                "(CASE WHEN abs({r}) <= {hi} THEN CAST({r} AS double precision) END)"
            ).format(r=ref, hi=sql.SQL(f"{VALUE_MAX!r}"))
        else:
            value = sql.SQL("CAST({} AS double precision)").format(ref)
        return _sane(value) if sane else value

    def select(
        self, catalog_table: sql.Composable, *, only_missing_from: sql.Composable | None = None
    ) -> tuple[sql.Composed, dict[str, float]]:
        """The complete ``SELECT object_id, x, v`` and its parameters."""
        self.plan()
        # Elements of x first: they decide which raw columns level 0 must also read.
        elements: list[sql.Composable] = []
        for feature, tree in zip(self.spec.features, self.trees, strict=True):
            value = self.result(tree)
            nd = feature.nondetection
            condition = None if nd is None else self.condition(nd)
            elements.append(_to_real(value, condition if nd is not None and nd.mask else None))
            if feature.missing == "indicator":
                elements.append(
                    sql.SQL(
                        "CAST(CASE WHEN {v} IS NULL OR abs({v}) > "
                        + _FLOAT4_MAX_SQL
                        + " THEN 1 ELSE 0 END AS real)"
                    ).format(v=value)
                )
            if condition is not None:
                elements.append(
                    sql.SQL("CAST(CASE WHEN {} THEN 1 ELSE 0 END AS real)").format(condition)
                )
        # Level 0: the catalog's columns as float8, sanitised (and raw where a feature is one).
        reads: list[sql.Composable] = [sql.SQL("c.object_id")]
        for name, alias in self.columns.items():
            reads.append(
                sql.SQL("{} AS {}").format(self.read_column(name, sane=True), sql.Identifier(alias))
            )
        for name, alias in self.raw.items():
            reads.append(
                sql.SQL("{} AS {}").format(
                    self.read_column(name, sane=False), sql.Identifier(alias)
                )
            )
        query: sql.Composable = sql.SQL("SELECT {} FROM {} AS c").format(
            sql.SQL(", ").join(reads), catalog_table
        )
        if only_missing_from is not None:
            query = sql.SQL(
                "{} WHERE NOT EXISTS (SELECT FROM {} AS f WHERE f.object_id = c.object_id)"
            ).format(query, only_missing_from)
        # Levels 1..H: the operations, by height.
        for level in sorted(self.levels):
            outputs = [
                sql.SQL("{} AS {}").format(expr, sql.Identifier(alias))
                for alias, expr in self.levels[level]
            ]
            query = sql.SQL("SELECT l.*, {} FROM ({} OFFSET 0) AS l").format(
                sql.SQL(", ").join(outputs), query
            )
        query = sql.SQL(
            "SELECT l.object_id, CAST(ARRAY[{}] AS real[]) AS x FROM ({} OFFSET 0) AS l"
        ).format(sql.SQL(", ").join(elements), query)
        final = sql.SQL(
            # Both branches typed vector(n), so CREATE TABLE AS keeps the dimension.
            "SELECT l.object_id, l.x, CASE WHEN 'NaN'::real = ANY (l.x) THEN "
            "CAST(NULL AS {vector}) ELSE CAST(l.x AS {vector}) END AS v "
            "FROM ({query} OFFSET 0) AS l"
        ).format(vector=self.vector_type, query=query)
        return final, dict(self.params)


# -- catalog and database checks ------------------------------------------------------------
@dataclass(frozen=True)
class _Catalog:
    catalog_id: int
    name: str
    table: tuple[str, str]
    column_types: dict[str, str]


def _catalog(conn: psycopg.Connection[Any], spec: FeatureSpec) -> _Catalog:
    try:
        found = find_catalog(conn, spec.catalog)
    except CatalogNotFoundError as exc:
        raise CatalogNotFoundError(str(spec.error(str(exc), key="catalog"))) from None
    row = (found.catalog_id, found.schema, found.table)
    types = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (row[1], row[2]),
    ).fetchall()
    if not types:
        raise CatalogNotFoundError(
            f"catalog {spec.catalog!r} is registered but its table {row[1]}.{row[2]} is missing"
        )
    return _Catalog(int(row[0]), spec.catalog, (row[1], row[2]), {n: t for n, t in types})


def _is_numeric(pg_type: str) -> bool:
    return pg_type in _NUMERIC_TYPES or pg_type.startswith("numeric")


def _check_columns(spec: FeatureSpec, trees: Sequence[Node], catalog: _Catalog) -> None:
    """Every column a feature reads exists in the catalog and is numeric."""
    import difflib

    numeric = [n for n, t in catalog.column_types.items() if _is_numeric(t)]
    shown = ", ".join(numeric[:30]) + (", ..." if len(numeric) > 30 else "")

    def check(spec_name: str, index: int, what: str) -> None:
        name = spec.catalog_column(spec_name)
        if name != spec_name:
            what = f"{what} (mapped from {spec_name!r})"
        pg_type = catalog.column_types.get(name)
        if pg_type is None:
            close = [name.lower()] if name.lower() in catalog.column_types else []
            close = close or difflib.get_close_matches(name, numeric, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise spec.error(
                f"unknown column {name!r} in {what}: {hint}catalog {catalog.name} has the "
                f"numeric columns {shown}",
                feature=index,
            )
        if not _is_numeric(pg_type):
            raise spec.error(
                f"column {name!r} in {what} is {pg_type}; features read numeric columns ({shown})",
                feature=index,
            )

    for index, (feature, tree) in enumerate(zip(spec.features, trees, strict=True)):
        for node in walk(tree):
            if isinstance(node, Column):
                check(node.name, index, f"expression {feature.expr!r}")
        nd = feature.nondetection
        if nd is not None:
            check(nd.column or nd.flag or "", index, "nondetection")


def _vector_type(conn: psycopg.Connection[Any], n: int) -> sql.Composable:
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    if row is None:
        raise MissingExtensionError(
            "the pgvector extension is not installed in this database: run "
            "`CREATE EXTENSION vector` as a superuser (Debian: build it from source, see "
            "docs/operations.md), then `skyclass db migrate`"
        )
    return sql.SQL("{}.vector({})").format(sql.Identifier(row[0]), sql.Literal(n))


def _check_schema(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "SELECT to_regnamespace(%s) IS NOT NULL "
        "AND to_regclass('skyclass.feature_set') IS NOT NULL",
        (FEATURE_SCHEMA,),
    ).fetchone()
    if not (row and row[0]):
        raise DatabaseError(
            "this database has no feature-set registry (schema features, table "
            "skyclass.feature_set): run `skyclass db migrate`"
        )


def _load_state(conn: psycopg.Connection[Any], catalog_id: int) -> tuple[int, int]:
    """(newest load id, newest replace load id) of a catalog; 0 when there is none."""
    row = conn.execute(
        "SELECT coalesce(max(load_id), 0), "
        "coalesce(max(load_id) FILTER (WHERE mode = 'replace'), 0) "
        "FROM skyclass.catalog_load WHERE catalog_id = %s",
        (catalog_id,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _table_state(conn: psycopg.Connection[Any], table_name: str) -> dict[str, Any] | None:
    """The JSON in the feature table's comment ({} without one; None without the table)."""
    row = conn.execute(
        "SELECT t IS NOT NULL, obj_description(t, 'pg_class') "
        "FROM to_regclass(format('%%I.%%I', %s::text, %s::text)) AS t",
        (FEATURE_SCHEMA, table_name),
    ).fetchone()
    if not (row and row[0]):
        return None
    try:
        state = json.loads(row[1]) if row[1] else {}
    except ValueError:
        state = {}
    return state if isinstance(state, dict) else {}


def _built_from(state: dict[str, Any]) -> int:
    """The newest catalog load reflected in the table (-1 when unknown: recompute)."""
    value = state.get("catalog_load_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _write_comments(
    conn: psycopg.Connection[Any],
    table: sql.Identifier,
    spec: FeatureSpec,
    spec_hash: str,
    load_id: int,
) -> None:
    # The comment records the newest catalog load the rows reflect: a rebuild compares it
    # with the catalog's loads to know whether it must add rows or recompute all of them.
    state = {
        "feature_set": spec.name,
        "spec_hash": spec_hash,
        "catalog": spec.catalog,
        "catalog_load_id": load_id,
    }
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(json.dumps(state))))
    names = ", ".join(spec.feature_names)
    if len(names) > 500:
        names = names[:497] + "..."
    conn.execute(
        sql.SQL("COMMENT ON COLUMN {}.x IS {}").format(
            table, sql.Literal(f"features (float4, NaN = missing) in this order: {names}")
        )
    )
    conn.execute(
        sql.SQL("COMMENT ON COLUMN {}.v IS {}").format(
            table, sql.Literal("x as a pgvector vector; NULL when any feature is NaN")
        )
    )


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"features: {text}", file=sys.stderr, flush=True)


# -- build ------------------------------------------------------------------------------------
def build_feature_set(
    spec: FeatureSpec | str | Path,
    *,
    catalog: str | None = None,
    column_map: Mapping[str, str] | None = None,
    url: str | None = None,
    progress: bool = False,
    first_build: FirstBuild = "create_table_as",
) -> FeatureSet:
    """Compute the features of ``spec`` for every object of its catalog, inside the database.

    ``spec`` is a :class:`FeatureSpec` or the path of a TOML spec. The first
    build of a version creates ``features.<name>_<hash[:12]>`` and registers
    it in ``skyclass.feature_set``, in one transaction; building it again adds
    rows only for catalog objects without features (or recomputes all rows if
    the catalog was replaced since), and is otherwise a no-op. The result's
    ``build`` says what was done and how many rows were written. Raises
    :class:`FeatureSpecError` (file and line named) for an invalid spec or an
    unknown or non-numeric column, :class:`CatalogNotFoundError` for an
    unknown catalog; nothing is changed then. ``first_build`` selects
    ``CREATE TABLE AS`` (parallel) or ``INSERT ... SELECT`` for a new table
    and exists for the benchmark. ``catalog`` builds the definition on another
    catalog than the spec's ``catalog =``, and ``column_map`` names the
    catalog's column for a column the expressions read (``{"g": "mag_g"}``):
    every build of one definition has the same definition hash, so a model
    trained on one build scores every catalog with a build.
    """
    started = time.perf_counter()
    if not isinstance(spec, FeatureSpec):
        spec = load_spec(spec)
    spec = spec.for_catalog(catalog, column_map)
    trees = spec.trees()
    spec_hash = spec.spec_hash
    canonical = spec.canonical()
    table = sql.Identifier(FEATURE_SCHEMA, spec.table_name)
    with connect(url) as conn:
        _check_schema(conn)
        with conn.transaction():
            # Two builds of one version queue here; the second then sees the first's rows.
            lock(conn, feature_set_resource(spec.name, spec_hash))
            target = _catalog(conn, spec)
            _check_columns(spec, trees, target)
            vector = _vector_type(conn, len(spec.feature_names))
            # Read before the rows: rows committed later may be included, never missed.
            last_load, last_replace = _load_state(conn, target.catalog_id)
            registered = conn.execute(
                "SELECT feature_set_id FROM skyclass.feature_set WHERE name = %s "
                "AND spec_hash = %s",
                (spec.name, spec_hash),
            ).fetchone()
            state = _table_state(conn, spec.table_name)
            if state is not None and state.get("spec_hash") != spec_hash:
                # Never add rows to (or truncate) a table this version did not create.
                raise DatabaseError(
                    f"table {FEATURE_SCHEMA}.{spec.table_name} exists but is not the table of "
                    f"feature set {spec.name} version {spec_hash[:12]} (its comment does not "
                    "name that version); drop or rename it, then build again"
                )
            source = sql.Identifier(*target.table)
            _say(
                progress,
                f"{spec.name} version {spec_hash[:12]} on catalog {spec.catalog}: "
                f"{len(spec.feature_names)} features into {FEATURE_SCHEMA}.{spec.table_name}",
            )
            if state is None:
                action: Action = "created" if registered is None else "rebuilt"
                added = _create_table(
                    conn, spec, trees, target, vector, table, first_build, progress
                )
            elif _built_from(state) < last_replace:
                action = "recomputed"
                _say(progress, "the catalog was replaced since the last build: recomputing")
                conn.execute(sql.SQL("TRUNCATE {}").format(table))
                query, params = _Compiler(spec, trees, target.column_types, vector).select(source)
                added = _insert(conn, table, query, params)
            else:
                query, params = _Compiler(spec, trees, target.column_types, vector).select(
                    source, only_missing_from=table
                )
                added = _insert(conn, table, query, params)
                action = "appended" if added else "unchanged"
            if added or action != "unchanged":
                conn.execute(sql.SQL("ANALYZE {}").format(table))
            if state is None or action != "unchanged" or _built_from(state) != last_load:
                _write_comments(conn, table, spec, spec_hash, last_load)
            if registered is None:
                conn.execute(
                    "INSERT INTO skyclass.feature_definition (definition_hash, name, definition, "
                    "feature_names) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (definition_hash) DO NOTHING",
                    (
                        spec.definition_hash,
                        spec.name,
                        Jsonb(spec.definition()),
                        list(spec.feature_names),
                    ),
                )
                conn.execute(
                    "INSERT INTO skyclass.feature_set (name, spec_hash, catalog_id, spec, "
                    "spec_text, feature_names, table_name, definition_hash, column_map, "
                    "catalog_name) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        spec.name,
                        spec_hash,
                        target.catalog_id,
                        Jsonb(canonical),
                        spec.origin.text if spec.origin and spec.origin.text else spec.to_toml(),
                        list(spec.feature_names),
                        spec.table_name,
                        spec.definition_hash,
                        Jsonb(dict(spec.columns)),
                        target.name,
                    ),
                )
        seconds = time.perf_counter() - started
        _say(progress, f"{action}: {added:,} rows written in {seconds:.1f} s")
        result = _load(conn, spec.name, spec_hash, exact_count=True)
    return replace(result, build=BuildInfo(action, added, seconds))


def _create_table(
    conn: psycopg.Connection[Any],
    spec: FeatureSpec,
    trees: Sequence[Node],
    catalog: _Catalog,
    vector: sql.Composable,
    table: sql.Identifier,
    first_build: FirstBuild,
    progress: bool,
) -> int:
    query, params = _Compiler(spec, trees, catalog.column_types, vector).select(
        sql.Identifier(*catalog.table)
    )
    clock = time.perf_counter()
    if first_build == "create_table_as":
        cur = conn.execute(sql.SQL("CREATE TABLE {} AS {}").format(table, query), params)
        rows = max(cur.rowcount, 0)
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} ADD PRIMARY KEY (object_id), ALTER COLUMN x SET NOT NULL"
            ).format(table)
        )
    elif first_build == "insert_select":
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (object_id bigint PRIMARY KEY, x real[] NOT NULL, v {})"
            ).format(table, vector)
        )
        rows = _insert(conn, table, query, params)
    else:
        raise ValueError(f"first_build must be create_table_as or insert_select, not {first_build}")
    _say(progress, f"computed {rows:,} rows in {time.perf_counter() - clock:.1f} s")
    return rows


def _insert(
    conn: psycopg.Connection[Any],
    table: sql.Identifier,
    query: sql.Composable,
    params: dict[str, float],
) -> int:
    cur = conn.execute(sql.SQL("INSERT INTO {} (object_id, x, v) {}").format(table, query), params)
    return max(cur.rowcount, 0)


def feature_sql(
    spec: FeatureSpec | str | Path,
    *,
    catalog: str | None = None,
    column_map: Mapping[str, str] | None = None,
    url: str | None = None,
) -> str:
    """The ``SELECT object_id, x, v`` a build runs for ``spec``, with its parameters inlined.

    For reading and debugging (``skyclass features show --sql``); the build
    itself sends the numbers as bound parameters.
    """
    if not isinstance(spec, FeatureSpec):
        spec = load_spec(spec)
    spec = spec.for_catalog(catalog, column_map)
    trees = spec.trees()
    with connect(url) as conn:
        target = _catalog(conn, spec)
        _check_columns(spec, trees, target)
        vector = _vector_type(conn, len(spec.feature_names))
        query, params = _Compiler(spec, trees, target.column_types, vector).select(
            sql.Identifier(*target.table)
        )
        with psycopg.ClientCursor(conn) as cur:
            return cur.mogrify(query.as_string(conn), params)


# -- reading the registry --------------------------------------------------------------------
_SELECT = """
SELECT fs.feature_set_id, fs.name, fs.spec_hash, fs.catalog_name, fs.table_name,
       fs.feature_names, fs.spec, fs.spec_text, fs.created_at, fs.definition_hash
FROM skyclass.feature_set fs
"""


def _from_row(row: Sequence[Any], n_objects: int) -> FeatureSet:
    spec = spec_from_canonical(row[6], text=row[7])
    return FeatureSet(
        feature_set_id=int(row[0]),
        name=row[1],
        spec_hash=row[2],
        catalog=row[3],
        table=(FEATURE_SCHEMA, row[4]),
        feature_names=tuple(row[5]),
        groups=spec.groups,
        n_objects=n_objects,
        created_at=row[8],
        spec=spec,
    )


def _count(conn: psycopg.Connection[Any], table: str) -> int | None:
    exists = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
        (FEATURE_SCHEMA, table),
    ).fetchone()
    if not (exists and exists[0]):
        return None
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(FEATURE_SCHEMA, table))
    ).fetchone()
    return int(row[0]) if row else 0


def _load(
    conn: psycopg.Connection[Any],
    name: str,
    spec_hash: str | None,
    *,
    exact_count: bool,
    catalog: str | None = None,
) -> FeatureSet:
    build = find_feature_build(conn, str(name)[:200], spec_hash, catalog=catalog)
    row = conn.execute(_SELECT + " WHERE fs.feature_set_id = %s", (build,)).fetchone()
    if row is None:
        raise FeatureSetNotFoundError(f"feature set {name!r} was dropped while being read")
    count = _count(conn, row[4]) if exact_count else 0
    if count is None:
        raise FeatureSetNotFoundError(
            f"the table {FEATURE_SCHEMA}.{row[4]} of feature set {name!r} is missing; "
            "rebuild it with `skyclass features build SPEC`"
        )
    return _from_row(row, count)


def load_feature_set(
    name: str, spec_hash: str | None = None, url: str | None = None, *, catalog: str | None = None
) -> FeatureSet:
    """The registered feature set ``name``: its newest build, or the one ``spec_hash`` names.

    ``spec_hash`` may be a unique prefix (as printed by ``skyclass features
    list``). Without it, the name must have builds on one catalog only, or
    ``catalog`` must say which: another catalog's build is never picked
    silently. Raises :class:`FeatureSetNotFoundError` when there is no such
    build or its table is missing, :class:`AmbiguousName` when several fit.
    """
    with connect(url) as conn:
        return _load(conn, name, spec_hash, exact_count=True, catalog=catalog)


def list_feature_sets(url: str | None = None) -> list[FeatureSet]:
    """Every registered feature-set version, by name then age; ``n_objects`` is estimated."""
    with connect(url) as conn:
        rows = conn.execute(_SELECT + " ORDER BY fs.name, fs.feature_set_id").fetchall()
        estimates: dict[str, int] = dict(
            conn.execute(
                "SELECT c.relname, greatest(c.reltuples, 0)::bigint FROM pg_class c "
                "WHERE c.relnamespace = to_regnamespace(%s) AND c.relkind = 'r'",
                (FEATURE_SCHEMA,),
            ).fetchall()
        )
    return [_from_row(r, int(estimates.get(r[4], 0))) for r in rows]


# -- reading features ------------------------------------------------------------------------
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00"
_FLOAT4_OID = 700


def _row_dtype(n: int) -> np.dtype[Any]:
    """One binary COPY row of (bigint, real[] of ``n`` non-NULL elements)."""
    return np.dtype(
        [
            ("nfields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i8"),
            ("x_len", ">i4"),
            ("ndim", ">i4"),
            ("has_null", ">i4"),
            ("elem_oid", ">u4"),
            ("dim", ">i4"),
            ("lbound", ">i4"),
            ("x", [("len", ">i4"), ("value", ">f4")], (n,)),
        ]
    )


def decode_feature_copy(
    data: bytes | bytearray,
    n: int,
    what: str,
    error: type[Exception] = DatabaseError,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Object ids and an (rows x ``n``) float32 matrix from a binary COPY of (object_id, x).

    The rows must follow the feature-table contract (``x`` a 1-D real array of
    ``n`` elements without NULLs); anything else raises ``error`` naming ``what``
    and, where one row is at fault, its object id.
    """
    if len(data) < len(_COPY_HEADER) + 10 or not data.startswith(_COPY_HEADER):
        raise error(f"{what}: not a binary COPY stream")
    (ext_len,) = struct.unpack_from(">i", data, len(_COPY_HEADER) + 4)
    start = len(_COPY_HEADER) + 8 + ext_len
    body = memoryview(data)[start : len(data) - 2]  # the trailer is int16 -1
    dtype = _row_dtype(n)
    if len(body) % dtype.itemsize:
        raise error(
            f"{what}: rows are not (bigint, real[{n}]) without NULL elements, as the "
            "feature-table contract says; rebuild the feature set"
        )
    rows = np.frombuffer(body, dtype=dtype)
    bad = (
        (rows["nfields"] != 2)
        | (rows["id_len"] != 8)
        | (rows["ndim"] != 1)
        | (rows["has_null"] != 0)
        | (rows["elem_oid"] != _FLOAT4_OID)
        | (rows["dim"] != n)
        | np.any(rows["x"]["len"] != 4, axis=1)
    )
    if bad.any():
        raise error(
            f"{what}: object {int(rows['id'][np.argmax(bad)])} does not have {n} real "
            "features without NULL elements; rebuild the feature set"
        )
    return rows["id"].astype(np.int64), rows["x"]["value"].astype(np.float32)


def feature_matrix(
    feature_set: FeatureSet | str,
    object_ids: Iterable[int] | npt.NDArray[np.integer[Any]] | None = None,
    url: str | None = None,
    *,
    missing: Literal["error", "drop"] = "error",
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The features as ``(ids, X)``: int64 object ids and a float32 matrix, one row per id.

    Without ``object_ids`` every object, in object id order; with them, those
    objects in the given order (an id without features raises
    :class:`FeatureSetNotFoundError`, or with ``missing="drop"`` is left out).
    Rows travel as binary ``COPY`` and are decoded with numpy in one pass, so
    the client holds the result and one copy of the wire data, nothing more.
    ``feature_set`` may be a name (its newest version).
    """
    if isinstance(feature_set, str):
        feature_set = load_feature_set(feature_set, url=url)
    n = feature_set.n_features
    table = feature_set.table_identifier()
    with connect(url) as conn, conn.transaction():
        if object_ids is None:
            query = sql.SQL(
                "COPY (SELECT object_id, x FROM {} ORDER BY object_id) TO STDOUT (FORMAT BINARY)"
            ).format(table)
            requested = None
        else:
            requested = np.asarray(
                object_ids if isinstance(object_ids, np.ndarray) else list(object_ids),
                dtype=np.int64,
            ).ravel()
            conn.execute(
                "CREATE TEMPORARY TABLE skyclass_wanted (ord bigint, object_id bigint) "
                "ON COMMIT DROP"
            )
            with conn.cursor().copy(
                "COPY skyclass_wanted (ord, object_id) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(_encode_ids(requested))
            query = sql.SQL(
                "COPY (SELECT f.object_id, f.x FROM skyclass_wanted w JOIN {} f "
                "USING (object_id) ORDER BY w.ord) TO STDOUT (FORMAT BINARY)"
            ).format(table)
        buffer = bytearray()
        with conn.cursor().copy(query) as copy:
            for chunk in copy:
                buffer += chunk
    ids, x = decode_feature_copy(buffer, n, feature_set.qualified_table)
    if requested is not None and missing == "error" and len(ids) != len(requested):
        absent = np.setdiff1d(requested, ids)
        shown = ", ".join(str(i) for i in absent[:5])
        if len(absent):
            raise FeatureSetNotFoundError(
                f"{len(absent):,} of the {len(requested):,} object ids have no features in "
                f"{feature_set.qualified_table} (e.g. {shown}); run `skyclass features build` "
                "again after loading them, or pass missing='drop'"
            )
    return ids, x


def _encode_ids(ids: npt.NDArray[np.int64]) -> bytes:
    rows = np.zeros(
        len(ids),
        dtype=[("n", ">i2"), ("l1", ">i4"), ("ord", ">i8"), ("l2", ">i4"), ("id", ">i8")],
    )
    rows["n"] = 2
    rows["l1"] = 8
    rows["ord"] = np.arange(len(ids))
    rows["l2"] = 8
    rows["id"] = ids
    return _COPY_HEADER + b"\x00" * 8 + rows.tobytes() + b"\xff\xff"


def check_spec_against_catalog(spec: FeatureSpec, url: str | None = None) -> None:
    """Check ``spec`` against its catalog (exists, columns exist and are numeric); no writes."""
    trees = spec.trees()
    with connect(url) as conn:
        _check_columns(spec, trees, _catalog(conn, spec))
