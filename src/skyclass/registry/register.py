"""Registering an existing table (or partitioned table) as a catalog, without copying it.

:func:`register_catalog` checks the table once (the id unique and not NULL, RA
in [0, 360) and Dec in [-90, 90], each with a count of offending rows), finds a
Q3C index on its own position columns (or builds one per leaf table with
``CREATE INDEX CONCURRENTLY``), then, in one transaction, creates the view
``catalogs.<name>`` that renames the mapped columns to ``object_id``, ``ra``
and ``dec`` and shows the others under their own names, and records the
catalog, its columns and a provenance row (``skyclass.catalog_registration``).

Why a view: every step downstream (feature builds, labels, cone search and
cross-match with the C sweep, scoring jobs, published views) reads
``catalogs.<name>`` with those three columns. A plain view copies nothing and
the planner inlines it, so ``q3c_radial_query(ra, dec, ...)`` on the view is
``q3c_radial_query(ra_deg, dec_deg, ...)`` on the table and uses the table's
index on ``q3c_ang2ipix(ra_deg, dec_deg)``; on a partitioned table each leaf's
index serves its rows. Readers of the view need no privilege on the table (a
view reads with its owner's rights): registering publishes the table's rows to
whoever may read ``catalogs``.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from skyclass import __version__
from skyclass.db.connect import connect
from skyclass.db.schema import CATALOG_SCHEMA
from skyclass.errors import RegistryError
from skyclass.ingest.columns import check_name
from skyclass.registry.catalogs import table_exists
from skyclass.registry.locks import lock_catalog

# Schemas whose tables skyclass makes: registering one would let a drop reach them.
MANAGED_SCHEMAS = ("catalogs", "features", "predictions", "snapshots", "skyclass")
ID_TYPES = ("bigint", "integer", "smallint")
POSITION_TYPES = ("double precision", "real")
EXAMPLES = 5


@dataclass(frozen=True)
class Check:
    """One check run at registration: what, how, and the offending rows found."""

    name: str
    method: str
    offending_rows: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``catalog_registration.checks``."""
        return {"check": self.name, "method": self.method, "offending_rows": self.offending_rows}


@dataclass(frozen=True)
class Registration:
    """What :func:`register_catalog` did."""

    name: str
    source: str
    source_kind: str
    row_estimate: int
    checks: tuple[Check, ...]
    q3c_index: str | None
    index_created: bool
    hidden_columns: tuple[str, ...] = field(default=())
    seconds: float = 0.0


@dataclass(frozen=True)
class _Source:
    oid: int
    schema: str
    table: str
    kind: str  # 'table' or 'partitioned table'
    columns: dict[str, tuple[str, bool, str | None]]  # name -> (type, not null, comment)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"register: {text}", file=sys.stderr, flush=True)


def _source(conn: psycopg.Connection[Any], table: str) -> _Source:
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class AS c "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
                (table,),
            ).fetchone()
    except psycopg.Error:  # not a name at all ('a;b', 'a.b.c.d', cross-database)
        row = None
    if row is None:
        raise RegistryError(
            f"table {table!r} does not exist (or is not visible to this role); name it as "
            "SCHEMA.TABLE"
        )
    oid, schema, name, relkind = int(row[0]), str(row[1]), str(row[2]), str(row[3])
    if relkind not in ("r", "p"):
        what = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}.get(
            relkind, f"not a table (relkind {relkind})"
        )
        raise RegistryError(f"{schema}.{name} is {what}: register a table or a partitioned table")
    if schema in MANAGED_SCHEMAS:
        raise RegistryError(
            f"{schema}.{name} is in schema {schema}, which skyclass manages: register tables "
            "of your own schemas (ingest files with `skyclass ingest`)"
        )
    cols = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "col_description(a.attrelid, a.attnum) FROM pg_attribute AS a "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (oid,),
    ).fetchall()
    return _Source(
        oid,
        schema,
        name,
        "partitioned table" if relkind == "p" else "table",
        {str(c[0]): (str(c[1]), bool(c[2]), c[3]) for c in cols},
    )


def _column(source: _Source, name: str, option: str, types: tuple[str, ...]) -> str:
    pg_type = source.columns.get(name, (None,))[0]
    if pg_type is None:
        shown = ", ".join(list(source.columns)[:30])
        raise RegistryError(
            f"{option} {name}: {source.qualified} has no column {name!r} (its columns: {shown})"
        )
    if pg_type not in types:
        raise RegistryError(
            f"{option} {name}: column {name!r} of {source.qualified} is {pg_type}; it must be "
            f"{' or '.join(types)}"
        )
    return pg_type


def _examples(
    conn: psycopg.Connection[Any], source: _Source, id_col: str, condition: sql.Composable
) -> str:
    rows = conn.execute(
        sql.SQL("SELECT {id}::text FROM {t} WHERE {c} ORDER BY {id} LIMIT %s").format(
            id=sql.Identifier(id_col), t=source.ident, c=condition
        ),
        (EXAMPLES,),
    ).fetchall()
    return ", ".join(str(r[0]) for r in rows)


def _unique_index(conn: psycopg.Connection[Any], source: _Source, id_col: str) -> str | None:
    """A unique, non-partial index on exactly the id column (NULL-distinct), or None."""
    row = conn.execute(
        "SELECT i.indexrelid::regclass::text FROM pg_index AS i "
        "JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1 "
        "AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = %s LIMIT 1",
        (source.oid, id_col),
    ).fetchone()
    return None if row is None else str(row[0])


def _checks(
    conn: psycopg.Connection[Any],
    source: _Source,
    id_col: str,
    ra_col: str | None,
    dec_col: str | None,
    progress: bool,
) -> tuple[list[Check], int]:
    """Run the checks (raising :class:`RegistryError` on offending rows); also count the rows."""
    ident = sql.Identifier(id_col)
    counts = [sql.SQL("count(*)"), sql.SQL("count(*) FILTER (WHERE {} IS NULL)").format(ident)]
    conditions: dict[str, sql.Composable] = {"id not null": sql.SQL("{} IS NULL").format(ident)}
    if ra_col is not None and dec_col is not None:
        ra, dec = sql.Identifier(ra_col), sql.Identifier(dec_col)
        # NaN sorts above every number in PostgreSQL, so these ranges also catch NaN.
        conditions["ra in [0, 360)"] = sql.SQL(
            "{ra} IS NULL OR NOT ({ra} >= 0 AND {ra} < 360)"
        ).format(ra=ra)
        conditions["dec in [-90, 90]"] = sql.SQL(
            "{d} IS NULL OR NOT ({d} >= -90 AND {d} <= 90)"
        ).format(d=dec)
        counts += [
            sql.SQL("count(*) FILTER (WHERE {})").format(conditions["ra in [0, 360)"]),
            sql.SQL("count(*) FILTER (WHERE {})").format(conditions["dec in [-90, 90]"]),
        ]
    _say(progress, f"checking {source.qualified} (one scan)")
    row = conn.execute(
        sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(counts), source.ident)
    ).fetchone()
    assert row is not None
    total = int(row[0])
    found = dict(zip(conditions, (int(v) for v in row[1:]), strict=True))
    checks: list[Check] = []
    index = _unique_index(conn, source, id_col)
    if index is not None:
        duplicates = 0
        checks.append(Check("id unique", f"unique index {index}", 0))
    else:
        _say(progress, f"checking that {id_col} is unique (no unique index on it)")
        dup = conn.execute(
            sql.SQL(
                "SELECT coalesce(sum(n), 0), string_agg(id::text, ', ') FILTER (WHERE k <= %s) "
                "FROM (SELECT {i} AS id, count(*) AS n, row_number() OVER (ORDER BY {i}) AS k "
                "FROM {t} WHERE {i} IS NOT NULL GROUP BY {i} HAVING count(*) > 1) AS d"
            ).format(i=ident, t=source.ident),
            (EXAMPLES,),
        ).fetchone()
        assert dup is not None
        duplicates = int(dup[0])
        checks.append(Check("id unique", "one-time scan", duplicates))
        if duplicates:
            raise RegistryError(
                f"{source.qualified}: column {id_col!r} is not unique: {duplicates:,} rows share "
                f"an id (e.g. {dup[1]}); register a table (or a view of it) whose id column is "
                "unique, or add a unique index"
            )
    for check, offending in found.items():
        not_null = check == "id not null" and source.columns[id_col][1]
        checks.append(
            Check(check, "NOT NULL constraint" if not_null else "one-time scan", offending)
        )
        if offending:
            column = (
                id_col if check == "id not null" else ra_col if check.startswith("ra") else dec_col
            )
            assert column is not None
            what = (
                "NULL"
                if check == "id not null"
                else f"NULL, NaN or outside {check.split(' in ')[1]}"
            )
            raise RegistryError(
                f"{source.qualified}: column {column!r} is {what} in {offending:,} "
                f"row{'' if offending == 1 else 's'} (ids "
                f"{_examples(conn, source, id_col, conditions[check]) or 'NULL'}); fix those "
                "rows, or register a view of the table that leaves them out"
            )
    return checks, total


def _q3c_schema(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'q3c'"
    ).fetchone()
    if row is None:
        raise RegistryError("the q3c extension is not installed: run `skyclass db migrate`")
    return str(row[0])


def _tables_without_q3c(
    conn: psycopg.Connection[Any], source: _Source, ra_col: str, dec_col: str
) -> list[str]:
    """The tables a radial query on the source would scan sequentially (no usable Q3C index).

    The planner decides: with sequential scans disabled, any ``Seq Scan`` left in
    the plan of a small cone search is a table (or leaf partition) without an
    index on ``q3c_ang2ipix`` of these columns.
    """
    q3c = _q3c_schema(conn)
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            sql.SQL(
                "EXPLAIN (FORMAT JSON) SELECT 1 FROM {t} AS t "
                "WHERE {q}.q3c_radial_query(t.{ra}, t.{dec}, 10.0, 10.0, 0.01)"
            ).format(
                t=source.ident,
                q=sql.Identifier(q3c),
                ra=sql.Identifier(ra_col),
                dec=sql.Identifier(dec_col),
            )
        ).fetchone()
    assert plan is not None
    data = plan[0] if not isinstance(plan[0], str) else json.loads(plan[0])
    missing: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Node Type") == "Seq Scan":
            missing.append(f"{node.get('Schema', source.schema)}.{node['Relation Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk(data[0]["Plan"])
    return missing


def _index_name(table: str) -> str:
    suffix = "_q3c_skyclass"
    return table[: 63 - len(suffix)] + suffix


class _IndexProgress:
    """Report ``pg_stat_progress_create_index`` of backend ``pid`` every few seconds."""

    def __init__(self, url: str | None, pid: int, what: str, every: float = 2.0) -> None:
        self.url, self.pid, self.what, self.every = url, pid, what, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _IndexProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        with connect(self.url, autocommit=True) as conn:
            while not self.stop.wait(self.every):
                row = conn.execute(
                    "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total "
                    "FROM pg_stat_progress_create_index WHERE pid = %s",
                    (self.pid,),
                ).fetchone()
                if row is not None:
                    done, total = (row[1], row[2]) if row[2] else (row[3], row[4])
                    share = f" {100 * done / total:.0f}%" if total else ""
                    _say(True, f"{self.what}: {row[0]}{share}")


def _create_indexes(
    url: str | None,
    tables: list[str],
    ra_col: str,
    dec_col: str,
    q3c: str,
    progress: bool,
) -> list[str]:
    """``CREATE INDEX CONCURRENTLY`` on ``q3c_ang2ipix(ra, dec)`` of each table, one by one."""
    made: list[str] = []
    with connect(url, autocommit=True) as conn:
        for k, qualified in enumerate(tables, 1):
            schema, _, table = qualified.partition(".")
            name = _index_name(table)
            clock = time.perf_counter()
            _say(progress, f"building Q3C index {schema}.{name} ({k}/{len(tables)}) CONCURRENTLY")
            watch: contextlib.AbstractContextManager[object] = (
                _IndexProgress(url, conn.info.backend_pid, f"{schema}.{name}")
                if progress
                else contextlib.nullcontext()
            )
            try:
                with watch:
                    conn.execute(
                        sql.SQL(
                            "CREATE INDEX CONCURRENTLY {n} ON {t} ({q}.q3c_ang2ipix({ra}, {dec}))"
                        ).format(
                            n=sql.Identifier(name),
                            t=sql.Identifier(schema, table),
                            q=sql.Identifier(q3c),
                            ra=sql.Identifier(ra_col),
                            dec=sql.Identifier(dec_col),
                        )
                    )
            except psycopg.Error as exc:
                # A failed concurrent build leaves an invalid index behind: remove it.
                conn.execute(
                    sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                        sql.Identifier(schema, name)
                    )
                )
                raise RegistryError(
                    f"building the Q3C index on {qualified} failed: "
                    f"{exc.diag.message_primary or exc}; nothing was registered"
                ) from None
            made.append(f"{schema}.{name}")
            _say(progress, f"built {schema}.{name} in {time.perf_counter() - clock:.1f} s")
    return made


def _view_columns(
    source: _Source, id_col: str, ra_col: str | None, dec_col: str | None
) -> tuple[list[tuple[str, str, sql.Composable]], list[str]]:
    """(view column, source column, expression) in view order, and the hidden source columns."""
    mapped: list[tuple[str, str | None]] = [("object_id", id_col), ("ra", ra_col), ("dec", dec_col)]
    out: list[tuple[str, str, sql.Composable]] = []
    for view_col, src in mapped:
        if src is None:
            continue
        pg_type = source.columns[src][0]
        ref = sql.SQL("t.{}").format(sql.Identifier(src))
        target = "bigint" if view_col == "object_id" else "double precision"
        expr: sql.Composable = (
            ref if pg_type == target else sql.SQL("CAST({} AS {})").format(ref, sql.SQL(target))
        )
        out.append((view_col, src, expr))
    taken = {"object_id", "ra", "dec"}
    used = {s for _, s in mapped if s is not None}
    hidden: list[str] = []
    for name in source.columns:
        if name in used:
            continue
        if name in taken:
            # A column literally named ra (say) that is not the mapped one would shadow it.
            hidden.append(name)
            continue
        out.append((name, name, sql.SQL("t.{}").format(sql.Identifier(name))))
    return out, hidden


def register_catalog(
    table: str,
    *,
    name: str,
    id_column: str,
    ra_column: str | None = None,
    dec_column: str | None = None,
    positions: bool = True,
    create_index: bool = False,
    description: str | None = None,
    url: str | None = None,
    progress: bool = False,
) -> Registration:
    """Register the existing ``table`` (``SCHEMA.TABLE``) as catalog ``name``, copying nothing.

    ``id_column`` becomes ``object_id``, ``ra_column``/``dec_column`` (degrees)
    become ``ra``/``dec``; ``positions=False`` registers a catalog without sky
    positions. Raises :class:`RegistryError` (with counts and example ids of
    offending rows) when a check fails, when no Q3C index on the table's own
    position columns exists and ``create_index`` is False, or when the name or
    the table cannot be used; nothing is registered then (an index built with
    ``create_index`` stays: it serves the table whatever happens next).
    """
    started = time.perf_counter()
    check_name(name)
    if positions and (ra_column is None or dec_column is None):
        raise RegistryError(
            "give --ra COL and --dec COL (degrees), or --no-positions for a catalog without "
            "sky positions"
        )
    if not positions and (ra_column is not None or dec_column is not None):
        raise RegistryError("--no-positions registers no RA/Dec: drop --ra/--dec")
    if not positions and create_index:
        raise RegistryError("--create-index needs positions: drop --no-positions")
    with connect(url) as conn:
        source = _source(conn, table)
        _column(source, id_column, "--id", ID_TYPES)
        if positions:
            assert ra_column is not None and dec_column is not None
            _column(source, ra_column, "--ra", POSITION_TYPES)
            _column(source, dec_column, "--dec", POSITION_TYPES)
        _check_name_free(conn, name)
        checks, total = _checks(conn, source, id_column, ra_column, dec_column, progress)
        conn.commit()
        index: str | None = None
        created = False
        if positions:
            assert ra_column is not None and dec_column is not None
            missing = _tables_without_q3c(conn, source, ra_column, dec_column)
            conn.commit()
            if missing and not create_index:
                raise RegistryError(
                    f"no Q3C index on q3c_ang2ipix({ra_column}, {dec_column}) of "
                    f"{', '.join(missing)}: cone search and cross-match would scan the whole "
                    "table. Add --create-index to build one (CREATE INDEX CONCURRENTLY: the "
                    "table stays readable and writable), or create it yourself"
                )
            if missing:
                _create_indexes(url, missing, ra_column, dec_column, _q3c_schema(conn), progress)
                created = True
            index = _q3c_index_names(conn, source, ra_column)
        columns, hidden = _view_columns(source, id_column, ra_column, dec_column)
        # Only reads since the last commit: end them, so the registration is a transaction of
        # its own (not a savepoint), whose lock others can trace to this backend's pid.
        conn.commit()
        with conn.transaction():
            lock_catalog(conn, name)
            _check_name_free(conn, name)
            _create_view(conn, name, source, columns, description)
            catalog_id = _insert_rows(
                conn, name, source, columns, id_column, ra_column, dec_column, description
            )
            conn.execute(
                "INSERT INTO skyclass.catalog_registration (catalog_id, source_schema, "
                "source_table, source_kind, column_map, row_estimate, checks, q3c_index, "
                "index_created, skyclass_version, os_user) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    catalog_id,
                    source.schema,
                    source.table,
                    source.kind,
                    Jsonb({v: s for v, s, _ in columns}),
                    total,
                    Jsonb([c.to_dict() for c in checks]),
                    index,
                    created,
                    __version__,
                    getpass.getuser(),
                ),
            )
    return Registration(
        name=name,
        source=source.qualified,
        source_kind=source.kind,
        row_estimate=total,
        checks=tuple(checks),
        q3c_index=index,
        index_created=created,
        hidden_columns=tuple(hidden),
        seconds=time.perf_counter() - started,
    )


def _q3c_index_names(conn: psycopg.Connection[Any], source: _Source, ra_col: str) -> str | None:
    """The Q3C indexes on the source's leaf tables that mention the RA column (for provenance)."""
    rows = conn.execute(
        # pg_partition_tree() lists nothing for a plain table: add the table itself.
        "SELECT i.indexrelid::regclass::text FROM (SELECT %s::oid::regclass AS relid "
        "UNION SELECT pt.relid FROM pg_partition_tree(%s::oid::regclass) AS pt) AS t "
        "JOIN pg_index AS i ON i.indrelid = t.relid "
        "WHERE pg_get_indexdef(i.indexrelid) ~ 'q3c_ang2ipix' "
        "AND position(%s in pg_get_indexdef(i.indexrelid)) > 0 ORDER BY 1",
        (source.oid, source.oid, ra_col),
    ).fetchall()
    return ", ".join(str(r[0]) for r in rows) or None


def _check_name_free(conn: psycopg.Connection[Any], name: str) -> None:
    row = conn.execute("SELECT kind FROM skyclass.catalog WHERE name = %s", (name,)).fetchone()
    if row is not None:
        raise RegistryError(
            f"catalog {name!r} already exists ({row[0]}): choose another --name, or drop it "
            "first (skyclass catalog drop)"
        )
    if table_exists(conn, name):
        raise RegistryError(
            f"{CATALOG_SCHEMA}.{name} exists but is not a registered catalog; choose another --name"
        )


def _create_view(
    conn: psycopg.Connection[Any],
    name: str,
    source: _Source,
    columns: list[tuple[str, str, sql.Composable]],
    description: str | None,
) -> None:
    view = sql.Identifier(CATALOG_SCHEMA, name)
    select = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(expr, sql.Identifier(col)) for col, _, expr in columns
    )
    conn.execute(
        sql.SQL("CREATE VIEW {} AS SELECT {} FROM {} AS t").format(view, select, source.ident)
    )
    comment = description or f"Registered catalog over {source.qualified} (nothing copied)"
    conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(comment)))
    reader = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'skyclass_reader'").fetchone()
    if reader is not None:
        conn.execute(sql.SQL("GRANT SELECT ON {} TO skyclass_reader").format(view))


def _insert_rows(
    conn: psycopg.Connection[Any],
    name: str,
    source: _Source,
    columns: list[tuple[str, str, sql.Composable]],
    id_col: str,
    ra_col: str | None,
    dec_col: str | None,
    description: str | None,
) -> int:
    row = conn.execute(
        "INSERT INTO skyclass.catalog (name, schema_name, table_name, id_column, ra_column, "
        "dec_column, description, kind, source_schema, source_table) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, 'registered', %s, %s) RETURNING catalog_id",
        (
            name,
            CATALOG_SCHEMA,
            name,
            id_col,
            ra_col,
            dec_col,
            description,
            source.schema,
            source.table,
        ),
    ).fetchone()
    assert row is not None
    catalog_id = int(row[0])
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO skyclass.catalog_column (catalog_id, column_name, position, "
            "source_name, pg_type, description) VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (
                    catalog_id,
                    view_col,
                    k,
                    src,
                    "bigint"
                    if view_col == "object_id"
                    else "double precision"
                    if view_col in ("ra", "dec")
                    else source.columns[src][0],
                    source.columns[src][2],
                )
                for k, (view_col, src, _) in enumerate(columns, 1)
            ],
        )
    return catalog_id
